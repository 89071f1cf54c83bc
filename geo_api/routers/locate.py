import itertools
from contextlib import asynccontextmanager
from typing import Annotated

import orjson
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from geo_api.deps import CachesDep, Public, SessionDep
from geo_api.responses import CSV, media, problems
from layers.boundaries import parse_instant
from layers.errors import InvalidInput, NotFound
from layers.locate import (
    BATCH_PART_ROWS,
    batch_document,
    locate_plain,
    locate_point,
    locate_rows,
    locate_rows_csv,
    plain_csv_points,
    split_csv,
)
from layers.points import columns_from_csv, points_from_columns, points_from_rows, to_wgs84_point


@asynccontextmanager
async def lifespan(app: FastAPI):
    """The data-version reader of the anonymous fast path (:mod:`geo_api.fastpath`):
    coalesced reads on a connection of its own, each started after the requests it
    answers arrived."""
    from layers.db import libpq_dsn
    from layers.pg import VersionReader

    reader = VersionReader(libpq_dsn(app.state.engine.url), clock=app.state.clock)
    app.state.locate_versions = reader
    try:
        yield
    finally:
        app.state.locate_versions = None
        reader.close()


router = APIRouter(prefix="/v1/locate", tags=["locate"], lifespan=lifespan)


@router.get(
    "",
    summary="Which grid, community, street and district a point falls in (anonymous; no personal data)",
    responses=problems(404),
)
def locate(
    request: Request,
    session: SessionDep,
    caches: CachesDep,
    caller: Public,
    lon: Annotated[float, Query(description="longitude or easting (x), in the CRS given")],
    lat: Annotated[float, Query(description="latitude or northing (y), in the CRS given")],
    crs: Annotated[str, Query(description="wgs84, gcj02, bd09, cgcs2000 or EPSG:nnnn")] = "wgs84",
    at: Annotated[
        str | None,
        Query(
            description="the grid that held the point on this day (2027-01-01, from "
            "midnight China Standard Time) or at this instant (ISO 8601 "
            "with offset); default now"
        ),
    ] = None,
):
    settings = request.app.state.settings.locate
    if at is None:
        index = caches.grid_index.get(session)
    else:
        # the layer in force then, one index per generation (the fast path never takes a
        # query with ``at``)
        index = caches.history_index.get(session, parse_instant(at, "at"))
    try:
        wlon, wlat, _ = to_wgs84_point(lon, lat, crs)
    except InvalidInput as exc:
        if exc.field in ("lon", "lat") and index.in_service_area(lat, lon):
            exc.detail += "; with longitude and latitude swapped the point would fall inside the service area"
            exc.extra["swapped"] = True
        raise
    return Response(point_answer(index, wlon, wlat, settings), media_type="application/json")


def point_answer(index, wlon: float, wlat: float, settings) -> bytes:
    """The body of a found point's answer; :class:`NotFound` (404 naming the nearest
    grid) for an ``outside`` point. Shared by the route and the fast path
    (:mod:`geo_api.fastpath`), so both answer the same bytes. A point whose pure cell
    lies inside one grid (nine in ten) is answered from that grid's encoded part."""
    g = index.pure_grid(wlon, wlat)
    if g >= 0:
        return index.describer.inside_answer(g, wlon, wlat)
    found, result = locate_point(index, wlon, wlat, tolerance_m=settings.tolerance_m, edge_m=settings.edge_m)
    if not found:
        raise NotFound(
            result["message"],
            field="lon",
            nearest_grid=result.get("nearest_grid"),
            swapped=bool(result.get("swapped", False)),
            point=result["point"],
        )
    return orjson.dumps(result)


@router.post(
    "/batch",
    summary="Locate many points at once: JSON list or CSV of id, lon, lat[, crs]; one result per row, same order",
    description="Send a JSON list of `{id, lon, lat[, crs]}` objects or CSV (`Content-Type: text/csv`) with a "
    'header naming id, lon, lat and optionally crs. The answer is JSON `{"results": [...]}`, each result shaped '
    "like a single locate plus its `id`; with `Accept: text/csv` it is CSV, one flat row per input row. Batches are "
    "bounded in bytes and rows (GRIDBRANCH_LOCATE_BATCH_MAX_BYTES / _MAX_ROWS signed in, lower anonymously: "
    "_MAX_BYTES_ANONYMOUS / _MAX_ROWS_ANONYMOUS); the answer is streamed as it is made.",
    responses={**media(CSV), **problems(429)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id", "lon", "lat"],
                            "properties": {
                                "id": {},
                                "lon": {"type": "number"},
                                "lat": {"type": "number"},
                                "crs": {"type": "string"},
                            },
                        },
                    }
                },
                "text/csv": {
                    "schema": {"type": "string", "description": "a header naming id, lon, lat[, crs], then rows"}
                },
            },
        }
    },
)
async def locate_batch(
    request: Request,
    session: SessionDep,
    caches: CachesDep,
    caller: Public,
    crs: Annotated[str, Query(description="CRS of rows that name none")] = "wgs84",
):
    settings = request.app.state.settings.locate
    content_type = request.headers.get("content-type", "")
    body = await request.body()  # bounded before it is read (geo_api.asgi.BodyLimit)
    answer = "csv" if "text/csv" in request.headers.get("accept", "") else "json"
    if caller.anonymous:
        max_rows, setting = settings.batch_max_rows_anonymous, "GRIDBRANCH_LOCATE_BATCH_MAX_ROWS_ANONYMOUS"
    else:
        max_rows, setting = settings.batch_max_rows, "GRIDBRANCH_LOCATE_BATCH_MAX_ROWS"

    def first():
        # everything that can refuse the whole batch happens before the answer starts:
        # the body's form, its size in rows, the grid index, the first part
        batches = _read_batch(content_type, body, crs, max_rows, setting)
        index = caches.grid_index.get(session)
        parts = (_answer_part(index, b, settings, answer) for b in batches)
        return itertools.chain([next(parts)], parts)

    parts = await run_in_threadpool(first)
    return StreamingResponse(
        batch_document(parts, answer), media_type="text/csv; charset=utf-8" if answer == "csv" else "application/json"
    )


def _answer_part(index, batch, settings, answer: str) -> bytes:
    """One part's rows: a clean CSV part (bytes, see :func:`layers.locate.plain_csv_points`)
    assembled in bulk, anything else read row by row (a :class:`layers.points.PointBatch`)."""
    kw = {"tolerance_m": settings.tolerance_m, "edge_m": settings.edge_m}
    if isinstance(batch, bytes):
        plain = plain_csv_points(batch, BATCH_PART_ROWS)
        if plain is not None:
            data = locate_plain(index, *plain, answer=answer, part=True, **kw)
            if data is not None:
                return data
        columns = columns_from_csv(batch)
        batch = points_from_columns(
            columns["id"], columns["lon"], columns["lat"], columns.get("crs"), default_crs="wgs84"
        )
    if answer == "csv":
        return locate_rows_csv(index, batch, header=False, **kw).encode()
    return orjson.dumps(locate_rows(index, batch, **kw))[1:-1]


def _read_batch(content_type: str, body: bytes, crs: str, max_rows: int, setting: str):
    """The batch's parts: CSV parts as bytes (a CRS other than WGS84 for rows naming none
    makes them point batches), JSON as point batches; at most ``max_rows`` rows in all."""
    if not body:
        raise InvalidInput("the request body is empty: send a JSON list or a CSV with id,lon,lat", field="body")
    if content_type.startswith("text/csv"):
        if not body.isascii():
            try:
                body.decode("utf-8")  # checked whole before any part is answered
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"the file is not UTF-8 text: {exc}", field="file") from None
        parts = split_csv(body, BATCH_PART_ROWS)
        _check_size(parts.rows, max_rows, setting)
        if crs == "wgs84":
            return iter(parts)
        return (_csv_points(part, crs) for part in parts)
    if content_type.startswith("multipart/form-data"):
        raise InvalidInput("upload the CSV as the request body with Content-Type text/csv", field="body")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", field="body") from None
    if isinstance(data, dict) and isinstance(data.get("points"), list):
        data = data["points"]
    if not isinstance(data, list):
        raise InvalidInput("the body must be a JSON list of {id, lon, lat[, crs]} objects", field="body")
    _check_size(len(data), max_rows, setting)
    if not data:
        return iter([points_from_rows([], default_crs=crs)])
    return (
        points_from_rows(data[k : k + BATCH_PART_ROWS], default_crs=crs) for k in range(0, len(data), BATCH_PART_ROWS)
    )


def _csv_points(part: bytes, crs: str):
    columns = columns_from_csv(part)
    return points_from_columns(columns["id"], columns["lon"], columns["lat"], columns.get("crs"), default_crs=crs)


def _check_size(n: int, max_rows: int, setting: str) -> None:
    if n > max_rows:
        raise InvalidInput(
            f"at most {max_rows} rows per batch ({setting}), got {n}", field="body", max_rows=max_rows, setting=setting
        )

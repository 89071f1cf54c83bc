from contextlib import asynccontextmanager
from typing import Annotated

import orjson
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from geo_api.deps import Public, SessionDep
from geo_api.responses import CSV, media, problems
from ingest.points import columns_from_csv, points_from_columns, points_from_rows, to_wgs84_point
from layers.errors import InvalidInput, NotFound
from layers.locate import locate_plain, locate_point, locate_rows, locate_rows_csv, plain_csv_points



@asynccontextmanager
async def lifespan(app: FastAPI):
    """The data-version reader of the anonymous fast path (:mod:`geo_api.fastpath`):
    coalesced reads on a connection of its own, each started after the requests it
    answers arrived."""
    from tiles.pg import VersionReader
    from tiles.service import libpq_dsn

    reader = VersionReader(libpq_dsn(app.state.engine.url))
    app.state.locate_versions = reader
    try:
        yield
    finally:
        app.state.locate_versions = None
        reader.close()


router = APIRouter(prefix="/v1/locate", tags=["locate"], lifespan=lifespan)


@router.get("", summary="Which grid, community, street and district a point falls in (anonymous; no personal data)",
            responses=problems(404))
def locate(
    request: Request,
    session: SessionDep,
    caller: Public,
    lon: Annotated[float, Query(description="longitude or easting (x), in the CRS given")],
    lat: Annotated[float, Query(description="latitude or northing (y), in the CRS given")],
    crs: Annotated[str, Query(description="wgs84, gcj02, bd09, cgcs2000 or EPSG:nnnn")] = "wgs84",
):
    settings = request.app.state.settings.locate
    index = request.app.state.grid_index.get(session)
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
        raise NotFound(result["message"], field="lon", nearest_grid=result.get("nearest_grid"),
                       swapped=bool(result.get("swapped", False)), point=result["point"])
    return orjson.dumps(result)


@router.post(
    "/batch",
    summary="Locate many points at once: JSON list or CSV of id, lon, lat[, crs]; one result per row, same order",
    description="Send a JSON list of `{id, lon, lat[, crs]}` objects or CSV (`Content-Type: text/csv`) with a "
    "header naming id, lon, lat and optionally crs. The answer is JSON `{\"results\": [...]}`, each result shaped "
    "like a single locate plus its `id`; with `Accept: text/csv` it is CSV, one flat row per input row.",
    responses=media(CSV),
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "array", "items": {
            "type": "object", "required": ["id", "lon", "lat"],
            "properties": {"id": {}, "lon": {"type": "number"}, "lat": {"type": "number"}, "crs": {"type": "string"}}}}},
        "text/csv": {"schema": {"type": "string", "description": "a header naming id, lon, lat[, crs], then rows"}},
    }}},
)
async def locate_batch(
    request: Request,
    session: SessionDep,
    caller: Public,
    crs: Annotated[str, Query(description="CRS of rows that name none")] = "wgs84",
):
    settings = request.app.state.settings.locate
    content_type = request.headers.get("content-type", "")
    body = await request.body()
    want_csv = "text/csv" in request.headers.get("accept", "")

    def work():
        if content_type.startswith("text/csv") and crs == "wgs84":
            plain = plain_csv_points(body, settings.batch_max_rows)  # a clean body, parsed in bulk
            if plain is not None:
                index = request.app.state.grid_index.get(session)
                data = locate_plain(index, *plain, tolerance_m=settings.tolerance_m, edge_m=settings.edge_m,
                                    answer="csv" if want_csv else "json")
                if data is not None:
                    return data
        batch = _read_batch(content_type, body, crs, settings.batch_max_rows)
        index = request.app.state.grid_index.get(session)
        if want_csv:
            return locate_rows_csv(index, batch, tolerance_m=settings.tolerance_m, edge_m=settings.edge_m).encode()
        return orjson.dumps({"results": locate_rows(index, batch, tolerance_m=settings.tolerance_m, edge_m=settings.edge_m)})

    data = await run_in_threadpool(work)
    return Response(data, media_type="text/csv; charset=utf-8" if want_csv else "application/json")


def _read_batch(content_type: str, body: bytes, crs: str, max_rows: int):
    if not body:
        raise InvalidInput("the request body is empty: send a JSON list or a CSV with id,lon,lat", field="body")
    if content_type.startswith("text/csv"):
        columns = columns_from_csv(body)
        n = len(columns["id"])
        _check_size(n, max_rows)
        return points_from_columns(columns["id"], columns["lon"], columns["lat"], columns.get("crs"), default_crs=crs)
    if content_type.startswith("multipart/form-data"):
        raise InvalidInput("upload the CSV as the request body with Content-Type text/csv", field="body")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", field="body")
    if isinstance(data, dict) and isinstance(data.get("points"), list):
        data = data["points"]
    if not isinstance(data, list):
        raise InvalidInput("the body must be a JSON list of {id, lon, lat[, crs]} objects", field="body")
    _check_size(len(data), max_rows)
    return points_from_rows(data, default_crs=crs)


def _check_size(n: int, max_rows: int) -> None:
    if n > max_rows:
        raise InvalidInput(f"at most {max_rows} rows per batch, got {n}", field="body")

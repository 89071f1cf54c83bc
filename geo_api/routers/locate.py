from typing import Annotated

import numpy as np
import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from geo_api.deps import Public, SessionDep
from ingest.points import points_from_rows, rows_from_csv, to_wgs84_point
from layers.errors import InvalidInput, NotFound
from layers.locate import OUTSIDE, Describer, locate_rows

router = APIRouter(prefix="/v1/locate", tags=["locate"])


def _json(body) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")


@router.get("", summary="Which grid, community, street and district a point falls in (anonymous; no personal data)")
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
    located = index.locate(np.array([wlon]), np.array([wlat]), tolerance_m=settings.tolerance_m, edge_m=settings.edge_m)
    result = Describer(index).describe(located, 0, wlon, wlat, settings.tolerance_m)
    if located.match[0] == OUTSIDE:
        raise NotFound(result["message"], field="lon", nearest_grid=result.get("nearest_grid"),
                       swapped=bool(result.get("swapped", False)), point=result["point"])
    return _json(result)


@router.post(
    "/batch",
    summary="Locate many points at once: JSON list or CSV of id, lon, lat[, crs]; one result per row, same order",
)
async def locate_batch(
    request: Request,
    session: SessionDep,
    caller: Public,
    crs: Annotated[str, Query(description="CRS of rows that name none")] = "wgs84",
):
    settings = request.app.state.settings.locate
    rows = _read_rows(request.headers.get("content-type", ""), await request.body())
    if len(rows) > settings.batch_max_rows:
        raise InvalidInput(f"at most {settings.batch_max_rows} rows per batch, got {len(rows)}", field="body")

    def work():
        batch = points_from_rows(rows, default_crs=crs)
        index = request.app.state.grid_index.get(session)
        results = locate_rows(index, batch, tolerance_m=settings.tolerance_m, edge_m=settings.edge_m)
        return orjson.dumps({"results": results})

    return Response(await run_in_threadpool(work), media_type="application/json")


def _read_rows(content_type: str, body: bytes) -> list:
    if not body:
        raise InvalidInput("the request body is empty: send a JSON list or a CSV with id,lon,lat", field="body")
    if content_type.startswith("text/csv"):
        return rows_from_csv(body)
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
    return data

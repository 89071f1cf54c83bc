"""What the public report form (随手拍, ``/report``) needs beside the event report
itself (``POST /v1/events``, anonymous): photos kept by the service (``/v1/photos``,
layers.photos — decoded, stripped of their metadata, size-bounded) and the open reports
near a spot (``/v1/public/nearby``), shown as anyone sees them, so that a resident finds
the report already made before making it again."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from geo_api.deps import CachesDep, Public, SessionDep
from geo_api.responses import problems
from layers import events_open311 as o311
from layers import photos
from layers.errors import NotFound
from layers.points import to_wgs84_point

router = APIRouter(tags=["public reports"], responses=problems(422))


def _folder(request: Request):
    s = request.app.state.settings
    return s.photos.folder(s.database)


@router.post(
    "/v1/photos",
    status_code=201,
    summary="Keep a photo for a report (JPEG, PNG or WebP; re-encoded without its metadata); its URL",
    responses=problems(413, 415, 429),
    openapi_extra={
        "requestBody": {"required": True, "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}}
    },
)
async def upload_photo(request: Request, caller: Public) -> Response:
    data = await request.body()  # bounded by GRIDBRANCH_PHOTOS_MAX_BYTES before it is read (geo_api.asgi)
    s = request.app.state.settings.photos
    name = await run_in_threadpool(photos.store, _folder(request), data, max_pixels=s.max_pixels, max_side=s.max_side)
    url = str(request.url_for("photo", name=name))
    return Response(orjson.dumps({"name": name, "url": url}), status_code=201, media_type="application/json")


@router.get("/v1/photos/{name}", name="photo", summary="A kept photo", responses=problems(404))
def photo(request: Request, caller: Public, name: str) -> Response:
    found = photos.path(_folder(request), name)
    if found is None:
        raise NotFound(f"no photo {name}", field="name", detail_zh="没有这张照片")
    # named by its content: it never changes
    return FileResponse(
        found, media_type="image/jpeg", headers={"Cache-Control": "public, max-age=31536000, immutable"}
    )


@router.get(
    "/v1/public/nearby",
    summary="Open reports of the last days near a spot, as anyone sees them (possible duplicates)",
)
def nearby(
    session: SessionDep,
    caches: CachesDep,
    caller: Public,
    lon: Annotated[float, Query(description="longitude or easting (x), in the CRS given")],
    lat: Annotated[float, Query(description="latitude or northing (y), in the CRS given")],
    crs: Annotated[str, Query(max_length=32, description="wgs84, gcj02, bd09, cgcs2000 or EPSG:nnnn")] = "wgs84",
    radius_m: Annotated[float, Query(gt=0, le=1000)] = 300,
    # not "days": a date parameter by its name (tests/geo_api/test_hostile_input.py)
    max_age: Annotated[int, Query(ge=1, le=90, description="days: reports made at most this long ago")] = 30,
) -> Response:
    wlon, wlat, _ = to_wgs84_point(lon, lat, crs)
    items = o311.nearby(session, caches, wlon, wlat, radius_m=radius_m, days=max_age)
    return Response(orjson.dumps({"items": items}), media_type="application/json")

"""The MapLibre web map, served by the API from local files (no CDN, works offline)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from geo_api.deps import Public
from layers.errors import ConfigError
from tiles.cache import if_none_match

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
MAPLIBRE_DIST = HERE / "node_modules" / "maplibre-gl" / "dist"

router = APIRouter(tags=["web map"])


@router.get("/map", include_in_schema=False)
def map_page(caller: Public, request: Request) -> Response:
    """The page; a revalidation whose ``If-None-Match`` holds its ETag is a 304."""
    if not (MAPLIBRE_DIST / "maplibre-gl.mjs").exists():
        raise ConfigError("the web map's npm packages are not installed: run `make setup` (npm ci in web_map/)")
    page = STATIC / "index.html"
    response = FileResponse(page, media_type="text/html; charset=utf-8", stat_result=os.stat(page))
    if if_none_match(request.headers.get("if-none-match"), response.headers["etag"]):
        kept = {k: v for k, v in response.headers.items() if k in ("etag", "last-modified")}
        return Response(status_code=304, headers=kept)
    return response


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static/map", StaticFiles(directory=STATIC), name="map-static")
    app.mount("/static/vendor/maplibre-gl", StaticFiles(directory=MAPLIBRE_DIST, check_dir=False), name="maplibre")

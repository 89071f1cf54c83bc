"""The MapLibre web map, served by the API from local files (no CDN, works offline)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from geo_api.deps import Public
from layers.errors import ConfigError

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
MAPLIBRE_DIST = HERE / "node_modules" / "maplibre-gl" / "dist"

router = APIRouter(tags=["web map"])


@router.get("/map", include_in_schema=False)
def map_page(caller: Public) -> FileResponse:
    if not (MAPLIBRE_DIST / "maplibre-gl.mjs").exists():
        raise ConfigError("the web map's npm packages are not installed: run `make setup` (npm ci in web_map/)")
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static/map", StaticFiles(directory=STATIC), name="map-static")
    app.mount("/static/vendor/maplibre-gl", StaticFiles(directory=MAPLIBRE_DIST, check_dir=False), name="maplibre")

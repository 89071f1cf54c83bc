"""The pages the API serves from the web map's files: the MapLibre map at ``/map`` and
the API's Swagger UI at ``/docs``, both from local npm-installed files (no CDN, works
offline). The files themselves, and where they are, belong to :mod:`web_map`."""

from __future__ import annotations

import os

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from geo_api.deps import Public
from layers.errors import ConfigError
from tiles.cache import if_none_match
from web_map import MAPLIBRE_DIST, NOT_INSTALLED, STATIC, SWAGGER_UI_DIST

router = APIRouter(tags=["web map"])


@router.get("/map", include_in_schema=False)
def map_page(caller: Public, request: Request) -> Response:
    """The page; a revalidation whose ``If-None-Match`` holds its ETag is a 304."""
    return _page(request, "index.html")


@router.get("/report", include_in_schema=False)
def report_page(caller: Public, request: Request) -> Response:
    """The public report form (随手拍)."""
    return _page(request, "report.html")


@router.get("/report/{number}", include_in_schema=False)
def report_track_page(caller: Public, request: Request, number: int) -> Response:
    """A report's public state, by its number: the same page (report.js reads the path),
    its base one level up so that its relative URLs resolve as from ``/report``."""
    if not (MAPLIBRE_DIST / "maplibre-gl.mjs").exists():
        raise ConfigError(NOT_INSTALLED)
    page = (STATIC / "report.html").read_text(encoding="utf-8")
    return HTMLResponse(page.replace('<base href="./">', '<base href="../">', 1))


def _page(request: Request, name: str) -> Response:
    if not (MAPLIBRE_DIST / "maplibre-gl.mjs").exists():
        raise ConfigError(NOT_INSTALLED)
    page = STATIC / name
    response = FileResponse(page, media_type="text/html; charset=utf-8", stat_result=os.stat(page))
    if if_none_match(request.headers.get("if-none-match"), response.headers["etag"]):
        kept = {k: v for k, v in response.headers.items() if k in ("etag", "last-modified")}
        return Response(status_code=304, headers=kept)
    return response


@router.get("/docs", include_in_schema=False)
def docs_page(caller: Public, request: Request) -> HTMLResponse:
    """Swagger UI on the service's own copy of ``swagger-ui-dist`` (the app is built with
    ``docs_url=None``: FastAPI's own page loads it from a CDN). URLs are relative to
    ``/docs``, so the page also works behind a proxy publishing the service at a
    sub-path; the online validator badge is off (it would send the schema away)."""
    if not (SWAGGER_UI_DIST / "swagger-ui-bundle.js").exists():
        raise ConfigError(NOT_INSTALLED)
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url.lstrip("/"),
        title=f"{request.app.title} · API",
        swagger_js_url="static/vendor/swagger-ui/swagger-ui-bundle.js",
        swagger_css_url="static/vendor/swagger-ui/swagger-ui.css",
        swagger_favicon_url="static/vendor/swagger-ui/favicon-32x32.png",
        swagger_ui_parameters={"validatorUrl": None},
    )


def mount(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/static/map", StaticFiles(directory=STATIC), name="map-static")
    app.mount("/static/vendor/maplibre-gl", StaticFiles(directory=MAPLIBRE_DIST, check_dir=False), name="maplibre")
    app.mount("/static/vendor/swagger-ui", StaticFiles(directory=SWAGGER_UI_DIST, check_dir=False), name="swagger-ui")

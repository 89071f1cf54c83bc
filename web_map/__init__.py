"""The MapLibre web map (``static/``: the page, its modules and styles) and the npm
packages it and the API's Swagger UI are served from (``node_modules/``, installed from
the committed lock file; no CDN, works offline). The routes serving them are
``geo_api.routers.pages``; this package imports nothing of the service's."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
MAPLIBRE_DIST = HERE / "node_modules" / "maplibre-gl" / "dist"
SWAGGER_UI_DIST = HERE / "node_modules" / "swagger-ui-dist"
NOT_INSTALLED = "the web map's npm packages are not installed: run `make setup` (npm ci in web_map/)"

"""Vector tiles (MVT), their TileJSON and a MapLibre style. The work is in :mod:`tiles`."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import JSONResponse, Response

from geo_api.audit import Audited, tile_members
from geo_api.deps import Public
from geo_api.responses import MVT, problems
from tiles.layers import LAYERS
from tiles.service import TileService, accepts_gzip, check_tile, entitled, layers_at_zoom, parse_layers
from tiles.style import style as build_style
from tiles.tilejson import VARY, public_base_url
from tiles.tilejson import tilejson as build_tilejson


@asynccontextmanager
async def lifespan(app: FastAPI):
    """The tile service lives as long as the app (after the app's engine exists)."""
    service = TileService(app.state.settings, app.state.engine.url, clock=app.state.clock, caches=app.state.caches)
    app.state.tiles = service
    try:
        yield
    finally:
        service.close()


router = APIRouter(prefix="/tiles", tags=["tiles"], lifespan=lifespan, responses=problems(404))

LAYERS_DOC = f"a layer or comma-separated layers: {', '.join(LAYERS)}"


def _base(request: Request) -> str:
    return public_base_url(request.headers, request.url.scheme, request.url.netloc, request.scope.get("root_path", ""))


def _json(request: Request, body: dict, *, private: bool) -> JSONResponse:
    settings = request.app.state.tiles.settings
    headers = {"Cache-Control": settings.cache_control_private if private else settings.cache_control, "Vary": VARY}
    if not private:
        headers["Access-Control-Allow-Origin"] = "*"
    return JSONResponse(body, headers=headers)


@router.get("/style.json", summary="MapLibre style of every layer (offline: no glyphs, sprites or external URLs)")
async def style(request: Request, caller: Public) -> JSONResponse:
    service: TileService = request.app.state.tiles
    members = entitled(caller.role, caller.area_code)
    return _json(request, build_style(_base(request), await service.extent(), members=members), private=members)


@router.get("/{layers}.json", summary="TileJSON 3.0.0 of a layer or of a composite of layers")
async def tilejson(
    request: Request, caller: Public, layers: Annotated[str, Path(description=LAYERS_DOC, max_length=200)]
) -> JSONResponse:
    service: TileService = request.app.state.tiles
    chosen = parse_layers(layers, role=caller.role, area_code=caller.area_code)
    private = any(layer.personal for layer in chosen)
    return _json(request, build_tilejson(chosen, _base(request), await service.extent()), private=private)


@router.get(
    "/{layers}/{z}/{x}/{y}.mvt",
    summary="A vector tile (MVT) of a layer or of several layers in one tile",
    response_class=Response,
    responses={
        200: {"content": {MVT: {}}},
        204: {"description": "empty tile"},
        304: {"description": "not modified (If-None-Match)"},
    },
)
async def tile(
    request: Request,
    caller: Public,
    layers: Annotated[str, Path(description=LAYERS_DOC, max_length=200)],
    z: Annotated[int, Path(description="zoom")],
    x: Annotated[int, Path(description="column, from the west")],
    y: Annotated[int, Path(description="row, from the north")],
    audit: Audited,
) -> Response:
    service: TileService = request.app.state.tiles
    address = check_tile(z, x, y)
    chosen = layers_at_zoom(parse_layers(layers, role=caller.role, area_code=caller.area_code), z)
    scope = caller.area_code if any(layer.personal for layer in chosen) else None
    reply = await service.tile(
        chosen,
        address,
        scope=scope,
        gzip=accepts_gzip(request.headers.get("accept-encoding")),
        if_none_match_header=request.headers.get("if-none-match"),
    )
    if scope is not None and reply.status == 200:  # residences sent (not on 204 or 304)
        names = [layer.name for layer in chosen]
        limit = service.settings.feature_limits.get("members", service.settings.feature_limit)
        await audit.record_async(
            ("residence",),
            detail={"tile": f"{z}/{x}/{y}", "layers": names},
            resolve=tile_members(service.caches, address, limit, scope, reply.headers.get("ETag")),
        )
    return Response(reply.body, status_code=reply.status, headers=reply.headers)

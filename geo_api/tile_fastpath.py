"""The anonymous fast path: an ASGI middleware answering anonymous requests for tiles of
public layers without going through FastAPI's routing and dependency machinery.

Why: the tile route declares its access (``caller: Public``) like every route, and
resolving that chain (session, token, caller, access — each a threadpool hop) plus
FastAPI's routing costs about a millisecond per request on a small machine, several
times a cached tile's own cost. Anonymous callers of public layers are exactly what
``Public`` admits without a look at the database, and their tiles do not depend on who
asks, so this middleware serves them directly — through the same
:meth:`tiles.service.TileService.tile` call as the route, hence the same bytes, ETags,
304s and headers. ``GRIDBRANCH_TILES_FAST_PATH=false`` turns it off.

It only takes a request that is a GET of ``/tiles/{layers}/{z}/{x}/{y}.mvt`` with no
``Authorization`` header, whose layers are all known and public, whose zoom is in range
and whose x and y are on the zoom's grid. Everything else — signed-in callers, the
``members`` layer, bad input (so errors keep their one format), TileJSON, styles, and
any failure here — goes on to the app unchanged.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from starlette.types import ASGIApp, Receive, Scope, Send

from geo_api.asgi import route_path
from layers.errors import GridbranchError
from tiles.service import TileReply, accepts_gzip, check_tile, layers_at_zoom, parse_layers

log = logging.getLogger("gridbranch.tiles")

@lru_cache(maxsize=512)
def _public_layers(raw: str, z: int):
    """The layers an anonymous caller gets for ``raw`` at zoom ``z`` (errors not kept)."""
    return layers_at_zoom(parse_layers(raw, role=None, area_code=None), z)


@lru_cache(maxsize=64)
def _gzip_ok(header: str | None) -> bool:
    return accepts_gzip(header)


async def send_reply(reply: TileReply, send: Send) -> None:
    """The reply as ASGI messages — what ``starlette.responses.Response`` sends (lower-case
    names; a Content-Length except on 204 and 304), without building a Response."""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
    if reply.status not in (204, 304):
        headers.append((b"content-length", str(len(reply.body)).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


_TILE_PATH = re.compile(r"^/tiles/([a-z0-9_,]{1,200})/([0-9]{1,2})/([0-9]{1,10})/([0-9]{1,10})\.mvt$")


class TileFastPath:
    """ASGI middleware; put in front of the whole app by ``geo_api.app.GridbranchAPI``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope, "GET")
        if path is None:
            await self.app(scope, receive, send)
            return
        match = _TILE_PATH.match(path)
        state = getattr(scope.get("app"), "state", None)
        service = getattr(state, "tiles", None) if state is not None else None
        if match is None or service is None or not service.settings.fast_path:
            await self.app(scope, receive, send)
            return
        accept = if_none_match = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                await self.app(scope, receive, send)
                return
            if name == b"accept-encoding":
                accept = value.decode("latin-1")
            elif name == b"if-none-match":
                if_none_match = value.decode("latin-1")
        raw_layers, z, x, y = match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4))
        try:
            address = check_tile(z, x, y)
            layers = _public_layers(raw_layers, z)
            reply = await service.tile(layers, address, scope=None, gzip=_gzip_ok(accept),
                                       if_none_match_header=if_none_match)
        except GridbranchError:
            await self.app(scope, receive, send)  # the route answers with the problem details
            return
        except Exception:  # noqa: BLE001 - the route answers (and logs) whatever went wrong
            log.warning("tile fast path failed on %s; handing over to the route", path, exc_info=True)
            await self.app(scope, receive, send)
            return
        await send_reply(reply, send)

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
any failure here — goes on to the app unchanged. The prelude — the method, the path, no
``Authorization`` — is the one every fast path shares (:class:`geo_api.asgi.FastPaths`).
"""

from __future__ import annotations

import re
from functools import lru_cache

from geo_api.asgi import Asked, FastPath, Reply
from tiles.service import TileReply, accepts_gzip, check_tile, layers_at_zoom, parse_layers


@lru_cache(maxsize=512)
def _public_layers(raw: str, z: int):
    """The layers an anonymous caller gets for ``raw`` at zoom ``z`` (errors not kept)."""
    return layers_at_zoom(parse_layers(raw, role=None, area_code=None), z)


@lru_cache(maxsize=64)
def _gzip_ok(header: str | None) -> bool:
    return accepts_gzip(header)


def as_reply(reply: TileReply) -> Reply:
    """A tile reply as the ASGI messages ``starlette.responses.Response`` would send."""
    return Reply(
        reply.status, reply.body, [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
    )


_TILE_PATH = re.compile(r"^/tiles/([a-z0-9_,]{1,200})/([0-9]{1,2})/([0-9]{1,10})/([0-9]{1,10})\.mvt$")


class TileFastPath(FastPath):
    """Anonymous ``GET /tiles/{layers}/{z}/{x}/{y}.mvt`` of public layers."""

    method = "GET"
    headers = frozenset({b"accept-encoding", b"if-none-match"})
    route = "/tiles/{layers}/{z}/{x}/{y}.mvt"

    def match(self, path: str):
        return _TILE_PATH.match(path)

    def enabled(self, app) -> bool:
        service = getattr(app.state, "tiles", None)
        return service is not None and service.settings.fast_path

    async def answer(self, app, match, asked: Asked) -> Reply:
        accept = asked.headers.get(b"accept-encoding")
        if_none_match = asked.headers.get(b"if-none-match")
        raw_layers, z, x, y = match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4))
        address = check_tile(z, x, y)  # GridbranchError: the route answers with the problem details
        layers = _public_layers(raw_layers, z)
        reply = await app.state.tiles.tile(
            layers,
            address,
            scope=None,
            gzip=_gzip_ok(accept.decode("latin-1") if accept is not None else None),
            if_none_match_header=if_none_match.decode("latin-1") if if_none_match is not None else None,
        )
        return as_reply(reply)

"""The anonymous locate fast path: an ASGI middleware answering anonymous
``GET /v1/locate`` ahead of FastAPI's routing and dependencies (the pattern of
:mod:`geo_api.tile_fastpath`).

Why: the routed endpoint resolves its session and caller dependencies, runs in the
thread pool and reads the data versions through its session — about a millisecond of
machinery per request on a small machine against tens of microseconds for locating one
point. Anonymous callers are exactly what ``Public`` admits without a look at the
database, and the answer does not depend on who asks.

Freshness is the route's: the data versions are read (``layers.pg.VersionReader``: reads
shared by the requests waiting at the same time, each request answered by a read that
*started after it arrived*), so a grid edit committed before a request is always in its
answer; a new version builds a new index (in a worker thread) before answering.

It takes only a GET of ``/v1/locate`` without an ``Authorization`` header whose query is
``lon`` and ``lat`` as plain decimal numbers and at most a ``crs``, each once, and
answers found points through the same :func:`geo_api.routers.locate.point_answer` as the
route — the same bytes and headers. Everything else — signed-in callers, unusual or bad
input, points outside every grid (404), a failure here — goes on to the app unchanged,
so errors keep their one format. Where a test overrides the app's session (uncommitted
test data), versions are read and indexes built through that session instead.
The fast path is on unless ``app.state.locate_fast_path`` is False or the locate
settings carry ``fast_path = False``.
"""

from __future__ import annotations

import logging
import math
import re
from urllib.parse import unquote_plus

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from geo_api.asgi import route_path
from geo_api.deps import get_session
from geo_api.routers.locate import point_answer
from layers.points import to_wgs84_point
from layers.errors import GridbranchError

log = logging.getLogger("gridbranch.locate")

_NUMBER = re.compile(rb"-?[0-9]{1,3}(?:\.[0-9]{1,20})?")
_KEYS = frozenset({b"lon", b"lat", b"crs"})
_WGS84 = frozenset({"wgs84", "WGS84"})
_JSON_HEADERS = b"application/json"


def fast_path_enabled(app) -> bool:
    """On unless ``app.state.locate_fast_path`` is False (tests compare with the route)
    or the locate settings say ``fast_path = False``; the setting is read once."""
    state = app.state
    enabled = getattr(state, "locate_fast_path", None)
    if enabled is None:
        enabled = state.locate_fast_path = bool(getattr(state.settings.locate, "fast_path", True))
    return enabled is not False


def plain_query(query: bytes) -> tuple[float, float, str | None] | None:
    """``lon``, ``lat`` (plain decimals) and ``crs`` (or None) of a query the fast path
    takes; None for anything else (the route then reads the query its own way)."""
    if not query or len(query) > 200:
        return None
    values: dict[bytes, bytes] = {}
    for pair in query.split(b"&"):
        key, eq, value = pair.partition(b"=")
        if not eq or key not in _KEYS or key in values:
            return None
        values[key] = value
    lon, lat = values.get(b"lon"), values.get(b"lat")
    if lon is None or lat is None or not _NUMBER.fullmatch(lon) or not _NUMBER.fullmatch(lat):
        return None
    crs = values.get(b"crs")
    if crs is None:
        return float(lon), float(lat), None
    if not crs:
        return None
    try:
        text = unquote_plus(crs.decode("ascii"), errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    return float(lon), float(lat), text


async def grid_index_now(app):
    """The grid index at the data versions read now (see the module docstring)."""
    cache = app.state.grid_index
    override = app.dependency_overrides.get(get_session) if app.dependency_overrides else None
    if override is not None:  # a test's session: its own (uncommitted) view
        session = override()
        return await anyio.to_thread.run_sync(cache.get, session)
    versions = await app.state.locate_versions.read()
    version = (versions.get("grids", 0), versions.get("areas", 0))
    index = cache.at(version)
    if index is None:
        index = await anyio.to_thread.run_sync(cache.build_at, version, app.state.sessionmaker)
    return index


class LocateFastPath:
    """ASGI middleware; put in front of the whole app by ``geo_api.app.GridbranchAPI``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = route_path(scope, "GET")
        if path is None:
            await self.app(scope, receive, send)
            return
        app = scope.get("app")
        if (path != "/v1/locate" or app is None or getattr(app.state, "locate_versions", None) is None
                or not fast_path_enabled(app)):
            await self.app(scope, receive, send)
            return
        for name, _ in scope["headers"]:
            if name == b"authorization":
                await self.app(scope, receive, send)
                return
        query = plain_query(scope.get("query_string", b""))
        if query is None:
            await self.app(scope, receive, send)
            return
        try:
            body = await self.answer(app, *query)
        except GridbranchError:
            body = None  # bad input or outside every grid: the route answers with the problem details
        except Exception:  # noqa: BLE001 - the route answers (and logs) whatever went wrong
            log.warning("locate fast path failed; handing over to the route", exc_info=True)
            body = None
        if body is None:
            await self.app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON_HEADERS)]})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def answer(app, lon: float, lat: float, crs: str | None) -> bytes | None:
        if crs is None or crs in _WGS84:
            if not (math.isfinite(lon) and math.isfinite(lat) and abs(lon) <= 180 and abs(lat) <= 90):
                return None
            wlon, wlat = lon, lat
        else:
            wlon, wlat, _ = to_wgs84_point(lon, lat, crs)  # InvalidInput: the route answers
        index = await grid_index_now(app)
        return point_answer(index, wlon, wlat, app.state.settings.locate)

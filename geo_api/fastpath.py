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
so errors keep their one format. Where a test binds the app to one session
(:func:`geo_api.deps.bound_session`: uncommitted test data), versions are read and
indexes built through that session instead. The prelude — the method, the path, no
``Authorization`` — is the one every fast path shares (:class:`geo_api.asgi.FastPaths`).
The fast path is on unless ``app.state.locate_fast_path`` is False or the locate
settings carry ``fast_path = False``.
"""

from __future__ import annotations

import math
import re
from urllib.parse import unquote_plus

import anyio.to_thread

from geo_api.asgi import Asked, FastPath, Reply
from geo_api.deps import bound_session, caches_of
from geo_api.routers.locate import point_answer
from layers.points import to_wgs84_point

_NUMBER = re.compile(rb"-?[0-9]{1,3}(?:\.[0-9]{1,20})?")
_KEYS = frozenset({b"lon", b"lat", b"crs"})
_WGS84 = frozenset({"wgs84", "WGS84"})
_JSON = b"application/json"


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
    cache = caches_of(app).grid_index
    session = bound_session(app)
    if session is not None:  # a test's session: its own (uncommitted) view
        return await anyio.to_thread.run_sync(cache.get, session)
    versions = await app.state.locate_versions.read()
    version = (versions.get("grids", 0), versions.get("areas", 0))
    index = cache.at(version)
    if index is None:
        index = await anyio.to_thread.run_sync(cache.build_at, version, app.state.sessionmaker)
    return index


class LocateFastPath(FastPath):
    """Anonymous ``GET /v1/locate`` of a plain query (see the module docstring)."""

    method = "GET"

    def match(self, path: str):
        return True if path == "/v1/locate" else None

    def enabled(self, app) -> bool:
        return getattr(app.state, "locate_versions", None) is not None and fast_path_enabled(app)

    async def answer(self, app, match, asked: Asked) -> Reply | None:
        query = plain_query(asked.query)
        if query is None:
            return None
        body = await LocateFastPath.locate(app, *query)  # GridbranchError: the route answers
        return None if body is None else Reply(200, body, content_type=_JSON)

    @staticmethod
    async def locate(app, lon: float, lat: float, crs: str | None) -> bytes | None:
        if crs is None or crs in _WGS84:
            if not (math.isfinite(lon) and math.isfinite(lat) and abs(lon) <= 180 and abs(lat) <= 90):
                return None
            wlon, wlat = lon, lat
        else:
            wlon, wlat, _ = to_wgs84_point(lon, lat, crs)  # InvalidInput: the route answers
        index = await grid_index_now(app)
        return point_answer(index, wlon, wlat, app.state.settings.locate)

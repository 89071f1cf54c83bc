"""The app factory. Nothing connects or reads the environment at import time."""

from __future__ import annotations

import gc
import logging
import os
import secrets
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.orm import sessionmaker
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from geo_api import errors
from geo_api.asgi import BodyLimit, FastPaths, RejectNul, as_get
from geo_api.fastpath import LocateFastPath
from geo_api.headers import METHODS, ResponseHeaders, SecurityHeaders
from geo_api.imports import Uploads
from geo_api.ratelimit import Limiter, RateLimit
from geo_api.responses import EVERY_ROUTE
from geo_api.routers import (
    accounts,
    areas,
    audit,
    auth,
    branches,
    coverage,
    events,
    grids,
    health,
    imports,
    locate,
    ogc,
    open311,
    pages,
    places,
    public_reports,
    registrations,
    reports,
    tiles,
)
from geo_api.settings import Settings
from geo_api.telemetry import Telemetry, process_gone
from geo_api.tile_fastpath import TileFastPath
from layers import db, migrate
from layers.caches import Caches
from layers.clock import SYSTEM, Clock, clock_of
from layers.clock import bind as bind_clock
from layers.errors import ConfigError

log = logging.getLogger("gridbranch")


def demo_secret_path(settings: Settings) -> Path:
    """Where the demo keeps the signing secret it generated: beside the private cluster's
    data directory (``.gridbranch/auth_secret`` by default), private to its owner."""
    return settings.database.db_dir.parent / "auth_secret"


def _kept_secret(path: Path) -> str:
    """The secret kept in ``path`` (mode 0600), generated and written first if there is
    none. The file appears whole or not at all (written aside, then linked into place),
    so worker processes starting together all read the one that won."""
    try:
        secret = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".auth_secret.", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_urlsafe(48) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process was first: use its secret
        finally:
            os.unlink(tmp)
        secret = path.read_text(encoding="ascii").strip()
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)  # a secret others could read is no secret
        log.warning("%s was readable by others; its mode is now 0600", path)
    if len(secret) < 32:
        raise ConfigError(
            f"the demo's signing secret in {path} is shorter than 32 characters; delete the file "
            "(a new one is generated) or set GRIDBRANCH_AUTH_SECRET"
        )
    return secret


def _auth_secret(settings: Settings) -> str:
    """The JWT signing secret: GRIDBRANCH_AUTH_SECRET; in the demo without it, the one
    kept in :func:`demo_secret_path` (so that sessions outlive a restart); otherwise
    none, and the service refuses to start."""
    if settings.auth.auth_secret is not None:
        secret = settings.auth.auth_secret.get_secret_value()
        if len(secret) < 32:
            raise ConfigError("GRIDBRANCH_AUTH_SECRET must be at least 32 characters")
        return secret
    if settings.service.demo:
        return _kept_secret(demo_secret_path(settings))
    raise ConfigError("GRIDBRANCH_AUTH_SECRET is not set; refusing a default secret outside the demo")


def settle_heap() -> None:
    """Collect once, then move every object alive now — the imported modules, the app and
    its routes and models, the engine — to the garbage collector's permanent generation
    (``gc.freeze``). A full collection otherwise walks all of them (~150,000 objects,
    ~100 ms on the 2-core machine) while the event loop waits, and with 50 clients in
    flight that pause becomes the p99 of every endpoint. Reference counting still frees
    them; only cyclic garbage among them would stay (the app lives as long as the
    process)."""
    gc.collect()
    gc.freeze()


class GridbranchAPI(FastAPI):
    """FastAPI with the fast paths in front of its own layers, behind the app's middleware.

    The three hottest anonymous requests — single locates (``geo_api/fastpath.py``), public
    tiles (``geo_api/tile_fastpath.py``) and public event reports (``routers/events.py``) — are
    answered ahead of FastAPI's own layers (telemetry hooks, error middleware, routing,
    dependencies), which cost more per request than the answer itself, by one prelude
    (:class:`geo_api.asgi.FastPaths`). Each fast path takes only requests it can answer
    byte for byte as the route would and hands everything else, bad input included, to
    the routes, so errors keep their one format. Their settings
    (``GRIDBRANCH_LOCATE_FAST_PATH``, ``_TILES_FAST_PATH``, ``_EVENTS_FAST_PATH``) turn them off.

    The stack, from the server in::

        HEAD as GET (geo_api.asgi.as_get)
        ServerErrorMiddleware (a failure in a middleware: the logged 500)
        the app's middleware, added with add_middleware: the proxy headers, the security
            headers, CORS, the rate limits (create_app), and whatever comes
        BodyLimit, NUL in the request (geo_api.asgi)
        FastPaths
        ResponseHeaders (OPTIONS, Allow on a 405, no-store for signed-in answers)
        FastAPI's own stack and the routes

    so that every middleware added to the app applies to the fast paths' requests and
    answers as to the routes' (tests/geo_api/test_middleware.py adds one and checks)."""

    def build_middleware_stack(self) -> ASGIApp:
        added, self.user_middleware = self.user_middleware, []
        try:
            routes = super().build_middleware_stack()  # FastAPI's own layers around the router
        finally:
            self.user_middleware = added
        app: ASGIApp = BodyLimit(RejectNul(FastPaths(ResponseHeaders(routes, self.router), FAST_PATHS)))
        for cls, args, kwargs in reversed(added):
            app = cls(app, *args, **kwargs)
        return ServerErrorMiddleware(app, handler=self.exception_handlers.get(Exception), debug=self.debug)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope, send = as_get(scope, send)
        await super().__call__(scope, receive, send)


#: The fast paths, tried in this order by :class:`geo_api.asgi.FastPaths`.
FAST_PATHS = (TileFastPath(), LocateFastPath(), events.EventReportFastPath())


def add_middleware(app: FastAPI, settings: Settings, clock: Clock) -> None:
    """The app's own middleware, outermost last: the rate limits of anonymous writes,
    CORS for the configured origins (Starlette's, only when there are any), the security
    headers, the client's address and scheme from a trusted proxy (uvicorn's), and the
    metrics, request ids and access log (geo_api.telemetry)."""
    if settings.rate_limit.enabled:
        app.add_middleware(RateLimit, limiter=Limiter.from_settings(settings.rate_limit, clock))
    if settings.security.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.security.cors_origins),
            allow_methods=list(METHODS),
            allow_headers=list(CORS_REQUEST_HEADERS),
            expose_headers=list(CORS_RESPONSE_HEADERS),
            max_age=600,
        )
    app.add_middleware(SecurityHeaders, settings=settings.security)
    if settings.security.trusted_proxies:
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.security.trusted_proxies))
    # outermost: the connection's own address (is it a trusted proxy's request id?), and all the time
    app.add_middleware(Telemetry, settings=settings, clock=clock)


#: What a page of another origin may send and read (CORS).
CORS_REQUEST_HEADERS = ("Authorization", "Content-Type", "Idempotency-Key", "If-None-Match", "Accept-Encoding")
CORS_RESPONSE_HEADERS = ("ETag", "Retry-After", "X-Tile-Truncated", "Idempotent-Replayed", "Content-Disposition")


def create_app(settings: Settings, *, engine=None, clock: Clock | None = None) -> FastAPI:
    """Build the service. ``engine`` may be given (tests; ``gridbranch serve``, which has
    migrated it already) and is then used as it is; otherwise the lifespan creates
    one from ``settings.database`` (starting the private cluster when no URL is set)
    and applies the migrations.

    ``clock`` is the one clock the service reads the present from (:mod:`layers.clock`);
    it is bound to the engine, so that the database sees it too. Without one the app
    keeps the clock already bound to a given engine, else the wall clock."""
    auth_secret = _auth_secret(settings)
    if clock is None:
        clock = clock_of(engine) if engine is not None else SYSTEM
    elif engine is not None:
        bind_clock(engine, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        own = engine is None
        eng = engine
        if own:
            url = db.database_url(settings.database)
            eng = db.make_engine(url, settings.database.pool_size)
            if clock is not SYSTEM:
                bind_clock(eng, clock)
            migrate.upgrade(eng)
        app.state.engine = eng
        app.state.sessionmaker = sessionmaker(bind=eng, expire_on_commit=False)
        if settings.service.gc_freeze:
            settle_heap()
        try:
            yield
        finally:
            app.state.uploads.shutdown()
            writer = getattr(app.state, "audit_writer", None)
            if writer is not None:  # the rows still queued are written before the engine goes
                writer.close()
                app.state.audit_writer = None
            if own:
                eng.dispose()
            process_gone()

    app = GridbranchAPI(
        title="gridbranch",
        summary="网格党支部空间服务 — grids, branches, member registration, coverage and events on PostGIS",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's own /docs and /redoc load their scripts from a CDN: the web map serves
        # Swagger UI from its npm packages instead (geo_api.routers.pages.docs_page); no ReDoc
        docs_url=None,
        redoc_url=None,
        responses=EVERY_ROUTE,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.auth_secret = auth_secret
    # every cache of values computed from the database: the app's own (geo_api.deps.CachesDep)
    app.state.caches = Caches(public_grid_worker=settings.audit.public_grid_worker)
    # the name the event report writers know it by (geo_api/routers/events.py)
    app.state.grid_index = app.state.caches.grid_index
    app.state.uploads = Uploads(
        settings.imports.folder(settings.database),
        settings.imports.max_bytes,
        stray_after_s=settings.imports.ttl_minutes * 60,
    )
    errors.install(app)
    add_middleware(app, settings, clock)
    for module in (
        health,
        auth,
        accounts,
        areas,
        grids,
        places,
        locate,
        registrations,
        branches,
        coverage,
        events,
        open311,
        imports,
        tiles,
        audit,
        reports,
        ogc,
        public_reports,
    ):
        app.include_router(module.router)
    app.include_router(branches.log_router)
    app.include_router(accounts.codes_router)
    pages.mount(app)  # /map and /docs, with their static files
    return app

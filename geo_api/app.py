"""The app factory. Nothing connects or reads the environment at import time."""

from __future__ import annotations

import logging
import secrets
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.orm import sessionmaker

from geo_api import errors
from geo_api.fastpath import LocateFastPath
from geo_api.routers import areas, auth, branches, coverage, events, grids, health, locate, open311, registrations, tiles
from geo_api.settings import Settings
from layers import db, migrate
from layers.errors import ConfigError
from layers.locate import GridIndexCache
from tiles.fastpath import TileFastPath

log = logging.getLogger("gridbranch")


def _auth_secret(settings: Settings) -> str:
    if settings.auth.auth_secret is not None:
        secret = settings.auth.auth_secret.get_secret_value()
        if len(secret) < 32:
            raise ConfigError("GRIDBRANCH_AUTH_SECRET must be at least 32 characters")
        return secret
    if settings.service.demo:
        return secrets.token_urlsafe(48)
    raise ConfigError("GRIDBRANCH_AUTH_SECRET is not set; refusing a default secret outside the demo")


def create_app(settings: Settings, *, engine=None) -> FastAPI:
    """Build the service. ``engine`` may be given (tests); otherwise the lifespan creates
    one from ``settings.database`` (starting the private cluster when no URL is set)
    and applies the migrations."""
    auth_secret = _auth_secret(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        own = engine is None
        eng = engine
        if own:
            url = db.database_url(settings.database)
            eng = db.make_engine(url, settings.database.pool_size)
            migrate.upgrade(eng)
        app.state.engine = eng
        app.state.sessionmaker = sessionmaker(bind=eng, expire_on_commit=False)
        try:
            yield
        finally:
            if own:
                eng.dispose()

    app = FastAPI(
        title="gridbranch",
        summary="网格党支部空间服务 — grids, branches, member registration, coverage and events on PostGIS",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.auth_secret = auth_secret
    app.state.grid_index = GridIndexCache()
    errors.install(app)
    for module in (health, auth, areas, grids, locate, registrations, branches, coverage, events, open311, tiles):
        app.include_router(module.router)
    app.add_middleware(TileFastPath)  # anonymous public tiles ahead of routing (tiles/fastpath.py)
    app.add_middleware(events.EventReportFastPath)  # anonymous reports ahead of routing (routers/events.py)
    app.add_middleware(LocateFastPath)  # anonymous single locates ahead of routing (geo_api/fastpath.py)

    from web_map import mount as mount_web_map

    mount_web_map(app)
    return app

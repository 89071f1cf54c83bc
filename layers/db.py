"""Engines and the database URL: the given ``GRIDBRANCH_DATABASE_URL`` or the private cluster."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from layers import cluster as pgcluster

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class DatabaseSettings(BaseSettings):
    """Where PostGIS is. ``url`` set: use it and start nothing; unset: the private cluster.
    (In the core: the CLI, the service, the importers and the tests all reach the
    database through it; ``geo_api.settings.Settings`` holds one.)"""

    model_config = SettingsConfigDict(env_prefix="GRIDBRANCH_", extra="ignore")

    database_url: str | None = None
    db_dir: Path = PROJECT_ROOT / ".gridbranch" / "pg"
    db_port: int = Field(55432, ge=1024, le=65535)
    db_name: str = "gridbranch"
    pool_size: int = Field(10, ge=1, le=200)


def private_cluster(db: DatabaseSettings) -> pgcluster.Cluster:
    return pgcluster.Cluster(root=db.db_dir, port=db.db_port)


def database_url(db: DatabaseSettings, *, start: bool = True) -> str:
    """The URL to use. With no ``database_url`` set, starts the private cluster (if
    ``start``) and creates the database in it."""
    if db.database_url:
        url = db.database_url
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg2://" + url.split("://", 1)[1]
        return url
    c = private_cluster(db)
    if start:
        pgcluster.start(c)
    return pgcluster.ensure_database(c, db.db_name)


def connections_per_worker(pool_size: int) -> int:
    """The most database connections one serving process opens with ``GRIDBRANCH_POOL_SIZE``
    = ``pool_size``: the API's pool (``pool_size``, and as many again in bursts), the tile
    renderer's (``pool_size - 1``), the tile and locate data-version readers (one each) and
    the derived tile records' build (one, while it runs)."""
    return 2 * pool_size + (pool_size - 1) + 3


def connection_shortfall(engine: Engine, pool_size: int, workers: int) -> str | None:
    """Why ``workers`` serving processes may run out of connections on ``engine``'s server
    (its ``max_connections`` less the superuser reserve and the connections already open
    by others), or None when they fit."""
    from sqlalchemy import text

    with engine.connect() as conn:
        allowed = int(conn.execute(text("SHOW max_connections")).scalar_one())
        reserved = int(conn.execute(text("SHOW superuser_reserved_connections")).scalar_one())
        others = int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
                    "AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        )
    need = workers * connections_per_worker(pool_size)
    room = allowed - reserved - others
    if need <= room:
        return None
    return (
        f"{workers} worker process(es) with GRIDBRANCH_POOL_SIZE={pool_size} may open {need} database "
        f"connections ({connections_per_worker(pool_size)} each), but the server has room for {room} "
        f"(max_connections {allowed}, {reserved} reserved, {others} open by others): lower "
        "GRIDBRANCH_POOL_SIZE or the workers, or raise max_connections"
    )


def make_engine(url: str, pool_size: int = 10) -> Engine:
    # no pre-ping (a round trip per checkout); connections are recycled instead
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)


#: SQLSTATE classes that say the server cannot serve now, not that a statement was wrong:
#: connection exception, insufficient resources (too many connections), operator
#: intervention (shutting down, starting up, terminated by the administrator).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57")


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` — or what caused it — says the database is out of reach now (down,
    restarting, refusing or dropping connections, no pooled connection in time) rather
    than that a statement failed: SQLAlchemy's errors, psycopg2's own (the tile
    renderer's pool, ``layers.pg``) and the version readers' time-out. Such a request may
    succeed when tried again shortly (HTTP 503)."""
    import psycopg2
    from sqlalchemy import exc as sa

    seen = 0
    while exc is not None and seen < 8:
        seen += 1
        if isinstance(exc, sa.TimeoutError):  # the pool gave no connection within its timeout
            return True
        if isinstance(exc, sa.DBAPIError):
            if exc.connection_invalidated:
                return True
            orig = exc.orig
            if isinstance(orig, BaseException) and _psycopg2_unavailable(orig, psycopg2):
                return True
        elif _psycopg2_unavailable(exc, psycopg2) or isinstance(exc, TimeoutError):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]  # None ends the loop
    return False


def _psycopg2_unavailable(exc: BaseException, psycopg2) -> bool:
    if not isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return False
    code = getattr(exc, "pgcode", None)
    return code is None or (code[:2] in _UNAVAILABLE_SQLSTATES and code != "57014")  # 57014: a statement timeout


def url_for_user(url, user: str) -> str:
    """``url`` signing in as ``user``, without a password (the client asks, or reads
    ~/.pgpass)."""
    from sqlalchemy.engine import make_url

    return make_url(url)._replace(username=user, password=None).render_as_string(hide_password=False)


def libpq_dsn(url) -> str:
    """A libpq URI for ``url`` (an SQLAlchemy URL or string), without the driver name
    (the asynchronous pool and version readers of :mod:`layers.pg` connect with it)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

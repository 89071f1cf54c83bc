"""Test fixtures: a real PostGIS (the private cluster, or GRIDBRANCH_TEST_DATABASE_URL),
fresh migrated databases, the Jinshui demo loaded once into a template database, and
per-test rolled-back sessions.

Time: the whole suite reads the present from one frozen clock (:data:`TEST_CLOCK`,
layers.clock), bound to every engine the tests make, so that it passes at any wall-clock
instant. It stands at ``--clock-at`` (or ``GRIDBRANCH_TEST_CLOCK``; default the demo
generator's fixed instant), and the demo the tests load leads up to that instant.
``scripts/test.sh`` runs the tests marked ``clock`` again at the instants of
:data:`CLOCK_INSTANTS`."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from geo_api.settings import AuthSettings, DatabaseSettings, PhotoSettings, ServiceSettings, Settings
from ingest.demo.generate import AS_OF
from layers import cluster as pg
from layers import db, migrate
from layers.clock import FrozenClock
from layers.clock import bind as bind_clock

ROOT = Path(__file__).resolve().parent.parent
TEST_PASSWORD = "test-demo-password"
TEST_SECRET = "test-secret-" + "x" * 40

#: Instants (Asia/Shanghai) the time-sensitive tests (marker ``clock``) are also run at by
#: scripts/test.sh: the working calendar's hard cases. The demo loads the 2026 official
#: holiday calendar (ingest/demo/data/calendar.json) these refer to.
CLOCK_INSTANTS = {
    "weekday-morning": "2026-12-02T10:15:00+08:00",  # a Wednesday, in working hours
    "weekday-night": "2026-12-03T03:55:00+08:00",  # a Thursday night (CI went red here)
    # (no Saturday here: the default instant, the demo's 2026-11-28 09:00, is one)
    "holiday": "2026-10-03T11:00:00+08:00",  # National Day (国庆节), 10-01 to 10-07
    "before-long-holiday": "2026-09-30T16:45:00+08:00",  # the last working hour before it
}


def pytest_addoption(parser):
    parser.addoption(
        "--clock-at",
        default=os.environ.get("GRIDBRANCH_TEST_CLOCK"),
        help="the instant (ISO 8601 with offset, or a name of CLOCK_INSTANTS) the tests' clock "
        "stands at and their demo leads up to; default the demo's fixed instant",
    )


def _instant(value: str | None):
    from datetime import datetime

    if not value:
        return AS_OF
    at = datetime.fromisoformat(CLOCK_INSTANTS.get(value, value))
    if at.tzinfo is None:
        raise pytest.UsageError(f"--clock-at needs an offset (e.g. +08:00): {value}")
    return at.replace(microsecond=0)


#: The one clock of the test process; :func:`pytest_configure` sets its instant.
TEST_CLOCK = FrozenClock(AS_OF)
#: The instant the tests' clock stands at (and is put back to after each test).
TEST_INSTANT = [AS_OF]


def pytest_configure(config):
    config.addinivalue_line("markers", "clock: depends on the present; run again at CLOCK_INSTANTS by scripts/test.sh")
    TEST_INSTANT[0] = _instant(config.getoption("--clock-at"))
    TEST_CLOCK.set(TEST_INSTANT[0])


@pytest.fixture(autouse=True)
def _clock_back():
    """A test may move the clock (``clock.advance``); the next one starts at the instant again."""
    yield
    TEST_CLOCK.set(TEST_INSTANT[0])


@pytest.fixture
def clock() -> FrozenClock:
    """The tests' clock, standing at the test instant; a test may move it."""
    return TEST_CLOCK


def clocked(engine: Engine) -> Engine:
    """``engine`` bound to the tests' clock."""
    bind_clock(engine, TEST_CLOCK)
    return engine


def _server_url() -> str:
    """A URL on the test server's maintenance database."""
    given = os.environ.get("GRIDBRANCH_TEST_DATABASE_URL")
    if given:
        return db.database_url(DatabaseSettings(database_url=given), start=False)
    c = pg.Cluster(root=DatabaseSettings().db_dir, port=DatabaseSettings().db_port)
    pg.start(c)
    return c.url("postgres")


def _admin(url: str, sql: str) -> None:
    engine = db.make_engine(url, 1)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(sql))
    engine.dispose()


def _fresh_database(server: str, name: str, template: str | None = None) -> str:
    pg.drop_database(server, name)
    _admin(server, f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def _worker() -> str:
    """This test process, unique across concurrent test runs on the same server: the xdist
    worker and the run's id (or this process id without xdist)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID", "")[:8] or str(os.getpid())
    return f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{run}"


@contextmanager
def scratch_engine(server_url: str, base: str, pool: int = 1, migrated: bool = False) -> Iterator[Engine]:
    """An empty database private to this test process (migrated to head if asked),
    dropped when the block ends."""
    name = f"gridbranch_{base}_{_worker()}"
    engine = clocked(db.make_engine(_fresh_database(server_url, name), pool))
    try:
        if migrated:
            migrate.upgrade(engine)
        yield engine
    finally:
        engine.dispose()
        pg.drop_database(server_url, name)


def _demo_fingerprint() -> str:
    """Changes whenever the demo generator, its data, the migrations or the instant it
    leads up to change."""
    h = hashlib.sha256(TEST_INSTANT[0].isoformat().encode())
    for folder in (ROOT / "ingest", ROOT / "layers" / "migrations"):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix in (".py", ".geojson", ".json"):
                h.update(path.read_bytes())
    return h.hexdigest()[:12]


@pytest.fixture(scope="session")
def server_url() -> str:
    return _server_url()


@pytest.fixture(scope="session")
def migrated_engine(server_url) -> Iterator[Engine]:
    """An empty database migrated to head, private to this test worker."""
    with scratch_engine(server_url, "test", pool=5, migrated=True) as engine:
        yield engine


def _demo_template(server_url: str) -> str:
    """A template database holding the migrated demo district, built once per fingerprint
    (a file lock keeps parallel workers from building it twice)."""
    import fcntl

    name = f"gridbranch_tpl_{_demo_fingerprint()}"
    lock_path = DatabaseSettings().db_dir.parent / f"{name}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        probe = db.make_engine(server_url, 1)
        with probe.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first()
            # templates of other fingerprints (other instants, other checkouts sharing the
            # server) are dropped only once unused for a day: a concurrent run may be
            # copying one right now (their last use is written in their comment)
            stale = (
                conn.execute(
                    text("""SELECT d.datname FROM pg_database d
                        WHERE d.datname LIKE 'gridbranch_tpl_%' AND d.datname <> :n
                          AND shobj_description(d.oid, 'pg_database') < :cutoff"""),
                    {"n": name, "cutoff": _used_mark(time.time() - TEMPLATE_UNUSED_S)},
                )
                .scalars()
                .all()
            )
        probe.dispose()
        for old in stale:
            _admin(server_url, f'ALTER DATABASE "{old}" IS_TEMPLATE false')
            pg.drop_database(server_url, old)
        if not exists:
            from geo_api.accounts import ensure_demo_accounts
            from geo_api.cli import load_demo_if_missing

            url = _fresh_database(server_url, name + "_build")
            engine = clocked(db.make_engine(url, 2))
            migrate.upgrade(engine)
            load_demo_if_missing(engine, TEST_INSTANT[0])
            with Session(engine) as session:
                ensure_demo_accounts(session, TEST_PASSWORD)
                session.commit()
            engine.dispose()
            _admin(server_url, f'ALTER DATABASE "{name}_build" RENAME TO "{name}"')
            _admin(server_url, f'ALTER DATABASE "{name}" IS_TEMPLATE true')
        _admin(server_url, f"COMMENT ON DATABASE \"{name}\" IS '{_used_mark(time.time())}'")
    return name


#: A demo template of another fingerprint unused this long is dropped (housekeeping by
#: the wall clock: it decides no test's outcome).
TEMPLATE_UNUSED_S = 24 * 3600


def _used_mark(t: float) -> str:
    """A comment recording a template's last use that sorts by time."""
    return f"used {int(t):012d}"


@pytest.fixture(scope="session")
def demo_engine(server_url) -> Iterator[Engine]:
    """A database with the whole Jinshui demo district and the demo accounts
    (password ``TEST_PASSWORD``), private to this test worker."""
    template = _demo_template(server_url)
    name = f"gridbranch_demo_{_worker()}"
    engine = clocked(db.make_engine(_fresh_database(server_url, name, template=template), 10))
    yield engine
    engine.dispose()
    pg.drop_database(server_url, name)


def _rolled_back_session(engine: Engine) -> Iterator[Session]:
    conn = engine.connect()
    outer = conn.begin()
    session = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        conn.close()


@pytest.fixture
def caches():
    """The caches a test hands to the queries it calls directly (an app makes its own:
    ``app.state.caches``); fresh for every test, as an app's are."""
    from layers.caches import Caches

    return Caches()


@pytest.fixture
def demo_db(demo_engine) -> Iterator[Session]:
    """A session on the demo database; everything it writes is rolled back."""
    yield from _rolled_back_session(demo_engine)


@pytest.fixture
def empty_db(migrated_engine) -> Iterator[Session]:
    """A session on the empty migrated database; rolled back after the test."""
    yield from _rolled_back_session(migrated_engine)


def make_settings(**service) -> Settings:
    # many apps live in one test process: none freezes the heap unless a test asks
    service.setdefault("gc_freeze", False)
    return Settings(
        database=DatabaseSettings(database_url="postgresql://unused@127.0.0.1:1/unused"),
        auth=AuthSettings(auth_secret=TEST_SECRET),
        service=ServiceSettings(**service),
        # photos of public reports: a folder of the test run's, never the checkout's
        photos=PhotoSettings(dir=Path(tempfile.gettempdir()) / f"gridbranch-photos-{_worker()}"),
    )


def _client_for(engine: Engine, session: Session) -> TestClient:
    from geo_api.app import create_app

    app = create_app(make_settings(), engine=engine)
    app.state.bound_session = session  # geo_api.deps.bound_session
    return TestClient(app)


@pytest.fixture
def client(demo_engine, demo_db) -> Iterator[TestClient]:
    """An API client on the demo data; the test's writes are rolled back."""
    with _client_for(demo_engine, demo_db) as c:
        yield c


@pytest.fixture
def login(client):
    """``login("admin")`` → Authorization headers for that demo account."""

    return lambda username, password=TEST_PASSWORD: bearer(client, username, password)


@pytest.fixture
def empty_client(migrated_engine, empty_db) -> Iterator[TestClient]:
    """An API client on the empty migrated database; the test's writes are rolled back."""
    with _client_for(migrated_engine, empty_db) as c:
        yield c


def bearer(client: TestClient, username: str, password: str = TEST_PASSWORD) -> dict[str, str]:
    """Sign in through the password flow (Argon2 verification: ~0.1 s)."""
    r = client.post("/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def token_for(username: str) -> dict[str, str]:
    """A valid token for ``username`` without the password round (fast; the password
    flow itself is tested in tests/geo_api/test_api.py)."""
    from datetime import timedelta

    from geo_api.security import issue_token

    # the accounts' first token epoch (migration 0015); a session of no row, which only
    # its refresh would need
    now = TEST_CLOCK.now()
    token = issue_token(
        TEST_SECRET,
        username,
        epoch=0,
        session_id="test",
        started=now,
        session_end=now + timedelta(hours=12),
        idle_minutes=30,
        now=now,
    )
    return {"Authorization": f"Bearer {token}"}

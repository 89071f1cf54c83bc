"""The one clock (layers.clock): bound to an engine, the database sees it too; nothing in
the service reads the present any other way."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers import clock as clocks
from tests.conftest import TEST_CLOCK, scratch_engine

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 10, 3, 11, 0, tzinfo=timezone(timedelta(hours=8)))


def test_frozen_clock_stands_until_moved():
    c = clocks.FrozenClock(AT)
    assert c.now() == AT == c.now()
    assert c.advance(minutes=5) == AT + timedelta(minutes=5) == c.now()
    c.set(AT - timedelta(days=1))
    assert c.now() == AT - timedelta(days=1)
    with pytest.raises(ValueError):
        clocks.FrozenClock(datetime(2026, 1, 1))


def test_the_database_reads_the_bound_clock(server_url):
    with scratch_engine(server_url, "clock", pool=2, migrated=True) as engine:
        c = clocks.FrozenClock(AT)
        clocks.bind(engine, c)
        assert clocks.clock_of(engine) is c
        with engine.connect() as conn:
            assert clocks.clock_of(conn) is c
            assert conn.execute(text("SELECT gridbranch_now()")).scalar() == AT
            conn.rollback()
            c.advance(hours=1)
            assert conn.execute(text("SELECT gridbranch_now()")).scalar() == AT + timedelta(hours=1)
            conn.rollback()
        # a session's savepoints read it again (a test's outer transaction stays open)
        with engine.connect() as conn, conn.begin():
            session = Session(bind=conn, join_transaction_mode="create_savepoint")
            assert clocks.clock_of(session) is c
            c.set(AT + timedelta(days=2))
            with session.begin():
                assert session.execute(text("SELECT gridbranch_now()")).scalar() == AT + timedelta(days=2)
                # the columns that record a write's time default to it
                session.execute(text("INSERT INTO departments (code, name) VALUES ('CLK', '时钟测试局')"))
            session.close()
        # the wall clock again: PostgreSQL's own now()
        clocks.bind(engine, clocks.SYSTEM)
        with engine.connect() as conn:
            db_now, wall = conn.execute(text("SELECT gridbranch_now(), now()")).one()
            assert db_now == wall
    # an engine bound to nothing has the wall clock
    assert clocks.clock_of(object()) is clocks.SYSTEM and clocks.clock_of(None) is clocks.SYSTEM


def test_writes_record_the_clock(demo_db, clock):
    clock.advance(days=3)
    with demo_db.begin_nested():
        at = demo_db.execute(
            text(
                "INSERT INTO events (geom, source_crs, source_x, source_y, category_code, channel, description, status) "
                "SELECT ST_SetSRID(ST_MakePoint(113.68, 34.80), 4326), 'wgs84', 113.68, 34.80, code, 'hotline', '测试', "
                "'reported' "
                "FROM event_categories LIMIT 1 RETURNING reported_at"
            )
        ).scalar()
    assert at == TEST_CLOCK.now()


# Where the present may be read at all: the clock itself, and the CLI's demo command (the
# instant a freshly loaded demo leads up to, and its staleness hint).
ALLOWED = {"layers/clock.py", "geo_api/cli.py"}
WALL_CLOCK = re.compile(r"datetime\.(now|utcnow|today)\(|date\.today\(|time\.time\(\)")
SQL_NOW = re.compile(
    r"(?<![\w.])(now|current_timestamp|clock_timestamp|localtimestamp|transaction_timestamp)\(", re.IGNORECASE
)


def _sources():
    for package in ("geo_api", "layers", "tiles", "ingest", "web_map"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if "/migrations/" not in rel:
                yield rel, path.read_text(encoding="utf-8")


def test_nothing_reads_the_present_but_the_clock():
    found = []
    for rel, source in _sources():
        if rel in ALLOWED:
            continue
        for n, line in enumerate(source.splitlines(), 1):
            code = line.split("#", 1)[0]
            if WALL_CLOCK.search(code):
                found.append(f"{rel}:{n}: {line.strip()}")
            if SQL_NOW.search(code) or "func.now()" in code:
                found.append(f"{rel}:{n}: {line.strip()}")
    # data_versions.changed_at is bookkeeping of the writes themselves, not the service's present
    found = [f for f in found if "changed_at" not in f]
    assert not found, "read the present from layers.clock (gridbranch_now() in SQL):\n" + "\n".join(found)

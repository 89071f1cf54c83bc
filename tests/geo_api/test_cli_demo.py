"""``gridbranch demo``: the demo's timeline leads up to the moment it is loaded, a demo
loaded long ago says how to renew it, and ``--reload`` loads it afresh (private cluster
only)."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from geo_api.cli import demo_staleness, main
from ingest.demo import generate
from layers import cluster as pg
from layers.events import CLOCK
from tests.conftest import TEST_PASSWORD, _server_url, _worker

CST = timezone(timedelta(hours=8))


def test_staleness_hint():
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    assert demo_staleness(None, now) is None
    assert demo_staleness(now - timedelta(hours=23), now) is None
    hint = demo_staleness(now - timedelta(days=3), now)
    assert "3.0 days ago" in hint and "gridbranch demo --reload" in hint and "2026-12-02 20:00" in hint


def overdue_at(engine, as_of: datetime) -> int:
    with engine.connect() as conn:
        return conn.execute(
            text(f"SELECT count(*) FROM events WHERE status IN ({', '.join(repr(s) for s in CLOCK)}) AND due_at <= :t"),
            {"t": as_of},
        ).scalar()


@pytest.mark.skipif(
    bool(os.environ.get("GRIDBRANCH_TEST_DATABASE_URL")), reason="--reload drops a database of the private cluster"
)
def test_demo_loads_up_to_now_and_reloads(monkeypatch, capsys):
    name = f"gridbranch_demo_cli_{_worker()}"
    server = _server_url()
    monkeypatch.delenv("GRIDBRANCH_DATABASE_URL", raising=False)
    monkeypatch.setenv("GRIDBRANCH_DB_NAME", name)
    monkeypatch.setenv("GRIDBRANCH_DEMO_PASSWORD", TEST_PASSWORD)
    engine = create_engine(make_url(server).set(database=name))
    pg.drop_database(server, name)
    try:
        before = datetime.now(CST).replace(second=0, microsecond=0)
        assert main(["demo", "--no-serve"]) == 0
        out = capsys.readouterr().out
        as_of = datetime.strptime(re.search(r"timeline up to (\S+ \S+)", out).group(1), "%Y-%m-%d %H:%M")
        as_of = as_of.replace(tzinfo=CST)
        assert before <= as_of <= datetime.now(CST)
        # the same district as built for the fixed instant, its timeline moved up to now:
        # as many events are overdue at as_of as the fixed build has at AS_OF
        fixed = generate.build_demo()
        expected = sum(1 for e in fixed.events if e.status in CLOCK and e.due_at <= fixed.as_of)
        assert overdue_at(engine, as_of) == expected > 0
        with engine.connect() as conn:
            newest = conn.execute(text("SELECT max(reported_at) FROM events")).scalar()
        assert as_of - timedelta(hours=3) <= newest <= as_of

        # run again: kept as it is, and fresh, so no hint
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE reload_marker (id int)"))
        assert main(["demo", "--no-serve"]) == 0
        out = capsys.readouterr().out
        assert "already loaded" in out and "--reload" not in out

        # --reload: a new database, loaded afresh
        assert main(["demo", "--no-serve", "--reload"]) == 0
        out = capsys.readouterr().out
        assert f"database {name} dropped" in out and "timeline up to" in out and "invariants hold" in out
        engine.dispose()  # its pooled connections went with the old database
        with engine.connect() as conn:
            assert conn.execute(text("SELECT to_regclass('reload_marker')")).scalar() is None
            assert conn.execute(text("SELECT count(*) FROM grids")).scalar() == len(fixed.grids)

        # never on a database the service was given
        monkeypatch.setenv(
            "GRIDBRANCH_DATABASE_URL", make_url(server).set(database=name).render_as_string(hide_password=False)
        )
        assert main(["demo", "--no-serve", "--reload"]) == 2
        assert "only for the private cluster" in capsys.readouterr().err
    finally:
        engine.dispose()
        pg.drop_database(server, name)

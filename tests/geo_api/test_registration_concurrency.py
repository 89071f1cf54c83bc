"""Concurrent registrations of the same members (issue 18, defect 7), on a scratch copy
of the demo with a real engine: every request its own pooled connection and session, as
in service. Writes on one member queue on the member's row and never deadlock; the
database holds at most one active registration per member whatever the interleaving."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from layers import cluster as pg
from layers import db
from tests.conftest import _demo_template, _fresh_database, _worker, clocked, make_settings, token_for

THREADS = 20


@pytest.fixture(scope="module")
def served(server_url):
    """An app on its own copy of the demo (its commits are real), and that engine."""
    from geo_api.app import create_app

    name = f"gridbranch_regrace_{_worker()}"
    engine = clocked(db.make_engine(_fresh_database(server_url, name, template=_demo_template(server_url)), THREADS))
    try:
        with TestClient(create_app(make_settings(), engine=engine)) as client:
            yield client, engine
    finally:
        engine.dispose()
        pg.drop_database(server_url, name)


def _points(engine, n: int) -> list[tuple[float, float]]:
    """Points well inside ``n`` different grids of the district admin's area."""
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    """SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(gv.geom) AS p FROM grid_versions gv
               JOIN grids g ON g.id = gv.grid_id WHERE gv.valid_to IS NULL ORDER BY g.code LIMIT :n) q"""
                ),
                {"n": n},
            ).all()
        ]


def _confirmed_members(engine, n: int) -> list[int]:
    with engine.connect() as conn:
        return (
            conn.execute(
                text(
                    "SELECT member_id FROM registrations WHERE status = 'confirmed' "
                    "ORDER BY member_id OFFSET 100 LIMIT :n"
                ),
                {"n": n},
            )
            .scalars()
            .all()
        )


def _state(engine, members: list[int]) -> dict[int, tuple[int, int, int]]:
    """Per member: (registrations, active ones, current residences)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """SELECT m.id,
                      (SELECT count(*) FROM registrations r WHERE r.member_id = m.id),
                      (SELECT count(*) FROM registrations r WHERE r.member_id = m.id
                                                              AND r.status IN ('pending', 'confirmed')),
                      (SELECT count(*) FROM residences s WHERE s.member_id = m.id AND s.ended_at IS NULL)
               FROM members m WHERE m.id = ANY(:m)"""
            ),
            {"m": members},
        ).all()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _fire(calls) -> list:
    """Run every call in its own thread, all released at once; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 - reported as the result, the test fails on it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _move(client, member_id: int, point) -> callable:
    headers = token_for("admin")
    body = {"lon": point[0], "lat": point[1], "role": "平安创建示范员", "member_id": member_id, "move": True}
    return lambda: client.post("/v1/registrations", json=body, headers=headers)


def _statuses(results) -> Counter:
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    return Counter(r.status_code for r in results)


def test_the_database_holds_one_active_registration_per_member(served):
    _, engine = served
    with engine.connect() as conn:
        definition = conn.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'uq_registrations_active_member'")
        ).scalar()
    assert definition is not None and "UNIQUE" in definition and "member_id" in definition
    assert "pending" in definition and "confirmed" in definition


def test_twenty_concurrent_moves_of_one_member_serialise(served):
    client, engine = served
    member = _confirmed_members(engine, 1)[0]
    points = _points(engine, THREADS)
    before = _state(engine, [member])[member]
    results = _fire([_move(client, member, p) for p in points])
    statuses = _statuses(results)
    # each move waits for the one before it and then ends what that one wrote
    assert statuses == {201: THREADS}, [r.text for r in results if r.status_code != 201][:3]
    written, active, residences = _state(engine, [member])[member]
    assert (written - before[0], active, residences) == (THREADS, 1, 1)
    # the active one is the last answered: every other answer's registration has ended
    with engine.connect() as conn:
        ended = conn.execute(
            text("SELECT id, status FROM registrations WHERE id = ANY(:i)"), {"i": [r.json()["id"] for r in results]}
        ).all()
    assert Counter(s for _, s in ended) == {"ended": THREADS - 1, "pending": 1}


def test_concurrent_moves_and_decisions_of_several_members_never_deadlock(served):
    client, engine = served
    members = _confirmed_members(engine, 5)[1:]
    points = _points(engine, 40)
    before = _state(engine, members)
    admin = token_for("admin")

    def confirm_latest(member_id):
        def call():
            with engine.connect() as conn:
                latest = conn.execute(
                    text("SELECT max(id) FROM registrations WHERE member_id = :m"), {"m": member_id}
                ).scalar()
            return client.post(f"/v1/registrations/{latest}/confirm", headers=admin)

        return call

    calls = []
    for i in range(THREADS * 2):
        member = members[i % len(members)]
        calls.append(confirm_latest(member) if i % 4 == 3 else _move(client, member, points[i]))
    results = _fire(calls)
    statuses = _statuses(results)
    assert not [s for s in statuses if s >= 500], [r.text for r in results if r.status_code >= 500][:3]
    # a confirm may find the registration already ended or confirmed (409); nothing else
    assert set(statuses) <= {200, 201, 409}
    moves = [r for i, r in enumerate(results) if i % 4 != 3]
    assert all(r.status_code == 201 for r in moves), [r.text for r in moves if r.status_code != 201][:3]
    after = _state(engine, members)
    for m in members:
        written = after[m][0] - before[m][0]
        assert written == sum(1 for r in moves if r.json()["member_id"] == m)
        assert after[m][1:] == (1, 1), (m, after[m])

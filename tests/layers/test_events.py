"""The event layer on hand-made data: routing, member suggestions, every legal and
illegal transition, permissions, the concurrent-dispatch race on two real connections,
duplicates, and evaluation figures computed by hand."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, InternalError
from sqlalchemy.orm import Session

from layers import events as ev
from layers.errors import Conflict, Forbidden, InvalidInput, NotFound
from layers.events_batch import Pending, Stored, store_reports
from layers.events_eval import evaluate, evaluation_csv
from layers.locate import GridIndexCache, build_grid_index
from layers.workcal import WorkCalendar, add_working_hours
from tests.conftest import scratch_engine
from tests.factories import COMMUNITY, GRID_A, GRID_B
from tests.factories.events import (
    G1,
    P,
    X,
    Y,
    at,
    east,
    evaluation_world,
    event_world,
    insert_event,
)

pytestmark = pytest.mark.clock  # depends on the present: run at every CLOCK_INSTANT

CAL = WorkCalendar.build("08:30-12:00,13:30-17:30", (6, 7))


def report(
    session: Session,
    category: str = "xfyh",
    point=P,
    channel: str = "public",
    description: str = "楼道堆放杂物",
    radius: float = 100,
    window: float = 72,
) -> dict:
    """One anonymous report stored through the writer the service uses (a group of one,
    committed — in the tests' sessions a savepoint); its answer's fields, or its error."""
    return stored_alone(
        session, Pending(point[0], point[1], "wgs84", category, channel, description), radius=radius, window=window
    ).stored


def stored_alone(session: Session, pending: Pending, radius: float = 100, window: float = 72) -> Stored:
    (out,) = store_reports(
        session,
        GridIndexCache(),
        [pending],
        tolerance_m=30,
        edge_m=0.05,
        duplicate_radius_m=radius,
        duplicate_window_hours=window,
    )
    if isinstance(out, BaseException):
        raise out
    return out


def covers_all(code):
    return True


def move(session: Session, event_id: int, action: str, role: str = "dispatcher", covers=covers_all, **kw) -> int:
    version = kw.pop("version", None)
    if version is None:
        version = session.execute(text("SELECT version FROM events WHERE id = :i"), {"i": event_id}).scalar()
    if action in ev.NEEDS_REASON:
        kw.setdefault("reason", "测试原因")
    return ev.transition_event(
        session,
        event_id,
        ev.Move(action, version, **kw),
        actor=f"test-{role}",
        role=role,
        covers=covers,
        calendar=CAL,
        warn_share=0.8,
        max_open_tasks=3,
    )


def status_of(session: Session, event_id: int):
    return session.execute(text("SELECT * FROM events WHERE id = :i"), {"i": event_id}).first()


# --------------------------------------------------------------------------------------
# Report and routing
# --------------------------------------------------------------------------------------


def test_report_is_located_stored_and_routed(empty_db):
    w = event_world(empty_db)
    out = report(empty_db)
    assert out["department"] == {"code": "D02", "name": "区应急管理局"} and not out["routing_override"]
    e = status_of(empty_db, out["id"])
    assert e.status == "reported" and e.version == 1 and e.grid_id == w["grids"]["A"]
    assert e.department_id == w["depts"]["D02"] and e.source_x == P[0]
    gv = empty_db.execute(
        text("SELECT grid_id, valid_to FROM grid_versions WHERE id = :v"), {"v": e.grid_version_id}
    ).first()
    assert gv.grid_id == e.grid_id and gv.valid_to is None
    log = ev.event_log(empty_db, out["id"])
    assert [(x["action"], x["from"], x["to"]) for x in log] == [("report", None, "reported")]
    routing = ev.routing(empty_db, out["id"])
    assert routing["grid"]["code"] == GRID_A and routing["branch"]["code"] == "B001"
    assert routing["street"]["code"] == "410105001000" and routing["grid_worker"]["name"] == "张网格"


def test_street_override_routes_elsewhere_and_unknown_category_writes_nothing(empty_db):
    event_world(empty_db)
    ev.set_route(empty_db, "xfyh", "410105001000", "D03")
    out = report(empty_db)
    assert out["department"]["code"] == "D03" and out["routing_override"]
    assert ev.routing(empty_db, out["id"])["department"]["rule"] == "street override"
    ev.set_route(empty_db, "xfyh", "410105001000", None)
    assert report(empty_db)["department"]["code"] == "D02"
    with pytest.raises(InvalidInput) as info:
        ev.set_route(empty_db, "xfyh", COMMUNITY, "D03")
    assert info.value.field == "street"
    before = empty_db.execute(text("SELECT count(*) FROM events")).scalar()
    logs = empty_db.execute(text("SELECT count(*) FROM event_log")).scalar()
    with pytest.raises(InvalidInput) as info:
        report(empty_db, category="nope")
    assert info.value.field == "category" and "xfyh" in info.value.detail
    assert empty_db.execute(text("SELECT count(*) FROM events")).scalar() == before
    assert empty_db.execute(text("SELECT count(*) FROM event_log")).scalar() == logs


def test_outside_the_service_area_names_the_nearest_grid(empty_db):
    event_world(empty_db)
    index = build_grid_index(empty_db)
    with pytest.raises(InvalidInput) as info:
        report(empty_db, point=(X + 0.3, Y + 0.05))
    assert info.value.field == "lon" and info.value.extra["nearest_grid"]["code"] in (GRID_B, "410105001001003")
    # in the gap strip beside A (within the tolerance): the nearest grid, not an error
    got = stored_alone(empty_db, Pending(X + 0.0501, Y + 0.07, "wgs84", "xfyh", "public", "缝隙")).grid
    assert got["match"] == "nearest" and got["code"] in (GRID_A, "410105001001003")
    # the writer agrees with the full locate on inside points
    import numpy as np

    pts = [(X + 0.01 * i + 0.003, Y + 0.01 * j + 0.004) for i in range(10) for j in range(10)]
    full = index.locate(np.array([p[0] for p in pts]), np.array([p[1] for p in pts]), tolerance_m=30, edge_m=0.05)
    inside = [k for k in range(len(pts)) if full.match[k] == 0]
    stored = store_reports(
        empty_db,
        GridIndexCache(),
        [Pending(*pts[k], "wgs84", "xfyh", "public", "点") for k in inside],
        tolerance_m=30,
        edge_m=0.05,
        duplicate_radius_m=0,
        duplicate_window_hours=0,
    )
    for k, out in zip(inside, stored):
        assert out.grid["code"] == index.grids[full.grid[k]]["code"]


def test_member_suggestions_fit_the_role_nearest_grid_first_within_the_radius(empty_db):
    w = event_world(empty_db)
    out = report(empty_db)
    got = ev.suggest_members(empty_db, out["id"], "pingan", radius_m=1500, limit=10, max_open_tasks=3)
    # all three in the event's grid A (by open tasks, then id — never by residence); not the
    # one in grid B 2.7 km away, not the pending one, not the wrong role
    assert [g["name"] for g in got] == ["近党员", "中党员", "忙党员"]
    assert {g["distance_band"] for g in got} == {"本网格"}
    assert got[0]["role"] == {"code": "pingan", "name": "平安创建示范员"}
    wider = ev.suggest_members(empty_db, out["id"], "pingan", radius_m=3000, limit=10, max_open_tasks=3)
    assert [(g["name"], g["distance_band"]) for g in wider][-1] == ("远党员", "2–5 km")
    # only members registered inside ``within``
    assert (
        ev.suggest_members(empty_db, out["id"], "pingan", radius_m=3000, limit=10, max_open_tasks=3, within=GRID_B)[0][
            "name"
        ]
        == "远党员"
    )
    assert (
        ev.suggest_members(
            empty_db, out["id"], "pingan", radius_m=3000, limit=10, max_open_tasks=3, within="410105002000"
        )
        == []
    )
    assert set(got[0]) == {"member_id", "name", "role", "distance_band", "open_tasks"}  # no residence, no distance
    # the busy member holds three open tasks: skipped
    for _ in range(3):
        e = report(empty_db, category="zdjy", point=east(2000))["id"]
        move(empty_db, e, "register")
        move(empty_db, e, "dispatch", member_id=w["members"]["busy"])
    got = ev.suggest_members(empty_db, out["id"], "pingan", radius_m=1500, limit=10, max_open_tasks=3)
    assert [g["name"] for g in got] == ["近党员", "中党员"]
    # and cannot be given a fourth
    move(empty_db, out["id"], "register")
    with pytest.raises(Conflict) as info:
        move(empty_db, out["id"], "dispatch", member_id=w["members"]["busy"])
    assert info.value.field == "member_id"
    with pytest.raises(InvalidInput):
        move(empty_db, out["id"], "dispatch", member_id=w["members"]["pending"])
    assert (
        ev.suggest_members(empty_db, out["id"], "pingan", radius_m=60, limit=10, max_open_tasks=3)[0]["name"]
        == "近党员"
    )
    assert ev.suggest_members(empty_db, out["id"], None, radius_m=1500, limit=10, max_open_tasks=3) == []
    assert (
        ev.distance_band(1999) == "1–2 km"
        and ev.distance_band(700) == "500 m–1 km"
        and ev.distance_band(7000) == "≥ 5 km"
    )
    assert ev.distance_band(0) == "本网格" and ev.distance_band(120) == "< 500 m"


# --------------------------------------------------------------------------------------
# Lifecycle
# --------------------------------------------------------------------------------------

STATUSES = (
    "reported",
    "registered",
    "dispatched",
    "in_progress",
    "handled",
    "closed",
    "rejected",
    "duplicate",
    "deferred",
    "returned",
)
LEGAL = {
    "reported": {"register", "reject", "mark_duplicate"},
    "registered": {"dispatch", "reject", "mark_duplicate"},
    "dispatched": {"start", "defer", "return"},
    "in_progress": {"handle", "defer", "return"},
    "handled": {"close", "return"},
    "closed": set(),
    "rejected": set(),
    "duplicate": set(),
    "deferred": {"dispatch"},
    "returned": {"dispatch", "reject"},
}


def extra_for(action: str, original: int) -> dict:
    return {"mark_duplicate": {"duplicate_of": original}}.get(action, {})


def test_every_legal_and_illegal_transition(empty_db):
    w = event_world(empty_db)
    original = insert_event(empty_db, w["grids"]["A"], "reported")
    for status in STATUSES:
        for action in ev.ACTIONS:
            e = insert_event(empty_db, w["grids"]["A"], status)
            before = status_of(empty_db, e)
            logs = len(ev.event_log(empty_db, e))
            if action in LEGAL[status]:
                version = move(empty_db, e, action, **extra_for(action, original))
                after = status_of(empty_db, e)
                assert after.status == ev.TRANSITIONS[action].target, (status, action)
                assert version == after.version == before.version + 1
                log = ev.event_log(empty_db, e)
                assert len(log) == logs + 1 and (log[-1]["action"], log[-1]["from"], log[-1]["to"]) == (
                    action,
                    status,
                    after.status,
                )
                assert log[-1]["actor"] == "test-dispatcher"
            else:
                with pytest.raises(Conflict) as info:
                    move(empty_db, e, action, **extra_for(action, original))
                assert info.value.extra["current_status"] == status, (status, action)
                assert set(info.value.extra["allowed"]) == LEGAL[status]
                assert status_of(empty_db, e).version == before.version
                assert len(ev.event_log(empty_db, e)) == logs


def test_transition_side_effects(empty_db):
    w = event_world(empty_db)
    e = report(empty_db)["id"]
    now = empty_db.execute(text("SELECT gridbranch_now()")).scalar()
    move(empty_db, e, "register")
    move(empty_db, e, "dispatch", department="D03", assignee="区市场监督管理局·王五")
    row = status_of(empty_db, e)
    assert row.department_id == w["depts"]["D03"] and row.assignee == "区市场监督管理局·王五"
    assert row.dispatched_at == now
    assert row.due_at == add_working_hours(now, 12, CAL) and row.warn_at == add_working_hours(now, 12 * 0.8, CAL)
    move(empty_db, e, "start")
    move(empty_db, e, "handle")
    assert status_of(empty_db, e).handled_at == now
    move(empty_db, e, "return", reason="核查未通过，需返工")
    row = status_of(empty_db, e)
    assert row.return_count == 1 and row.reason == "核查未通过，需返工"
    move(empty_db, e, "dispatch")
    move(empty_db, e, "start")
    move(empty_db, e, "defer", reason="需协调资金")
    move(empty_db, e, "dispatch")
    move(empty_db, e, "start")
    move(empty_db, e, "handle")
    move(empty_db, e, "close", note="核查属实，结案")
    row = status_of(empty_db, e)
    assert row.status == "closed" and row.closed_at == now and row.return_count == 1 and row.version == 13
    log = ev.event_log(empty_db, e)
    assert [x["action"] for x in log] == [
        "report",
        "register",
        "dispatch",
        "start",
        "handle",
        "return",
        "dispatch",
        "start",
        "defer",
        "dispatch",
        "start",
        "handle",
        "close",
    ]
    assert log[2]["note"] == "派遣至区市场监督管理局" and log[-1]["note"] == "核查属实，结案"
    # the log is never updated or deleted
    for stmt in ("UPDATE event_log SET note = 'x' WHERE event_id = :e", "DELETE FROM event_log WHERE event_id = :e"):
        with pytest.raises(InternalError, match="append-only"):
            with empty_db.begin_nested():
                empty_db.execute(text(stmt), {"e": e})


def test_reasons_references_and_versions_are_checked(empty_db):
    w = event_world(empty_db)
    a = report(empty_db)["id"]
    b = report(empty_db)["id"]
    with pytest.raises(InvalidInput) as info:
        ev.transition_event(
            empty_db,
            b,
            ev.Move("reject", 1),
            actor="x",
            role="dispatcher",
            covers=covers_all,
            calendar=CAL,
            warn_share=0.8,
            max_open_tasks=3,
        )
    assert info.value.field == "reason"
    for dup, field in ((None, "duplicate_of"), (b, "duplicate_of"), (999999, "duplicate_of")):
        with pytest.raises(InvalidInput) as info:
            move(empty_db, b, "mark_duplicate", duplicate_of=dup)
        assert info.value.field == field
    move(empty_db, b, "mark_duplicate", duplicate_of=a)
    row = status_of(empty_db, b)
    assert row.status == "duplicate" and row.duplicate_of == a and row.closed_at is not None
    c = report(empty_db)["id"]
    with pytest.raises(InvalidInput):  # b is itself a duplicate
        move(empty_db, c, "mark_duplicate", duplicate_of=b)
    with pytest.raises(Conflict) as info:
        move(empty_db, c, "register", version=7)
    assert info.value.field == "version" and info.value.extra["current_version"] == 1
    with pytest.raises(NotFound):
        move(empty_db, 999999, "register", version=1)
    with pytest.raises(InvalidInput):
        move(empty_db, c, "explode", version=1)
    move(empty_db, c, "register")
    with pytest.raises(InvalidInput) as info:
        move(empty_db, c, "dispatch", department="没有这个部门")
    assert info.value.field == "department"
    # the database itself refuses a duplicate without its original and a dispatch before the report
    for stmt in (
        "UPDATE events SET status = 'duplicate', closed_at = gridbranch_now() WHERE id = :e",
        "UPDATE events SET dispatched_at = reported_at - interval '1 hour', due_at = reported_at WHERE id = :e",
    ):
        with pytest.raises(IntegrityError):
            with empty_db.begin_nested():
                empty_db.execute(text(stmt), {"e": c})
    assert w


def test_who_may_do_what(empty_db):
    w = event_world(empty_db)
    in_a = lambda code: code is not None and code.startswith(GRID_A)  # noqa: E731 - a grid worker of A
    in_b = lambda code: code is not None and code.startswith(GRID_B)  # noqa: E731
    e = report(empty_db)["id"]
    for action in ("register", "reject", "mark_duplicate"):
        with pytest.raises(Forbidden):
            move(empty_db, e, action, role="grid_worker", covers=in_a, duplicate_of=e)
    with pytest.raises(Forbidden):
        move(empty_db, e, "register", role="admin", covers=in_b)  # an admin of another area
    move(empty_db, e, "register", role="admin", covers=in_a)
    move(empty_db, e, "dispatch")
    with pytest.raises(Forbidden):
        move(empty_db, e, "start", role="grid_worker", covers=in_b)
    move(empty_db, e, "start", role="grid_worker", covers=in_a)
    assert status_of(empty_db, e).assignee == "test-grid_worker"
    move(empty_db, e, "handle", role="grid_worker", covers=in_a)
    with pytest.raises(Forbidden):  # verifying and sending back handled work is the centre's
        move(empty_db, e, "return", role="grid_worker", covers=in_a)
    with pytest.raises(Forbidden):
        move(empty_db, e, "close", role="grid_worker", covers=in_a)
    with pytest.raises(Forbidden):
        move(empty_db, e, "close", role="member", covers=in_a)
    move(empty_db, e, "close", role="admin", covers=in_a)
    f = insert_event(empty_db, w["grids"]["A"], "dispatched")
    move(empty_db, f, "return", role="grid_worker", covers=in_a, reason="非本网格职责")
    assert status_of(empty_db, f).status == "returned"
    assert ev.actions_from("handled", "grid_worker") == []
    assert ev.actions_from("dispatched", "grid_worker") == ["start", "return"]


def test_report_channels_fit_the_caller():
    ev.check_channel("public", None)
    ev.check_channel("member", "member")
    ev.check_channel("hotline", "dispatcher")
    for channel, role in (("member", None), ("hotline", "member"), ("grid_worker", "member"), ("video", "grid_worker")):
        with pytest.raises(Forbidden):
            ev.check_channel(channel, role)
    with pytest.raises(InvalidInput):
        ev.check_channel("carrier pigeon", "dispatcher")


# --------------------------------------------------------------------------------------
# The concurrent-dispatch race, on two real connections
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def race_engine(server_url):
    with scratch_engine(server_url, "test_events_race", pool=4, migrated=True) as engine:
        with Session(engine) as session:
            event_world(session)
            session.commit()
        yield engine


def _registered_event(engine) -> int:
    with Session(engine) as session:
        e = report(session)["id"]
        move(session, e, "register")
        session.commit()
    return e


def _dispatch(engine, e: int, version: int, who: str, barrier: threading.Barrier, results: dict, hold: float = 0.0):
    with Session(engine) as session:
        try:
            barrier.wait()
            ev.transition_event(
                session,
                e,
                ev.Move("dispatch", version, note=who),
                actor=who,
                role="dispatcher",
                covers=covers_all,
                calendar=CAL,
                warn_share=0.8,
                max_open_tasks=3,
            )
            time.sleep(hold)  # keep the row locked while the other one tries
            session.commit()
            results[who] = "ok"
        except Conflict as exc:
            session.rollback()
            results[who] = exc


def test_two_dispatchers_at_once_one_wins_the_other_gets_409(race_engine):
    for hold in (0.0, 0.3):
        e = _registered_event(race_engine)
        barrier = threading.Barrier(2)
        results: dict = {}
        threads = [
            threading.Thread(target=_dispatch, args=(race_engine, e, 2, who, barrier, results, hold))
            for who in ("甲调度员", "乙调度员")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(isinstance(r, Conflict) for r in results.values()) == [False, True], results
        winner = next(who for who, r in results.items() if r == "ok")
        with Session(race_engine) as session:
            row = status_of(session, e)
            assert row.status == "dispatched" and row.version == 3
            log = ev.event_log(session, e)
            assert [x["action"] for x in log] == ["report", "register", "dispatch"] and log[-1]["actor"] == winner


def test_a_dispatch_waiting_on_the_row_lock_sees_the_winner(race_engine):
    """Deterministic interleaving: B reads version 2 after A updated (but before A
    commits), blocks on the row, and finds the version moved on when A commits."""
    e = _registered_event(race_engine)
    with Session(race_engine) as a, Session(race_engine) as b:
        ev.transition_event(
            a,
            e,
            ev.Move("dispatch", 2),
            actor="A",
            role="dispatcher",
            covers=covers_all,
            calendar=CAL,
            warn_share=0.8,
            max_open_tasks=3,
        )
        outcome: dict = {}

        def run_b():
            try:
                ev.transition_event(
                    b,
                    e,
                    ev.Move("dispatch", 2),
                    actor="B",
                    role="dispatcher",
                    covers=covers_all,
                    calendar=CAL,
                    warn_share=0.8,
                    max_open_tasks=3,
                )
                outcome["b"] = "ok"
            except Conflict as exc:
                outcome["b"] = exc

        t = threading.Thread(target=run_b)
        t.start()
        t.join(0.5)
        assert t.is_alive()  # B waits for A's row lock
        a.commit()
        t.join(30)
        b.rollback()
        assert isinstance(outcome["b"], Conflict) and "meanwhile" in outcome["b"].detail


# --------------------------------------------------------------------------------------
# Duplicates
# --------------------------------------------------------------------------------------


def test_possible_duplicates_same_category_nearby_recent_and_open(empty_db):
    event_world(empty_db)
    first = report(empty_db)["id"]
    second = report(empty_db, point=east(60))
    assert [d["id"] for d in second["possible_duplicates"]] == [first]
    assert 59 < second["possible_duplicates"][0]["distance_m"] < 61
    third = report(empty_db, point=east(60))["possible_duplicates"]
    assert [d["id"] for d in third] == [second["id"], first]  # nearest first
    assert third[0]["distance_m"] == 0 and third[0]["status"] == "reported"
    assert report(empty_db, category="zdjy")["possible_duplicates"] == []  # another category
    beyond = report(empty_db, point=east(150))["possible_duplicates"]
    assert first not in [d["id"] for d in beyond] and second["id"] in [d["id"] for d in beyond]  # 150 m vs 90 m
    assert first in [d["id"] for d in report(empty_db, point=east(150), radius=200)["possible_duplicates"]]
    # closed (here: rejected) events are not duplicates
    empty_db.execute(
        text(
            "UPDATE events SET status = 'rejected', closed_at = gridbranch_now(), reason = 'x' "
            "WHERE category_code = 'xfyh'"
        )
    )
    assert report(empty_db)["possible_duplicates"] == []
    # nor are events older than the window
    empty_db.execute(
        text("UPDATE events SET reported_at = gridbranch_now() - interval '4 days' WHERE category_code = 'xfyh'")
    )
    assert report(empty_db, window=72)["possible_duplicates"] == []
    assert len(report(empty_db, window=24 * 5)["possible_duplicates"]) == 2  # the aged one and the one just above


# --------------------------------------------------------------------------------------
# Evaluation, on a fixture computed by hand
# --------------------------------------------------------------------------------------


OCTOBER = (at(10, 1, 0), at(11, 1, 0))


def by_code(units):
    return {u["code"]: u for u in units}


def test_evaluation_per_street_by_hand(empty_db):
    evaluation_world(empty_db)
    units = evaluate(
        empty_db, level="street", period_from=OCTOBER[0], period_to=OCTOBER[1], prefix=None, calendar=CAL, min_sample=2
    )
    s1, s2 = by_code(units)["410105001000"], by_code(units)["410105002000"]
    # West: e1–e6. due = e1, e2 (closed) + e3 (past due); e4 deferred leaves; e5 not yet due; e6 rejected.
    assert (s1["received"], s1["dispatched"], s1["deferred"], s1["due"]) == (6, 5, 1, 3)
    assert (s1["closed"], s1["closed_on_time"], s1["reworked"], s1["overdue_open"]) == (2, 1, 1, 1)
    assert (s1["closure_rate"], s1["on_time_rate"], s1["rework_rate"]) == (0.6667, 0.3333, 0.3333)
    # handling: e1 Mon 09:00→11:00 = 2 h; e2 Tue 09:00→16:30 = 3 + 3 = 6 h → mean 4 h
    assert s1["mean_handling_hours"] == 4.0 and s1["name"] == "西街道"
    # East: e8, e9 closed on time (e9 reworked twice), e10 only reported.
    assert (s2["received"], s2["dispatched"], s2["due"], s2["closed"], s2["closed_on_time"]) == (3, 2, 2, 2, 2)
    assert (s2["closure_rate"], s2["on_time_rate"], s2["rework_rate"]) == (1.0, 1.0, 0.5)
    # e8 Thu 14:00→17:00 = 3 h; e9 Fri 09:00→Mon 09:00 = 3 + 4 + 0.5 = 7.5 h → mean 5.25 h
    assert s2["mean_handling_hours"] == 5.25 and s2["overdue_open"] == 0
    assert [u["code"] for u in units] == ["410105002000", "410105001000"] and (s2["rank"], s1["rank"]) == (1, 2)
    # the same figures per community and grid; nothing outside the prefix
    assert (
        by_code(
            evaluate(
                empty_db,
                level="grid",
                period_from=OCTOBER[0],
                period_to=OCTOBER[1],
                prefix=None,
                calendar=CAL,
                min_sample=2,
            )
        )[G1]["on_time_rate"]
        == 0.3333
    )
    only_west = evaluate(
        empty_db,
        level="community",
        period_from=OCTOBER[0],
        period_to=OCTOBER[1],
        prefix="410105001",
        calendar=CAL,
        min_sample=2,
    )
    assert [(u["code"], u["due"], u["closed"]) for u in only_west] == [("410105001001", 3, 2)]


def test_evaluation_per_department_and_the_minimum_sample(empty_db):
    evaluation_world(empty_db)
    units = by_code(
        evaluate(
            empty_db,
            level="department",
            period_from=OCTOBER[0],
            period_to=OCTOBER[1],
            prefix=None,
            calendar=CAL,
            min_sample=3,
        )
    )
    d1, d2 = units["D01"], units["D02"]
    # received per department: dispatched to it (e1–e5; e6 rejected and e10 only reported never were)
    assert (d1["received"], d1["due"], d1["closed"], d1["closed_on_time"], d1["reworked"]) == (5, 3, 2, 1, 1)
    assert d1["rated"] and d1["rank"] == 1 and d1["on_time_rate"] == 0.3333 and d1["name"] == "区城市管理局"
    # D02 has 2 due events, below the minimum of 3: counted, not rated
    assert (d2["received"], d2["due"], d2["closed"]) == (2, 2, 2)
    assert not d2["rated"] and d2["rank"] is None
    assert (d2["closure_rate"], d2["on_time_rate"], d2["rework_rate"]) == (None, None, None)
    assert d2["mean_handling_hours"] == 5.25
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(evaluation_csv(list(units.values())))))
    assert [r["code"] for r in rows] == ["D01", "D02"]
    assert rows[0]["rank"] == "1" and rows[0]["on_time_rate"] == "0.3333" and rows[0]["due"] == "3"
    assert rows[1]["rank"] == "" and rows[1]["closure_rate"] == "" and rows[1]["rated"] == "False"

"""The events world: a small layout with departments, categories and members around an
event point, events inserted in any status, and the October 2026 evaluation world —
shared by the event tests of every package."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.conftest import TEST_CLOCK, token_for
from tests.factories import COMMUNITY, GRID_A, GRID_B, add_area, add_grid, add_member, add_user, rect, small_layout

X, Y = 113.60, 34.70
P = (X + 0.02, Y + 0.02)  # an event point inside grid A
SH = ZoneInfo("Asia/Shanghai")
M_PER_DEG_LON = 111_320 * math.cos(math.radians(P[1]))  # close enough for placing residences


def east(metres: float) -> tuple[float, float]:
    return P[0] + metres / M_PER_DEG_LON, P[1]


def add_departments_and_categories(session: Session) -> dict[str, int]:
    depts = {}
    for code, name in (("D01", "区城市管理局"), ("D02", "区应急管理局"), ("D03", "区市场监督管理局")):
        depts[code] = session.execute(
            text("INSERT INTO departments (code, name) VALUES (:c, :n) RETURNING id"), {"c": code, "n": name}
        ).scalar()
    for code, name, dept, limit, role in (
        ("xfyh", "消防隐患", "D02", 12, "pingan"),
        ("zdjy", "占道经营", "D01", 24, "wenming"),
        ("qt", "其他", "D01", 16, None),
    ):
        session.execute(
            text(
                "INSERT INTO event_categories (code, name, department_id, time_limit_hours, role_code) "
                "VALUES (:c, :n, :d, :l, :r)"
            ),
            {"c": code, "n": name, "d": depts[dept], "l": limit, "r": role},
        )
    return depts


def add_resident(
    session: Session, name: str, point: tuple[float, float], role: str, grid_id: int, status: str = "confirmed"
) -> int:
    member = add_member(session, name)
    residence = session.execute(
        text(
            "INSERT INTO residences (member_id, geom, source_crs, source_x, source_y) "
            "VALUES (:m, ST_SetSRID(ST_MakePoint(:x, :y), 4326), 'wgs84', :x, :y) RETURNING id"
        ),
        {"m": member, "x": point[0], "y": point[1]},
    ).scalar()
    session.execute(
        text(
            "INSERT INTO registrations (member_id, residence_id, grid_id, grid_version_id, role_code, status) "
            "SELECT :m, :r, :g, gv.id, :role, :s FROM grid_versions gv WHERE gv.grid_id = :g AND gv.valid_to IS NULL"
        ),
        {"m": member, "r": residence, "g": grid_id, "role": role, "s": status},
    )
    return member


def event_world(session: Session) -> dict:
    """small_layout + departments, categories, and members around P (east of it)."""
    grids = small_layout(session, X, Y)
    depts = add_departments_and_categories(session)
    members = {
        "near": add_resident(session, "近党员", east(50), "pingan", grids["A"]),
        "mid": add_resident(session, "中党员", east(300), "pingan", grids["A"]),
        "far": add_resident(session, "远党员", east(3000), "pingan", grids["B"]),
        "wrong_role": add_resident(session, "文明党员", east(30), "wenming", grids["A"]),
        "pending": add_resident(session, "待确认党员", east(20), "pingan", grids["A"], status="pending"),
        "busy": add_resident(session, "忙党员", east(100), "pingan", grids["A"]),
    }
    session.flush()
    return {"grids": grids, "depts": depts, "members": members}


def insert_event(session: Session, grid_id: int, status: str, category: str = "xfyh", **cols) -> int:
    """An event in ``status`` with timestamps consistent with it (relative to the clock: gridbranch_now())."""
    dispatched = status in ("dispatched", "in_progress", "handled", "closed", "deferred", "returned")
    values = {
        "reported_at": cols.pop("reported_at", None),
        "dispatched_at": cols.pop("dispatched_at", None),
        "due_at": cols.pop("due_at", None),
        "closed_at": cols.pop("closed_at", None),
        "handled_at": cols.pop("handled_at", None),
        "duplicate_of": cols.pop("duplicate_of", None),
        "return_count": cols.pop("return_count", 0),
        "department": cols.pop("department", None),
    }
    assert not cols
    return session.execute(
        text(
            """INSERT INTO events (geom, source_crs, category_code, channel, description, status, grid_id, grid_version_id,
                                   department_id, reported_at, dispatched_at, due_at, closed_at, handled_at,
                                   duplicate_of, return_count)
               SELECT ST_SetSRID(ST_MakePoint(:x, :y), 4326), 'wgs84', :cat, 'public', '测试事件', :status, :g, gv.id,
                      COALESCE((SELECT id FROM departments WHERE code = :dept), c.department_id),
                      COALESCE(:reported_at, gridbranch_now() - interval '2 days'),
                      COALESCE(:dispatched_at, CASE WHEN :dispatched THEN gridbranch_now() - interval '1 day' END),
                      COALESCE(:due_at, CASE WHEN :dispatched THEN gridbranch_now() + interval '1 day' END),
                      COALESCE(:closed_at, CASE WHEN :status IN ('closed', 'rejected', 'duplicate') THEN gridbranch_now() END),
                      :handled_at,
                      CASE WHEN :status = 'duplicate' THEN COALESCE(:duplicate_of, (SELECT min(id) FROM events)) END,
                      :return_count
               FROM grid_versions gv, event_categories c WHERE gv.grid_id = :g AND gv.valid_to IS NULL AND c.code = :cat
               RETURNING id"""
        ),
        {
            "x": P[0],
            "y": P[1],
            "cat": category,
            "status": status,
            "g": grid_id,
            "dispatched": dispatched,
            "dept": values.pop("department"),
            **values,
        },
    ).scalar()


G1, G2 = "410105001001001", "410105002001001"


def at(mo, d, h, mi=0):
    return datetime(2026, mo, d, h, mi, tzinfo=SH)


#: The instant the evaluation world is judged at (its figures count what is overdue then).
EVALUATED_AT = at(11, 28, 9)


def evaluation_world(session: Session) -> None:
    """Two streets (S1 west, S2 east), one community and one grid each; ten events.

    All in October 2026 (Mon 12 … Fri 23), except e7 (30 September, outside the period),
    judged at :data:`EVALUATED_AT` (the tests' clock is moved there, before the session's
    first statement, so that the database sees it too).
    """
    TEST_CLOCK.set(EVALUATED_AT)
    add_area(session, "410105000000", "测试区", "district", rect(X, Y, X + 0.2, Y + 0.1))
    add_area(session, "410105001000", "西街道", "street", rect(X, Y, X + 0.1, Y + 0.1), "410105000000")
    add_area(session, "410105002000", "东街道", "street", rect(X + 0.1, Y, X + 0.2, Y + 0.1), "410105000000")
    add_area(session, "410105001001", "西社区", "community", rect(X, Y, X + 0.1, Y + 0.1), "410105001000")
    add_area(session, "410105002001", "东社区", "community", rect(X + 0.1, Y, X + 0.2, Y + 0.1), "410105002000")
    g1 = add_grid(session, G1, "西社区第1网格", rect(X, Y, X + 0.1, Y + 0.1))
    g2 = add_grid(session, G2, "东社区第1网格", rect(X + 0.1, Y, X + 0.2, Y + 0.1))
    add_departments_and_categories(session)
    far = datetime(2099, 1, 1, tzinfo=SH)
    rows = [
        # grid, dept, status, reported, dispatched, due, handled, closed, returns
        (g1, "D01", "closed", at(10, 12, 8), at(10, 12, 9), at(10, 13, 9), at(10, 12, 11), at(10, 12, 15), 0),  # e1
        (
            g1,
            "D01",
            "closed",
            at(10, 13, 8),
            at(10, 13, 9),
            at(10, 13, 17),
            at(10, 13, 16, 30),
            at(10, 14, 10),
            1,
        ),  # e2 late
        (g1, "D01", "in_progress", at(10, 19, 8), at(10, 19, 9), at(10, 20, 9), None, None, 0),  # e3 overdue
        (g1, "D01", "deferred", at(10, 21, 8), at(10, 21, 9), at(10, 22, 9), None, None, 0),  # e4 deferred
        (g1, "D01", "dispatched", at(10, 22, 8), at(10, 22, 9), far, None, None, 0),  # e5 not yet due
        (g1, "D01", "rejected", at(10, 22, 10), None, None, None, at(10, 22, 11), 0),  # e6 rejected
        (g1, "D01", "closed", at(9, 30, 23), at(10, 8, 9), at(10, 9, 9), at(10, 8, 10), at(10, 8, 11), 0),  # e7 before
        (
            g2,
            "D02",
            "closed",
            at(10, 15, 13),
            at(10, 15, 14),
            at(10, 16, 14),
            at(10, 15, 17),
            at(10, 15, 17, 20),
            0,
        ),  # e8
        (g2, "D02", "closed", at(10, 16, 8), at(10, 16, 9), at(10, 19, 12), at(10, 19, 9), at(10, 19, 9, 10), 2),  # e9
        (g2, "D01", "reported", at(10, 20, 10), None, None, None, None, 0),  # e10
    ]
    for grid, dept, status, reported, dispatched, due, handled, closed, returns in rows:
        insert_event(
            session,
            grid,
            status,
            reported_at=reported,
            dispatched_at=dispatched,
            due_at=due,
            handled_at=handled,
            closed_at=closed,
            return_count=returns,
            department=dept,
        )
    session.flush()


# --------------------------------------------------------------------------------------
# The events world over HTTP: its accounts, reports and transitions
# --------------------------------------------------------------------------------------

USERS = {
    "disp": ("dispatcher", None, None),
    "cadmin": ("admin", COMMUNITY, None),
    "other": ("admin", "410105002000", None),
    "gw_a": ("grid_worker", GRID_A, None),
    "gw_b": ("grid_worker", GRID_B, None),
}


def add_event_users(db, member_id=None):
    for name, (role, area, _) in USERS.items():
        add_user(db, name, role, area_code=area)
    if member_id is not None:
        add_user(db, "m1", "member", member_id=member_id)
    return {u: token_for(u) for u in (*USERS, "m1")}


def post(w, user=None, **body):
    payload = {"lon": P[0], "lat": P[1], "category": "xfyh", "description": "楼道堆放杂物，堵塞消防通道", **body}
    return w["c"].post("/v1/events", json=payload, headers=w["h"][user] if user else {})


def act(w, event_id, action, user="disp", version=None, **body):
    if version is None:
        version = w["c"].get(f"/v1/events/{event_id}", headers=w["h"]["disp"]).json()["version"]
    return w["c"].post(
        f"/v1/events/{event_id}/transitions", json={"action": action, "version": version, **body}, headers=w["h"][user]
    )


def events_api_world(db, client) -> dict:
    """:func:`event_world` with the accounts of :data:`USERS` (and member ``m1``, the
    nearest member), their tokens (``h``), the client (``c``) and the session (``db``)."""
    w = event_world(db)
    h = add_event_users(db, member_id=w["members"]["near"])
    return {**w, "h": h, "c": client, "db": db}

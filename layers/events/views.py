"""Reading events: one event's view (with or without its personal parts), its track,
the lists by area and filter with the time-limit state, and what decides who may see
an event (:func:`event_area`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.codes import area_prefix
from layers.errors import NotFound
from layers.events.lifecycle import CLOCK, DEPARTMENT, actions_from


def event_area(session: Session, event_id: int) -> tuple[str | None, str | None, frozenset[int]]:
    """(grid code, reporting account, ids of the departments it was ever dispatched to)
    of event ``event_id``: who may see it, and act on it, is decided from these
    (``geo_api.deps.scoped_event``). :class:`NotFound`."""
    row = session.execute(
        text(
            "SELECT g.code, e.reporter, ARRAY(SELECT l.department_id FROM event_log l WHERE l.event_id = e.id "
            "AND l.action = 'dispatch' AND l.department_id IS NOT NULL) AS departments "
            "FROM events e LEFT JOIN grids g ON g.id = e.grid_id WHERE e.id = :id"
        ),
        {"id": event_id},
    ).first()
    if row is None:
        raise NotFound(f"no event with id {event_id}", field="id")
    return row.code, row.reporter, frozenset(row.departments)


_CLOCK_SQL = ", ".join(f"'{s}'" for s in CLOCK)

_EVENT_SQL = f"""
    SELECT * FROM (
    SELECT e.id, e.status, e.version, e.channel, e.description, e.photos, e.reporter, e.reporter_contact,
           e.category_code, c.name AS category_name, c.time_limit_hours,
           ST_X(e.geom) AS lon, ST_Y(e.geom) AS lat, e.source_crs, e.source_x, e.source_y,
           g.code AS grid_code, g.name AS grid_name, gv.version AS grid_version,
           cm.code AS community_code, cm.name AS community_name, st.code AS street_code, st.name AS street_name,
           e.department_id, d.code AS department_code, d.name AS department_name, e.assignee, e.member_id, m.name AS member_name,
           e.return_count, e.duplicate_of, e.reason,
           e.reported_at, e.dispatched_at, e.due_at, e.handled_at, e.closed_at,
           COALESCE(e.warn_at, e.dispatched_at + (e.due_at - e.dispatched_at) * COALESCE(c.warn_share, :share)) AS warn_at,
           CASE WHEN e.status IN ({_CLOCK_SQL}) AND e.due_at IS NOT NULL THEN
                CASE WHEN gridbranch_now() >= e.due_at THEN 'overdue'
                     WHEN gridbranch_now() >= COALESCE(e.warn_at, e.dispatched_at
                                            + (e.due_at - e.dispatched_at) * COALESCE(c.warn_share, :share))
                     THEN 'warning' ELSE 'normal' END
           END AS time_state,
           (SELECT max(l.at) FROM event_log l WHERE l.event_id = e.id) AS updated_at
    FROM events e
    JOIN event_categories c ON c.code = e.category_code
    LEFT JOIN grids g ON g.id = e.grid_id
    LEFT JOIN grid_versions gv ON gv.id = e.grid_version_id
    LEFT JOIN admin_areas cm ON cm.id = g.community_id
    LEFT JOIN admin_areas st ON st.id = cm.parent_id
    LEFT JOIN departments d ON d.id = e.department_id
    LEFT JOIN members m ON m.id = e.member_id
    ) q
"""


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def event_row(session: Session, event_id: int, *, warn_share: float):
    row = session.execute(text(_EVENT_SQL + " WHERE q.id = :id"), {"id": event_id, "share": warn_share}).first()
    if row is None:
        raise NotFound(f"no event with id {event_id}", field="id")
    return row


def event_view(row, *, personal: bool, role: str | None = None, department_id: int | None = None) -> dict[str, Any]:
    """The shape of an event. ``personal`` adds who reported it (account and the contact
    they left) and the assisting member; ``role`` adds the actions that role may take
    (department staff, of department ``department_id``: only while it holds the event)."""
    out: dict[str, Any] = {
        "id": row.id,
        "status": row.status,
        "version": row.version,
        "category": {"code": row.category_code, "name": row.category_name},
        "channel": row.channel,
        "description": row.description,
        "photos": row.photos or [],
        "point": [round(row.lon, 7), round(row.lat, 7)],
        "source": {"crs": row.source_crs, "x": row.source_x, "y": row.source_y},
        "grid": {"code": row.grid_code, "name": row.grid_name, "version": row.grid_version} if row.grid_code else None,
        "community": {"code": row.community_code, "name": row.community_name} if row.community_code else None,
        "street": {"code": row.street_code, "name": row.street_name} if row.street_code else None,
        "department": {"code": row.department_code, "name": row.department_name} if row.department_code else None,
        "assignee": row.assignee,
        "return_count": row.return_count,
        "duplicate_of": row.duplicate_of,
        "reason": row.reason,
        "time_limit_hours": float(row.time_limit_hours),
        "reported_at": _iso(row.reported_at),
        "dispatched_at": _iso(row.dispatched_at),
        "warn_at": _iso(row.warn_at),
        "due_at": _iso(row.due_at),
        "handled_at": _iso(row.handled_at),
        "closed_at": _iso(row.closed_at),
        "updated_at": _iso(row.updated_at),
        "time_state": row.time_state,
        "closed_on_time": (row.closed_at <= row.due_at) if row.status == "closed" and row.due_at else None,
    }
    if personal:
        out["reporter"] = row.reporter
        out["contact"] = row.reporter_contact
        out["member"] = {"id": row.member_id, "name": row.member_name} if row.member_id else None
    if role is not None:
        holds = role != DEPARTMENT or (row.dispatched_at is not None and row.department_id == department_id)
        out["actions"] = actions_from(row.status, role) if holds else []
    return out


def event_log(session: Session, event_id: int, *, personal: bool = True) -> list[dict[str, Any]]:
    """The event's track, oldest first: each entry with the department the event was with
    (a dispatch: sent to) and a handling's feedback photos. Without ``personal`` the
    report's actor (the reporting account) is left out."""
    rows = session.execute(
        text(
            "SELECT l.at, l.actor, l.action, l.from_status, l.to_status, l.note, l.photos, d.code, d.name "
            "FROM event_log l LEFT JOIN departments d ON d.id = l.department_id "
            "WHERE l.event_id = :id ORDER BY l.at, l.id"
        ),
        {"id": event_id},
    ).all()
    return [
        {
            "at": r.at.isoformat(),
            "actor": r.actor if personal or r.action != "report" else None,
            "action": r.action,
            "from": r.from_status,
            "to": r.to_status,
            "note": r.note,
            "photos": r.photos or [],
            "department": {"code": r.code, "name": r.name} if r.code else None,
        }
        for r in rows
    ]


def events_within(
    session: Session,
    *,
    prefix: str | None,
    statuses: list[str] | None,
    category: str | None,
    time_state: str | None,
    reported_from: datetime | None,
    reported_to: datetime | None,
    department: str | None,
    warn_share: float,
    limit: int,
    offset: int,
    dispatched_to: int | None = None,
):
    """Events whose grid code starts with ``prefix`` (None: all, including events in no
    grid), newest first, filtered by status, category, department code, time state
    (``warning``/``overdue``/``normal``), report time [from, to) and, with
    ``dispatched_to`` (a department's id), to the events ever dispatched to that
    department (its queue and its history). Returns (rows, total)."""
    # each filter given (a blank one is not given): its condition, its parameter
    conditions = (
        (
            "EXISTS (SELECT 1 FROM event_log l WHERE l.event_id = q.id AND l.action = 'dispatch' "
            "AND l.department_id = :dispatched_to)",
            "dispatched_to",
            dispatched_to,
        ),
        ("q.grid_code LIKE :prefix", "prefix", prefix + "%" if prefix else None),
        ("q.status = ANY(:statuses)", "statuses", statuses or None),
        ("q.category_code = :category", "category", category or None),
        ("q.department_code = :department", "department", department or None),
        ("q.time_state = :time_state", "time_state", time_state or None),
        ("q.reported_at >= :rfrom", "rfrom", reported_from or None),
        ("q.reported_at < :rto", "rto", reported_to or None),
    )
    where: list[str] = []
    params: dict[str, Any] = {"share": warn_share, "limit": limit, "offset": offset}
    for condition, name, value in conditions:
        if value is not None:
            where.append(condition)
            params[name] = value
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = session.execute(text(f"SELECT count(*) FROM ({_EVENT_SQL}{clause}) n"), params).scalar()
    rows = session.execute(
        text(f"{_EVENT_SQL}{clause} ORDER BY q.reported_at DESC, q.id DESC LIMIT :limit OFFSET :offset"), params
    ).all()
    return rows, total


def scope_prefix(area_code: str | None) -> str | None:
    return area_prefix(area_code) if area_code else None

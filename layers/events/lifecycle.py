"""The lifecycle of events (事件), the national digital urban management flow, and its
time limits on the working calendar.

Lifecycle (信息收集 → 案卷建立 → 任务派遣 → 任务处理 → 处理反馈 → 核查结案)::

    action          from                                  to
    register        reported                              registered    (案卷建立)
    dispatch        registered | returned | deferred      dispatched    (任务派遣; from deferred: resume)
    start           dispatched                            in_progress   (任务处理)
    handle          in_progress                           handled       (处理反馈)
    close           handled                               closed        (核查结案)
    reject          reported | registered | returned      rejected      (not ours, with a reason)
    mark_duplicate  reported | registered                 duplicate     (of an earlier event)
    defer           dispatched | in_progress              deferred      (缓办, with a reason)
    return          dispatched | in_progress | handled    returned      (返工 / sent back, with a reason)

``return`` counts rework (返工) per event (``return_count``). ``closed``, ``rejected``
and ``duplicate`` are final. Every transition is one conditional UPDATE (optimistic
concurrency: ``WHERE id = :id AND version = :v AND status = :expected``; no row → 409)
plus one row appended to ``event_log``, which the database refuses to change.

Who may do what (roles of ``geo_api.deps``; "covers" = the account's area contains the
event's grid; dispatchers cover everything):

* report — anyone; the channel must fit the caller: ``public`` anyone (anonymous too),
  ``member`` members, ``grid_worker`` grid workers, ``hotline`` and ``video`` the command
  centre (dispatchers) and admins. Dispatchers and admins may file any channel.
* register, dispatch, defer, reject, mark_duplicate, close — dispatchers, admins covering.
* start, handle — dispatchers, admins covering, the staff of the department the event is
  dispatched to now (``department_staff``; handling with their feedback: a note and photo
  URLs), and the grid worker of the event's grid, who records the department's work on
  site where it asks them to.
* return — from ``handled`` (verification failed, 返工): dispatchers and admins covering;
  from ``dispatched``/``in_progress`` (not the assignee's job, 退回): also the grid worker
  and the staff of the department holding it, sending it back to the centre, which
  dispatches it again (to another department, or the same).

Only a return after handling is rework: it counts in ``return_count`` (返工). A send-back
from ``dispatched``/``in_progress`` is recorded in the track (with the department it was
with) and counted in the evaluation as that department's ``returned``, never as its close.

Every track entry names the department the event was with when it was written
(``event_log.department_id``; a dispatch: the department it was dispatched to).
Department staff see the events dispatched to their department now or before (the track
says so), read only once they are gone elsewhere, and never personal data (reporter,
contact, assisting member).

Time limits: the category's ``time_limit_hours`` in working hours on the working
calendar (:mod:`layers.workcal`), the clock starting at each dispatch; ``warn_at`` at the
category's (or the configured) warning share of the limit. The clock runs in
``dispatched``, ``in_progress``, ``handled`` and ``returned``; it stops at ``deferred``
(缓办; a resume dispatches again with a fresh limit) and at the final states.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from layers.errors import Conflict, Forbidden, InvalidInput, NotFound
from layers.events.report import department_id
from layers.models import Event
from layers.workcal import WorkCalendar, add_working_hours

TERMINAL = ("closed", "rejected", "duplicate")
OPEN = ("reported", "registered", "dispatched", "in_progress", "handled", "returned", "deferred")
#: States in which the time limit runs.
CLOCK = ("dispatched", "in_progress", "handled", "returned")
#: States in which an assisting member holds the task.
TASK_OPEN = ("dispatched", "in_progress", "handled", "returned")

DISPATCHERS = frozenset({"dispatcher", "admin"})
DEPARTMENT = "department_staff"
#: Who handles a dispatched event: the centre, the grid worker on site, the department.
HANDLERS = frozenset({"dispatcher", "admin", "grid_worker", DEPARTMENT})


@dataclass(frozen=True)
class Transition:
    sources: tuple[str, ...]
    target: str
    roles: frozenset[str]


TRANSITIONS: dict[str, Transition] = {
    "register": Transition(("reported",), "registered", DISPATCHERS),
    "reject": Transition(("reported", "registered", "returned"), "rejected", DISPATCHERS),
    "mark_duplicate": Transition(("reported", "registered"), "duplicate", DISPATCHERS),
    "dispatch": Transition(("registered", "returned", "deferred"), "dispatched", DISPATCHERS),
    "start": Transition(("dispatched",), "in_progress", HANDLERS),
    "handle": Transition(("in_progress",), "handled", HANDLERS),
    "close": Transition(("handled",), "closed", DISPATCHERS),
    "defer": Transition(("dispatched", "in_progress"), "deferred", DISPATCHERS),
    "return": Transition(("dispatched", "in_progress", "handled"), "returned", HANDLERS),
}
ACTIONS = tuple(TRANSITIONS)
#: Actions needing a reason (stored on the event and in the log).
NEEDS_REASON = ("reject", "defer", "return")

#: The open states and the task-holding states as SQL lists (the report writer's
#: duplicate search, the assisting member's open tasks).
OPEN_SQL = ", ".join(f"'{s}'" for s in OPEN)
TASK_OPEN_SQL = ", ".join(f"'{s}'" for s in TASK_OPEN)


def allowed(action: str, status: str, role: str | None) -> bool:
    """Whether ``role`` may take ``action`` on an event in ``status`` (area aside)."""
    t = TRANSITIONS.get(action)
    if t is None or status not in t.sources or role not in t.roles:
        return False
    if action == "return" and status == "handled" and role not in DISPATCHERS:
        return False  # verifying the work (and sending it back) is the centre's
    return True


def actions_from(status: str, role: str | None) -> list[str]:
    """The actions ``role`` may take on an event in ``status``."""
    return [a for a in ACTIONS if allowed(a, status, role)]


# --------------------------------------------------------------------------------------
# Working calendar
# --------------------------------------------------------------------------------------


def load_calendar(
    session: Session, *, periods: str, weekend, holidays=(), workdays=(), timezone: str = "Asia/Shanghai"
) -> WorkCalendar:
    """The working calendar: configured periods, weekend, holidays and make-up working
    days, with the ``work_calendar_days`` table overriding the configured days."""
    rows = session.execute(text("SELECT day, working FROM work_calendar_days")).all()
    table = {r.day: r.working for r in rows}
    days_off = {d for d in holidays if d not in table} | {d for d, w in table.items() if not w}
    days_on = {d for d in workdays if d not in table} | {d for d, w in table.items() if w}
    return WorkCalendar.build(periods, weekend, days_off, days_on - days_off, timezone)


def calendar_days(session: Session, year: int | None = None) -> list[dict[str, Any]]:
    where = " WHERE extract(year FROM day) = :y" if year else ""
    rows = session.execute(
        text("SELECT day, working, note FROM work_calendar_days" + where + " ORDER BY day"), {"y": year}
    ).all()
    return [{"day": r.day.isoformat(), "working": r.working, "note": r.note} for r in rows]


def set_calendar_day(session: Session, day, working: bool | None, note: str | None = None) -> None:
    """Mark ``day`` a holiday (``working`` False) or a make-up working day (True), or
    with None drop the entry (the weekday rule applies again). The caller commits."""
    if working is None:
        session.execute(text("DELETE FROM work_calendar_days WHERE day = :d"), {"d": day})
        return
    session.execute(
        text(
            """INSERT INTO work_calendar_days (day, working, note) VALUES (:d, :w, :n)
               ON CONFLICT (day) DO UPDATE SET working = EXCLUDED.working, note = EXCLUDED.note"""
        ),
        {"d": day, "w": working, "n": note},
    )


# --------------------------------------------------------------------------------------
# Transitions
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Move:
    """A requested transition. ``version`` is the version the caller last saw."""

    action: str
    version: int
    note: str | None = None
    reason: str | None = None
    duplicate_of: int | None = None
    department: str | None = None
    assignee: str | None = None
    member_id: int | None = None
    photos: tuple[str, ...] = ()


_CURRENT_SQL = text(
    """SELECT e.id, e.status, e.version, e.reported_at, e.assignee, e.department_id, e.member_id, e.dispatched_at,
              g.code AS grid_code, c.time_limit_hours, c.warn_share, d.name AS department_name, gridbranch_now() AS now
       FROM events e JOIN event_categories c ON c.code = e.category_code
       LEFT JOIN grids g ON g.id = e.grid_id LEFT JOIN departments d ON d.id = e.department_id
       WHERE e.id = :id"""
)


def transition_event(
    session: Session,
    event_id: int,
    move: Move,
    *,
    actor: str,
    role: str | None,
    covers,
    calendar: WorkCalendar,
    warn_share: float,
    max_open_tasks: int,
    actor_department: int | None = None,
) -> int:
    """Apply ``move`` to event ``event_id`` as ``actor`` (``role``; ``covers(grid_code)``
    tells whether the actor's area contains the event's grid; department staff act on the
    events dispatched to their department, ``actor_department``, now). Returns the new version.

    404 unknown event; 403 not the actor's to do; 409 an illegal transition from the
    current status, a stale ``version``, or a concurrent change that got there first;
    422 a missing reason or a bad reference. The caller commits."""
    if move.action not in TRANSITIONS:
        raise InvalidInput(f"unknown action {move.action!r}; one of {', '.join(ACTIONS)}", field="action")
    cur = session.execute(_CURRENT_SQL, {"id": event_id}).first()
    if cur is None:
        raise NotFound(f"no event with id {event_id}", field="id")
    t = TRANSITIONS[move.action]
    if role not in t.roles:
        raise Forbidden(f"a {role} may not {move.action} events", field="action")
    if role == DEPARTMENT:
        if actor_department is None or cur.dispatched_at is None or cur.department_id != actor_department:
            raise Forbidden(f"event {event_id} is not dispatched to your department")
    elif not covers(cur.grid_code):
        raise Forbidden(f"event {event_id} (grid {cur.grid_code}) is outside your area")
    if cur.status not in t.sources:
        raise Conflict(
            f"cannot {move.action} an event that is {cur.status}; possible now: "
            f"{', '.join(actions_from(cur.status, role)) or 'nothing (final)'}",
            field="action",
            current_status=cur.status,
            allowed=actions_from(cur.status, role),
        )
    if not allowed(move.action, cur.status, role):
        raise Forbidden(f"a {role} may not {move.action} an event that is {cur.status}", field="action")
    if move.version != cur.version:
        raise Conflict(
            f"event {event_id} is at version {cur.version}, not {move.version}: reload and retry",
            field="version",
            current_version=cur.version,
        )

    now: datetime = cur.now
    values: dict[str, Any] = {"status": t.target}
    reason = (move.reason or move.note or "").strip() or None
    note = (move.note or "").strip() or None
    if move.action in NEEDS_REASON:
        if reason is None:
            raise InvalidInput(f"{move.action} needs a reason", field="reason")
        values["reason"] = reason
        note = note or reason
    if move.photos and move.action != "handle":
        raise InvalidInput("photos come with a handling's feedback (handle) only", field="photos")
    if move.action == "mark_duplicate":
        original = _check_original(session, event_id, move.duplicate_of, cur.reported_at)
        values.update(duplicate_of=original, closed_at=now)
        note = note or f"重复上报，原事件 {original}"
    elif move.action == "reject":
        values["closed_at"] = now
    elif move.action == "dispatch":
        dept_name = cur.department_name
        if move.department is not None:
            values["department_id"] = department_id(session, move.department)
            dept_name = session.execute(
                text("SELECT name FROM departments WHERE id = :d"), {"d": values["department_id"]}
            ).scalar()
        elif cur.department_id is None:
            values["department_id"] = session.execute(
                text(
                    "SELECT c.department_id FROM events e JOIN event_categories c ON c.code = e.category_code "
                    "WHERE e.id = :id"
                ),
                {"id": event_id},
            ).scalar()
        if move.member_id is not None:
            _check_member(session, move.member_id, max_open_tasks, current=cur.member_id)
            values["member_id"] = move.member_id
        limit = float(cur.time_limit_hours)
        share = float(cur.warn_share) if cur.warn_share is not None else warn_share
        values.update(
            dispatched_at=now,
            due_at=add_working_hours(now, limit, calendar),
            warn_at=add_working_hours(now, limit * share, calendar),
            assignee=(move.assignee or "").strip() or None,
            reason=None,
        )
        note = note or (f"派遣至{dept_name}" if dept_name else "派遣")
    elif move.action == "start":
        values["assignee"] = (move.assignee or "").strip() or cur.assignee or actor
    elif move.action == "handle":
        values["handled_at"] = now
    elif move.action == "close":
        values["closed_at"] = now
    elif move.action == "return" and cur.status == "handled":
        values["return_count"] = Event.return_count + 1  # rework; a send-back before handling is not

    stmt = (
        update(Event)
        .where(Event.id == event_id, Event.version == move.version, Event.status == cur.status)
        .values(**values, version=Event.version + 1)
        .returning(Event.version)
    )
    new_version = session.execute(stmt).scalar()
    if new_version is None:
        raise Conflict(f"event {event_id} was changed by someone else meanwhile: reload and retry", field="version")
    # the department the event is with: once dispatched, the (new) assignee department
    with_department = (
        values.get("department_id", cur.department_id)
        if move.action == "dispatch" or cur.dispatched_at is not None
        else None
    )
    session.execute(
        text(
            "INSERT INTO event_log (event_id, at, actor, action, from_status, to_status, note, department_id, "
            "photos) VALUES (:e, :at, :actor, :action, :from_, :to, :note, :dept, CAST(:photos AS jsonb))"
        ),
        {
            "e": event_id,
            "at": now,
            "actor": actor,
            "action": move.action,
            "from_": cur.status,
            "to": t.target,
            "note": note,
            "dept": with_department,
            "photos": orjson.dumps(list(move.photos)).decode() if move.photos else None,
        },
    )
    return new_version


def _check_original(session: Session, event_id: int, original: int | None, reported_at: datetime) -> int:
    if original is None:
        raise InvalidInput("mark_duplicate needs duplicate_of, the id of the original event", field="duplicate_of")
    if original == event_id:
        raise InvalidInput("an event cannot duplicate itself", field="duplicate_of")
    row = session.execute(text("SELECT status, reported_at FROM events WHERE id = :id"), {"id": original}).first()
    if row is None:
        raise InvalidInput(f"no event with id {original}", field="duplicate_of")
    if row.status in ("duplicate", "rejected"):
        raise InvalidInput(f"event {original} is itself {row.status}; link the original", field="duplicate_of")
    if row.reported_at > reported_at:
        raise InvalidInput(f"event {original} was reported later than this one", field="duplicate_of")
    return original


def _check_member(session: Session, member_id: int, max_open_tasks: int, current: int | None) -> None:
    ok = session.execute(
        text("SELECT 1 FROM registrations WHERE member_id = :m AND status = 'confirmed'"), {"m": member_id}
    ).first()
    if ok is None:
        raise InvalidInput(f"member {member_id} has no confirmed registration", field="member_id")
    if member_id == current:
        return
    n = session.execute(
        text(f"SELECT count(*) FROM events WHERE member_id = :m AND status IN ({TASK_OPEN_SQL})"), {"m": member_id}
    ).scalar_one()  # count(*): always one row
    if n >= max_open_tasks:
        raise Conflict(
            f"member {member_id} already holds {n} open tasks (at most {max_open_tasks})",
            field="member_id",
            open_tasks=n,
        )

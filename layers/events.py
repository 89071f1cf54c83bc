"""Events (事件): report anywhere, route by location and category, follow the lifecycle
of the national digital urban management flow, warn on time limits.

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

Coordinates: storage EPSG:4326 (degrees); distances in metres on the geography type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from layers.codes import area_prefix
from layers.errors import Conflict, Forbidden, InvalidInput, NotFound, TooManyRequests
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

CHANNEL_ROLES = {
    "public": None,  # anyone, anonymous included
    "member": frozenset({"member", "dispatcher", "admin"}),
    "grid_worker": frozenset({"grid_worker", "dispatcher", "admin"}),
    "hotline": frozenset({"dispatcher", "admin"}),
    "video": frozenset({"dispatcher", "admin"}),
}
CHANNEL_NAMES = {"grid_worker": "网格员", "member": "党员", "public": "群众", "hotline": "热线", "video": "视频巡查"}


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
# Reporting
# --------------------------------------------------------------------------------------


def check_channel(channel: str, role: str | None) -> None:
    """403 unless the caller may report on ``channel`` (see the module docstring)."""
    if channel not in CHANNEL_ROLES:
        raise InvalidInput(f"unknown channel {channel!r}; one of {', '.join(CHANNEL_ROLES)}", field="channel")
    roles = CHANNEL_ROLES[channel]
    if roles is None or role in roles:
        return
    if role is None:
        raise Forbidden(f"anonymous reports come through the public channel, not {channel!r}", field="channel")
    raise Forbidden(f"a {role} may not report through the {channel!r} channel", field="channel")


def check_report_size(
    description: str, photos: list[str] | tuple[str, ...], *, max_description: int, max_photos: int, max_photo_url: int
) -> None:
    """422 naming the field when the description is empty or too long, or when there are
    too many photos or a photo is not an http(s) URL of reasonable length."""
    if not description or not description.strip():
        raise InvalidInput("the description is empty", field="description")
    if len(description) > max_description:
        raise InvalidInput(
            f"the description has {len(description)} characters; at most {max_description}",
            field="description",
            max_length=max_description,
        )
    check_photos(photos, max_photos=max_photos, max_photo_url=max_photo_url)


def check_photos(photos: list[str] | tuple[str, ...], *, max_photos: int, max_photo_url: int) -> None:
    """422 naming the field when there are too many photos or one is not an http(s) URL
    of reasonable length (a report's, or a handling's feedback)."""
    if len(photos) > max_photos:
        raise InvalidInput(f"{len(photos)} photos; at most {max_photos}", field="photos", max_items=max_photos)
    for i, url in enumerate(photos):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > max_photo_url:
            raise InvalidInput(
                f"photo {i} must be an http(s) URL of at most {max_photo_url} characters", field=f"photos.{i}"
            )


_OPEN_SQL = ", ".join(f"'{s}'" for s in OPEN)


def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` parameters → ``$n`` (in order of first use) for a server-side PREPARE."""
    names: list[str] = []

    def number(m: re.Match) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return re.sub(r"(?<![:\w]):([a-z_][a-z0-9_]*)", number, sql), tuple(names)


def execute_prepared(session: Session, name: str, sql: str, names: tuple[str, ...], params: dict[str, Any]):
    """Run ``sql`` as a server-side prepared statement of this connection (prepared on
    first use; PREPARE outlives transactions), sparing the planner on every report;
    returns the result."""
    conn = session.connection()
    info = conn.connection.info
    if name not in info:
        conn.exec_driver_sql(f"PREPARE {name} AS {sql}")
        info[name] = True
    placeholders = ", ".join("%s" for _ in names)
    return conn.exec_driver_sql(f"EXECUTE {name}({placeholders})", tuple(params[n] for n in names))


def stored_report(row: Any, category_code: str) -> dict[str, Any]:
    """The answer's fields for a report just stored, from a row of the group report
    statement (:mod:`layers.events_batch`)."""
    return {
        "id": row.id,
        "status": "reported",
        "version": row.version,
        "reported_at": row.reported_at,
        "category": {"code": category_code, "name": row.category_name},
        "time_limit_hours": float(row.time_limit_hours),
        "department": {"code": row.department_code, "name": row.department_name},
        "routing_override": bool(row.overridden),
        "role_code": row.role_code,
        "possible_duplicates": row.duplicates,
    }


def category_codes(session: Session) -> list[str]:
    return list(session.execute(text("SELECT code FROM event_categories ORDER BY code")).scalars())


def categories(session: Session) -> list[dict[str, Any]]:
    """Every category with its department, time limit (working hours), warning share
    (None: the configured default) and the service role that fits it."""
    rows = session.execute(
        text(
            """SELECT c.code, c.name, c.time_limit_hours, c.warn_share, d.code AS department_code,
                      d.name AS department_name, sr.code AS role_code, sr.name AS role_name
               FROM event_categories c JOIN departments d ON d.id = c.department_id
               LEFT JOIN service_roles sr ON sr.code = c.role_code ORDER BY c.code"""
        )
    ).all()
    return [
        {
            "code": r.code,
            "name": r.name,
            "time_limit_hours": float(r.time_limit_hours),
            "warn_share": float(r.warn_share) if r.warn_share is not None else None,
            "department": {"code": r.department_code, "name": r.department_name},
            "role": {"code": r.role_code, "name": r.role_name} if r.role_code else None,
        }
        for r in rows
    ]


# --------------------------------------------------------------------------------------
# Routing
# --------------------------------------------------------------------------------------

#: Distance bands (upper bounds, metres) shown instead of a member's distance. The
#: distance is the event's to the member's registered grid, never to their residence.
BANDS = (500, 1000, 2000, 5000)
#: The band of a member whose registered grid holds the event (distance 0).
SAME_GRID = "本网格"


def distance_band(metres: float) -> str:
    """A coarse band such as ``"500 m–1 km"`` (never the distance itself); 0 m (the event
    lies in the member's grid) is :data:`SAME_GRID`."""
    if metres <= 0:
        return SAME_GRID
    lower = 0
    for upper in BANDS:
        if metres < upper:
            if not lower:
                return f"< {_m(upper)}"
            if upper < 1000:
                return f"{lower}–{upper} m"
            if lower >= 1000:
                return f"{lower // 1000}–{upper // 1000} km"
            return f"{_m(lower)}–{_m(upper)}"
        lower = upper
    return f"≥ {_m(lower)}"


def _m(metres: int) -> str:
    return f"{metres // 1000} km" if metres >= 1000 else f"{metres} m"


_TASK_OPEN_SQL = ", ".join(f"'{s}'" for s in TASK_OPEN)

_SUGGEST_SQL = text(
    f"""
    WITH ev AS (SELECT geom, geom::geography AS geog FROM events WHERE id = :id),
    near AS MATERIALIZED (
        -- current grids of the caller's area within the radius of the event, with the
        -- event's distance to the grid (0 inside it); the box in degrees is a little
        -- wider than the radius, for the GiST index
        SELECT g.id AS grid_id, ST_Distance(gv.geom::geography, ev.geog) AS distance_m
        FROM ev
        JOIN grid_versions gv ON gridbranch_in_force(gv.valid_from, gv.valid_to)
         AND gv.geom && ST_Expand(ev.geom, :radius / (110000 * cos(radians(ST_Y(ev.geom)))), :radius / 110000.0)
         AND ST_DWithin(gv.geom::geography, ev.geog, :radius)
        JOIN grids g ON g.id = gv.grid_id AND gridbranch_live(g.retired_at) AND g.code LIKE :prefix
    )
    SELECT r.member_id, m.name, sr.code AS role_code, sr.name AS role_name, near.distance_m, t.open_tasks
    FROM near
    JOIN registrations r ON r.grid_id = near.grid_id AND r.status = 'confirmed' AND r.role_code = :role
    JOIN members m ON m.id = r.member_id
    JOIN service_roles sr ON sr.code = r.role_code
    CROSS JOIN LATERAL (SELECT count(*) AS open_tasks FROM events x
                        WHERE x.member_id = r.member_id AND x.status IN ({_TASK_OPEN_SQL})) t
    WHERE t.open_tasks < :max_open
    ORDER BY near.distance_m, t.open_tasks, r.member_id
    LIMIT :limit
    """
)


def suggest_members(
    session: Session,
    event_id: int,
    role_code: str | None,
    *,
    radius_m: float,
    limit: int,
    max_open_tasks: int,
    within: str | None = None,
) -> list[dict[str, Any]]:
    """Registered (confirmed) members whose service role fits the event's category and
    whose registered grid lies within ``radius_m`` metres of the event and inside area
    (or grid) ``within`` (None: anywhere), nearest grid first, skipping those already
    holding ``max_open_tasks`` open tasks. Each comes as id, name, role and the distance
    band of their grid only.

    Everything here is a function of the member's registered grid, never of their
    residence: two members of one grid are answered alike (ordered by open tasks, then
    id) whatever probe points an event is reported at, so no number of probes locates a
    residence more finely than its grid."""
    if role_code is None:
        return []
    rows = session.execute(
        _SUGGEST_SQL,
        {
            "id": event_id,
            "role": role_code,
            "radius": radius_m,
            "max_open": max_open_tasks,
            "limit": limit,
            "prefix": (area_prefix(within) if within else "") + "%",
        },
    ).all()
    return [
        {
            "member_id": r.member_id,
            "name": r.name,
            "role": {"code": r.role_code, "name": r.role_name},
            "distance_band": distance_band(r.distance_m),
            "open_tasks": int(r.open_tasks),
        }
        for r in rows
    ]


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


def count_routing_probe(session: Session, username: str, event_id: int, *, per_hour: int) -> None:
    """Count a caller's look at an event's member suggestions: at most ``per_hour``
    distinct events per account in any hour (looking again at one already counted is
    free); past it :class:`TooManyRequests` saying when the oldest look leaves the hour.
    Kept in the database (``routing_probes``), so the limit holds across worker processes
    and restarts; an advisory lock per account makes concurrent looks count exactly.
    The caller commits (a refused look is not counted)."""
    session.execute(text("SELECT pg_advisory_xact_lock(hashtext('routing_probes'), hashtext(:u))"), {"u": username})
    session.execute(
        text("DELETE FROM routing_probes WHERE username = :u AND at < gridbranch_now() - interval '1 hour'"),
        {"u": username},
    )
    seen = session.execute(
        text("SELECT 1 FROM routing_probes WHERE username = :u AND event_id = :e"), {"u": username, "e": event_id}
    ).first()
    if seen is not None:
        return
    count, oldest = session.execute(
        text(
            "SELECT count(*), extract(epoch FROM min(at) + interval '1 hour' - gridbranch_now()) FROM routing_probes "
            "WHERE username = :u"
        ),
        {"u": username},
    ).one()
    if count >= per_hour:
        retry = max(1, int(np.ceil(float(oldest))))
        raise TooManyRequests(
            f"member suggestions of at most {per_hour} events an hour per account; try again in {retry} s",
            field="event_id",
            retry_after=retry,
        )
    session.execute(
        text("INSERT INTO routing_probes (username, event_id) VALUES (:u, :e)"), {"u": username, "e": event_id}
    )


_ROUTING_SQL = text(
    """
    SELECT e.id, e.category_code, c.role_code, g.code AS grid_code, g.name AS grid_name,
           g.worker_name, g.worker_phone, cm.code AS community_code, cm.name AS community_name,
           st.code AS street_code, st.name AS street_name,
           dd.code AS default_department_code, dd.name AS default_department_name,
           od.code AS override_department_code, od.name AS override_department_name,
           COALESCE((SELECT json_agg(json_build_object('code', b.code, 'name', b.name, 'kind', b.kind)
                                     ORDER BY (b.kind <> 'grid'), b.code)
                     FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id
                     WHERE bg.grid_id = g.id AND b.active), '[]'::json) AS branches
    FROM events e
    JOIN event_categories c ON c.code = e.category_code
    JOIN departments dd ON dd.id = c.department_id
    LEFT JOIN grids g ON g.id = e.grid_id
    LEFT JOIN admin_areas cm ON cm.id = g.community_id
    LEFT JOIN admin_areas st ON st.id = cm.parent_id
    LEFT JOIN event_routes r ON r.category_code = c.code AND r.street_code = st.code
    LEFT JOIN departments od ON od.id = r.department_id
    WHERE e.id = :id
    """
)


def routing(session: Session, event_id: int) -> dict[str, Any]:
    """Where an event goes: the responsible department (the category's, or the street's
    override), the grid with its community, street, branch and grid worker. Without
    member suggestions (see :func:`suggest_members`)."""
    r = session.execute(_ROUTING_SQL, {"id": event_id}).first()
    if r is None:
        raise NotFound(f"no event with id {event_id}", field="id")
    if r.override_department_code:
        department = {"code": r.override_department_code, "name": r.override_department_name, "rule": "street override"}
    else:
        department = {"code": r.default_department_code, "name": r.default_department_name, "rule": "category"}
    branches = r.branches or []
    return {
        "event_id": r.id,
        "department": department,
        "grid": {"code": r.grid_code, "name": r.grid_name} if r.grid_code else None,
        "community": {"code": r.community_code, "name": r.community_name} if r.community_code else None,
        "street": {"code": r.street_code, "name": r.street_name} if r.street_code else None,
        "branch": branches[0] if branches else None,
        "grid_worker": {"name": r.worker_name, "phone": r.worker_phone} if r.worker_name else None,
        "role_code": r.role_code,
    }


def set_route(session: Session, category: str, street_code: str, department: str | None) -> None:
    """Override (or, with ``department`` None, restore) the department of ``category``
    in street ``street_code``. The caller commits."""
    if session.execute(text("SELECT 1 FROM event_categories WHERE code = :c"), {"c": category}).first() is None:
        raise NotFound(f"no category {category!r}", field="category")
    level = session.execute(text("SELECT level FROM admin_areas WHERE code = :s"), {"s": street_code}).scalar()
    if level != "street":
        raise InvalidInput(f"{street_code} is not a street (街道/镇)", field="street")
    if department is None:
        session.execute(
            text("DELETE FROM event_routes WHERE category_code = :c AND street_code = :s"),
            {"c": category, "s": street_code},
        )
        return
    dept_id = department_id(session, department)
    session.execute(
        text(
            """INSERT INTO event_routes (category_code, street_code, department_id) VALUES (:c, :s, :d)
               ON CONFLICT (category_code, street_code) DO UPDATE SET department_id = EXCLUDED.department_id"""
        ),
        {"c": category, "s": street_code, "d": dept_id},
    )


def routes(session: Session, prefix: str = "") -> list[dict[str, Any]]:
    """The routing overrides in streets whose code starts with ``prefix``."""
    rows = session.execute(
        text(
            """SELECT r.category_code, c.name AS category_name, s.code AS street_code, s.name AS street_name,
                      d.code AS department_code, d.name AS department_name
               FROM event_routes r JOIN event_categories c ON c.code = r.category_code
               JOIN admin_areas s ON s.code = r.street_code JOIN departments d ON d.id = r.department_id
               WHERE r.street_code LIKE :p ORDER BY r.street_code, r.category_code"""
        ),
        {"p": prefix + "%"},
    ).all()
    return [
        {
            "category": {"code": r.category_code, "name": r.category_name},
            "street": {"code": r.street_code, "name": r.street_name},
            "department": {"code": r.department_code, "name": r.department_name},
        }
        for r in rows
    ]


def department_code(session: Session, department_id: int) -> str:
    """The code of department ``department_id`` (:class:`NotFound` when there is none)."""
    code = session.execute(text("SELECT code FROM departments WHERE id = :d"), {"d": department_id}).scalar()
    if code is None:
        raise NotFound(f"no department with id {department_id}", field="department")
    return code


def department_id(session: Session, department: str, field: str = "department") -> int:
    """The id of a department given by code or name; 422 naming ``field`` otherwise."""
    dept = session.execute(text("SELECT id FROM departments WHERE code = :d OR name = :d"), {"d": department}).scalar()
    if dept is None:
        raise InvalidInput(f"unknown department {department!r}", field=field)
    return dept


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
        text(f"SELECT count(*) FROM events WHERE member_id = :m AND status IN ({_TASK_OPEN_SQL})"), {"m": member_id}
    ).scalar()
    if n >= max_open_tasks:
        raise Conflict(
            f"member {member_id} already holds {n} open tasks (at most {max_open_tasks})",
            field="member_id",
            open_tasks=n,
        )


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------

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
    where, params = [], {"share": warn_share, "limit": limit, "offset": offset}
    if dispatched_to is not None:
        where.append(
            "EXISTS (SELECT 1 FROM event_log l WHERE l.event_id = q.id AND l.action = 'dispatch' "
            "AND l.department_id = :dispatched_to)"
        )
        params["dispatched_to"] = dispatched_to
    if prefix:
        where.append("q.grid_code LIKE :prefix")
        params["prefix"] = prefix + "%"
    if statuses:
        where.append("q.status = ANY(:statuses)")
        params["statuses"] = statuses
    if category:
        where.append("q.category_code = :category")
        params["category"] = category
    if department:
        where.append("q.department_code = :department")
        params["department"] = department
    if time_state:
        where.append("q.time_state = :time_state")
        params["time_state"] = time_state
    if reported_from:
        where.append("q.reported_at >= :rfrom")
        params["rfrom"] = reported_from
    if reported_to:
        where.append("q.reported_at < :rto")
        params["rto"] = reported_to
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = session.execute(text(f"SELECT count(*) FROM ({_EVENT_SQL}{clause}) n"), params).scalar()
    rows = session.execute(
        text(f"{_EVENT_SQL}{clause} ORDER BY q.reported_at DESC, q.id DESC LIMIT :limit OFFSET :offset"), params
    ).all()
    return rows, total


def scope_prefix(area_code: str | None) -> str | None:
    return area_prefix(area_code) if area_code else None

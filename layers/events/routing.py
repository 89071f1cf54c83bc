"""Routing events: where an event goes (the department by category, or the street's
override; its grid, community, street, branch and grid worker) and which registered
members nearby could assist — by their registered grid only, never their residence,
and at a limited number of events an hour per account.

Coordinates: storage EPSG:4326 (degrees); distances in metres on the geography type."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.codes import area_prefix
from layers.errors import InvalidInput, NotFound, TooManyRequests
from layers.events.lifecycle import TASK_OPEN_SQL
from layers.events.report import department_id

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
                        WHERE x.member_id = r.member_id AND x.status IN ({TASK_OPEN_SQL})) t
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

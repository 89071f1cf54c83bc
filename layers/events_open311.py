"""Open311 GeoReport v2 views of the event layer (http://wiki.open311.org/GeoReport_v2).

Services are the event categories; service requests are events. ``status`` is ``open``
until the event is closed, rejected or marked as a duplicate (then ``closed``);
``agency_responsible`` is the department; ``expected_datetime`` the due time (empty until
dispatched). Nothing personal leaves here: no reporter, contact or member.
Coordinates are WGS84 degrees.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.errors import NotFound
from layers.events import TERMINAL
from layers.places import all_places

if TYPE_CHECKING:
    from layers.caches import Caches

SPEC = "http://wiki.open311.org/GeoReport_v2"
#: Default window of GET requests.json without dates (the specification's 90 days).
DEFAULT_DAYS = 90
MAX_RESULTS = 1000

_TERMINAL_SQL = ", ".join(f"'{s}'" for s in TERMINAL)


def services(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        text(
            """SELECT c.code, c.name, c.time_limit_hours, d.name AS department_name
               FROM event_categories c JOIN departments d ON d.id = c.department_id ORDER BY c.code"""
        )
    ).all()
    return [
        {
            "service_code": r.code,
            "service_name": r.name,
            "description": f"{r.name}：由{r.department_name}处置，时限{_hours(r.time_limit_hours)}个工作小时",
            "metadata": False,
            "type": "realtime",
            "keywords": r.name,
            "group": r.department_name,
        }
        for r in rows
    ]


def service_definition(session: Session, code: str) -> dict[str, Any]:
    if session.execute(text("SELECT 1 FROM event_categories WHERE code = :c"), {"c": code}).first() is None:
        raise NotFound(f"no service with code {code!r}", field="service_code")
    return {"service_code": code, "attributes": []}


def service_notice(limit_hours) -> str:
    return f"已受理上报，派遣后按{_hours(limit_hours)}个工作小时时限处置"


def _hours(value) -> str:
    v = float(value)
    return str(int(v)) if v.is_integer() else f"{v:g}"


_REQUESTS_SQL = """
    SELECT e.id, e.status, e.reason, e.duplicate_of, e.category_code, c.name AS category_name, c.time_limit_hours,
           e.description, e.photos, ST_X(e.geom) AS lon, ST_Y(e.geom) AS lat,
           d.name AS department_name, e.reported_at, e.due_at,
           (SELECT max(l.at) FROM event_log l WHERE l.event_id = e.id) AS updated_at,
           g.name AS grid_name, cm.name AS community_name, st.name AS street_name, g.code AS grid_code,
           c.public_space,
           -- accepted by staff (立案): registered once, whatever became of it since
           (e.status NOT IN ('reported', 'rejected', 'duplicate')
            OR EXISTS (SELECT 1 FROM event_log l WHERE l.event_id = e.id AND l.action = 'register')) AS accepted
    FROM events e
    JOIN event_categories c ON c.code = e.category_code
    LEFT JOIN departments d ON d.id = COALESCE(e.department_id, c.department_id)
    LEFT JOIN grids g ON g.id = e.grid_id
    LEFT JOIN admin_areas cm ON cm.id = g.community_id
    LEFT JOIN admin_areas st ON st.id = cm.parent_id
"""


def _status(status: str) -> str:
    return "closed" if status in TERMINAL else "open"


_NOTES = {
    "reported": "已上报，待受理",
    "registered": "已立案，待派遣",
    "dispatched": "已派遣",
    "in_progress": "处置中",
    "handled": "已处置，待核查",
    "returned": "退回重新派遣",
    "deferred": "缓办",
    "closed": "已结案",
}


def _notes(r) -> str:
    if r.status == "rejected":
        return f"不予受理：{r.reason}" if r.reason else "不予受理"
    if r.status == "duplicate":
        return f"重复上报，已并入 {r.duplicate_of}"
    return _NOTES.get(r.status, r.status)


def _dt(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def _shown(session: Session, caches: Caches, full: Callable[[str | None], bool]):
    """How a request row is shown to a caller: ``full(grid_code)`` for staff entitled to
    the event; anyone else gets a description and photos only once staff accepted the
    report (立案), and the location of a report outside public space (a doorway, a
    flat) moved to its grid's label point (layers.places.label_point), where the map
    writes the grid's name — so no report pins down where its reporter lives."""
    points = None

    def view(r) -> dict[str, Any]:
        nonlocal points
        out = request_view(r)
        if full(r.grid_code):
            return out
        if not r.accepted:
            out["description"], out["media_url"] = None, None
        if not r.public_space:
            if points is None:
                points = {p.code: (p.lon, p.lat) for p in all_places(session, caches) if p.level == "grid"}
            lon, lat = points.get(r.grid_code, (None, None))
            out["lat"], out["long"] = (round(lat, 7), round(lon, 7)) if lon is not None else (None, None)
        return out

    return view


def request_view(r) -> dict[str, Any]:
    """A request as it is stored (for staff entitled to it; see :func:`_shown`)."""
    address = "".join(x for x in (r.street_name, r.community_name, r.grid_name) if x) or None
    photos = r.photos or []
    return {
        "service_request_id": str(r.id),
        "status": _status(r.status),
        "status_notes": _notes(r),
        "service_name": r.category_name,
        "service_code": r.category_code,
        "description": r.description,
        "agency_responsible": r.department_name,
        "service_notice": service_notice(r.time_limit_hours),
        "requested_datetime": _dt(r.reported_at),
        "updated_datetime": _dt(r.updated_at),
        "expected_datetime": _dt(r.due_at),
        "address": address,
        "address_id": None,
        "zipcode": None,
        "lat": round(r.lat, 7),
        "long": round(r.lon, 7),
        "media_url": photos[0] if photos else None,
    }


def _nobody(grid_code: str | None) -> bool:
    return False


def request(
    session: Session, caches: Caches, request_id: int, full: Callable[[str | None], bool] = _nobody
) -> dict[str, Any]:
    r = session.execute(text(_REQUESTS_SQL + " WHERE e.id = :id"), {"id": request_id}).first()
    if r is None:
        raise NotFound(f"no service request {request_id}", field="service_request_id")
    return _shown(session, caches, full)(r)


def requests(
    session: Session,
    caches: Caches,
    *,
    ids: list[int] | None,
    service_codes: list[str] | None,
    start: datetime | None,
    end: datetime | None,
    status: str | None,
    full: Callable[[str | None], bool] = _nobody,
) -> list[dict[str, Any]]:
    """Requests newest first; with ``ids`` the other filters are ignored (as the
    specification says); without dates, the last 90 days. At most 1,000. Shown as
    :func:`_shown` says (``full``: grid code → the caller is staff entitled to it)."""
    where, params = [], {"limit": MAX_RESULTS}
    if ids:
        where.append("e.id = ANY(:ids)")
        params["ids"] = ids
    else:
        if service_codes:
            where.append("e.category_code = ANY(:codes)")
            params["codes"] = service_codes
        if start is None and end is None:
            where.append(f"e.reported_at >= gridbranch_now() - interval '{DEFAULT_DAYS} days'")
        if start is not None:
            where.append("e.reported_at >= :start")
            params["start"] = start
        if end is not None:
            where.append("e.reported_at <= :end")
            params["end"] = end
        if status == "open":
            where.append(f"e.status NOT IN ({_TERMINAL_SQL})")
        elif status == "closed":
            where.append(f"e.status IN ({_TERMINAL_SQL})")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    rows = session.execute(
        text(_REQUESTS_SQL + clause + " ORDER BY e.reported_at DESC, e.id DESC LIMIT :limit"), params
    ).all()
    view = _shown(session, caches, full)
    return [view(r) for r in rows]


def jurisdictions(session: Session) -> set[str]:
    """Accepted ``jurisdiction_id`` values: each district's 12-digit code and its 6-digit
    county prefix."""
    codes = session.execute(text("SELECT code FROM admin_areas WHERE level = 'district'")).scalars().all()
    return set(codes) | {c[:6] for c in codes}


def nearby(
    session: Session, caches: Caches, lon: float, lat: float, *, radius_m: float, days: int, limit: int = 20
) -> list[dict[str, Any]]:
    """Open requests of the last ``days`` near a point, newest first, as anyone sees them
    (:func:`_shown` for nobody entitled), each with ``distance_m`` from the point to where
    it is shown — what the public report form (``/report``) lists as possible duplicates.

    Which reports are near is decided by their grid, not their own point: those in the
    grids within ``radius_m`` of the point, and reports in public space by their point.
    So moving the point about cannot tell where a report lies more closely than its grid,
    which is all the public view shows of it."""
    from layers.crs import haversine_m

    rows = session.execute(
        text(
            _REQUESTS_SQL
            + """ WHERE e.status <> ALL(:terminal)
                    AND e.reported_at >= gridbranch_now() - make_interval(days => :days)
                    AND (e.grid_id IN (
                            SELECT v.grid_id FROM grid_versions v
                            WHERE gridbranch_in_force(v.valid_from, v.valid_to)
                              AND ST_DWithin(v.geom::geography,
                                             ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography, :r))
                         OR (c.public_space AND ST_DWithin(e.geom::geography,
                                                           ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography, :r)))
                  ORDER BY e.reported_at DESC, e.id DESC LIMIT :limit"""
        ),
        {"terminal": list(TERMINAL), "days": days, "lon": lon, "lat": lat, "r": radius_m, "limit": limit},
    ).all()
    view = _shown(session, caches, _nobody)
    out = []
    for r in rows:
        item = view(r)
        if item["lat"] is not None:
            item["distance_m"] = int(round(float(haversine_m(lon, lat, item["long"], item["lat"])) / 50) * 50)
        out.append(item)
    return out

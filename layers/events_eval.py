"""Performance evaluation on the event records (绩效一网考): per department, district,
street, community or grid, over the events reported in a period (a district's figures
are its total: the monthly report's, layers.report).

For the events reported in [from, to) in a unit — figures as of ``as_of`` (the time of
the query; statuses are the current ones):

* ``received`` — events reported;
* ``dispatched`` — of them, dispatched at least once;
* ``deferred`` — currently deferred (缓办): they leave every denominator;
* ``due`` (应结案) — dispatched, not deferred, and either closed or past their due time;
* ``closed`` (结案) — closed; ``closed_on_time`` (按期结案) — closed by their due time;
* ``reworked`` (返工) — due events sent back after handling at least once
  (``return_count`` > 0; per department: while with that department);
* ``returned`` (退回) — events sent back to the centre before handling (not the
  holder's job, 非本单位职责), whatever happened to them next;
* ``closure_rate`` = closed / due, ``on_time_rate`` = closed_on_time / due,
  ``rework_rate`` = reworked / due — ``None`` (not rated) when ``due`` < the minimum
  sample size;
* ``mean_handling_hours`` — mean working hours from (the last) dispatch to (the last)
  handling, over the closed events;
* ``overdue_open`` — events still open with the time limit running and past it.

Per department, the figures stand on the department's own part (the track names the
department an event was with, layers.events): an event counts for every department it
was dispatched to (``received`` and ``dispatched`` there), but only the department
holding it now can close it — one that sent it back and saw it go elsewhere counts it
as ``returned``, never as due, closed or overdue. An event never dispatched counts for
no department. Events of no track naming a department (older data) count for their
current department.

Rated units are ranked by on-time closure rate, then closure rate, then rework rate
(lower first), then code; unrated units have no rank. Events rejected or marked as
duplicates count as received only.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.errors import InvalidInput
from layers.events import CLOCK
from layers.workcal import WorkCalendar, working_hours_between

LEVELS = ("department", "district", "street", "community", "grid")
_WIDTH = {"district": 6, "street": 9, "community": 12, "grid": 15}

_EVENTS_CTE = """
    WITH ev AS MATERIALIZED (
        SELECT e.id, e.status, e.reported_at, e.dispatched_at, e.due_at, e.closed_at, e.return_count,
               e.department_id,
               COALESCE(e.handled_at, (SELECT max(l.at) FROM event_log l
                                       WHERE l.event_id = e.id AND l.action = 'handle')) AS handled_at,
               g.code AS grid_code
        FROM events e
        LEFT JOIN grids g ON g.id = e.grid_id
        WHERE e.reported_at >= :from_ AND e.reported_at < :to_
          AND (CAST(:prefix AS text) IS NULL OR g.code LIKE :prefix)
    )
"""

#: Sent back before handling (``returned``), per event and, per department, while with it.
_SENT_BACK = "l.action = 'return' AND l.from_status IN ('dispatched', 'in_progress')"

_ROWS_SQL = text(
    _EVENTS_CTE
    + f"""
    SELECT ev.*, true AS current,
           EXISTS (SELECT 1 FROM event_log l WHERE l.event_id = ev.id AND {_SENT_BACK}) AS sent_back,
           ev.return_count > 0 AS reworked
    FROM ev
    """
)

#: One row per (event, department it was dispatched to): its current department (when
#: dispatched) and every department a dispatch in its track names.
_DEPARTMENT_ROWS_SQL = text(
    _EVENTS_CTE
    + f"""
    , a AS (
        SELECT id AS event_id, department_id FROM ev WHERE department_id IS NOT NULL AND dispatched_at IS NOT NULL
        UNION
        SELECT l.event_id, l.department_id FROM event_log l JOIN ev ON ev.id = l.event_id
        WHERE l.action = 'dispatch' AND l.department_id IS NOT NULL
    )
    SELECT ev.*, d.code AS department_code, d.name AS department_name,
           (a.department_id = ev.department_id) AS current,
           EXISTS (SELECT 1 FROM event_log l WHERE l.event_id = ev.id AND l.department_id = a.department_id
                   AND {_SENT_BACK}) AS sent_back,
           CASE WHEN EXISTS (SELECT 1 FROM event_log l WHERE l.event_id = ev.id AND l.department_id IS NOT NULL)
                THEN EXISTS (SELECT 1 FROM event_log l WHERE l.event_id = ev.id AND l.department_id = a.department_id
                             AND l.action = 'return' AND l.from_status = 'handled')
                ELSE ev.return_count > 0 END AS reworked
    FROM a JOIN ev ON ev.id = a.event_id JOIN departments d ON d.id = a.department_id
    """
)

COLUMNS = (
    "rank",
    "level",
    "code",
    "name",
    "received",
    "dispatched",
    "deferred",
    "due",
    "closed",
    "closed_on_time",
    "reworked",
    "returned",
    "closure_rate",
    "on_time_rate",
    "rework_rate",
    "mean_handling_hours",
    "overdue_open",
    "rated",
)


@dataclass
class _Unit:
    code: str
    name: str | None = None
    received: int = 0
    dispatched: int = 0
    deferred: int = 0
    due: int = 0
    closed: int = 0
    closed_on_time: int = 0
    reworked: int = 0
    returned: int = 0
    overdue_open: int = 0
    handling_hours: float = 0.0
    handled: int = 0


def evaluate(
    session: Session,
    *,
    level: str,
    period_from: datetime,
    period_to: datetime,
    prefix: str | None,
    calendar: WorkCalendar,
    min_sample: int,
    as_of: datetime | None = None,
) -> list[dict[str, Any]]:
    """Figures per unit of ``level`` for events reported in [period_from, period_to) in
    grids whose code starts with ``prefix`` (None: everywhere); see the module docstring.
    Sorted by rank (rated units first), then code."""
    if level not in LEVELS:
        raise InvalidInput(f"unknown level {level!r}; one of {', '.join(LEVELS)}", field="level")
    if period_to <= period_from:
        raise InvalidInput("the period ends before it starts", field="to")
    if as_of is None:
        as_of = session.execute(text("SELECT gridbranch_now()")).scalar_one()
    rows = session.execute(
        _DEPARTMENT_ROWS_SQL if level == "department" else _ROWS_SQL,
        {"from_": period_from, "to_": period_to, "prefix": (prefix + "%") if prefix else None},
    ).all()
    units: dict[str, _Unit] = {}
    for r in rows:
        if level == "department":
            key = r.department_code
        else:
            if r.grid_code is None:
                continue
            key = r.grid_code[: _WIDTH[level]]
        u = units.get(key)
        if u is None:
            u = units[key] = _Unit(key, r.department_name if level == "department" else None)
        _count(u, r, as_of, calendar)
    if level != "department":
        _name_units(session, level, units)
    out = [_figures(level, u, min_sample) for u in units.values()]
    _rank(out)
    return out


def _count(u: _Unit, r, as_of: datetime, calendar: WorkCalendar) -> None:
    u.received += 1
    if r.sent_back:
        u.returned += 1
    if not r.current or (_of_department(r) and r.status == "returned" and r.sent_back):
        # a department's part in an event gone elsewhere, or sent back and waiting for
        # the centre: not the department's to close
        u.dispatched += 1
        return
    if r.dispatched_at is None:
        return
    u.dispatched += 1
    if r.status == "deferred":
        u.deferred += 1
        return
    closed = r.status == "closed"
    if r.status in CLOCK and r.due_at <= as_of:
        u.overdue_open += 1
    if not (closed or r.due_at <= as_of) or r.status in ("rejected", "duplicate"):
        return
    u.due += 1
    if r.reworked:
        u.reworked += 1
    if closed:
        u.closed += 1
        if r.closed_at <= r.due_at:
            u.closed_on_time += 1
        if r.handled_at is not None and r.handled_at >= r.dispatched_at:
            u.handling_hours += working_hours_between(r.dispatched_at, r.handled_at, calendar)
            u.handled += 1


def _of_department(r) -> bool:
    """Whether row ``r`` is a department's part in an event (not an area's)."""
    return "department_code" in r._fields


def _rate(n: int, d: int, rated: bool) -> float | None:
    return round(n / d, 4) if rated and d else None


def _figures(level: str, u: _Unit, min_sample: int) -> dict[str, Any]:
    rated = u.due >= min_sample
    return {
        "rank": None,
        "level": level,
        "code": u.code,
        "name": u.name,
        "received": u.received,
        "dispatched": u.dispatched,
        "deferred": u.deferred,
        "due": u.due,
        "closed": u.closed,
        "closed_on_time": u.closed_on_time,
        "reworked": u.reworked,
        "returned": u.returned,
        "closure_rate": _rate(u.closed, u.due, rated),
        "on_time_rate": _rate(u.closed_on_time, u.due, rated),
        "rework_rate": _rate(u.reworked, u.due, rated),
        "mean_handling_hours": round(u.handling_hours / u.handled, 2) if u.handled else None,
        "overdue_open": u.overdue_open,
        "rated": rated,
    }


def _rank(units: list[dict[str, Any]]) -> None:
    rated = sorted(
        (u for u in units if u["rated"]),
        key=lambda u: (-u["on_time_rate"], -u["closure_rate"], u["rework_rate"], u["code"]),
    )
    for i, u in enumerate(rated, 1):
        u["rank"] = i
    units.sort(key=lambda u: (u["rank"] is None, u["rank"] or 0, u["code"]))


def _name_units(session: Session, level: str, units: dict[str, _Unit]) -> None:
    if not units:
        return
    if level == "grid":
        rows = session.execute(text("SELECT code, name FROM grids WHERE code = ANY(:c)"), {"c": list(units)}).all()
        names: dict[str, str] = {code: name for code, name in rows}
        for key, u in units.items():
            u.name = names.get(key)
        return
    full = {key: key.ljust(12, "0") for key in units}
    rows = session.execute(
        text("SELECT code, name FROM admin_areas WHERE code = ANY(:c)"), {"c": list(full.values())}
    ).all()
    names = dict(rows)
    for key, u in units.items():
        u.code = full[key]
        u.name = names.get(full[key])


def own_unit(units: list[dict[str, Any]], code: str) -> dict[str, Any]:
    """What one unit may see of an evaluation: its own figures and rank (None when not
    rated, or absent: no events) among ``ranked`` rated units — nobody else's figures."""
    own = next((u for u in units if u["code"] == code), None)
    return {"unit": own, "ranked": sum(1 for u in units if u["rank"] is not None)}


def evaluation_csv(units: list[dict[str, Any]]) -> str:
    """The evaluation as CSV (a header row, then one row per unit; rates as fractions;
    empty cells for not rated)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for u in units:
        writer.writerow(["" if u[c] is None else u[c] for c in COLUMNS])
    return buf.getvalue()

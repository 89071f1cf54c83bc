"""The monthly report of an area (月度报告): what the organisation department and the
command centre print for a month — coverage, registration progress, event handling and
its evaluation, rankings of the units below, and a map of the grids — as one dict that
:mod:`geo_api.report` lays out as HTML and PDF.

Every figure comes from the functions the API answers with (``layers.coverage.summary``,
``layers.events_eval.evaluate``), so the report and the map never disagree. Coverage and
registration are as of the report's making (the service keeps no daily snapshot of
them); the month's figures are the registrations made in it and the events reported in
it. Aggregates only: no member, phone or residence.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import shapely
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers import coverage as cov
from layers import events_eval
from layers.codes import area_prefix, level_of
from layers.coverage.topology import Thresholds
from layers.errors import InvalidInput
from layers.workcal import WorkCalendar

if TYPE_CHECKING:
    from layers.caches import Caches

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
#: the level whose units a report of each level ranks
CHILD = {"district": "street", "street": "community", "community": "grid"}


def parse_month(value: str, today: date) -> date:
    """The first day of month ``value`` (YYYY-MM), which must not lie after ``today``'s."""
    m = _MONTH.match(value or "")
    if not m:
        raise InvalidInput(
            f"month must be YYYY-MM, got {value!r}", field="month", detail_zh=f"月份须为 YYYY-MM 格式，现为 {value!r}"
        )
    first = date(int(m[1]), int(m[2]), 1)
    if first > today.replace(day=1):
        raise InvalidInput(
            f"{value} has not begun (today is {today.isoformat()})",
            field="month",
            detail_zh=f"{value} 尚未开始（今天是 {today.isoformat()}）",
        )
    return first


def _next_month(first: date) -> date:
    return date(first.year + first.month // 12, first.month % 12 + 1, 1)


def monthly(
    session: Session,
    caches: Caches,
    *,
    code: str,
    month: date,
    thresholds: Thresholds,
    calendar: WorkCalendar,
    min_sample: int,
    now: datetime,
) -> dict[str, Any]:
    """The report of area ``code`` (a district, street or community) for the month
    starting on ``month``."""
    level = level_of(code)
    if level not in CHILD:
        raise InvalidInput(
            "a monthly report is of a district, street or community",
            field="within",
            detail_zh="月度报告只针对区县、街道或社区",
        )
    tz: ZoneInfo = calendar.tz
    start = datetime.combine(month, datetime.min.time(), tz)
    end = datetime.combine(_next_month(month), datetime.min.time(), tz)
    prefix = area_prefix(code)
    child = CHILD[level]
    coverage = cov.summary(session, caches, code=code, level=child, thresholds=thresholds)
    total = events_eval.evaluate(
        session, level=level, period_from=start, period_to=end, prefix=prefix, calendar=calendar, min_sample=min_sample
    )
    units = events_eval.evaluate(
        session, level=child, period_from=start, period_to=end, prefix=prefix, calendar=calendar, min_sample=min_sample
    )
    departments = (
        events_eval.evaluate(
            session,
            level="department",
            period_from=start,
            period_to=end,
            prefix=prefix,
            calendar=calendar,
            min_sample=min_sample,
        )
        if level == "district"
        else []
    )
    made, confirmed = session.execute(
        text(
            """SELECT count(*), count(*) FILTER (WHERE r.status = 'confirmed')
               FROM registrations r JOIN grids g ON g.id = r.grid_id
               WHERE g.code LIKE :p AND r.created_at >= :s AND r.created_at < :e"""
        ),
        {"p": prefix + "%", "s": start, "e": end},
    ).one()
    area = coverage["total"]
    return {
        "code": code,
        "name": area["name"],
        "level": level,
        "child_level": child,
        "month": month.strftime("%Y-%m"),
        "from": month.isoformat(),
        "to": (_next_month(month)).isoformat(),
        "made_at": now.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
        "coverage": area,
        "registrations": {"made": made, "confirmed": confirmed},
        "events": total[0] if total else None,
        "units": coverage["units"],
        "evaluation": units,
        "departments": departments,
        "min_sample": min_sample,
        "map": grid_map(session, prefix),
    }


def grid_map(session: Session, prefix: str, width: float = 640.0) -> dict[str, Any]:
    """The area's current grids as SVG paths (equirectangular, scaled by the cosine of
    the latitude, simplified to about a pixel), each with whether a branch covers it."""
    rows = session.execute(
        text(
            """SELECT g.code, ST_AsBinary(v.geom) AS wkb,
                      EXISTS (SELECT 1 FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id
                              WHERE bg.grid_id = g.id AND b.active) AS has_branch
               FROM grids g JOIN grid_versions v ON v.grid_id = g.id
                    AND gridbranch_in_force(v.valid_from, v.valid_to)
               WHERE g.code LIKE :p AND gridbranch_live(g.retired_at) ORDER BY g.code"""
        ),
        {"p": prefix + "%"},
    ).all()
    if not rows:
        return {"width": width, "height": 0, "grids": []}
    geoms = shapely.from_wkb([bytes(r.wkb) for r in rows])
    x0, y0, x1, y1 = shapely.total_bounds(geoms)
    k = math.cos(math.radians((y0 + y1) / 2))
    scale = width / max((x1 - x0) * k, 1e-9)
    height = (y1 - y0) * scale
    geoms = shapely.simplify(geoms, 1.0 / scale)

    def path(g) -> str:
        parts = []
        for poly in shapely.get_parts(g):
            for ring in [poly.exterior, *poly.interiors]:
                xy = shapely.get_coordinates(ring)
                pts = " ".join(f"{(x - x0) * k * scale:.1f},{(y1 - y) * scale:.1f}" for x, y in xy[:-1])
                parts.append(f"M{pts}Z")
        return "".join(parts)

    return {
        "width": width,
        "height": round(height, 1),
        "grids": [{"code": r.code, "has_branch": r.has_branch, "d": path(g)} for r, g in zip(rows, geoms)],
    }

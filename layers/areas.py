"""Administrative areas (district, street/town, community): tree and boundaries."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from layers.codes import area_prefix
from layers.errors import InvalidInput, NotFound
from layers.geojson import as_geojson, collection, feature
from layers.models import AREA_LEVELS, AdminArea


def area_tree(session: Session) -> list[dict]:
    """Every area as a nested tree ``{code, name, level, children}``, roots first, by code."""
    rows = session.execute(
        select(AdminArea.id, AdminArea.code, AdminArea.name, AdminArea.level, AdminArea.parent_id).order_by(
            AdminArea.code
        )
    ).all()
    nodes = {r.id: {"code": r.code, "name": r.name, "level": r.level, "children": []} for r in rows}
    roots: list[dict] = []
    for r in rows:
        (nodes[r.parent_id]["children"] if r.parent_id in nodes else roots).append(nodes[r.id])
    return roots


def area_by_code(session: Session, code: str) -> AdminArea:
    area = session.scalar(select(AdminArea).where(AdminArea.code == code))
    if area is None:
        raise NotFound(f"no area with code {code}", field="code")
    return area


def area_boundaries(session: Session, level: str | None = None, within: str | None = None) -> dict:
    """Areas as a GeoJSON FeatureCollection (WGS84), optionally one ``level`` and
    only areas whose code starts with the prefix of ``within``."""
    parent = aliased(AdminArea)
    stmt = (
        select(AdminArea.code, AdminArea.name, AdminArea.level, parent.code.label("parent"), as_geojson(AdminArea.geom))
        .outerjoin(parent, parent.id == AdminArea.parent_id)
        .order_by(AdminArea.code)
    )
    if level is not None:
        if level not in AREA_LEVELS:
            raise InvalidInput(f"unknown level {level!r}; one of {', '.join(AREA_LEVELS)}", field="level")
        stmt = stmt.where(AdminArea.level == level)
    if within is not None:
        stmt = stmt.where(AdminArea.code.startswith(area_prefix(within)))
    feats = [
        feature(g, {"code": code, "name": name, "level": lvl, "parent": par})
        for code, name, lvl, par, g in session.execute(stmt)
    ]
    return collection(feats)

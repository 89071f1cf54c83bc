"""Grids (网格) and their current boundary versions."""

from __future__ import annotations

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from layers.codes import area_prefix
from layers.errors import NotFound
from layers.geojson import as_geojson, feature
from layers.models import SRID, AdminArea, Branch, BranchGrid, Grid, GridVersion

BBox = tuple[float, float, float, float]


def _current():
    """Grids joined to their current version and community."""
    has_branch = exists().where(
        and_(BranchGrid.grid_id == Grid.id, BranchGrid.branch_id == Branch.id, Branch.active.is_(True))
    )
    return (
        select(
            Grid.id,
            Grid.code,
            Grid.name,
            AdminArea.code.label("community"),
            AdminArea.name.label("community_name"),
            Grid.worker_name,
            Grid.worker_phone,
            GridVersion.version,
            has_branch.label("has_branch"),
            as_geojson(GridVersion.geom).label("geometry"),
        )
        .join(GridVersion, and_(GridVersion.grid_id == Grid.id, func.gridbranch_in_force(GridVersion.valid_from, GridVersion.valid_to)))
        .join(AdminArea, AdminArea.id == Grid.community_id)
    )


def _feature(row) -> dict:
    props = {
        "code": row.code,
        "name": row.name,
        "community": row.community,
        "community_name": row.community_name,
        "grid_worker": row.worker_name,
        "grid_worker_phone": row.worker_phone,
        "version": row.version,
        "has_branch": row.has_branch,
    }
    return feature(row.geometry, props, fid=row.code)


def grids_page(
    session: Session,
    *,
    bbox: BBox | None = None,
    within: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict], int]:
    """Current grids as GeoJSON features ordered by code, and the number matched.

    ``bbox`` is (minlon, minlat, maxlon, maxlat) in WGS84 degrees and selects grids whose
    boundary intersects it; ``within`` keeps grids inside an area (by code prefix).
    """
    stmt = _current()
    if bbox is not None:
        envelope = func.ST_MakeEnvelope(*bbox, SRID)
        stmt = stmt.where(GridVersion.geom.op("&&")(envelope), func.ST_Intersects(GridVersion.geom, envelope))
    if within is not None:
        stmt = stmt.where(Grid.code.startswith(area_prefix(within)))
    matched = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.execute(stmt.order_by(Grid.code).limit(limit).offset(offset)).all()
    return [_feature(r) for r in rows], matched


def grid_feature(session: Session, code: str) -> dict:
    """One current grid as a GeoJSON feature, with the branches covering it."""
    row = session.execute(_current().where(Grid.code == code)).first()
    if row is None:
        raise NotFound(f"no grid with code {code}", field="code")
    out = _feature(row)
    branches = session.execute(
        select(Branch.code, Branch.name, Branch.kind)
        .join(BranchGrid, BranchGrid.branch_id == Branch.id)
        .where(BranchGrid.grid_id == row.id, Branch.active.is_(True))
        .order_by(Branch.code)
    ).all()
    out["properties"]["branches"] = [{"code": c, "name": n, "kind": k} for c, n, k in branches]
    return out

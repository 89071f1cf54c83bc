"""Grids (网格) and their current boundary versions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from layers.codes import area_prefix
from layers.errors import NotFound
from layers.geojson import as_geojson, feature
from layers.models import SRID, AdminArea, Branch, BranchGrid, Grid, GridVersion
from layers.suppression import grid_stats, public_grid_figures

if TYPE_CHECKING:
    from layers.caches import Caches

BBox = tuple[float, float, float, float]


@dataclass(frozen=True)
class Disclosure:
    """What a caller is shown of a grid: registration figures of grids counting fewer
    than ``k`` registered members withheld, with their complements
    (:func:`layers.suppression.suppressed_grids`, the public grids tiles' rule), and the
    grid worker only if ``public_worker`` — unless ``full(code)``: a caller entitled to
    the grid's members sees exact figures and its worker."""

    k: int = 5
    public_worker: bool = True
    full: Callable[[str], bool] = lambda code: False


class _Figures:
    """Registration figures per grid code as a :class:`Disclosure` lets them out."""

    def __init__(self, session: Session, caches: Caches, disclosure: Disclosure):
        self.stats = grid_stats(session, caches)
        self.hidden = public_grid_figures(self.stats, list(self.stats), disclosure.k)
        self.disclosure = disclosure

    def of(self, code: str) -> dict:
        s = self.stats.get(code)
        full = self.disclosure.full(code)
        if not full and (s is None or code in self.hidden):
            return {"registered": None, "rate": None, "suppressed": True}
        return {"registered": s["registered"] if s else 0, "rate": s["rate"] if s else None, "suppressed": False}


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
        .join(
            GridVersion,
            and_(
                GridVersion.grid_id == Grid.id, func.gridbranch_in_force(GridVersion.valid_from, GridVersion.valid_to)
            ),
        )
        .join(AdminArea, AdminArea.id == Grid.community_id)
    )


def _feature(row, figures: _Figures) -> dict:
    worker = figures.disclosure.public_worker or figures.disclosure.full(row.code)
    props = {
        "code": row.code,
        "name": row.name,
        "community": row.community,
        "community_name": row.community_name,
        "grid_worker": row.worker_name if worker else None,
        "grid_worker_phone": row.worker_phone if worker else None,
        "version": row.version,
        "has_branch": row.has_branch,
        **figures.of(row.code),
    }
    return feature(row.geometry, props, fid=row.code)


def grids_page(
    session: Session,
    caches: Caches,
    *,
    bbox: BBox | None = None,
    within: str | None = None,
    limit: int | None = 100,
    offset: int = 0,
    disclosure: Disclosure = Disclosure(),
) -> tuple[list[dict], int]:
    """Current grids as GeoJSON features ordered by code, and the number matched, with
    their registration figures (registered, rate, suppressed) as ``disclosure`` says;
    ``limit`` None: every grid from ``offset`` on.

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
    figures = _Figures(session, caches, disclosure)
    return [_feature(r, figures) for r in rows], matched


def grid_feature(session: Session, caches: Caches, code: str, disclosure: Disclosure = Disclosure()) -> dict:
    """One current grid as a GeoJSON feature, with the branches covering it and its
    figures as ``disclosure`` says."""
    row = session.execute(_current().where(Grid.code == code)).first()
    if row is None:
        raise NotFound(f"no grid with code {code}", field="code")
    out = _feature(row, _Figures(session, caches, disclosure))
    branches = session.execute(
        select(Branch.code, Branch.name, Branch.kind)
        .join(BranchGrid, BranchGrid.branch_id == Branch.id)
        .where(BranchGrid.grid_id == row.id, Branch.active.is_(True))
        .order_by(Branch.code)
    ).all()
    out["properties"]["branches"] = [{"code": c, "name": n, "kind": k} for c, n, k in branches]
    return out

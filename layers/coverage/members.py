"""Member figures of a :class:`layers.coverage.model.CoverageModel`: residents,
registered (confirmed) and pending members and the service roles filled, per grid and
area, kept per model under the ``members`` data version (residents under
``residences``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import shapely
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.coverage.model import CoverageModel, _xy, points_in

if TYPE_CHECKING:
    from layers.caches import Caches


@dataclass
class MemberCounts:
    roles: list[tuple[str, str]]  # active (code, name) by position
    grid_residents: np.ndarray  # residents located in each grid (lowest code in overlaps)
    area_residents: dict[str, int]  # by the lowest area containing the residence, rolled up
    grid_registered: np.ndarray  # confirmed
    grid_pending: np.ndarray
    grid_roles: np.ndarray  # bitmask of active roles filled by confirmed members
    derived: dict = field(default_factory=dict)  # roles findings and aggregates, computed once


def member_counts(session: Session, caches: Caches, model: CoverageModel) -> MemberCounts:
    """Resident, registered (confirmed), pending members and roles filled, per grid and
    area. Kept per model under the ``members`` data version (``caches.member_counts``)."""
    cache = caches.member_counts
    counts = cache.lookup(model.key, cache.read_versions(session))
    if counts is not None:
        return counts
    with model.lock:  # computed once per model and version; the lock is the model's (GEOS)
        return cache.get(session, lambda s: _read_member_counts(s, caches, model), model.key)


def _read_member_counts(session: Session, caches: Caches, model: CoverageModel) -> MemberCounts:
    n = len(model.grid_codes)
    roles = [
        tuple(r)
        for r in session.execute(text("SELECT code, name FROM service_roles WHERE active ORDER BY position")).all()
    ]
    bit = {code: 1 << i for i, (code, _) in enumerate(roles)}
    grid_residents, area_residents = _residents(session, caches, model)
    grid_registered = np.zeros(n, np.int64)
    grid_pending = np.zeros(n, np.int64)
    grid_roles = np.zeros(n, np.int64)
    rows = session.execute(
        text(
            """SELECT r.grid_id, r.status, r.role_code, count(*) FROM registrations r
           WHERE r.status IN ('confirmed', 'pending') GROUP BY 1, 2, 3"""
        )
    ).all()
    by_id = {gid: i for i, gid in enumerate(model.grid_ids)}
    for grid_id, status, role, count in rows:
        g = by_id.get(grid_id)
        if g is None:
            continue
        if status == "confirmed":
            grid_registered[g] += count
            grid_roles[g] |= bit.get(role, 0)
        else:
            grid_pending[g] += count
    return MemberCounts(roles, grid_residents, area_residents, grid_registered, grid_pending, grid_roles)


def _residents(session: Session, caches: Caches, model: CoverageModel) -> tuple[np.ndarray, dict[str, int]]:
    """Current residences per grid (the lowest code where grids overlap) and per area (by
    the lowest area containing them, rolled up). Kept on the model under the
    ``residences`` data version: a registration confirmed or rejected — the common write —
    leaves them as they are."""
    return caches.coverage_residents.get(session, lambda s: _count_residents(s, model), model.key)


def _count_residents(session: Session, model: CoverageModel) -> tuple[np.ndarray, dict[str, int]]:
    n = len(model.grid_codes)
    xy = _xy(session, "SELECT ST_X(geom) AS x, ST_Y(geom) AS y FROM residences WHERE ended_at IS NULL")
    grid_residents = np.zeros(n, np.int64)
    area_residents: dict[str, int] = {}
    if len(xy):
        pts = shapely.points(xy)
        if n:
            pi, gj = points_in(model.grid_geoms, model.grid_tree, xy, pts)
            first = np.full(len(xy), n, np.int64)
            np.minimum.at(first, pi, gj)  # grids are in code order: the lowest code wins
            grid_residents = np.bincount(first[first < n], minlength=n)
        rank = np.array([{"community": 0, "street": 1, "district": 2}.get(a["level"], 3) for a in model.areas])
        pi, aj = points_in(model.area_geoms, model.area_tree, xy, pts)
        best = np.full(len(xy), -1, np.int64)
        if len(pi):
            order = np.lexsort((aj, rank[aj], pi))
            pi, aj = pi[order], aj[order]
            firsts = np.ones(len(pi), bool)
            firsts[1:] = pi[1:] != pi[:-1]
            best[pi[firsts]] = aj[firsts]
        for j, c in zip(*np.unique(best[best >= 0], return_counts=True)):
            for code in model.chain(model.areas[j]["code"]):
                area_residents[code] = area_residents.get(code, 0) + int(c)
    return grid_residents, area_residents


def _role_names(roles, mask: int, filled: bool) -> list[str]:
    return [name for i, (_, name) in enumerate(roles) if bool(mask >> i & 1) == filled]

"""H3 aggregation of members, residences and events (see the section comment below for
what callers not entitled to member data get)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import h3
import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.codes import AREA_CODE, GRID_CODE
from layers.coverage.model import _versions, _xy
from layers.errors import InvalidInput
from layers.suppression import complementary_suppression
from layers.versions import database_url as _database_url

if TYPE_CHECKING:
    from layers.caches import Caches

H3_METRICS = ("members", "residences", "events")
H3_RESOLUTIONS = range(7, 11)

# One hierarchy. Points are placed in their resolution-10 cell (h3.latlng_to_cell) and
# the coarser resolutions 9, 8, 7 are the sums of their children (h3.cell_to_parent), so
# a coarse cell counts the points of its res-10 descendants — H3 children overhang their
# parent slightly, so a point near a coarse cell's edge may be counted in the neighbour
# whose hexagon does not contain it, but every cell's count is exactly the sum of its
# children's, at every resolution.
#
# What callers not entitled to member data get (anonymous users, the public tiles, the
# embed map), so that nothing they can combine gives back a count below k:
#
# - whole-cell counts: a cell's count is over the whole service area, whatever the
#   ``within``; ``within`` only selects the cells listed (those holding at least one
#   point inside it). Two ``within`` values never give two counts of one cell to
#   subtract.
# - complementary suppression over the hierarchy, once per (data versions, metric, k)
#   for resolutions 7–10 together, top-down: a cell counting fewer than k is suppressed;
#   under a published parent the suppressed children must sum to 0 or ≥ k, under a
#   suppressed parent counting ≥ k (suppressed to protect a sibling) to ≥ k — otherwise
#   the smallest published children (then by cell id) are suppressed too, until they do
#   (or all are). A parent minus its published children, at any pair of zooms, therefore
#   never reveals fewer than k people. The overall total is withheld.
#
# Entitled callers get exact counts of the points inside ``within``, nothing suppressed.

_H3_POINTS = {
    # members: registered members (active registration: confirmed or pending) at the
    # residence they registered with
    "members": """SELECT ST_X(s.geom) AS x, ST_Y(s.geom) AS y FROM registrations r
                  JOIN residences s ON s.id = r.residence_id
                  WHERE r.status IN ('confirmed', 'pending'){where}""",
    # residences: every member's current residence, registered or not
    "residences": "SELECT ST_X(s.geom) AS x, ST_Y(s.geom) AS y FROM residences s WHERE s.ended_at IS NULL{where}",
    # events: every reported event, whatever its status
    "events": "SELECT ST_X(s.geom) AS x, ST_Y(s.geom) AS y FROM events s WHERE true{where}",
}
_WITHIN_GEOM = {
    "area": "(SELECT geom FROM admin_areas WHERE code = :within)",
    "grid": """(SELECT gv.geom FROM grid_versions gv JOIN grids g ON g.id = gv.grid_id
               WHERE g.code = :within AND gridbranch_in_force(gv.valid_from, gv.valid_to) AND gridbranch_live(g.retired_at))""",
}
#: The resolution points are counted at; the others are sums of children.
H3_FINEST = H3_RESOLUTIONS[-1]


def check_h3(res: int, metric: str) -> None:
    if not isinstance(res, int) or isinstance(res, bool) or res not in H3_RESOLUTIONS:
        raise InvalidInput(
            f"res must be an H3 resolution from {H3_RESOLUTIONS[0]} to {H3_RESOLUTIONS[-1]}, got {res!r}", field="res"
        )
    if metric not in H3_METRICS:
        raise InvalidInput(f"unknown metric {metric!r}; one of {', '.join(H3_METRICS)}", field="metric")


class H3Counts:
    """Counts per cell of resolutions 7–10 of one set of points (all of a metric's
    points, or those inside one ``within``), every coarse cell the sum of its children;
    with the suppressed cells per minimum ``k`` (:meth:`suppressed`, computed on first
    use)."""

    def __init__(self, fine: dict[str, int]):
        self.levels: dict[int, dict[str, int]] = {H3_FINEST: fine}
        #: children (with points) of each cell, per resolution of the parent
        self.children: dict[int, dict[str, list[str]]] = {}
        to_parent = h3.cell_to_parent
        for res in range(H3_FINEST - 1, H3_RESOLUTIONS[0] - 1, -1):
            counts: dict[str, int] = {}
            kids: dict[str, list[str]] = {}
            for cell, n in self.levels[res + 1].items():
                parent = to_parent(cell, res)
                counts[parent] = counts.get(parent, 0) + n
                kids.setdefault(parent, []).append(cell)
            self.levels[res] = counts
            self.children[res] = kids
        self.order = {res: sorted(counts) for res, counts in self.levels.items()}
        self.total = sum(fine.values())
        self._suppressed: dict[int, frozenset[str]] = {}
        self._lock = threading.Lock()

    @classmethod
    def of_points(cls, xy: np.ndarray) -> H3Counts:
        return cls(cls.finest_of_points(xy))

    @staticmethod
    def finest_of_points(xy: np.ndarray) -> dict[str, int]:
        """Points (n×2, lon/lat) counted per cell of the finest resolution."""
        fine: dict[str, int] = {}
        to_cell = h3.latlng_to_cell
        for x, y in xy.tolist():
            cell = to_cell(y, x, H3_FINEST)
            fine[cell] = fine.get(cell, 0) + 1
        return fine

    def suppressed(self, k: int) -> frozenset[str]:
        """The cells (all resolutions) withheld from callers not entitled to member data."""
        found = self._suppressed.get(k)
        if found is None:
            with self._lock:
                found = self._suppressed.get(k)
                if found is None:
                    found = self._suppressed[k] = frozenset(self._suppress(k))
        return found

    def _suppress(self, k: int) -> set[str]:
        return complementary_suppression(self.levels, self.children, k)


def cell_ring(caches: Caches, cell: str) -> list[list[float]]:
    """The cell's boundary: a closed ring of [lon, lat] (WGS84, 7 decimals). A cell's
    shape never changes: rings are kept across counts (data versions), up to a bound
    (``caches.h3_rings``)."""

    def draw() -> list[list[float]]:
        ring = [[round(lng, 7), round(lat, 7)] for lat, lng in h3.cell_to_boundary(cell)]
        ring.append(ring[0])
        return ring

    return caches.h3_rings.memo(cell, draw)


def _locate_residences(session: Session) -> tuple[np.ndarray, np.ndarray]:
    listing = session.execute(
        text(
            "SELECT string_agg(id::text || ',' || ST_X(geom)::text || ',' || ST_Y(geom)::text, ',' ORDER BY id) "
            "FROM residences"
        )
    ).scalar()
    rows = np.fromstring(listing, dtype=float, sep=",").reshape(-1, 3) if listing else np.zeros((0, 3))
    to_cell = h3.latlng_to_cell
    cells = np.array([h3.str_to_int(to_cell(y, x, H3_FINEST)) for x, y in rows[:, 1:].tolist()], dtype=np.uint64)
    return rows[:, 0].astype(np.int64), cells


def _registered_cells(session: Session, caches: Caches) -> dict[str, int] | None:
    """Members with an active registration per finest cell (everywhere), from the cells
    of the residences they registered with; None when a residence is newer than the cells
    known (written meanwhile): the caller then locates the points themselves. The
    residences' cells are kept per ``residences`` version (``caches.residence_cells``):
    registrations — written far more often than residences — then count members per
    cell without locating a point again."""
    ids, cells = caches.residence_cells.get(session, _locate_residences)
    listed = session.execute(
        text("SELECT string_agg(residence_id::text, ',') FROM registrations WHERE status IN ('confirmed', 'pending')")
    ).scalar()
    wanted = np.fromstring(listed, dtype=np.int64, sep=",") if listed else np.zeros(0, np.int64)
    at = np.searchsorted(ids, wanted)
    if len(wanted) and (at.max() >= len(ids) or not np.array_equal(ids[at], wanted)):
        return None
    found, counts = np.unique(cells[at], return_counts=True)
    return {h3.int_to_str(int(c)): int(n) for c, n in zip(found, counts)}


def _finest_cells(session: Session, caches: Caches, metric: str, within: str | None) -> dict[str, int]:
    """The points of ``metric`` inside ``within`` (None: all) counted per finest cell."""
    if metric == "members" and within is None:
        counts = _registered_cells(session, caches)
        if counts is not None:
            return counts
    where, params = "", {}
    if within is not None:
        kind = "grid" if len(within) == 15 else "area"
        where = f" AND ST_Intersects(s.geom, {_WITHIN_GEOM[kind]})"
        params["within"] = within
    return H3Counts.finest_of_points(_xy(session, _H3_POINTS[metric].format(where=where), params))


def h3_counts(session: Session, caches: Caches, metric: str, within: str | None) -> H3Counts:
    """The :class:`H3Counts` of ``metric`` inside ``within`` (None: everywhere), kept in
    ``caches.h3`` so that map and tile requests do not recount: those of all points at
    the metric's layer version, those of the points inside a ``within`` at the ``grids``
    and ``areas`` versions too (its boundary)."""
    v = _versions(session)
    layer = "events" if metric == "events" else "members"
    key = (metric, within)
    at: tuple = (_database_url(session), v["db"], v[layer])
    if within is not None:
        at += (v["grids"], v["areas"])
    counts = caches.h3.lookup(key, at)
    if counts is None:
        fine = _finest_cells(session, caches, metric, within)
        # a write that left every cell's count as it was (a registration confirmed: still
        # active) keeps the counts already built, with their suppression: equal counts
        # are equal content, whatever versions they were filed at
        last = caches.h3.newest(key)
        counts = last if last is not None and last.levels[H3_FINEST] == fine else H3Counts(fine)
        if _versions(session) == v:  # not read across a concurrent write
            caches.h3.put(key, at, counts)
    return counts


def h3_aggregate(
    session: Session, caches: Caches, *, res: int, metric: str, within: str | None, suppress_below: int | None
) -> dict[str, Any]:
    """Counts per H3 cell (see :func:`h3_cells`) and how many cells were suppressed:
    ``{"cells": [...], "suppressed_cells": int, "total": int | None}``.

    Entitled callers (``suppress_below`` None) get the points inside ``within`` counted
    per cell, ``total`` their number and nothing suppressed. Otherwise each listed
    cell's count is the whole cell's (all the metric's points, inside ``within`` or
    not), cells are suppressed over the whole H3 hierarchy as the section comment above
    says, ``suppressed_cells`` is how many of the listed cells were left out and
    ``total`` is None (with the published cells it would give the suppressed ones away).
    Kept in ``caches`` on the data versions (``members`` or ``events``, and ``grids``
    and ``areas`` for the boundary of ``within``)."""
    check_h3(res, metric)
    if within is not None:
        check_within_exists(session, within)
    inside = h3_counts(session, caches, metric, within)
    if suppress_below is None:
        counts = inside.levels[res]
        cells = [{"cell": c, "count": counts[c], "boundary": cell_ring(caches, c)} for c in inside.order[res]]
        return {"cells": cells, "suppressed_cells": 0, "total": inside.total}
    whole = inside if within is None else h3_counts(session, caches, metric, None)
    counts, hidden = whole.levels[res], whole.suppressed(suppress_below)
    cells, left_out = [], 0
    for c in inside.order[res]:
        n = counts.get(c, 0)  # 0 only when a write came between the two reads
        if c in hidden:
            left_out += 1
        elif n:
            cells.append({"cell": c, "count": n, "boundary": cell_ring(caches, c)})
    return {"cells": cells, "suppressed_cells": left_out, "total": None}


def h3_cells(
    session: Session, caches: Caches, *, res: int, metric: str, within: str | None, suppress_below: int | None
) -> list[dict[str, Any]]:
    """Points of ``metric`` counted per H3 cell at resolution ``res`` (7–10):
    ``[{"cell": h3 index, "count": int, "boundary": [[lon, lat], ...] closed ring
    (WGS84)}]`` ordered by cell. A point is counted in its res-10 cell and in that
    cell's ancestors (``h3.cell_to_parent``), so a coarse cell's count is the sum of its
    children's (H3 children overhang their parent slightly: a coarse cell counts the
    points of its res-10 descendants, not exactly those inside its hexagon).

    Metrics: ``members`` — members with an active (confirmed or pending) registration,
    at the residence they registered; ``residences`` — every member's current residence;
    ``events`` — every reported event.

    ``suppress_below`` None (only for callers entitled to individual data): the points
    inside area or grid ``within`` (None: everywhere), nothing suppressed. Otherwise the
    cells holding a point inside ``within`` with their whole counts, those below
    ``suppress_below`` and their complements in the hierarchy left out (see
    :func:`h3_aggregate`)."""
    return h3_aggregate(session, caches, res=res, metric=metric, within=within, suppress_below=suppress_below)["cells"]


def check_within_exists(session: Session, code: str, field: str = "within") -> str:
    """``code`` if it is a known area or current grid; :class:`InvalidInput` naming ``field``."""
    if not isinstance(code, str) or not (AREA_CODE.match(code) or GRID_CODE.match(code)):
        raise InvalidInput(f"{field} must be a 12-digit area code or a 15-digit grid code, got {code!r}", field=field)
    found = session.execute(
        text("""SELECT EXISTS (SELECT 1 FROM admin_areas WHERE code = :c)
                   OR EXISTS (SELECT 1 FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id
                              WHERE g.code = :c AND gridbranch_in_force(gv.valid_from, gv.valid_to) AND gridbranch_live(g.retired_at))"""),
        {"c": code},
    ).scalar()
    if not found:
        raise InvalidInput(f"unknown {field} {code}: no such area or current grid", field=field)
    return code

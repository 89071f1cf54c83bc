"""Feature attributes computed once per data version, not once per tile.

Four layers carry what is too costly to derive inside every tile query:

- ``grids``: each grid's covering branch and registration figures (a spatial join of
  every current residence against the grids), recomputed when the ``grids``, ``areas``
  or ``members`` version changes;
- ``coverage_issues``: the topology findings of :func:`layers.coverage.current_findings`
  (``grids`` and ``areas`` versions);
- ``members_h3``: counts per H3 cell from :func:`layers.coverage.h3_cells`
  (``members`` version), per resolution, as published to anyone: one hierarchy over
  resolutions 7–10 (every cell the sum of its children), small counts and their
  complements suppressed, so that the cells of two zooms cannot be subtracted;
- ``labels``: one point per district, street, community and current grid at which to
  write its name (``areas`` and ``grids`` versions), per set of levels labelled at a zoom.

Each is held as :class:`FeatureRecords`: one JSON record per feature, serialised once,
with the feature's WGS84 bounding box; a tile query receives as its ``$6`` parameter the
records whose box meets the tile (a superset of what its spatial filter keeps). The
records and what they are made of are kept by :class:`DerivedCache` (the tile service's)
and the app's :class:`layers.caches.Caches`, all of them
:class:`layers.versions.VersionedCache`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any

import h3
import numpy as np
import orjson
import shapely
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.caches import SHAPES_KEEP, Caches
from layers.coverage import current_findings, h3_cells
from layers.places import LEVEL_RANK, all_places
from layers.suppression import grid_stats, public_grid_figures
from layers.versions import VersionedCache

Versions = tuple[tuple[str, int], ...]


class FeatureRecords:
    """JSON records of features and their bounding boxes (minlon, minlat, maxlon, maxlat)."""

    #: Cell size (degrees) of the bucket index, and how many cells a query or a record
    #: may span before it goes the vectorised way (a large tile, a large finding).
    CELL = 0.01
    MAX_QUERY_CELLS = 16
    MAX_RECORD_CELLS = 64

    def __init__(self, bounds: np.ndarray, records: list[dict]):
        self.bounds = np.asarray(bounds, dtype=float).reshape(-1, 4)
        self.fragments = [orjson.dumps(r).decode() for r in records]
        # a bucket index for small queries (most tiles are z15–z16, a few hundred metres)
        self._boxes = [tuple(b) for b in self.bounds.tolist()]
        self._cells: dict[tuple[int, int], list[int]] = {}
        self._large: list[int] = []
        for i, (minx, miny, maxx, maxy) in enumerate(self._boxes):
            if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)):
                self._large.append(i)
                continue
            x0, y0, x1, y1 = self._cell(minx), self._cell(miny), self._cell(maxx), self._cell(maxy)
            if (x1 - x0 + 1) * (y1 - y0 + 1) > self.MAX_RECORD_CELLS:
                self._large.append(i)
                continue
            for cx in range(x0, x1 + 1):
                for cy in range(y0, y1 + 1):
                    self._cells.setdefault((cx, cy), []).append(i)

    def _cell(self, v: float) -> int:
        return math.floor(v / self.CELL)

    def __len__(self) -> int:
        return len(self.fragments)

    def indices_within(self, bbox: tuple[float, float, float, float]) -> list[int]:
        """Indices (ascending) of the records whose box meets ``bbox`` (WGS84 degrees)."""
        if not self.fragments:
            return []
        minx, miny, maxx, maxy = bbox
        x0, y0, x1, y1 = self._cell(minx), self._cell(miny), self._cell(maxx), self._cell(maxy)
        if (x1 - x0 + 1) * (y1 - y0 + 1) > self.MAX_QUERY_CELLS:
            b = self.bounds
            hit = np.flatnonzero((b[:, 0] <= maxx) & (b[:, 2] >= minx) & (b[:, 1] <= maxy) & (b[:, 3] >= miny))
            return hit.tolist()
        found = set(self._large)
        cells = self._cells
        for cx in range(x0, x1 + 1):
            for cy in range(y0, y1 + 1):
                ids = cells.get((cx, cy))
                if ids:
                    found.update(ids)
        boxes = self._boxes
        return sorted(
            i
            for i in found
            if boxes[i][0] <= maxx and boxes[i][2] >= minx and boxes[i][1] <= maxy and boxes[i][3] >= miny
        )

    def json_within(self, bbox: tuple[float, float, float, float]) -> str:
        """A JSON array of the records whose box meets ``bbox`` (WGS84 degrees), in the
        records' order."""
        frags = self.fragments
        return "[" + ",".join([frags[i] for i in self.indices_within(bbox)]) + "]"


_GRIDS_SQL = text(
    """
    SELECT g.id, g.code, g.name, c.code AS community,
           ST_XMin(gv.geom) AS minx, ST_YMin(gv.geom) AS miny, ST_XMax(gv.geom) AS maxx, ST_YMax(gv.geom) AS maxy,
           ST_Area(gv.geom::geography) AS area_m2,
           (SELECT b.name FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id
             WHERE bg.grid_id = g.id AND b.active ORDER BY (b.kind <> 'grid'), b.code LIMIT 1) AS branch
      FROM grid_versions gv
      JOIN grids g ON g.id = gv.grid_id
      JOIN admin_areas c ON c.id = g.community_id
     WHERE gridbranch_in_force(gv.valid_from, gv.valid_to) AND gridbranch_live(g.retired_at)
     ORDER BY g.code
    """
)


def grid_records(
    session: Session, caches: Caches, derived: DerivedCache, suppress_below: int | None = None
) -> FeatureRecords:
    """The current grids' tile attributes: code, name, community (code), has_branch and
    branch (the name of the active branch covering the grid, grid branches first, then by
    code), registered (confirmed registrations), rate (registered / members whose current
    residence lies in the grid, 4 decimals; null without residents), roles_missing (how
    many active service roles no confirmed member holds) and roles_missing_names (their
    names, comma-separated), area_m2 (m², on the ellipsoid; for the priority order).
    Registration figures are those of :func:`layers.registrations.registration_stats`;
    with ``suppress_below`` (the public tiles) the figures of grids counting fewer
    registered members, and of the grids withheld with them so that no street or
    community total minus the published grids gives them away, are null and
    ``suppressed`` is true (:func:`layers.suppression.suppressed_grids`)."""
    rows = derived.grid_rows.get(session, lambda s: s.execute(_GRIDS_SQL).all())
    stats = grid_stats(session, caches)
    hidden = public_grid_figures(stats, [r.code for r in rows], suppress_below) if suppress_below is not None else set()
    records, bounds = [], []
    for r in rows:
        s = stats.get(r.code)
        missing = s["roles_missing"] if s else []
        record = {
            "fid": r.id,
            "code": r.code,
            "name": r.name,
            "community": r.community,
            "has_branch": r.branch is not None,
            "branch": r.branch,
            "registered": s["registered"] if s else 0,
            "rate": s["rate"] if s else None,
            "roles_missing": len(missing) if s else None,
            "roles_missing_names": ",".join(missing) if s else None,
            "area_m2": round(float(r.area_m2), 1),
            "suppressed": r.code in hidden,
        }
        if record["suppressed"]:
            record.update(registered=None, rate=None, roles_missing=None, roles_missing_names=None)
        records.append(record)
        bounds.append((r.minx, r.miny, r.maxx, r.maxy))
    return FeatureRecords(np.array(bounds), records)


def _wkb_records(items: list[tuple[bytes, dict]]) -> FeatureRecords:
    geoms = shapely.from_wkb([wkb for wkb, _ in items]) if items else np.array([])
    bounds = shapely.bounds(geoms) if len(geoms) else np.zeros((0, 4))
    records = [{**attrs, "wkb": wkb.hex()} for wkb, attrs in items]
    return FeatureRecords(bounds, records)


def coverage_records(session: Session, caches: Caches, thresholds=None) -> FeatureRecords:
    """The topology findings as tile records: kind, form, codes (comma-separated),
    area_m2 (m²), message (what the finding is, in Chinese) and the WGS84 geometry (WKB, hex)."""
    items = []
    for i, f in enumerate(current_findings(session, caches, thresholds)):
        attrs = {
            "fid": i + 1,
            "kind": f["kind"],
            "form": f["form"],
            "codes": ",".join(f["codes"]),
            "area_m2": f["area_m2"],
            "message": f["message"],
        }
        items.append((f["wkb"], attrs))
    return _wkb_records(items)


def h3_records(
    session: Session, caches: Caches, derived: DerivedCache, *, res: int, suppress_below: int
) -> FeatureRecords:
    """Members with an active registration per H3 cell at resolution ``res``, as the
    public answer of :func:`layers.coverage.h3_cells` (``within`` None): each cell's
    count the sum of its res-10 descendants', cells counting fewer than
    ``suppress_below`` left out and, with them, the complementary cells that would let
    a coarser cell minus its published children (another zoom's tiles) give them away.
    As tile records: fid (the H3 index as an integer), cell, count, res and the cell's
    hexagon (WKB, hex)."""
    items = []
    for c in h3_cells(session, caches, res=res, metric="members", within=None, suppress_below=suppress_below):
        # a cell's hexagon never changes: drawn once, kept across data versions
        wkb = derived.cell_wkb.memo(c["cell"], _hexagon_wkb(c["boundary"]))
        items.append((wkb, {"fid": h3.str_to_int(c["cell"]), "cell": c["cell"], "count": c["count"], "res": res}))
    return _wkb_records(items)


def _hexagon_wkb(ring: list[list[float]]) -> Callable[[], bytes]:
    return lambda: shapely.to_wkb(shapely.Polygon(ring))


def label_records(session: Session, caches: Caches, levels: tuple[str, ...]) -> FeatureRecords:
    """The label points (:func:`layers.places.label_point`) of the units at ``levels`` as
    tile records: fid (a stable 48-bit number of level and code), level, code, name,
    rank (the level's, for the priority order) and the point (lon, lat)."""
    records, bounds = [], []
    for p in all_places(session, caches):
        if p.level in levels:
            fid = int.from_bytes(hashlib.blake2b(f"{p.level}:{p.code}".encode(), digest_size=6).digest(), "big")
            records.append(
                {
                    "fid": fid,
                    "level": p.level,
                    "code": p.code,
                    "name": p.name,
                    "rank": LEVEL_RANK[p.level],
                    "lon": p.lon,
                    "lat": p.lat,
                }
            )
            bounds.append((p.lon, p.lat, p.lon, p.lat))
    return FeatureRecords(np.array(bounds).reshape(-1, 4), records)


class DerivedCache:
    """The tile service's derived records: per kind (``grids``, ``coverage``, ``h3``,
    ``labels``) a :class:`layers.versions.VersionedCache` filed under the parameters
    and the data versions the records were built at (a few kept per kind), looked up by
    :meth:`at_least`; and what the records are made of that the app's caches do not
    hold. Builds of one kind are serialised by :meth:`lock` (one asyncio lock per kind:
    the tile service builds on the event loop's behalf, in a worker thread)."""

    keep = 8

    def __init__(self) -> None:
        self._kinds: dict[str, VersionedCache[FeatureRecords]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.builds = 0
        #: The current grids' own rows (names, community, branch, bounds, area): they
        #: change with the grids and areas versions only (a branch write bumps grids).
        self.grid_rows: VersionedCache[Sequence[Any]] = VersionedCache("grids", "areas")
        #: WKB of the H3 hexagons drawn so far, by cell (:func:`h3_records`).
        self.cell_wkb: VersionedCache[bytes] = VersionedCache(keep=SHAPES_KEEP)

    def _kind(self, kind: str) -> VersionedCache[FeatureRecords]:
        cache = self._kinds.get(kind)
        if cache is None:
            cache = self._kinds.setdefault(kind, VersionedCache(keep=self.keep))
        return cache

    def at_least(self, kind: str, versions: tuple, extra: tuple = ()) -> FeatureRecords | None:
        """The newest records of ``kind`` (built with ``extra``) whose data versions are
        each at least ``versions`` (versions only grow: such records are as fresh as those
        asked for, or fresher); None when there are none."""
        return self._kind(kind).newest(extra, at_least=versions)

    def put(self, key: tuple, records: FeatureRecords) -> None:
        """File ``records`` under ``key`` = (kind, data versions, *parameters)."""
        kind, at, *extra = key
        self.builds += 1
        self._kind(kind).put(tuple(extra), tuple(at), records)

    def lock(self, kind: str) -> asyncio.Lock:
        return self._locks.setdefault(kind, asyncio.Lock())

"""Locating points in the grid layer: which grid (and community, street, district) a
WGS84 point falls in, with the edge and gap rules of the service.

The work is done by :class:`GridIndex`, an in-memory index of the *current* grid
versions built from PostGIS and rebuilt whenever the ``grids`` or ``areas`` data version
changes (see migration 0002; versions come from a sequence, so a version number always
means one content). It answers a million points in a few vectorised passes:

1. containment in lon/lat (the storage CRS, exactly as PostGIS's ST_Contains on
   geometry): points are bucketed on a regular lattice and every grid tests only the
   points of the lattice cells its bounding box covers (``shapely.contains_xy``);
2. for points inside no grid, distances in metres in a local transverse Mercator
   projection centred on the service area (scale error < 0.01 % over a district):
   within ``edge_m`` of one or more grids → ``boundary``; within ``tolerance_m`` →
   ``nearest``; beyond → ``outside`` with the nearest grid and its distance.

Match kinds:
- ``inside``: in the interior of a grid (in an overlap of several, the lowest code is
  chosen and all are listed as candidates);
- ``boundary``: on an edge (within ``edge_m``) — the lowest code is chosen, all listed;
- ``nearest``: in a gap between grids, within ``tolerance_m`` of the nearest;
- ``outside``: beyond the tolerance; ``swapped`` tells whether (lat, lon) would land
  inside the service area.
"""

from __future__ import annotations

import threading
from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import shapely
from pyproj import Transformer
from shapely import STRtree
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.gcpause import no_gc
from layers.versions import VersionedCache, data_versions, database_url

INSIDE, BOUNDARY, NEAREST, OUTSIDE = 0, 1, 2, 3
MATCH_NAMES = ("inside", "boundary", "nearest", "outside")

_GRIDS_SQL = text(
    """
    SELECT g.id AS grid_id, gv.id AS grid_version_id, gv.version, g.code, g.name,
           g.worker_name, g.worker_phone,
           c.code AS community_code, c.name AS community_name,
           s.code AS street_code, s.name AS street_name,
           d.code AS district_code, d.name AS district_name,
           ST_AsBinary(gv.geom) AS wkb,
           COALESCE((SELECT json_agg(json_build_object('code', b.code, 'name', b.name, 'kind', b.kind) ORDER BY b.code)
                     FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id
                     WHERE bg.grid_id = g.id AND b.active), '[]'::json) AS branches,
           (SELECT version FROM layer_versions WHERE layer = 'grids') AS grids_version,
           (SELECT version FROM layer_versions WHERE layer = 'areas') AS areas_version,
           (SELECT b.id FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id
             WHERE bg.grid_id = g.id AND b.active ORDER BY (b.kind <> 'grid'), b.code LIMIT 1) AS branch_id
    FROM grid_versions gv
    JOIN grids g ON g.id = gv.grid_id
    JOIN admin_areas c ON c.id = g.community_id
    JOIN admin_areas s ON s.id = c.parent_id
    JOIN admin_areas d ON d.id = s.parent_id
    WHERE gridbranch_in_force(gv.valid_from, gv.valid_to) AND gridbranch_live(g.retired_at)
    ORDER BY g.code
    """
)
#: The layer in force at an instant ``:at`` (``/v1/locate?at=``): the same rows, history's versions.
_CURRENT = "gridbranch_in_force(gv.valid_from, gv.valid_to) AND gridbranch_live(g.retired_at)"
_GRIDS_AT_SQL = text(
    _GRIDS_SQL.text.replace(
        _CURRENT, "gridbranch_in_force(gv.valid_from, gv.valid_to, :at) AND gridbranch_live(g.retired_at, :at)"
    )
)
assert _CURRENT in _GRIDS_SQL.text
_SERVICE_AREA_SQL = text("SELECT ST_AsBinary(ST_Union(geom)) FROM admin_areas WHERE level = 'district'")


@dataclass
class Located:
    """Vectorised answer for n points (indices refer to ``GridIndex.grids``)."""

    match: np.ndarray  # int8: INSIDE, BOUNDARY, NEAREST, OUTSIDE
    grid: np.ndarray  # int32: chosen (or nearest) grid, -1 when the layer is empty
    distance_m: np.ndarray  # float64: 0 inside, metres otherwise
    candidates: dict[int, list[int]] = field(default_factory=dict)  # point → grids, where more than one
    swapped: np.ndarray | None = None  # bool: for OUTSIDE points, (lat, lon) lands in the service area


class GridIndex:
    """The current grid layer in memory. Build with :func:`build_grid_index`."""

    #: whether answers name the grid's worker (:class:`GridIndexCache` sets it)
    public_worker = True

    def __init__(self, rows: list[Any], service_area_wkb: bytes | None, version: tuple[int, ...]):
        self.version = version
        self.grids = [dict(r._mapping) for r in rows]
        for g in self.grids:
            for key in ("wkb", "grids_version", "areas_version"):
                g.pop(key)
        geoms = shapely.from_wkb([bytes(r.wkb) for r in rows]) if rows else np.array([], dtype=object)
        self.geoms = geoms
        self.bounds = shapely.bounds(geoms) if len(geoms) else np.zeros((0, 4))
        self.service_area = shapely.from_wkb(bytes(service_area_wkb)) if service_area_wkb else None
        if self.service_area is not None:
            shapely.prepare(self.service_area)
        if len(geoms):
            minx, miny = self.bounds[:, 0].min(), self.bounds[:, 1].min()
            maxx, maxy = self.bounds[:, 2].max(), self.bounds[:, 3].max()
            self.extent = (minx, miny, maxx, maxy)
            lon0, lat0 = (minx + maxx) / 2, (miny + maxy) / 2
        else:
            self.extent = (0.0, 0.0, 0.0, 0.0)
            lon0, lat0 = 0.0, 0.0
        self._to_metric = Transformer.from_crs(
            "EPSG:4326",
            f"+proj=tmerc +lat_0={lat0:.6f} +lon_0={lon0:.6f} +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs",
            always_xy=True,
        )
        self.metric_geoms = shapely.transform(geoms, self._metric_coords) if len(geoms) else geoms
        self.metric_tree = STRtree(self.metric_geoms)
        if len(geoms):
            shapely.prepare(geoms)  # same predicates, faster repeated tests
        # Grids arrive ordered by code, so a lower index is a lower code: ties between
        # grids are broken by index throughout.
        self._build_lattice()
        self._build_pure_cells()
        self.describer = Describer(self)  # grid parts of answers, built once per grid

    def _metric_coords(self, coords: np.ndarray) -> np.ndarray:
        x, y = self._to_metric.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    def __len__(self) -> int:
        return len(self.grids)

    def in_service_area(self, lon: float, lat: float) -> bool:
        """Whether the WGS84 point lies in the service area (the union of districts)."""
        if self.service_area is None or not (abs(lon) <= 180 and abs(lat) <= 90):
            return False
        return bool(shapely.contains_xy(self.service_area, lon, lat))

    # -- containment ---------------------------------------------------------------
    # A regular lattice of cells x cells over the layer's extent. Each grid knows the
    # cells its bounding box covers (``_gx0..._gy1``), and each cell the grids whose
    # bounding box covers it (CSR arrays ``_cell_start``/``_cell_grids``).
    _cells = 256
    SMALL_BATCH = 4096  # below this, look candidates up per point; above, sweep per grid

    def _build_lattice(self) -> None:
        minx, miny, maxx, maxy = self.extent
        cells = self._cells
        self._sx = cells / max(maxx - minx, 1e-12)
        self._sy = cells / max(maxy - miny, 1e-12)
        b = self.bounds
        self._gx0 = np.clip(((b[:, 0] - minx) * self._sx).astype(np.int64), 0, cells - 1)
        self._gx1 = np.clip(((b[:, 2] - minx) * self._sx).astype(np.int64), 0, cells - 1)
        self._gy0 = np.clip(((b[:, 1] - miny) * self._sy).astype(np.int64), 0, cells - 1)
        self._gy1 = np.clip(((b[:, 3] - miny) * self._sy).astype(np.int64), 0, cells - 1)
        per_cell, per_grid = [], []
        for g in range(len(self.grids)):
            xs = np.arange(self._gx0[g], self._gx1[g] + 1)
            ys = np.arange(self._gy0[g], self._gy1[g] + 1)
            c = (xs[:, None] * cells + ys[None, :]).ravel()
            per_cell.append(c)
            per_grid.append(np.full(len(c), g, dtype=np.int64))
        all_cells = np.concatenate(per_cell) if per_cell else np.zeros(0, np.int64)
        all_grids = np.concatenate(per_grid) if per_grid else np.zeros(0, np.int64)
        order = np.argsort(all_cells, kind="stable")
        self._cell_grids = all_grids[order]
        self._cell_start = np.searchsorted(all_cells[order], np.arange(cells * cells + 1))
        # the same, as Python lists, for one point at a time (no numpy call per step)
        self._cell_grids_list = self._cell_grids.tolist()
        self._cell_start_list = self._cell_start.tolist()
        self._bounds_list = self.bounds.tolist()

    # A finer lattice for single points (``pure_grid``): cells of about PURE_CELL_M that
    # lie wholly in the interior of exactly one grid and meet no grid's boundary hold
    # that grid; every other cell holds -1 and its points take the exact path.
    PURE_CELL_M = 10.0
    PURE_CELLS_MAX = 2048  # per side

    def _build_pure_cells(self) -> None:
        self._pure = array("i")
        self._pnx, self._pny, self._psx, self._psy = 0, 0, 0.0, 0.0
        if not len(self.grids):
            return
        minx, miny, maxx, maxy = self.extent
        (x0, x1), (y0, y1) = self._to_metric.transform([minx, maxx], [miny, maxy])  # the extent in metres
        nx = int(min(max(np.ceil(abs(x1 - x0) / self.PURE_CELL_M), 1), self.PURE_CELLS_MAX))
        ny = int(min(max(np.ceil(abs(y1 - y0) / self.PURE_CELL_M), 1), self.PURE_CELLS_MAX))
        sx, sy = nx / max(maxx - minx, 1e-12), ny / max(maxy - miny, 1e-12)
        # every cell a grid boundary passes through: boundary points no further apart than
        # half a cell fall in that cell or in one of its eight neighbours, so marking the
        # cells of the points and their neighbours marks every such cell
        step = 0.5 * min(1.0 / sx, 1.0 / sy)
        xy = shapely.get_coordinates(shapely.segmentize(shapely.boundary(self.geoms), step))
        near = np.zeros((nx + 2, ny + 2), bool)  # one cell of margin on every side
        ix = np.clip(((xy[:, 0] - minx) * sx).astype(np.int64), 0, nx - 1) + 1
        iy = np.clip(((xy[:, 1] - miny) * sy).astype(np.int64), 0, ny - 1) + 1
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                near[ix + dx, iy + dy] = True
        near = near[1:-1, 1:-1]
        # cells no boundary meets lie wholly inside the grids that hold their centre
        owner = np.full((nx, ny), -1, np.int32)
        claims = np.zeros((nx, ny), np.int8)
        b = self.bounds
        gx0 = np.clip(((b[:, 0] - minx) * sx).astype(np.int64), 0, nx - 1)
        gx1 = np.clip(((b[:, 2] - minx) * sx).astype(np.int64), 0, nx - 1)
        gy0 = np.clip(((b[:, 1] - miny) * sy).astype(np.int64), 0, ny - 1)
        gy1 = np.clip(((b[:, 3] - miny) * sy).astype(np.int64), 0, ny - 1)
        for g in range(len(self.grids)):
            cx, cy = np.meshgrid(np.arange(gx0[g], gx1[g] + 1), np.arange(gy0[g], gy1[g] + 1), indexing="ij")
            free = ~near[cx, cy]
            cx, cy = cx[free], cy[free]
            inside = shapely.contains_xy(self.geoms[g], minx + (cx + 0.5) / sx, miny + (cy + 0.5) / sy)
            cx, cy = cx[inside], cy[inside]
            owner[cx, cy] = g
            claims[cx, cy] = np.minimum(claims[cx, cy] + 1, 2)
        owner[claims != 1] = -1
        self._pure = array("i", owner.astype(np.int32).ravel().tobytes())
        self._pnx, self._pny, self._psx, self._psy = nx, ny, sx, sy

    def pure_grid(self, lon: float, lat: float) -> int:
        """The one grid whose interior holds the point's whole pure cell, or -1 (the
        point then needs the exact tests). Points outside the extent (or NaN) get -1."""
        minx, miny, maxx, maxy = self.extent
        if not (minx <= lon <= maxx and miny <= lat <= maxy) or not self._pnx:  # also for NaN
            return -1
        px = min(int((lon - minx) * self._psx), self._pnx - 1)
        py = min(int((lat - miny) * self._psy), self._pny - 1)
        return self._pure[px * self._pny + py]

    def _cell_of(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the points inside the extent, and their lattice cells."""
        minx, miny, maxx, maxy = self.extent
        idx = np.flatnonzero((lon >= minx) & (lon <= maxx) & (lat >= miny) & (lat <= maxy))
        cx = np.minimum(((lon[idx] - minx) * self._sx).astype(np.int64), self._cells - 1)
        cy = np.minimum(((lat[idx] - miny) * self._sy).astype(np.int64), self._cells - 1)
        return idx, cx * self._cells + cy

    def _containing(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs (point index, grid index) of points strictly inside grids."""
        idx, cell = self._cell_of(lon, lat)
        if len(idx) < self.SMALL_BATCH:
            segments = self._pairs_by_point(idx, cell)
        else:
            segments = self._pairs_by_sweep(idx, cell)
        pts_out, grids_out = [], []
        for g, cand in segments:
            hit = shapely.contains_xy(self.geoms[g], lon[cand], lat[cand])
            if hit.any():
                found = cand[hit]
                pts_out.append(found)
                grids_out.append(np.full(len(found), g, dtype=np.int64))
        if not pts_out:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(pts_out), np.concatenate(grids_out)

    def _pairs_by_point(self, idx: np.ndarray, cell: np.ndarray):
        """(grid, candidate points) from each point's cell: cheap for few points."""
        start = self._cell_start[cell]
        count = self._cell_start[cell + 1] - start
        total = int(count.sum())
        if not total:
            return
        pair_pt = np.repeat(idx, count)
        offsets = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
        pair_grid = self._cell_grids[np.repeat(start, count) + offsets]
        order = np.argsort(pair_grid, kind="stable")
        pair_grid, pair_pt = pair_grid[order], pair_pt[order]
        cuts = np.flatnonzero(np.diff(pair_grid)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, total]):
            yield int(pair_grid[lo]), pair_pt[lo:hi]

    def _pairs_by_sweep(self, idx: np.ndarray, cell: np.ndarray):
        """(grid, candidate points) by sorting points by cell and slicing each grid's
        cell columns: cheap for many points."""
        cells = self._cells
        order = np.argsort(cell, kind="stable")
        sorted_idx = idx[order]
        starts = np.searchsorted(cell[order], np.arange(cells * cells + 1))
        for g in range(len(self.grids)):
            y0, y1 = self._gy0[g], self._gy1[g] + 1
            chunks = [
                sorted_idx[starts[x * cells + y0] : starts[x * cells + y1]]
                for x in range(self._gx0[g], self._gx1[g] + 1)
            ]
            cand = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
            if len(cand):
                yield g, cand

    def _containing_one(self, lon: float, lat: float) -> list[int]:
        """The grids (ascending index) strictly containing one point: the same lattice
        cell, candidates and ``contains_xy`` test as :meth:`_containing`, in plain Python."""
        minx, miny, maxx, maxy = self.extent
        if not (minx <= lon <= maxx and miny <= lat <= maxy):  # also False for NaN
            return []
        cells = self._cells
        cx = min(int((lon - minx) * self._sx), cells - 1)
        cy = min(int((lat - miny) * self._sy), cells - 1)
        cell = cx * cells + cy
        start, end = self._cell_start_list[cell], self._cell_start_list[cell + 1]
        hits = []
        bounds = self._bounds_list
        for g in self._cell_grids_list[start:end]:
            b = bounds[g]
            if b[0] <= lon <= b[2] and b[1] <= lat <= b[3] and shapely.contains_xy(self.geoms[g], lon, lat):
                hits.append(g)
        hits.sort()
        return hits

    def locate_one(self, lon: float, lat: float, *, tolerance_m: float, edge_m: float = 0.05) -> Located:
        """:meth:`locate` for one point, cheaper: a point strictly inside grids is
        answered without the vectorised passes; any other point goes through them."""
        hits = self._containing_one(lon, lat) if len(self.grids) else []
        if not hits:
            return self.locate(np.array([lon], float), np.array([lat], float), tolerance_m=tolerance_m, edge_m=edge_m)
        return Located(
            np.array([INSIDE], np.int8),
            np.array([hits[0]], np.int32),
            np.zeros(1),
            {0: hits} if len(hits) > 1 else {},
            np.zeros(1, bool),
        )

    # -- the whole answer ------------------------------------------------------------
    def locate(self, lon: np.ndarray, lat: np.ndarray, *, tolerance_m: float, edge_m: float = 0.05) -> Located:
        """Locate WGS84 points (degrees, already validated). Distances in metres."""
        n = len(lon)
        match = np.full(n, OUTSIDE, dtype=np.int8)
        grid = np.full(n, -1, dtype=np.int32)
        distance = np.full(n, np.inf)
        candidates: dict[int, list[int]] = {}
        if n == 0 or not len(self.grids):
            return Located(match, grid, distance, candidates, np.zeros(n, bool))

        pts, grids = self._containing(lon, lat)
        if len(pts):
            # order by point, then by grid code rank, so the first per point is the lowest code
            order = np.lexsort((grids, pts))
            pts, grids = pts[order], grids[order]
            first = np.ones(len(pts), bool)
            first[1:] = pts[1:] != pts[:-1]
            match[pts[first]] = INSIDE
            grid[pts[first]] = grids[first]
            distance[pts[first]] = 0.0
            if not first.all():
                for p in np.unique(pts[~first]):
                    candidates[int(p)] = [int(g) for g in grids[pts == p]]

        rest = np.flatnonzero(match != INSIDE)
        if len(rest):
            mx, my = self._to_metric.transform(lon[rest], lat[rest])
            mpts = shapely.points(mx, my)
            pairs = self.metric_tree.query(mpts, predicate="dwithin", distance=tolerance_m)
            if pairs.shape[1]:
                d = shapely.distance(mpts[pairs[0]], self.metric_geoms[pairs[1]])
                order = np.lexsort((pairs[1], d, pairs[0]))
                p_sorted, g_sorted, d_sorted = pairs[0][order], pairs[1][order], d[order]
                first = np.ones(len(p_sorted), bool)
                first[1:] = p_sorted[1:] != p_sorted[:-1]
                sel = rest[p_sorted[first]]
                grid[sel] = g_sorted[first]
                distance[sel] = d_sorted[first]
                match[sel] = np.where(d_sorted[first] <= edge_m, BOUNDARY, NEAREST)
                on_edge = d_sorted <= edge_m
                if on_edge.any():
                    ep, eg = p_sorted[on_edge], g_sorted[on_edge]
                    order = np.lexsort((eg, ep))
                    ep, eg = ep[order], eg[order]
                    for p in np.unique(ep):
                        gs = eg[ep == p]
                        if len(gs) > 1:
                            candidates[int(rest[p])] = [int(g) for g in gs]
                        grid[rest[p]] = gs[0]
            far = np.flatnonzero(match[rest] == OUTSIDE)
            if len(far):
                nearest_pairs, nearest_d = self.metric_tree.query_nearest(mpts[far], return_distance=True)
                # one answer per point: query_nearest may return ties; keep the first per point
                keep = np.ones(nearest_pairs.shape[1], bool)
                keep[1:] = nearest_pairs[0][1:] != nearest_pairs[0][:-1]
                sel = rest[far[nearest_pairs[0][keep]]]
                grid[sel] = nearest_pairs[1][keep]
                distance[sel] = nearest_d[keep]

        swapped = np.zeros(n, bool)
        outside = np.flatnonzero(match == OUTSIDE)
        if len(outside) and self.service_area is not None:
            swapped[outside] = shapely.contains_xy(self.service_area, lat[outside], lon[outside])
        return Located(match, grid, distance, candidates, swapped)


def build_grid_index(session: Session, at=None) -> GridIndex:
    """Read the current grid layer — or the one in force at instant ``at`` — into a
    :class:`GridIndex`, versioned by the data versions read in the same statement (one
    snapshot)."""
    rows = session.execute(_GRIDS_SQL).all() if at is None else session.execute(_GRIDS_AT_SQL, {"at": at}).all()
    if rows:
        version = (rows[0].grids_version, rows[0].areas_version)
    else:
        versions = data_versions(session, ["grids", "areas"])
        version = (versions.get("grids", 0), versions.get("areas", 0))
    service_area = session.execute(_SERVICE_AREA_SQL).scalar()
    return GridIndex(rows, service_area, version)


#: What fixes the layer in force at ``:at``: the data versions, and the last instant at or
#: before it at which a version began or ended or a grid was retired.
_EPOCH_SQL = text(
    """SELECT (SELECT version FROM layer_versions WHERE layer = 'grids'),
              (SELECT version FROM layer_versions WHERE layer = 'areas'),
              GREATEST((SELECT max(valid_from) FROM grid_versions WHERE valid_from <= :at),
                       (SELECT max(valid_to) FROM grid_versions WHERE valid_to <= :at),
                       (SELECT max(retired_at) FROM grids WHERE retired_at <= :at))"""
)


class HistoryIndexCache:
    """Indexes of the layer in force at past (or future) instants (``/v1/locate?at=``),
    the ``keep`` latest, per database and epoch (``_EPOCH_SQL``): every instant between
    two changes of the layer shares one index, so asking about many days costs one build
    per generation, not one per request. An index is kept only when the epoch read
    again after its build is unchanged (:class:`layers.versions.VersionedCache`)."""

    def __init__(self, keep: int = 4) -> None:
        self.indexes: VersionedCache[GridIndex] = VersionedCache(keep=keep)

    @property
    def built(self) -> int:
        return self.indexes.computed

    def get(self, session: Session, at) -> GridIndex:
        def epoch(s: Session) -> tuple:
            return (database_url(s), *s.execute(_EPOCH_SQL, {"at": at}).one())

        return self.indexes.get(session, lambda s: build_grid_index(s, at=at), versions=epoch)


class GridIndexCache:
    """The index of the current grid layer of one database (the app's), per (grids,
    areas) data versions (:class:`layers.versions.VersionedCache`, ``keep`` of them, for
    transactions that see different versions at once); built one at a time.

    Every call reads the two version numbers (a primary-key lookup), so an answer never
    comes from a grid layer older than the caller's transaction can see. An index is
    filed at the versions read in the statement that read its rows (one snapshot).
    """

    def __init__(self, *, public_worker: bool = True, keep: int = 4) -> None:
        self.indexes: VersionedCache[GridIndex] = VersionedCache("grids", "areas", keep=keep)
        self._lock = threading.Lock()
        #: whether answers name the grid worker (GRIDBRANCH_AUDIT_PUBLIC_GRID_WORKER)
        self.public_worker = public_worker
        #: the index a batch of reports was last located with: used optimistically (the
        #: statement that writes them checks its data versions; a stale one costs a retry)
        self.last: GridIndex | None = None

    def get(self, session: Session) -> GridIndex:
        versions = data_versions(session, ["grids", "areas"])
        version = (versions.get("grids", 0), versions.get("areas", 0))
        index = self.at(version)
        if index is not None:
            return index
        with self._lock:
            index = self.at(version)
            if index is None:
                index = build_grid_index(session)
                self._store(index)
        return index

    def _store(self, index: GridIndex) -> None:
        index.public_worker = self.public_worker
        self.indexes.computed += 1
        self.indexes.put((), index.version, index)

    def at(self, version: tuple[int, int]) -> GridIndex | None:
        """The index built at exactly ``version`` (grids, areas), if it is held."""
        return self.indexes.lookup((), version)

    def build_at(self, version: tuple[int, int], session_factory) -> GridIndex:
        """The index at ``version`` (just read by the caller) or newer: built from a
        new session of ``session_factory`` when it is not held (blocking: call it in a
        worker thread). The build reads the layer after the caller's version read, so it
        is never older than ``version``."""
        with self._lock:
            index = self.at(version)
            if index is None:
                session = session_factory()
                try:
                    index = build_grid_index(session)
                finally:
                    session.close()
                self._store(index)
        return index


def locate_point(index: GridIndex, lon: float, lat: float, *, tolerance_m: float, edge_m: float):
    """One validated WGS84 point → (found, the ``/v1/locate`` answer as a dict); not
    found means ``outside`` (the answer then carries the message and nearest grid)."""
    located = index.locate_one(lon, lat, tolerance_m=tolerance_m, edge_m=edge_m)
    result = index.describer.describe(located, 0, lon, lat, tolerance_m)
    return bool(located.match[0] != OUTSIDE), result


def _area(code: str, name: str) -> dict[str, str]:
    return {"code": code, "name": name}


class Describer:
    """Turns :class:`Located` rows into the JSON shape of ``/v1/locate``. The parts that
    depend only on the grid are built once per grid and shared by every point in it."""

    def __init__(self, index: GridIndex):
        self.index = index
        self._parts: dict[int, dict[str, Any]] = {}
        self._inside_heads: dict[int, bytes] = {}

    def grid_part(self, g: int) -> dict[str, Any]:
        part = self._parts.get(g)
        if part is None:
            r = self.index.grids[g]
            part = {
                "grid": {"code": r["code"], "name": r["name"], "version": r["version"]},
                "community": _area(r["community_code"], r["community_name"]),
                "street": _area(r["street_code"], r["street_name"]),
                "district": _area(r["district_code"], r["district_name"]),
                "branches": r["branches"],
                "grid_worker": (
                    {"name": r["worker_name"], "phone": r["worker_phone"]}
                    if r["worker_name"] and self.index.public_worker
                    else None
                ),
            }
            self._parts[g] = part
        return part

    def inside_answer(self, g: int, lon: float, lat: float) -> bytes:
        """``orjson.dumps(describe(...))`` of a point strictly inside grid ``g`` alone,
        byte for byte, from the grid's part encoded once: only the point is encoded."""
        head = self._inside_heads.get(g)
        if head is None:
            head = orjson.dumps({"match": MATCH_NAMES[INSIDE], **self.grid_part(g)})[:-1] + b',"point":'
            self._inside_heads[g] = head
        return head + orjson.dumps([round(lon, 7), round(lat, 7)]) + b',"distance_m":0.0}'

    def describe(self, located: Located, i: int, lon: float, lat: float, tolerance_m: float) -> dict[str, Any]:
        m = int(located.match[i])
        g = int(located.grid[i])
        point = [round(lon, 7), round(lat, 7)]
        if m == OUTSIDE:
            out: dict[str, Any] = {"match": "outside", "grid": None, "point": point}
            if g >= 0:
                r = self.index.grids[g]
                d = float(located.distance_m[i])
                out["nearest_grid"] = {"code": r["code"], "name": r["name"], "distance_m": round(d, 1)}
                out["distance_m"] = round(d, 2)
                message = (
                    f"no grid within {tolerance_m:g} m; the nearest grid is {r['code']} {r['name']}, {d:,.0f} m away"
                )
            else:
                message = "no grids are loaded"
            if located.swapped is not None and located.swapped[i]:
                out["swapped"] = True
                message += "; with longitude and latitude swapped the point would fall inside the service area"
            out["message"] = message
            return out
        out = {
            "match": MATCH_NAMES[m],
            **self.grid_part(g),
            "point": point,
            "distance_m": round(float(located.distance_m[i]), 2),
        }
        cands = located.candidates.get(i)
        if cands:
            out["candidates"] = [
                {"code": self.index.grids[c]["code"], "name": self.index.grids[c]["name"]} for c in cands
            ]
        return out


def _answers(index: GridIndex, batch, tolerance_m: float, edge_m: float):
    """Locate the good rows of ``batch``; per row: match code (-1 for bad rows), grid,
    rounded point and distance, as Python lists (fast to turn into JSON or CSV)."""
    n = len(batch)
    good = batch.good
    located = index.locate(batch.lon[good], batch.lat[good], tolerance_m=tolerance_m, edge_m=edge_m)
    match = np.full(n, -1, dtype=np.int8)
    match[good] = located.match
    grid = np.full(n, -1, dtype=np.int64)
    grid[good] = located.grid
    distance = np.zeros(n)
    distance[good] = np.round(located.distance_m, 2)
    lon = np.round(np.nan_to_num(batch.lon), 7)
    lat = np.round(np.nan_to_num(batch.lat), 7)
    return located, good, match.tolist(), grid.tolist(), distance.tolist(), lon.tolist(), lat.tolist()


def locate_rows(index: GridIndex, batch, *, tolerance_m: float, edge_m: float) -> list[dict[str, Any]]:
    """One result per row of ``batch`` (an ``layers.points.PointBatch``), in order:
    ``{"id", **describe(...)}`` for good rows, ``{"id", "match": None, "error"}`` for bad."""
    located, good, match, grid, distance, lon, lat = _answers(index, batch, tolerance_m, edge_m)
    describer = Describer(index)
    parts = [describer.grid_part(g) for g in range(len(index.grids))]
    ids = batch.ids
    with no_gc():
        results: list[dict[str, Any]] = [
            {
                "id": ids[i],
                "match": MATCH_NAMES[m],
                **parts[grid[i]],
                "point": [lon[i], lat[i]],
                "distance_m": distance[i],
            }
            if m in (INSIDE, BOUNDARY, NEAREST)
            else None
            for i, m in enumerate(match)
        ]
    slow = set(batch.errors) | {int(good[j]) for j in located.candidates}
    slow |= {int(good[j]) for j in np.flatnonzero(located.match == OUTSIDE)}
    for i in slow:
        if i in batch.errors:
            results[i] = {"id": ids[i], "match": None, "error": batch.errors[i]}
        else:
            j = int(np.searchsorted(good, i))
            results[i] = {
                "id": ids[i],
                **describer.describe(located, j, float(batch.lon[i]), float(batch.lat[i]), tolerance_m),
            }
    return results


CSV_COLUMNS = (
    "id",
    "match",
    "grid_code",
    "grid_name",
    "community_code",
    "community_name",
    "street_code",
    "street_name",
    "district_code",
    "district_name",
    "branches",
    "distance_m",
    "lon",
    "lat",
    "error",
)


def _grid_csv(r) -> str:
    """A grid's columns of a CSV answer: the grid, its community, street and district,
    and its branches' codes."""
    branches = ";".join(b["code"] for b in r["branches"])
    cells = (
        r["code"],
        r["name"],
        r["community_code"],
        r["community_name"],
        r["street_code"],
        r["street_name"],
        r["district_code"],
        r["district_name"],
        branches,
    )
    return ",".join(_csv_field(v) for v in cells)


def _csv_field(value: Any) -> str:
    text_value = "" if value is None else str(value)
    if any(c in text_value for c in ',"\n\r'):
        return '"' + text_value.replace('"', '""') + '"'
    return text_value


def locate_rows_csv(index: GridIndex, batch, *, tolerance_m: float, edge_m: float, header: bool = True) -> str:
    """The same answers as :func:`locate_rows`, flat, as CSV text with a header
    (``outside`` rows name the nearest grid in ``grid_code`` with its distance); without
    the header line when ``header`` is false (a part of a streamed answer)."""
    located, good, match, grid, distance, lon, lat = _answers(index, batch, tolerance_m, edge_m)
    prefix = [_grid_csv(r) for r in index.grids]
    empty = "," * 8
    lines = [",".join(CSV_COLUMNS)] if header else []
    ids = batch.ids
    errors = batch.errors
    quoted = any(isinstance(v, str) and any(c in v for c in ',"\n\r') for v in ids)
    id_text = [_csv_field(v) for v in ids] if quoted else ["" if v is None else str(v) for v in ids]
    with no_gc():
        for i, m in enumerate(match):
            if m < 0:
                err = errors[i]
                lines.append(f"{id_text[i]},,{empty},,,,{_csv_field(err['field'] + ': ' + err['detail'])}")
            else:
                g = grid[i]
                lines.append(
                    f"{id_text[i]},{MATCH_NAMES[m]},{prefix[g] if g >= 0 else empty},{distance[i]},{lon[i]},{lat[i]},"
                )
    return "\n".join(lines) + "\n" if lines else ""


# -- clean CSV batches: parsed and answered in bulk --------------------------------------
_PLAIN_HEADER = b"id,lon,lat"
_INSIDE_DISTANCE = 0.0


def plain_csv_points(body: bytes, max_rows: int) -> tuple[list[bytes], np.ndarray, np.ndarray] | None:
    """A CSV body of exactly ``id,lon,lat`` rows whose every row is clean — printable
    ASCII, no quotes, spaces, backslashes or blank lines, three fields, numbers that are
    valid WGS84 degrees — as (ids, lon, lat), parsed in a few whole-body passes. None
    for any other body: the general reader (``layers.points``) then takes it, with its
    per-row errors. The answer for a clean body is the one the general reader gives."""
    if not body.startswith(_PLAIN_HEADER + b"\n") or not body.isascii():
        return None
    if b'"' in body or b" " in body or b"\\" in body or b"\r" in body or b"\t" in body:
        return None
    raw = np.frombuffer(body, np.uint8)
    if (raw < 32).sum() != (raw == 10).sum():  # control characters other than newlines
        return None
    data = body[len(_PLAIN_HEADER) + 1 :]
    if not data:
        return None
    if not data.endswith(b"\n"):
        data += b"\n"
    buf = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(buf == 10)
    n = len(newlines)
    if n > max_rows:
        return None
    commas = np.flatnonzero(buf == 44)
    per_line = np.diff(np.searchsorted(commas, newlines), prepend=0)
    if len(commas) != 2 * n or (per_line != 2).any():  # also refuses blank lines
        return None
    fields = data[:-1].replace(b"\n", b",").split(b",")
    xs, ys = fields[1::3], fields[2::3]
    if b"_" in body and (b"_" in b"".join(xs) or b"_" in b"".join(ys)):  # float() reads 1_0 as 10
        return None
    try:
        lon = np.fromiter(map(float, xs), np.float64, n)
        lat = np.fromiter(map(float, ys), np.float64, n)
    except ValueError:
        return None
    if not (
        np.isfinite(lon).all() and np.isfinite(lat).all() and (np.abs(lon) <= 180).all() and (np.abs(lat) <= 90).all()
    ):
        return None
    return fields[0::3], lon, lat


class _Fragments:
    """Per-grid pieces of CSV and JSON answers, encoded once per index."""

    def __init__(self, index: GridIndex):
        describer = index.describer
        self.csv_prefix = []
        self.csv_inside = []
        self.json_inside = []
        for g, r in enumerate(index.grids):
            prefix = _grid_csv(r)
            self.csv_prefix.append(prefix)
            self.csv_inside.append(f",inside,{prefix},{_INSIDE_DISTANCE},".encode())
            part = orjson.dumps(describer.grid_part(g))[1:-1]
            self.json_inside.append(b'","match":"inside",' + part + b',"point":[')


def _fragments(index: GridIndex) -> _Fragments:
    frags = getattr(index, "_fragments", None)
    if frags is None:
        frags = index._fragments = _Fragments(index)
    return frags


def _repr_texts(values: list[float]) -> list[bytes]:
    """``repr`` of each float, as bytes. orjson writes the same digits as ``repr`` for 0
    and magnitudes in [1e-4, 1e16) (checked by the tests), several times faster."""
    arr = np.abs(np.asarray(values))
    if ((arr == 0) | ((arr >= 1e-4) & (arr < 1e16))).all():
        return orjson.dumps(values)[1:-1].split(b",")
    return ",".join(map(repr, values)).encode().split(b",")


def locate_plain(
    index: GridIndex,
    ids: list[bytes],
    lon: np.ndarray,
    lat: np.ndarray,
    *,
    tolerance_m: float,
    edge_m: float,
    answer: str,
    part: bool = False,
) -> bytes | None:
    """The body :func:`locate_rows_csv` (``answer="csv"``) or ``{"results":
    locate_rows(...)}`` as JSON would give for a clean batch (see
    :func:`plain_csv_points`), byte for byte: rows inside one grid are assembled from
    per-grid fragments encoded once; the others are built as those functions build them.
    With ``part``, only the rows (CSV lines; JSON objects separated by commas), as one
    part of a streamed answer (:func:`batch_document`)."""
    if not len(index.grids):
        return None  # nothing to assemble from: the general path answers
    located = index.locate(lon, lat, tolerance_m=tolerance_m, edge_m=edge_m)
    match, grid = located.match, located.grid
    frags = _fragments(index)
    plain = match == INSIDE
    if located.candidates:
        plain[list(located.candidates)] = False
    lon_r = np.round(lon, 7).tolist()
    lat_r = np.round(lat, 7).tolist()
    grid_l = grid.tolist()
    special = np.flatnonzero(~plain).tolist()
    with no_gc():
        if answer == "csv":
            inside = frags.csv_inside
            lon_t, lat_t = _repr_texts(lon_r), _repr_texts(lat_r)
            lines = [i + inside[g] + x + b"," + y + b"," for i, g, x, y in zip(ids, grid_l, lon_t, lat_t)]
            distance = np.round(located.distance_m, 2)
            empty = "," * 8
            for i in special:
                m, g = int(match[i]), grid_l[i]
                lines[i] = (
                    f"{ids[i].decode()},{MATCH_NAMES[m]},{frags.csv_prefix[g] if g >= 0 else empty},"
                    f"{float(distance[i])},{lon_r[i]},{lat_r[i]},"
                ).encode()
            if part:
                return b"\n".join(lines) + b"\n"
            return ",".join(CSV_COLUMNS).encode() + b"\n" + b"\n".join(lines) + b"\n"
        inside = frags.json_inside
        lon_t = orjson.dumps(lon_r)[1:-1].split(b",")
        lat_t = orjson.dumps(lat_r)[1:-1].split(b",")
        rows = [
            b'{"id":"' + i + inside[g] + x + b"," + y + b'],"distance_m":0.0}'
            for i, g, x, y in zip(ids, grid_l, lon_t, lat_t)
        ]
        if special:
            describer = index.describer
            distance = np.round(located.distance_m, 2).tolist()
            for i in special:
                m, g = int(match[i]), grid_l[i]
                if m == OUTSIDE or i in located.candidates:
                    row = {
                        "id": ids[i].decode(),
                        **describer.describe(located, i, float(lon[i]), float(lat[i]), tolerance_m),
                    }
                else:
                    row = {
                        "id": ids[i].decode(),
                        "match": MATCH_NAMES[m],
                        **describer.grid_part(g),
                        "point": [lon_r[i], lat_r[i]],
                        "distance_m": distance[i],
                    }
                rows[i] = orjson.dumps(row)
        if part:
            return b",".join(rows)
        return b'{"results":[' + b",".join(rows) + b"]}"


# -- large batches: split, answered part by part ------------------------------------------

#: Rows located and encoded at a time in a batch answer: its memory is that of a part,
#: whatever the number of rows.
BATCH_PART_ROWS = 10_000


@dataclass(frozen=True)
class CsvParts:
    """A CSV body cut at line ends into parts of at most ``BATCH_PART_ROWS`` data rows,
    each read as a CSV of its own (the header line, then its rows): ``rows`` data rows in
    all (lines that are not empty), ``ranges`` the byte range of each part's rows."""

    body: bytes
    header_end: int
    rows: int
    ranges: list[tuple[int, int]]

    def __iter__(self):
        header = self.body[: self.header_end]
        for start, end in self.ranges or [(self.header_end, self.header_end)]:
            yield header + self.body[start:end]


def split_csv(body: bytes, part_rows: int = BATCH_PART_ROWS) -> CsvParts:
    """Cut ``body`` (CSV with a header line) into parts at line ends outside quoted
    fields — a line end is inside a quoted field when an odd number of ``"`` precede it,
    as CSV doubles the quotes it holds — counting the data rows; a few passes over the
    bytes, holding only the line ends' offsets."""
    buf = np.frombuffer(body, np.uint8)
    breaks = np.flatnonzero(buf == 10)
    if b'"' in body:
        quotes = np.flatnonzero(buf == 34)
        breaks = breaks[np.searchsorted(quotes, breaks) % 2 == 0]
    ends = breaks + 1
    if not len(ends) or ends[-1] != len(body):
        ends = np.append(ends, len(body))
    header_end = int(ends[0])
    line_end = ends[1:]
    line_start = ends[:-1]
    length = line_end - line_start
    length = length - (buf[np.maximum(line_end - 1, 0)] == 10)  # without the "\n" (or "\r\n")
    length = length - ((length > 0) & (buf[np.maximum(line_start + length - 1, 0)] == 13))
    rows = np.flatnonzero(length > 0)
    ranges = [
        (int(line_start[rows[k]]), int(line_end[rows[min(k + part_rows, len(rows)) - 1]]))
        for k in range(0, len(rows), part_rows)
    ]
    return CsvParts(body, header_end, len(rows), ranges)


def batch_document(parts, answer: str):
    """The whole answer from its parts (bytes of rows, as :func:`locate_plain` gives
    with ``part``): ``{"results":[...]}`` for JSON, the header line then the rows for
    CSV — byte for byte the answer made at once."""
    if answer == "csv":
        yield ",".join(CSV_COLUMNS).encode() + b"\n"
        yield from parts
        return
    yield b'{"results":['
    first = True
    for part in parts:
        if not part:
            continue
        yield part if first else b"," + part
        first = False
    yield b"]}"

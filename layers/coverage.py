"""Coverage analysis (网格党支部"建在网格上"): topology of the grid layer inside every
parent area, branch coverage, metrics by level, H3 aggregation — and their exports.

Everything reads the grid layer in force (``gridbranch_in_force`` on grid versions,
``gridbranch_live`` on grids: migration 0018). Storage and output geometries are WGS84
(EPSG:4326); areas are m² on the WGS84 ellipsoid (see :mod:`layers.coverage_topology` for how),
distances m, densities per km².

**The model and its cache.** :func:`coverage_model` returns a :class:`CoverageModel`:
areas, grids, branches, the topology findings and the branch-coverage findings that
depend only on the ``grids`` and ``areas`` layers (branches and branch_grids bump the
``grids`` version too, migration 0002). It is kept in the app's caches
(``caches.coverage`` of :class:`layers.caches.Caches`, which every function here that
reads the model takes), keyed by thresholds and filed at (database URL, database OID,
``grids`` version, ``areas`` version): data versions come from a sequence and never
repeat, and the OID tells apart a database dropped and created again under the same
name. The versions are read before and after the model's reads; a model read across a
concurrent write is rebuilt (or, after three tries, returned uncached). Member figures
(residences, registrations, service roles) are read per call and kept per model under
the ``members`` version (``caches.member_counts``).

**Public functions for other packages (tiles):**

- :func:`current_findings` — topology findings as plain dicts with WKB geometry;
- :func:`h3_cells` — counts per H3 cell with their boundary rings (one hierarchy over
  resolutions 7–10; what unentitled callers get is described in the H3 section).

**Findings** (:func:`issues`): topology kinds ``gap``, ``overlap``, ``sliver`` (``form``
gap or overlap), ``outside_community``, ``invalid``, ``stray_part``; branch kinds
``no_branch`` (no active branch covers the grid), ``branch_without_grid`` (an active grid
or community branch covering no current grid; work-unit branches hold members'
organisational relationships and cover no grid by design), ``site_outside_grids`` (the
branch's activity site lies in none of the grids it covers), ``no_worker``,
``roles_missing`` (active service roles nobody among the grid's confirmed members holds).
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import h3
import numpy as np
import shapely
from shapely import STRtree
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.codes import AREA_CODE, GRID_CODE, area_prefix
from layers.coverage_topology import TOPOLOGY_KINDS, Finding, Thresholds, analyse_topology, assign_ids
from layers.errors import InvalidInput
from layers.suppression import complementary_suppression
from layers.versions import database_url as _database_url

if TYPE_CHECKING:
    from layers.caches import Caches

__all__ = [
    "BRANCH_KINDS",
    "H3_METRICS",
    "H3_RESOLUTIONS",
    "KINDS",
    "LEVELS",
    "TOPOLOGY_KINDS",
    "Thresholds",
    "H3Counts",
    "coverage_model",
    "current_findings",
    "h3_aggregate",
    "h3_cells",
    "h3_counts",
    "issues",
    "summary",
]

BRANCH_KINDS = ("no_branch", "branch_without_grid", "site_outside_grids", "no_worker", "roles_missing")
KINDS = TOPOLOGY_KINDS + BRANCH_KINDS
KIND_GROUPS = {"topology": TOPOLOGY_KINDS, "branch": BRANCH_KINDS}
LEVELS = ("district", "street", "community", "grid")
LEVEL_NAMES = {"district": "区", "street": "街道", "community": "社区", "grid": "网格"}
H3_METRICS = ("members", "residences", "events")
H3_RESOLUTIONS = range(7, 11)
#: Metrics ranked in summaries, each best-first (all "higher is better").
RANKED = (
    "coverage_share",
    "branch_share",
    "registration_rate",
    "member_density_km2",
    "roles_filled_share",
    "members_registered",
)


# ======================================================================================
# Reading the layer
# ======================================================================================

_KEY_SQL = text(
    """SELECT (SELECT oid FROM pg_database WHERE datname = current_database()) AS db,
              (SELECT version FROM layer_versions WHERE layer = 'grids') AS grids,
              (SELECT version FROM layer_versions WHERE layer = 'areas') AS areas,
              (SELECT version FROM layer_versions WHERE layer = 'members') AS members,
              (SELECT version FROM layer_versions WHERE layer = 'residences') AS residences,
              (SELECT version FROM layer_versions WHERE layer = 'events') AS events"""
)
_AREAS_SQL = text(
    """SELECT a.code, a.name, a.level, p.code AS parent, ST_AsBinary(a.geom) AS wkb
       FROM admin_areas a LEFT JOIN admin_areas p ON p.id = a.parent_id ORDER BY a.code"""
)
_GRIDS_SQL = text(
    """SELECT g.id, g.code, g.name, c.code AS area_code,
              COALESCE(btrim(g.worker_name), '') <> '' AS has_worker, ST_AsBinary(gv.geom) AS wkb
       FROM grid_versions gv JOIN grids g ON g.id = gv.grid_id JOIN admin_areas c ON c.id = g.community_id
       WHERE gridbranch_in_force(gv.valid_from, gv.valid_to) AND gridbranch_live(g.retired_at)
       ORDER BY g.code"""
)
_BRANCHES_SQL = text(
    """SELECT b.id, b.code, b.name, b.kind, ST_X(b.site) AS x, ST_Y(b.site) AS y, c.code AS community,
              COALESCE(array_agg(bg.grid_id) FILTER (WHERE bg.grid_id IS NOT NULL), '{}') AS grid_ids
       FROM branches b
       LEFT JOIN admin_areas c ON c.id = b.community_id
       LEFT JOIN branch_grids bg ON bg.branch_id = b.id
       WHERE b.active
       GROUP BY b.id, c.code ORDER BY b.code"""
)


def _versions(session: Session) -> dict[str, int]:
    return dict(session.execute(_KEY_SQL).mappings().one())


@dataclass
class CoverageModel:
    """The analysed grid layer of one database at one (grids, areas) version."""

    key: tuple
    thresholds: Thresholds
    areas: list[dict[str, Any]]  # code, name, level, parent
    area_index: dict[str, int]
    area_geoms: np.ndarray
    area_m2: np.ndarray
    grid_ids: list[int]
    grid_codes: list[str]
    grid_names: list[str]
    grid_areas: list[str]  # the area (community) code each grid belongs to
    grid_index: dict[str, int]
    grid_geoms: np.ndarray  # repaired where invalid
    grid_m2: np.ndarray
    grid_points: np.ndarray  # a point inside each grid (n×2, ST_PointOnSurface)
    has_worker: np.ndarray
    grid_branches: list[list[str]]  # active branch codes per grid
    findings: list[Finding]  # topology
    branch_findings: list[Finding]  # those depending on the grids/areas layers only
    uncovered_m2: dict[str, float]
    grid_tree: STRtree
    area_tree: STRtree
    equal_area: Any
    built_s: float = 0.0
    #: Serialises the member figures: they use the model's prepared geometries, which
    #: GEOS does not let two threads initialise at once.
    lock: Any = field(default_factory=threading.RLock)

    # -- the area tree -------------------------------------------------------------
    def chain(self, code: str | None) -> list[str]:
        """``code`` and its ancestors (area codes), lowest first."""
        out = []
        while code is not None and code in self.area_index and code not in out:
            out.append(code)
            code = self.areas[self.area_index[code]]["parent"]
        return out

    def level_of(self, code: str) -> str | None:
        if code in self.grid_index:
            return "grid"
        if code in self.area_index:
            return self.areas[self.area_index[code]]["level"]
        return None

    def name_of(self, code: str) -> str | None:
        if code in self.grid_index:
            return self.grid_names[self.grid_index[code]]
        if code in self.area_index:
            return self.areas[self.area_index[code]]["name"]
        return None

    def check_code(self, code: str, field: str) -> str:
        """``code`` if it names a current area or grid, else :class:`InvalidInput`."""
        if not isinstance(code, str) or not (AREA_CODE.match(code) or GRID_CODE.match(code)):
            raise InvalidInput(
                f"{field} must be a 12-digit area code or a 15-digit grid code, got {code!r}", field=field
            )
        if code not in self.area_index and code not in self.grid_index:
            raise InvalidInput(f"unknown {field} {code}: no such area or current grid", field=field)
        return code


def _read_model(session: Session, thresholds: Thresholds, key: tuple) -> CoverageModel:
    t0 = time.perf_counter()
    area_rows = session.execute(_AREAS_SQL).all()
    grid_rows = session.execute(_GRIDS_SQL).all()
    branch_rows = session.execute(_BRANCHES_SQL).all()
    areas = [{"code": r.code, "name": r.name, "level": r.level, "parent": r.parent} for r in area_rows]
    area_geoms = shapely.from_wkb([bytes(r.wkb) for r in area_rows]) if area_rows else np.array([], dtype=object)
    grid_geoms = shapely.from_wkb([bytes(r.wkb) for r in grid_rows]) if grid_rows else np.array([], dtype=object)
    topo = analyse_topology(
        area_codes=[a["code"] for a in areas],
        area_levels=[a["level"] for a in areas],
        area_parents=[a["parent"] for a in areas],
        area_geoms=area_geoms,
        grid_codes=[r.code for r in grid_rows],
        grid_areas=[r.area_code for r in grid_rows],
        grid_geoms=grid_geoms,
        thresholds=thresholds,
    )
    grid_ids = [r.id for r in grid_rows]
    model = CoverageModel(
        key=key,
        thresholds=thresholds,
        areas=areas,
        area_index={a["code"]: i for i, a in enumerate(areas)},
        area_geoms=area_geoms,
        area_m2=topo.area_area_m2,
        grid_ids=grid_ids,
        grid_codes=[r.code for r in grid_rows],
        grid_names=[r.name for r in grid_rows],
        grid_areas=[r.area_code for r in grid_rows],
        grid_index={r.code: i for i, r in enumerate(grid_rows)},
        grid_geoms=topo.grid_geoms,
        grid_m2=topo.grid_area_m2,
        grid_points=_inner_points(topo.grid_geoms),
        has_worker=np.array([bool(r.has_worker) for r in grid_rows], dtype=bool),
        grid_branches=[[] for _ in grid_rows],
        findings=topo.findings,
        branch_findings=[],
        uncovered_m2=topo.uncovered_m2,
        grid_tree=topo.grid_tree,
        area_tree=STRtree(area_geoms),
        equal_area=topo.equal_area,
    )
    model.branch_findings = _branch_findings(model, branch_rows)
    model.built_s = time.perf_counter() - t0
    return model


def _inner_points(geoms: np.ndarray) -> np.ndarray:
    """ST_PointOnSurface of each geometry (n×2; NaN for empty ones)."""
    out = np.full((len(geoms), 2), np.nan)
    if len(geoms):
        pts = shapely.point_on_surface(geoms)
        full = ~shapely.is_empty(pts)
        out[full] = shapely.get_coordinates(pts[full])
    return out


def _branch_findings(model: CoverageModel, branch_rows) -> list[Finding]:
    """no_branch, branch_without_grid, site_outside_grids, no_worker (see the module doc)."""
    ea = model.equal_area
    by_id = {gid: i for i, gid in enumerate(model.grid_ids)}
    out: list[Finding] = []
    covered: list[list[int]] = []
    for b in branch_rows:
        grids = sorted({by_id[g] for g in b.grid_ids if g in by_id})
        covered.append(grids)
        for g in grids:
            model.grid_branches[g].append(b.code)
        if not grids and b.kind != "work_unit":
            site = shapely.points(b.x, b.y) if b.x is not None else None
            point = (round(b.x, 7), round(b.y, 7)) if site is not None else (None, None)
            codes = [b.code] + ([b.community] if b.community else [])
            out.append(
                Finding(
                    "branch_without_grid",
                    None,
                    codes,
                    b.community,
                    None,
                    point,
                    site,
                    {"branch": {"code": b.code, "name": b.name, "kind": b.kind}},
                )
            )
    # sites against the grids each branch covers, all pairs at once
    pair_b = [i for i, (b, grids) in enumerate(zip(branch_rows, covered)) if b.x is not None for _ in grids]
    pair_g = [g for b, grids in zip(branch_rows, covered) if b.x is not None for g in grids]
    if pair_b:
        pair_b_arr = np.asarray(pair_b)
        xy = np.array([(branch_rows[i].x, branch_rows[i].y) for i in pair_b], dtype=float)
        shapely.prepare(model.grid_geoms)
        inside = shapely.intersects_xy(model.grid_geoms[pair_g], xy[:, 0], xy[:, 1])
        ok = np.zeros(len(branch_rows), bool)
        ok[pair_b_arr[inside]] = True
        for i in sorted(set(pair_b) - set(np.flatnonzero(ok).tolist())):
            b, grids = branch_rows[i], covered[i]
            site = shapely.points(b.x, b.y)
            d = shapely.distance(ea.project(model.grid_geoms[grids]), ea.project(site))
            out.append(
                Finding(
                    "site_outside_grids",
                    None,
                    [b.code] + [model.grid_codes[g] for g in grids],
                    _lowest_area(model, site),
                    None,
                    (round(b.x, 7), round(b.y, 7)),
                    site,
                    {
                        "branch": {"code": b.code, "name": b.name, "kind": b.kind},
                        "distance_m": round(float(d.min()), 1),
                    },
                )
            )
    for g in range(len(model.grid_codes)):
        for kind, missing in (("no_branch", not model.grid_branches[g]), ("no_worker", not model.has_worker[g])):
            if missing:
                out.append(_grid_finding(model, kind, g))
    order = {k: i for i, k in enumerate(KINDS)}
    out.sort(key=lambda f: (order[f.kind], f.area_code or "", f.codes))
    assign_ids(out)
    return out


def _grid_finding(model: CoverageModel, kind: str, g: int, **extra) -> Finding:
    x, y = model.grid_points[g]
    return Finding(
        kind,
        None,
        [model.grid_codes[g], model.grid_areas[g]],
        model.grid_areas[g],
        float(model.grid_m2[g]),
        (round(float(x), 7), round(float(y), 7)),
        model.grid_geoms[g],
        extra,
    )


def _lowest_area(model: CoverageModel, point) -> str | None:
    rank = {"community": 0, "street": 1, "district": 2}
    hits = model.area_tree.query(point, predicate="intersects").tolist()
    if not hits:
        return None
    return min((rank.get(model.areas[j]["level"], 3), model.areas[j]["code"]) for j in hits)[1]


def coverage_model(session: Session, caches: Caches | None, thresholds: Thresholds | None = None) -> CoverageModel:
    """The analysed current grid layer under ``thresholds`` (the service passes its
    configured ones; default the built-in), kept in ``caches`` (None: always read and
    analysed again)."""
    thresholds = thresholds or Thresholds()

    def read(s: Session) -> CoverageModel:
        return _read_model(s, thresholds, (_database_url(s), *_versions_of(s, "grids", "areas"), thresholds))

    if caches is None:
        return read(session)
    return caches.coverage.get(session, read, thresholds, tries=3)


def _versions_of(session: Session, *layers: str) -> tuple:
    v = _versions(session)
    return (v["db"], *(v[k] for k in layers))


# ======================================================================================
# Findings
# ======================================================================================


def current_findings(session: Session, caches: Caches, thresholds: Thresholds | None = None) -> list[dict[str, Any]]:
    """The topology findings of the current grid layer (cached on the grids/areas data
    versions): dicts ``{"kind", "form", "codes", "area_code", "area_m2", "point": [lon, lat],
    "wkb": bytes}`` — WKB of the WGS84 geometry, areas in m², ``form`` gap|overlap for
    gaps, overlaps and slivers (None for the other kinds), and a stable ``id``
    (``kind:codes…``). Fresh dicts on every call."""
    model = coverage_model(session, caches, thresholds)
    return [
        {
            "id": f.fid,
            "kind": f.kind,
            "form": f.form,
            "codes": list(f.codes),
            "area_code": f.area_code,
            "area_m2": round(f.area_m2, 2),
            "point": list(f.point),
            "wkb": shapely.to_wkb(f.geom),
        }
        for f in model.findings
    ]


def _message(f: Finding, model: CoverageModel) -> str:
    """A one-line description in Simplified Chinese for the UI."""
    area = f"{f.area_m2:,.1f} 平方米" if f.area_m2 is not None else ""
    c = f.codes
    if f.kind == "gap" or (f.kind == "sliver" and f.form == "gap"):
        name = model.name_of(c[0]) or ""
        what = "细小缝隙" if f.kind == "sliver" else "覆盖缺口"
        near = f"，相邻网格 {'、'.join(c[1:])}" if len(c) > 1 else ""
        return f"{name}（{c[0]}）内有 {area}未被任何网格覆盖（{what}）{near}"
    if f.kind in ("overlap", "sliver"):
        what = "细小重叠" if f.kind == "sliver" else "重叠"
        return f"网格 {c[0]} 与网格 {c[1]} {what} {area}"
    if f.kind == "outside_community":
        return f"网格 {c[0]} 超出所属社区 {c[1]} 边界 {area}"
    if f.kind == "invalid":
        return f"{'网格' if f.extra.get('layer') == 'grid' else '区划'} {c[0]} 几何无效：{f.extra.get('reason')}"
    if f.kind == "stray_part":
        return f"网格 {c[0]} 含零碎多余部分 {area}（共 {f.extra.get('parts')} 部分）"
    if f.kind == "no_branch":
        return f"网格 {c[0]} {model.name_of(c[0]) or ''} 未建立党支部"
    if f.kind == "no_worker":
        return f"网格 {c[0]} {model.name_of(c[0]) or ''} 未配备网格员"
    if f.kind == "branch_without_grid":
        return f"党支部 {c[0]} {f.extra['branch']['name']} 未覆盖任何网格"
    if f.kind == "site_outside_grids":
        return (
            f"党支部 {c[0]} {f.extra['branch']['name']} 的活动场所不在其覆盖的网格内"
            f"（距最近网格 {f.extra['distance_m']:,.1f} 米）"
        )
    if f.kind == "roles_missing":
        return f"网格 {c[0]} 已报到党员中缺少：{'、'.join(f.extra['missing'])}"
    return f.kind


def parse_kinds(raw: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Kinds from a comma-separated string or list (``topology``/``branch`` name the
    groups); all kinds when empty. Unknown names: :class:`InvalidInput` naming ``kind``."""
    if raw is None:
        return KINDS
    items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    names = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
    if not names:
        return KINDS
    out: list[str] = []
    for name in names:
        group = KIND_GROUPS.get(name, (name,) if name in KINDS else None)
        if group is None:
            raise InvalidInput(f"unknown kind {name!r}; one of {', '.join(KINDS)} (or topology, branch)", field="kind")
        out.extend(k for k in group if k not in out)
    return tuple(k for k in KINDS if k in out)


def _matches(f: Finding, prefix: str | None) -> bool:
    if prefix is None:
        return True
    return any(c.startswith(prefix) for c in f.codes) or bool(f.area_code and f.area_code.startswith(prefix))


def issues(
    session: Session,
    caches: Caches,
    *,
    kinds=None,
    within: str | None = None,
    thresholds: Thresholds | None = None,
) -> list[dict[str, Any]]:
    """Findings of ``kinds`` (see :func:`parse_kinds`) that involve an area or grid inside
    ``within`` (code prefix rules of ``layers.codes``), ordered by kind. Each a dict with
    ``id, kind, form, codes, area_code, area_m2, point, message`` plus kind-specific
    members, and ``geom`` (shapely, WGS84; may be None)."""
    model = coverage_model(session, caches, thresholds)
    kinds = parse_kinds(kinds)
    if within is not None:
        model.check_code(within, "within")
    prefix = area_prefix(within) if within else None
    found = [f for f in model.findings + model.branch_findings if f.kind in kinds]
    if "roles_missing" in kinds:
        found += _roles_findings(session, caches, model)
    found = [f for f in found if _matches(f, prefix)]
    order = {k: i for i, k in enumerate(KINDS)}
    found.sort(key=lambda f: (order[f.kind], f.area_code or "", f.codes))
    out = []
    for f in found:
        out.append(
            {
                "id": f.fid,
                "kind": f.kind,
                "form": f.form,
                "codes": list(f.codes),
                "area_code": f.area_code,
                "area_m2": round(f.area_m2, 2) if f.area_m2 is not None else None,
                "point": list(f.point) if f.point[0] is not None else None,
                "message": _message(f, model),
                **f.extra,
                "geom": f.geom,
            }
        )
    return out


# ======================================================================================
# Members: residences, registrations, roles (per members version)
# ======================================================================================


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


def _xy(session: Session, sql: str, params: dict | None = None) -> np.ndarray:
    """Points (n×2, lon/lat) of a query selecting columns ``x`` and ``y``, read as one
    text value (PostgreSQL writes float8 as the shortest exact decimal): several times
    faster than rows or float arrays through the driver."""
    row = session.execute(
        text(f"SELECT string_agg(p.x::text || ',' || p.y::text, ',') FROM ({sql}) p"), params or {}
    ).scalar()
    if not row:
        return np.zeros((0, 2))
    return np.fromstring(row, dtype=float, sep=",").reshape(-1, 2)


def points_in(geoms: np.ndarray, tree: STRtree, xy: np.ndarray, pts=None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (point, geometry) of WGS84 points (n×2) in or on the polygons ``geoms``
    indexed by ``tree``: bounding boxes from the tree, then point-in-polygon tests on the
    prepared polygons (vectorised; far faster than tree predicates for large polygons)."""
    pi, gj = tree.query(shapely.points(xy) if pts is None else pts)
    if not len(pi):
        return pi, gj
    shapely.prepare(geoms)
    hit = shapely.intersects_xy(geoms[gj], xy[pi, 0], xy[pi, 1])
    return pi[hit], gj[hit]


def _role_names(roles, mask: int, filled: bool) -> list[str]:
    return [name for i, (_, name) in enumerate(roles) if bool(mask >> i & 1) == filled]


def _roles_findings(session: Session, caches: Caches, model: CoverageModel) -> list[Finding]:
    counts = member_counts(session, caches, model)
    if "roles" in counts.derived:
        return counts.derived["roles"]
    with model.lock:
        if "roles" not in counts.derived:
            full = (1 << len(counts.roles)) - 1
            out = []
            for g in np.flatnonzero(counts.grid_roles != full).tolist():
                mask = int(counts.grid_roles[g])
                out.append(
                    _grid_finding(
                        model,
                        "roles_missing",
                        g,
                        missing=_role_names(counts.roles, mask, False),
                        registered=int(counts.grid_registered[g]),
                    )
                )
            assign_ids(out)
            counts.derived["roles"] = out
    return counts.derived["roles"]


# ======================================================================================
# Metrics by level
# ======================================================================================


def summary(
    session: Session,
    caches: Caches,
    *,
    code: str,
    level: str | None = None,
    thresholds: Thresholds | None = None,
) -> dict[str, Any]:
    """Metrics of area or grid ``code`` and of every unit of ``level`` inside it
    (default: the level below), with rankings of the units by each metric.

    Per unit: ``area_km2``; ``grids``, ``grids_with_branch``, ``branch_share``;
    ``uncovered_m2`` and ``coverage_share`` (share of the area covered by grids; None for
    grids); ``members_resident`` (current residences inside the unit — for grids, the
    lowest code where grids overlap), ``members_registered`` (confirmed registrations at
    its grids), ``members_pending``, ``registration_rate`` = registered / resident,
    ``member_density_km2`` = resident members per km²; ``roles_filled`` / ``roles_missing``
    (names) and ``roles_filled_share``; ``issues`` (findings by kind)."""
    model = coverage_model(session, caches, thresholds)
    model.check_code(code, "code")
    own_level = model.level_of(code)
    if level is None:
        level = LEVELS[min(LEVELS.index(own_level) + 1, len(LEVELS) - 1)]
    if level not in LEVELS:
        raise InvalidInput(f"unknown level {level!r}; one of {', '.join(LEVELS)}", field="level")
    if LEVELS.index(level) < LEVELS.index(own_level):
        raise InvalidInput(f"level {level} is above {code} ({own_level})", field="level")
    counts = member_counts(session, caches, model)
    agg = counts.derived.get("aggregates")
    if agg is None:
        with model.lock:
            agg = counts.derived.get("aggregates")
            if agg is None:
                agg = counts.derived["aggregates"] = _Aggregates(model, counts, session, caches)
    if level == "grid":
        units = [c for c in model.grid_codes if _inside(model, c, code)]
    else:
        units = [a["code"] for a in model.areas if a["level"] == level and _inside(model, a["code"], code)]
    rows = [agg.unit(u) for u in units]
    rankings: dict[str, list[str]] = {}
    for metric in RANKED:
        ranked = sorted((r for r in rows if r[metric] is not None), key=lambda r: (-r[metric], r["code"]))
        rankings[metric] = [r["code"] for r in ranked]
        rank, prev = 0, None
        for i, r in enumerate(ranked):
            if r[metric] != prev:
                rank, prev = i + 1, r[metric]
            r.setdefault("rank", {})[metric] = rank
        for r in rows:
            r.setdefault("rank", {}).setdefault(metric, None)
    return {
        "code": code,
        "name": model.name_of(code),
        "level": level,
        "total": agg.unit(code),
        "units": rows,
        "rankings": rankings,
        "roles": [name for _, name in counts.roles],
        "thresholds": model.thresholds.as_dict(),
        "data_version": {"grids": model.key[2], "areas": model.key[3]},
    }


def root_code(session: Session, caches: Caches, thresholds: Thresholds | None = None) -> str | None:
    """The district's code when the service holds exactly one district, else None."""
    model = coverage_model(session, caches, thresholds)
    roots = [a["code"] for a in model.areas if a["parent"] is None]
    return roots[0] if len(roots) == 1 else None


def _inside(model: CoverageModel, unit: str, within: str) -> bool:
    """Whether ``unit`` lies inside ``within`` by the area tree (grids by their community)."""
    if unit == within:
        return True
    if unit in model.grid_index:
        if within in model.grid_index:
            return False
        return within in model.chain(model.grid_areas[model.grid_index[unit]])
    return within in model.chain(unit)


class _Aggregates:
    """Per-area sums over grids and findings, rolled up the area tree."""

    def __init__(self, model: CoverageModel, counts: MemberCounts, session: Session, caches: Caches):
        self.model, self.counts = model, counts
        n_roles = len(counts.roles)
        self.full = (1 << n_roles) - 1
        self.n_roles = n_roles
        sums: dict[str, np.ndarray] = {}  # code → [grids, with_branch, registered, pending], roles mask apart
        roles: dict[str, int] = {}
        for g, area in enumerate(model.grid_areas):
            vec = np.array([1, 1 if model.grid_branches[g] else 0, counts.grid_registered[g], counts.grid_pending[g]])
            for code in model.chain(area):
                sums[code] = sums.get(code, 0) + vec
                roles[code] = roles.get(code, 0) | int(counts.grid_roles[g])
        self.sums, self.roles = sums, roles
        self.issue_counts: dict[str, dict[str, int]] = {}
        for f in model.findings + model.branch_findings + _roles_findings(session, caches, model):
            targets = set(model.chain(f.area_code))
            targets.update(c for c in f.codes if c in model.grid_index)
            for t in targets:
                d = self.issue_counts.setdefault(t, {})
                d[f.kind] = d.get(f.kind, 0) + 1

    def unit(self, code: str) -> dict[str, Any]:
        m, c = self.model, self.counts
        if code in m.grid_index:
            g = m.grid_index[code]
            level, parent = "grid", m.grid_areas[g]
            area_m2 = float(m.grid_m2[g])
            grids, with_branch = 1, int(bool(m.grid_branches[g]))
            registered, pending = int(c.grid_registered[g]), int(c.grid_pending[g])
            resident = int(c.grid_residents[g])
            mask = int(c.grid_roles[g])
            uncovered = None
        else:
            a = m.areas[m.area_index[code]]
            level, parent = a["level"], a["parent"]
            area_m2 = float(m.area_m2[m.area_index[code]])
            s = self.sums.get(code, np.zeros(4, np.int64))
            grids, with_branch, registered, pending = (int(x) for x in s)
            resident = c.area_residents.get(code, 0)
            mask = self.roles.get(code, 0)
            uncovered = round(m.uncovered_m2.get(code, 0.0), 2)
        km2 = area_m2 / 1e6
        filled = _role_names(c.roles, mask, True)
        return {
            "code": code,
            "name": m.name_of(code),
            "level": level,
            "parent": parent,
            "area_km2": round(km2, 6),
            "grids": grids,
            "grids_with_branch": with_branch,
            "branch_share": round(with_branch / grids, 4) if grids else None,
            "uncovered_m2": uncovered,
            "coverage_share": (
                round(max(0.0, 1 - uncovered / area_m2), 6) if uncovered is not None and area_m2 > 0 else None
            ),
            "members_resident": resident,
            "members_registered": registered,
            "members_pending": pending,
            "registration_rate": round(registered / resident, 4) if resident else None,
            "member_density_km2": round(resident / km2, 2) if km2 > 0 else None,
            "roles_filled": filled,
            "roles_missing": _role_names(c.roles, mask, False),
            "roles_filled_share": round(len(filled) / self.n_roles, 4) if self.n_roles else None,
            "issues": dict(sorted(self.issue_counts.get(code, {}).items(), key=lambda kv: KINDS.index(kv[0]))),
        }


# ======================================================================================
# H3 aggregation
# ======================================================================================
#
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


# ======================================================================================
# Exports
# ======================================================================================


def _geojson_geometry(geom, *, rounded: bool) -> dict | None:
    """GeoJSON of a WGS84 geometry; ``rounded`` to 7 decimals (~1 cm, as the other
    layers) or at full precision — findings are written unrounded, since a sliver a few
    decimetres wide does not survive centimetre rounding as a valid polygon."""
    if geom is None or shapely.is_empty(geom):
        return None
    if rounded:
        geom = shapely.transform(geom, lambda xy: np.round(xy, 7))
    return json.loads(shapely.to_geojson(geom))


def issues_geojson(found: list[dict[str, Any]], **extra) -> dict[str, Any]:
    """Findings from :func:`issues` as a GeoJSON FeatureCollection (WGS84)."""
    features = []
    for f in found:
        props = {k: v for k, v in f.items() if k not in ("geom", "id")}
        features.append(
            {
                "type": "Feature",
                "id": f["id"],
                "geometry": _geojson_geometry(f["geom"], rounded=False),
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": features, **extra}


ISSUE_COLUMNS = ("id", "kind", "form", "area_code", "codes", "area_m2", "lon", "lat", "message", "wkt")


def issues_csv(found: list[dict[str, Any]]) -> str:
    """Findings as CSV: codes space-separated, the geometry as WKT (WGS84, full precision)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ISSUE_COLUMNS)
    for f in found:
        lon, lat = f["point"] if f["point"] else ("", "")
        wkt = shapely.to_wkt(f["geom"], rounding_precision=-1) if f["geom"] is not None else ""
        w.writerow(
            [
                f["id"],
                f["kind"],
                f["form"] or "",
                f["area_code"] or "",
                " ".join(f["codes"]),
                "" if f["area_m2"] is None else f"{f['area_m2']:.2f}",
                lon,
                lat,
                f["message"],
                wkt,
            ]
        )
    return buf.getvalue()


SUMMARY_COLUMNS = (
    "code",
    "name",
    "level",
    "parent",
    "area_km2",
    "grids",
    "grids_with_branch",
    "branch_share",
    "uncovered_m2",
    "coverage_share",
    "members_resident",
    "members_registered",
    "members_pending",
    "registration_rate",
    "member_density_km2",
    "roles_filled_share",
    "roles_filled",
    "roles_missing",
    "issues",
) + tuple(f"rank_{m}" for m in RANKED)


def _summary_row(u: dict[str, Any]) -> list:
    out = []
    for col in SUMMARY_COLUMNS:
        if col.startswith("rank_"):
            v = u.get("rank", {}).get(col[5:])
        elif col in ("roles_filled", "roles_missing"):
            v = "、".join(u[col])
        elif col == "issues":
            v = " ".join(f"{k}={n}" for k, n in u["issues"].items())
        else:
            v = u[col]
        out.append("" if v is None else v)
    return out


def summary_filename(result: dict[str, Any]) -> str:
    """The file name of a summary's CSV: the area and the level of its units
    (``coverage_410105000000_street_summary.csv``)."""
    return f"coverage_{result['code']}_{result['level']}_summary.csv"


def summary_csv(result: dict[str, Any]) -> str:
    """The units of :func:`summary` as CSV, then the whole area as the last row."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    for u in result["units"]:
        w.writerow(_summary_row(u))
    if result["total"]["code"] not in {u["code"] for u in result["units"]}:
        w.writerow(_summary_row({**result["total"], "rank": {}}))
    return buf.getvalue()


def summary_geojson(
    session: Session, caches: Caches, result: dict[str, Any], thresholds: Thresholds | None = None
) -> dict:
    """The units of :func:`summary` as GeoJSON features with their boundaries (WGS84)."""
    model = coverage_model(session, caches, thresholds)
    features = []
    for u in result["units"]:
        geom = (
            model.grid_geoms[model.grid_index[u["code"]]]
            if u["level"] == "grid"
            else model.area_geoms[model.area_index[u["code"]]]
        )
        features.append(
            {"type": "Feature", "id": u["code"], "geometry": _geojson_geometry(geom, rounded=True), "properties": u}
        )
    return {
        "type": "FeatureCollection",
        "features": features,
        **{k: v for k, v in result.items() if k not in ("units",)},
    }

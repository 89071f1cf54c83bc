"""The coverage model: the current grid layer of one database read and analysed once per
(grids, areas) data version — areas, grids, branches, the topology findings
(:mod:`layers.coverage.topology`) and the branch-coverage findings that depend on those
layers only — and the helpers its readers share (points read as text, points in
polygons). See :mod:`layers.coverage` for the whole."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from shapely import STRtree
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.codes import AREA_CODE, GRID_CODE
from layers.coverage.topology import TOPOLOGY_KINDS, Finding, Thresholds, analyse_topology, assign_ids
from layers.errors import InvalidInput
from layers.versions import database_url as _database_url

if TYPE_CHECKING:
    from layers.caches import Caches

BRANCH_KINDS = ("no_branch", "branch_without_grid", "site_outside_grids", "no_worker", "roles_missing")
KINDS = TOPOLOGY_KINDS + BRANCH_KINDS
KIND_GROUPS = {"topology": TOPOLOGY_KINDS, "branch": BRANCH_KINDS}
LEVELS = ("district", "street", "community", "grid")
LEVEL_NAMES = {"district": "区", "street": "街道", "community": "社区", "grid": "网格"}


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

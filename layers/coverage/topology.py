"""Topology of the grid layer inside its parent areas, in memory (shapely 2, vectorised).

Input: the areas (district, street, community) and the *current* grids as WGS84
lon/lat geometries (the storage CRS, EPSG:4326). Every overlay (difference,
intersection, union) runs in lon/lat, exactly as PostGIS does on ``geometry``, so
vertices shared by neighbours stay bit-identical and produce no artefacts.

Areas (m², :func:`lonlat_area`) are those of the polygons exactly as the overlays see
them — edges straight in lon/lat — on the WGS84 ellipsoid (the authalic ordinate
integrated along every edge). So they add up as the overlays do: the grids of a
community with disjoint interiors sum to the area of their union to the last cm², and a
shard nanometres wide in lon/lat has no area. Measuring projected vertices instead
(``ST_Area(geom::geography)`` takes edges as geodesics, a projection as chords) moves
every vertex lying in the middle of a neighbour's straight lon/lat edge centimetres off
that edge: along a kilometre-long border that invents or hides tens to hundreds of m².
For ordinary polygons the two agree to ~0.01 %; for a sliver a few decimetres wide
along a long straight border they differ by a few per cent (the demo's 0.4 m sliver:
24.3 m² here, 24.0 m² in its EPSG:4547 manifest). Lengths and distances (m) come from a
Lambert azimuthal equal-area projection centred on the layer (:class:`EqualArea`).

Findings (:func:`analyse_topology`), each a :class:`Finding`:

- ``gap`` — a part of a community not covered by any grid (its own grids first; what
  a neighbouring community's grid covers there is reported as that grid's
  ``outside_community`` instead, not as a gap), or a part of a street or district
  that none of its child areas covers and no grid covers either; ``codes`` = the area,
  then the grids bordering the gap;
- ``overlap`` — the interiors of two grids overlap (``ST_Relate`` pattern
  ``T********``); one finding per connected part; ``codes`` = the two grids;
- ``sliver`` — a gap or overlap part smaller than ``sliver_m2``; ``form`` says which;
- ``outside_community`` — a part of a grid outside the community it belongs to;
  ``codes`` = the grid, its community;
- ``invalid`` — a grid (or area) whose geometry is not valid OGC; the rest of the
  analysis uses the repaired geometry (``make_valid``, structure method);
- ``stray_part`` — a part of a multipart grid, other than its largest, smaller than
  ``stray_part_m2``.

Parts smaller than ``noise_m2`` (default 1 m², the demo loader's ``NOISE_M2``) are
floating-point residue of overlays (millimetre-wide shards), not findings; stray parts
are reported whatever their size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from shapely import STRtree

POLYGON, MULTIPOLYGON, COLLECTION = 3, 6, 7
#: Distance (degrees, ~1 cm) within which a grid counts as bordering a gap.
BORDER_DEG = 1e-7
#: Shared border (metres) a grid needs to be listed among a gap's codes (not a corner).
BORDER_MIN_M = 0.05

TOPOLOGY_KINDS = ("gap", "overlap", "sliver", "outside_community", "invalid", "stray_part")


@dataclass(frozen=True)
class Thresholds:
    """Sizes that decide what is reported (m²); the defaults are ``GRIDBRANCH_COVERAGE_*``'s."""

    sliver_m2: float = 100.0
    noise_m2: float = 1.0
    stray_part_m2: float = 1000.0

    def as_dict(self) -> dict[str, float]:
        return {"sliver_m2": self.sliver_m2, "noise_m2": self.noise_m2, "stray_part_m2": self.stray_part_m2}


@dataclass
class Finding:
    """One topology finding. ``geom`` is WGS84 (lon/lat); ``area_m2`` in m²;
    ``area_code`` is the lowest area containing it (a community where there is one)."""

    kind: str
    form: str | None
    codes: list[str]
    area_code: str | None
    area_m2: float | None  # None where a finding has no area (a branch without grids)
    point: tuple[float, float] | tuple[None, None]  # (None, None): nowhere to put it
    geom: Any
    extra: dict[str, Any] = field(default_factory=dict)
    #: A stable id: ``kind:code+code…``, with ``:n`` when several parts share them.
    fid: str = ""


def assign_ids(findings: list[Finding]) -> None:
    """Give each finding its :attr:`Finding.fid`, numbering parts with the same kind and
    codes in the order given (the callers sort deterministically first)."""
    seen: dict[str, int] = {}
    base = [f"{f.kind}:{'+'.join(f.codes)}" for f in findings]
    total: dict[str, int] = {}
    for b in base:
        total[b] = total.get(b, 0) + 1
    for f, b in zip(findings, base):
        seen[b] = seen.get(b, 0) + 1
        f.fid = f"{b}:{seen[b]}" if total[b] > 1 else b


@lru_cache(maxsize=16)
def _laea(lon0: float, lat0: float) -> Transformer:
    return Transformer.from_crs(
        "EPSG:4326",
        f"+proj=laea +lat_0={lat0:.2f} +lon_0={lon0:.2f} +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs",
        always_xy=True,
    )


_A = 6378137.0  # WGS84 semi-major axis, m
_F = 1 / 298.257223563
_E2 = _F * (2 - _F)
_E = np.sqrt(_E2)


def _authalic(phi: np.ndarray) -> np.ndarray:
    """∫₀^φ M(φ)N(φ)cos φ dφ for the WGS84 ellipsoid (m²): the area between the equator
    and latitude φ (radians) per radian of longitude."""
    s = np.sin(phi)
    q = (1 - _E2) * (s / (1 - _E2 * s * s) - np.log((1 - _E * s) / (1 + _E * s)) / (2 * _E))
    return _A * _A * q / 2


def lonlat_area(geoms) -> np.ndarray:
    """Area in m² on the WGS84 ellipsoid of each lon/lat (Multi)Polygon whose edges are
    straight lines in lon/lat, as overlays in EPSG:4326 take them: for every ring,
    ∮ Y(φ) dλ with Y the authalic ordinate (:func:`_authalic`), each edge integrated by
    Simpson's rule (λ is linear in φ along it). Exterior rings count positive, holes
    negative; lines and points count 0."""
    geoms = np.asarray(geoms, dtype=object)
    out = np.zeros(len(geoms))
    if not len(geoms):
        return out
    parts, pidx = polygon_parts(geoms)
    if not len(parts):
        return out
    rings, ridx = shapely.get_rings(parts, return_index=True)
    exterior = np.ones(len(rings), bool)
    exterior[1:] = ridx[1:] != ridx[:-1]
    xy, cidx = shapely.get_coordinates(rings, return_index=True)
    lam, phi = np.radians(xy[:, 0]), np.radians(xy[:, 1])
    y = _authalic(phi)
    y_mid = _authalic((phi[1:] + phi[:-1]) / 2)
    y0 = float(y.mean())  # ∮ y0 dλ = 0: subtracting it keeps the sums small and exact
    same = cidx[1:] == cidx[:-1]
    term = (lam[1:] - lam[:-1]) * ((y[1:] - y0) + 4 * (y_mid - y0) + (y[:-1] - y0)) / 6
    ring_area = np.abs(np.bincount(cidx[:-1][same], weights=term[same], minlength=len(rings)))
    poly_area = np.bincount(ridx, weights=np.where(exterior, ring_area, -ring_area), minlength=len(parts))
    out += np.bincount(pidx, weights=poly_area, minlength=len(geoms))
    return out


class EqualArea:
    """Areas (:func:`lonlat_area`), and lengths and distances through a Lambert azimuthal
    equal-area projection (WGS84 ellipsoid) centred on a lon/lat extent, rounded to
    0.01° so that layers share one transformer."""

    def __init__(self, lon0: float, lat0: float):
        self.lon0, self.lat0 = round(lon0, 2), round(lat0, 2)
        self._t = _laea(self.lon0, self.lat0)

    @classmethod
    def around(cls, geoms) -> EqualArea:
        geoms = np.asarray(geoms, dtype=object)
        b = shapely.bounds(geoms[~shapely.is_empty(geoms)]) if len(geoms) else np.zeros((0, 4))
        if not len(b):
            return cls(0.0, 0.0)
        return cls(float((b[:, 0].min() + b[:, 2].max()) / 2), float((b[:, 1].min() + b[:, 3].max()) / 2))

    def _xy(self, xy: np.ndarray) -> np.ndarray:
        x, y = self._t.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    def project(self, geoms):
        return shapely.transform(geoms, self._xy)

    def area(self, geoms) -> np.ndarray:
        """Area in m² of each WGS84 geometry (:func:`lonlat_area`)."""
        return lonlat_area(geoms)

    def length(self, geoms) -> np.ndarray:
        """Length in m of each WGS84 geometry (lines; boundaries for polygons)."""
        geoms = np.asarray(geoms, dtype=object)
        if not len(geoms):
            return np.zeros(0)
        return shapely.length(self.project(geoms))


def polygon_parts(geoms) -> tuple[np.ndarray, np.ndarray]:
    """The Polygon parts of each geometry (collections and multipolygons flattened,
    lines and points dropped) and the index of the geometry each came from."""
    geoms = np.asarray(geoms, dtype=object)
    parts, idx = shapely.get_parts(geoms, return_index=True)
    while True:
        t = shapely.get_type_id(parts)
        nested = (t == MULTIPOLYGON) | (t == COLLECTION)
        if not nested.any():
            break
        sub, sidx = shapely.get_parts(parts[nested], return_index=True)
        parts = np.concatenate([parts[~nested], sub])
        idx = np.concatenate([idx[~nested], idx[nested][sidx]])
    keep = (shapely.get_type_id(parts) == POLYGON) & ~shapely.is_empty(parts)
    return parts[keep], idx[keep]


def repair(geom):
    """A valid (Multi)Polygon for an invalid one: make_valid (structure method), only
    the polygonal parts kept."""
    fixed = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    parts, _ = polygon_parts([fixed])
    return shapely.multipolygons(parts) if len(parts) != 1 else parts[0]


_WHERE = re.compile(r"\[\s*(-?[0-9.eE+-]+)\s+(-?[0-9.eE+-]+)\s*\]")


def _reason_point(reason: str):
    m = _WHERE.search(reason or "")
    return (float(m.group(1)), float(m.group(2))) if m else None


def _point(geom) -> tuple[float, float]:
    p = shapely.point_on_surface(geom)
    return (round(float(shapely.get_x(p)), 7), round(float(shapely.get_y(p)), 7))


@dataclass
class Topology:
    """What :func:`analyse_topology` returns."""

    findings: list[Finding]
    grid_geoms: np.ndarray  # repaired (valid) WGS84 geometries, same order as the input
    grid_area_m2: np.ndarray
    area_area_m2: np.ndarray
    #: uncovered m² (gaps and gap slivers) attributed to each area code and its ancestors
    uncovered_m2: dict[str, float]
    equal_area: EqualArea
    grid_tree: STRtree


def analyse_topology(
    *,
    area_codes: list[str],
    area_levels: list[str],
    area_parents: list[str | None],
    area_geoms,
    grid_codes: list[str],
    grid_areas: list[str],
    grid_geoms,
    thresholds: Thresholds,
) -> Topology:
    """Every gap, overlap, sliver, grid outside its community, invalid geometry and
    stray part of the grid layer (see the module docstring).

    ``grid_areas[i]`` is the code of the area (community) grid ``i`` belongs to;
    ``area_parents[j]`` the parent code of area ``j`` (None for a district). Grids must
    be ordered by code (ties and "lowest code" rules rely on it). Geometries WGS84.
    """
    th = thresholds
    area_codes = list(area_codes)
    n_areas = len(area_codes)
    area_geoms = np.asarray(area_geoms, dtype=object).copy()
    grid_geoms = np.asarray(grid_geoms, dtype=object).copy()
    n = len(grid_geoms)
    ea = EqualArea.around(np.concatenate([area_geoms, grid_geoms]) if n_areas + n else area_geoms)
    findings: list[Finding] = []
    area_index = {c: i for i, c in enumerate(area_codes)}
    level_of = dict(zip(area_codes, area_levels))

    # ---- invalid geometries (grids and areas), repaired for everything after -----------
    for kind_of, codes_of, geoms in (("grid", grid_codes, grid_geoms), ("area", area_codes, area_geoms)):
        if not len(geoms):
            continue
        bad = np.flatnonzero(~shapely.is_valid(geoms))
        for i in bad:
            reason = shapely.is_valid_reason(geoms[i])
            fixed = repair(geoms[i])
            geoms[i] = fixed
            where = _reason_point(reason)
            point = (
                (round(where[0], 7), round(where[1], 7))
                if where
                else (_point(fixed) if not shapely.is_empty(fixed) else (None, None))
            )
            codes = [codes_of[i]] + ([grid_areas[i]] if kind_of == "grid" else [])
            findings.append(
                Finding(
                    "invalid",
                    None,
                    codes,
                    None,
                    float(ea.area([fixed])[0]),
                    point,
                    fixed,
                    {"reason": reason, "layer": kind_of},
                )
            )

    grid_area_m2 = ea.area(grid_geoms)
    area_area_m2 = ea.area(area_geoms)
    grid_area_idx = np.array([area_index.get(c, -1) for c in grid_areas], dtype=np.int64)

    # ---- stray parts of multipart grids -------------------------------------------------
    multi = np.flatnonzero(shapely.get_num_geometries(grid_geoms) > 1) if n else np.zeros(0, np.int64)
    if len(multi):
        parts, idx = polygon_parts(grid_geoms[multi])
        part_area = ea.area(parts)
        for k, g in enumerate(multi):
            sel = np.flatnonzero(idx == k)
            if len(sel) < 2:
                continue
            main = sel[int(np.argmax(part_area[sel]))]
            for s in sel:
                if s != main and part_area[s] < th.stray_part_m2:
                    findings.append(
                        Finding(
                            "stray_part",
                            None,
                            [grid_codes[g], grid_areas[g]],
                            None,
                            float(part_area[s]),
                            _point(parts[s]),
                            parts[s],
                            {"parts": int(len(sel))},
                        )
                    )

    # ---- grids reaching outside their community ------------------------------------------
    has_area = grid_area_idx >= 0
    inside = np.ones(n, bool)  # grid covered by its own area
    if n:
        shapely.prepare(area_geoms)
        own = np.where(has_area, grid_area_idx, 0)
        inside[has_area] = shapely.covers(area_geoms[own[has_area]], grid_geoms[has_area])
        out_idx = np.flatnonzero(~inside)
        if len(out_idx):
            diff = shapely.difference(grid_geoms[out_idx], area_geoms[own[out_idx]])
            parts, pidx = polygon_parts(diff)
            pa = ea.area(parts)
            for p, k, a in zip(parts, pidx, pa):
                if a >= th.noise_m2:
                    g = out_idx[k]
                    findings.append(
                        Finding("outside_community", None, [grid_codes[g], grid_areas[g]], None, float(a), _point(p), p)
                    )

    # ---- overlapping grids ----------------------------------------------------------------
    # Candidates: pairs with intersecting bounding boxes of which at least one grid has
    # an edge the coverage validator flags (GEOS CoverageValidator: an edge inside a
    # neighbour or not matching it; a duplicate flags both). Polygons forming a valid
    # coverage have disjoint interiors, so no overlap escapes; the interior test itself is
    # ST_Relate's T******** on those few pairs only.
    tree = STRtree(grid_geoms)
    in_overlap = np.zeros(n, bool)
    flagged = np.zeros(n, bool)
    if n > 1:
        flagged = ~shapely.is_empty(shapely.coverage_invalid_edges(grid_geoms))
        a, b = tree.query(grid_geoms[flagged])
        a = np.flatnonzero(flagged)[a]
        a, b = np.minimum(a, b), np.maximum(a, b)
        keep = a < b
        pairs = np.unique(np.column_stack([a[keep], b[keep]]), axis=0) if keep.any() else np.zeros((0, 2), np.int64)
        a, b = pairs[:, 0], pairs[:, 1]
        over = shapely.relate_pattern(grid_geoms[a], grid_geoms[b], "T********") if len(a) else np.zeros(0, bool)
        a, b = a[over], b[over]
        in_overlap[a] = True
        in_overlap[b] = True
        if len(a):
            inter = shapely.intersection(grid_geoms[a], grid_geoms[b])
            parts, pidx = polygon_parts(inter)
            pa = ea.area(parts)
            for p, k, ar in zip(parts, pidx, pa):
                if ar < th.noise_m2:
                    continue
                kind = "overlap" if ar >= th.sliver_m2 else "sliver"
                findings.append(
                    Finding(kind, "overlap", [grid_codes[a[k]], grid_codes[b[k]]], None, float(ar), _point(p), p)
                )

    # ---- gaps: communities by grids, streets and districts by their child areas ------------
    gaps: list[tuple[str, Any]] = []  # (area code, polygon) above the noise floor
    by_area: dict[int, list[int]] = {}
    for gi, ai in enumerate(grid_area_idx.tolist()):
        if ai >= 0:
            by_area.setdefault(ai, []).append(gi)
    children: dict[int, list[int]] = {}
    for j, parent in enumerate(area_parents):
        if parent is not None and parent in area_index:
            children.setdefault(area_index[parent], []).append(j)

    def uncovered(j: int, cover, exclude: set[int]) -> None:
        """Parts of area j not in ``cover`` nor in any grid (other than ``exclude``)."""
        if cover is not None:
            # the usual case, an area its children cover entirely, is decided by a
            # predicate on the prepared cover — far cheaper than the difference
            shapely.prepare(cover)
            if shapely.covers(cover, area_geoms[j]):
                return
        rest = shapely.difference(area_geoms[j], cover) if cover is not None else area_geoms[j]
        if shapely.is_empty(rest):
            return
        parts, _ = polygon_parts([rest])
        if not len(parts):
            return
        pa = ea.area(parts)
        for p in parts[pa >= th.noise_m2]:
            others = [o for o in tree.query(p, predicate="intersects").tolist() if o not in exclude]
            if others:
                sub, _ = polygon_parts([shapely.difference(p, shapely.union_all(grid_geoms[others]))])
            else:
                sub = np.array([p], dtype=object)
            if len(sub):
                for q in sub[ea.area(sub) >= th.noise_m2]:
                    gaps.append((area_codes[j], q))

    for j in range(n_areas):
        level = level_of[area_codes[j]]
        if level == "community":
            own_grids = by_area.get(j, [])
            # Grids inside their community with disjoint interiors leave exactly
            # area(community) − Σ area(grids) uncovered: below the noise floor there is no
            # gap to find, and no union or difference to compute.
            if (
                own_grids
                and inside[own_grids].all()
                and not in_overlap[own_grids].any()
                and abs(area_area_m2[j] - grid_area_m2[own_grids].sum()) < th.noise_m2
            ):
                continue
            if own_grids and not flagged[own_grids].any():
                # a valid coverage (no edge the validator flags): dissolving the shared
                # edges is its union, an order of magnitude cheaper than overlaying
                cover = shapely.coverage_union_all(grid_geoms[own_grids])
            else:
                cover = shapely.union_all(grid_geoms[own_grids]) if own_grids else None
            uncovered(j, cover, set(own_grids))
        else:
            kids = children.get(j, [])
            # grids attached directly to a street or district count as its cover too
            direct = by_area.get(j, [])
            pieces = [area_geoms[k] for k in kids] + [grid_geoms[g] for g in direct]
            cover = shapely.union_all(np.asarray(pieces, dtype=object)) if pieces else None
            uncovered(j, cover, set(direct))

    if gaps:
        polys = np.asarray([p for _, p in gaps], dtype=object)
        areas_m2 = ea.area(polys)
        near_a, near_g = tree.query(polys, predicate="dwithin", distance=BORDER_DEG)
        border: dict[int, list[int]] = {}
        if len(near_a):
            shared = ea.length(
                shapely.intersection(shapely.boundary(polys[near_a]), shapely.buffer(grid_geoms[near_g], BORDER_DEG))
            )
            for k, g, s in zip(near_a.tolist(), near_g.tolist(), shared.tolist()):
                if s >= BORDER_MIN_M:
                    border.setdefault(k, []).append(g)
        for k, ((code, p), ar) in enumerate(zip(gaps, areas_m2)):
            kind = "gap" if ar >= th.sliver_m2 else "sliver"
            codes = [code] + [grid_codes[g] for g in sorted(border.get(k, []))]
            findings.append(Finding(kind, "gap", codes, code, float(ar), _point(p), p))

    # ---- where each finding lies; uncovered area per area ------------------------------------
    _assign_areas(findings, area_codes, area_levels, area_geoms)
    uncovered_m2: dict[str, float] = {}
    for f in findings:
        if f.form == "gap" and f.area_code:
            up: str | None = f.area_code
            while up is not None:
                uncovered_m2[up] = uncovered_m2.get(up, 0.0) + (f.area_m2 or 0.0)
                at = area_index.get(up)
                up = area_parents[at] if at is not None else None
    findings.sort(key=lambda f: (TOPOLOGY_KINDS.index(f.kind), f.area_code or "", f.codes, f.point))
    assign_ids(findings)
    return Topology(findings, grid_geoms, grid_area_m2, area_area_m2, uncovered_m2, ea, tree)


def _assign_areas(findings: list[Finding], codes: list[str], levels: list[str], geoms: np.ndarray) -> None:
    """Set ``area_code`` of findings without one: the lowest-level area containing
    their point (community, else street, else district)."""
    todo = [f for f in findings if f.area_code is None and f.point[0] is not None]
    if not todo or not len(geoms):
        return
    pts = shapely.points([f.point for f in todo])
    rank = {"community": 0, "street": 1, "district": 2}
    best = [(9, None)] * len(todo)
    pi, aj = STRtree(geoms).query(pts, predicate="intersects")
    for p, j in zip(pi.tolist(), aj.tolist()):
        r = rank.get(levels[j], 3)
        if (r, codes[j]) < best[p]:
            best[p] = (r, codes[j])
    for f, (_, code) in zip(todo, best):
        f.area_code = code

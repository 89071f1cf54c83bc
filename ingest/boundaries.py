"""Importing areas (streets, communities) and grids from boundary files: plan, validate,
commit.

:func:`plan_import` reads nothing but the :class:`~ingest.files.SourceFile` it is given
and the database, and writes nothing: it settles the CRS (the file's, or ``crs`` as
told; a file without one is refused; a Gauss-Krüger file whose eastings carry a zone
prefix its CRS does not — or the reverse — is refused with the CRS it really is),
brings every geometry to WGS84, validates every feature and compares it with what is
stored. The :class:`BoundaryPlan` it returns is the whole dry-run report — one
:class:`Problem` per problem feature (feature number, code, field, reason) and the
outcome of every feature (add, change with what changed, unchanged, reject) — and is
what an upload API would hand back (:meth:`BoundaryPlan.as_dict`). :func:`commit_plan`
writes a plan with no errors in the caller's transaction, set-based; a plan whose every
feature is unchanged writes nothing at all, so importing the same file twice changes
nothing.

Validation (errors reject the feature, and a plan with any error cannot be committed;
warnings are reported only):

- geometry: none or empty; points or lines where polygons are expected; coordinates that
  do not convert; zero-area parts (dropped, a warning; all of them: an error); invalid
  OGC geometry with shapely's reason (``repair``: make_valid, reporting what changed);
  Z/M ordinates dropped and multipart features kept (noted in the summary);
- codes: malformed (``layers.codes``: 12-digit area codes, 15-digit grid codes),
  duplicate, outside the deployment's district, not under its parent's code, parent
  neither in the file nor stored;
- place: more than ``tolerance_m2`` outside its parent (m² on the WGS84 ellipsoid, never
  degrees); nowhere near the district, saying where it falls and, for the whole file,
  which reading of the coordinates fits the district instead (axes swapped, GCJ-02 or
  BD-09 declared as WGS84, or the reverse);
- siblings: overlaps, gaps and stray parts, from the coverage analysis of the layer the
  import would leave (``layers.coverage.topology``) — warnings, as in the service.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import shapely
from sqlalchemy import text
from sqlalchemy.orm import Session

from ingest import tables
from ingest.files import FileError, SourceFile
from layers import boundaries as store
from layers.boundaries import day as _day
from layers.clock import now_of
from layers.codes import area_code_problem, grid_code_problem, level_of, parent_code
from layers.coverage.topology import Thresholds, analyse_topology, lonlat_area, polygon_parts, repair
from layers.crs import (
    BD09,
    GCJ02,
    WGS84,
    CrsSpec,
    crs_hint,
    geoms_to_wgs84,
    haversine_m,
    parse_crs,
    zone_prefix_mismatch,
)
from layers.errors import Conflict, InvalidInput
from layers.versions import data_versions

KINDS = ("areas", "grids")
MAP_KEYS = ("code", "name", "parent", "geometry")
#: Attribute names taken for code, name and parent when ``--map`` does not say
#: (case-insensitive; Chinese GIS files use Chinese names or pinyin initials).
DEFAULT_COLUMNS = {
    "code": ("code", "编码", "代码", "区划代码", "网格编码", "bm"),
    "name": ("name", "名称", "网格名称", "mc"),
    "parent": ("parent", "parent_code", "上级编码", "上级代码", "所属编码", "sjbm"),
}
#: Parts smaller than this (m²) have no area: collapsed rings, digitising slips.
ZERO_AREA_M2 = 0.01
#: A stored and a new drawing differing by less than this (m², symmetric difference)
#: are the same boundary.
CHANGE_M2 = 0.01
#: A feature farther than this (m) from the district falls nowhere near it.
NEAR_M = 2_000.0
#: The share of the features' area outside the district beyond which other readings of
#: the coordinates are tried.
OUTSIDE_SHARE = 0.005

ADD, CHANGE, UNCHANGED, REJECT = "add", "change", "unchanged", "reject"


@dataclass
class Problem:
    """One problem: ``feature`` is the 1-based feature number in the file (None for the
    file as a whole), ``field`` the attribute or ``geometry``."""

    feature: int | None
    code: str | None
    field: str | None
    reason: str
    severity: str = "error"  # or "warning"
    #: where, for the preview of an upload (ingest.uploads): a gap's or overlap's WGS84
    #: geometry from the coverage analysis; not serialised
    geom: Any = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "geom"}

    def line(self) -> str:
        where = f"feature {self.feature}" if self.feature is not None else "file"
        code = f" ({self.code})" if self.code else ""
        return f"{self.severity}: {where}{code}, {self.field or '-'}: {self.reason}"


@dataclass
class Outcome:
    """What the import does with one feature."""

    feature: int
    code: str | None
    name: str | None
    level: str | None
    parent: str | None
    action: str = ADD
    #: m² of the symmetric difference between the stored and the new boundary
    moved_m2: float | None = None
    renamed_from: str | None = None
    reparented_from: str | None = None
    repaired: str | None = None
    geom: Any = field(default=None, repr=False)  # WGS84 MultiPolygon, not serialised

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("geom")
        return d


@dataclass
class BoundaryPlan:
    """A dry-run import: see the module docstring."""

    kind: str
    source: dict[str, Any]
    district: dict[str, str]
    outcomes: list[Outcome]
    problems: list[Problem]
    #: stored units of the file's scope absent from it (kept: retiring is not this import's)
    absent: list[dict[str, str]]
    notes: list[str]
    #: data versions read when planning: a commit refuses if they moved since
    versions: dict[str, int]
    #: grids: the instant the generation takes effect (None: when committed)
    effective: datetime | None = None
    #: grids: the absent ones are retired by the generation (``--retire-missing``)
    retire_missing: bool = False

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def counts(self) -> dict[str, int]:
        c = {a: 0 for a in (ADD, CHANGE, UNCHANGED, REJECT)}
        for o in self.outcomes:
            c[o.action] += 1
        c["absent"] = len(self.absent)
        c["retire"] = len(self.absent) if self.retire_missing else 0
        c["errors"] = len(self.errors)
        c["warnings"] = len(self.problems) - len(self.errors)
        return c

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the report an upload API returns before its commit."""
        return {
            "kind": self.kind,
            "source": self.source,
            "district": self.district,
            "counts": self.counts(),
            "ok": self.ok,
            "outcomes": [o.as_dict() for o in self.outcomes],
            "problems": [p.as_dict() for p in self.problems],
            "absent": self.absent,
            "notes": self.notes,
            "versions": self.versions,
            "retire_missing": self.retire_missing,
            "effective": self.effective.isoformat() if self.effective else None,
        }


# ---- reading attributes ---------------------------------------------------------------------


def parse_mapping(text_: str | None) -> dict[str, str]:
    """``code=BM,name=MC,parent=SQBM`` → {"code": "BM", ...} (see :func:`ingest.tables.parse_mapping`)."""
    return tables.parse_mapping(text_, MAP_KEYS)


def _column(src: SourceFile, key: str, mapping: dict[str, str], required: bool) -> str | None:
    if key in mapping:
        if mapping[key] not in src.fields:
            raise FileError(
                f"{src.name}: no attribute {mapping[key]!r} (--map {key}=…); its attributes: "
                f"{', '.join(src.fields) or '(none)'}",
                field="map",
            )
        return mapping[key]
    lower = {f.strip().lower(): f for f in src.fields}
    for candidate in DEFAULT_COLUMNS[key]:
        if candidate in lower:
            return lower[candidate]
    if required:
        raise FileError(
            f"{src.name}: which attribute holds the {key}? none is called "
            f"{', '.join(DEFAULT_COLUMNS[key])}; say it with --map {key}=COLUMN; its attributes: "
            f"{', '.join(src.fields) or '(none)'}",
            field="map",
        )
    return None


_INTEGRAL = re.compile(r"^([0-9]+)\.0*$")


def _code(value: Any) -> str | None:
    """A code as text: numbers (a DBF numeric field, an Excel cell) without a decimal tail."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    s = str(value).strip()
    m = _INTEGRAL.match(s)
    return m.group(1) if m else (s or None)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return s or None


# ---- CRS -------------------------------------------------------------------------------------


def resolve_crs(src: SourceFile, given: str | None, *, near_lon: float | None = None) -> tuple[CrsSpec, list[str]]:
    """The CRS to read ``src`` in and notes on how it was decided (see the module
    docstring); :class:`FileError` naming ``crs`` when there is none or the Gauss-Krüger
    zone prefix does not fit it."""
    notes: list[str] = []
    if given:
        spec = parse_crs(given)
        told = f"--crs {given}"
        if src.crs_by_definition and spec is not WGS84:
            notes.append(f"{src.crs_by_definition}; read as {spec.name} as told by --crs")
        elif src.declared_crs is not None and src.declared_crs != spec:
            notes.append(f"the file declares {src.crs_text}; read as {spec.name} as told by --crs")
        else:
            notes.append(f"CRS {spec.name} from --crs")
    elif src.declared_crs is not None:
        spec = src.declared_crs
        told = f"the file's CRS {src.crs_text}"
        notes.append(
            f"CRS {src.crs_text} from the file"
            + (
                f" ({src.crs_by_definition}: data from Amap, Tencent or WeChat are gcj02 — say --crs gcj02)"
                if src.crs_by_definition
                else ""
            )
        )
    else:
        xy = _sample_xy(src.geoms)
        hint = crs_hint(xy[:, 0], xy[:, 1], near_lon) if len(xy) else "it has no coordinates"
        says = f" (it says {src.crs_text})" if src.crs_text else ""
        raise FileError(
            f"{src.name}: declares no CRS gridbranch can use{says}; give --crs (wgs84, gcj02, bd09, "
            f"cgcs2000, EPSG:4547, EPSG:4526 or any EPSG code): {hint}",
            field="crs",
        )
    if not spec.is_geographic:
        xy = _sample_xy(src.geoms)
        mismatch = zone_prefix_mismatch(spec, xy[:, 0]) if len(xy) else None
        if mismatch is not None:
            raise FileError(f"{src.name}: read in {told}, {mismatch[1]}", field="crs")
    return spec, notes


def _sample_xy(geoms: np.ndarray, n: int = 2000) -> np.ndarray:
    present = np.asarray([g for g in geoms if g is not None], dtype=object)
    if not len(present):
        return np.zeros((0, 2))
    xy = shapely.get_coordinates(present)
    return xy[:: max(1, len(xy) // n)]


# ---- geometry --------------------------------------------------------------------------------


def _as_multipolygon(parts: np.ndarray):
    return shapely.multipolygons(parts) if len(parts) else None


def _plain_geometries(wgs: np.ndarray, district) -> tuple[np.ndarray, np.ndarray]:
    """For every feature at once (the per-feature checks cost more in calls than in
    work): whether its geometry needs none of :func:`_check_geometry`'s treatment — a
    valid Polygon or MultiPolygon with finite coordinates and no part without area, which
    it would return as it is — and whether a point on its surface lies in the district
    (so that :func:`_where` has nothing to say)."""
    n = len(wgs)
    plain, near = np.zeros(n, bool), np.zeros(n, bool)
    present = np.flatnonzero([g is not None for g in wgs])
    if not len(present):
        return plain, near
    g = wgs[present]
    kind = shapely.get_type_id(g)
    ok = ((kind == 3) | (kind == 6)) & ~shapely.is_empty(g)
    xy, cidx = shapely.get_coordinates(g, return_index=True)
    ok &= np.bincount(cidx, weights=~np.isfinite(xy).all(axis=1), minlength=len(g)) == 0
    ok[ok] = shapely.is_valid(g[ok])
    parts, pidx = polygon_parts(g[ok])
    smallest = np.full(int(ok.sum()), np.inf)
    np.minimum.at(smallest, pidx, lonlat_area(parts))
    ok[ok] = smallest >= ZERO_AREA_M2
    plain[present] = ok
    shapely.prepare(district)
    near[present[ok]] = shapely.intersects(district, shapely.point_on_surface(g[ok]))
    return plain, near


def _check_geometry(i: int, code: str | None, geom, *, do_repair: bool, problems: list[Problem], out: Outcome) -> Any:
    """The feature's WGS84 geometry as a valid MultiPolygon, or None (rejected)."""
    number = i + 1

    def err(reason: str, severity: str = "error") -> None:
        problems.append(Problem(number, code, "geometry", reason, severity))

    if geom is None:
        err("no geometry")
        return None
    if shapely.is_empty(geom):
        err("empty geometry")
        return None
    kind = shapely.get_type_id(geom)
    parts, _ = polygon_parts([geom])
    if not len(parts):
        err(f"a {geom.geom_type}: polygons expected (a {out.level or 'unit'} is a surface)")
        return None
    if kind == 7 and len(parts) < shapely.get_num_geometries(geom):
        err("points or lines in the collection dropped, its polygons kept", "warning")
    xy = shapely.get_coordinates(parts)
    if not np.isfinite(xy).all():
        err("coordinates that do not convert to WGS84")
        return None
    # a part with no area (a collapsed ring, a digitising slip) is dropped; an invalid
    # part has an area only once repaired (a bowtie's lobes cancel out as drawn)
    valid = shapely.is_valid(parts)
    area = lonlat_area(parts)
    if not valid.all():
        area[~valid] = [lonlat_area(polygon_parts([repair(p)])[0]).sum() for p in parts[~valid]]
    zero = area < ZERO_AREA_M2
    if zero.all():
        err("zero area")
        return None
    if zero.any():
        err(f"{int(zero.sum())} zero-area part(s) dropped", "warning")
        parts = parts[~zero]
    g = _as_multipolygon(parts)
    if not shapely.is_valid(g):
        reason = shapely.is_valid_reason(g)
        if not do_repair:
            err(f"invalid geometry: {reason} (--repair applies make_valid)")
            return None
        fixed = repair(g)
        fparts, _ = polygon_parts([fixed])
        if not len(fparts):
            err(f"invalid geometry: {reason}, and make_valid leaves no surface")
            return None
        before, after = float(lonlat_area([g])[0]), float(lonlat_area(fparts).sum())
        out.repaired = (
            f"{reason}: repaired by make_valid, area {before:.1f} → {after:.1f} m² "
            f"({after - before:+.1f} m²), {len(parts)} → {len(fparts)} part(s)"
        )
        err(out.repaired, "warning")
        g = _as_multipolygon(fparts)
    return g


# ---- location against the district ------------------------------------------------------------


def _outside_share(geoms: np.ndarray, district) -> float:
    """The share of the geometries' area (m²) outside the district: 1 for geometries that
    do not convert."""
    ok = np.array([g is not None for g in geoms], bool)
    if ok.any():  # every coordinate finite and on the globe
        xy, cidx = shapely.get_coordinates(geoms[ok], return_index=True)
        bad = ~(np.isfinite(xy).all(axis=1) & (np.abs(xy[:, 0]) <= 180) & (np.abs(xy[:, 1]) <= 90))
        ok[ok] = np.bincount(cidx, weights=bad, minlength=int(ok.sum())) == 0
    if not ok.any():
        return 1.0
    g = geoms[ok]
    total = lonlat_area(g)
    shapely.prepare(district)
    inside = shapely.covers(district, g)
    outside = np.zeros(len(g))
    todo = np.flatnonzero(~inside)
    if len(todo):
        valid = shapely.make_valid(g[todo])
        outside[todo] = lonlat_area(shapely.difference(valid, district))
    bad_area = float(total[~np.isfinite(total)].size)
    total_sum = float(np.nansum(total)) + bad_area
    return float((np.nansum(outside) + bad_area) / total_sum) if total_sum > 0 else 1.0


def _readings(spec: CrsSpec) -> list[tuple[str, str, Any]]:
    """Other readings of a file's coordinates worth trying: (what the mistake is, the
    advice, how to read the source coordinates)."""
    out: list[tuple[str, str, Any]] = []

    def swapped(geoms):
        return geoms_to_wgs84(shapely.transform(geoms, lambda xy: xy[:, ::-1]), spec)

    out.append(("the axes are swapped (y first)", "swap the columns, or export x (longitude/easting) first", swapped))
    if spec.kind == "proj" and spec.is_geographic:
        out.append(
            (
                f"GCJ-02 (Amap, Tencent, WeChat) coordinates declared as {spec.name}",
                "give --crs gcj02",
                lambda g: geoms_to_wgs84(g, GCJ02),
            )
        )
        out.append(
            (f"BD-09 (Baidu) coordinates declared as {spec.name}", "give --crs bd09", lambda g: geoms_to_wgs84(g, BD09))
        )
    elif spec is GCJ02:
        out.append(("WGS84 coordinates declared as GCJ-02", "give --crs wgs84", lambda g: geoms_to_wgs84(g, WGS84)))
        out.append(("BD-09 coordinates declared as GCJ-02", "give --crs bd09", lambda g: geoms_to_wgs84(g, BD09)))
    elif spec is BD09:
        out.append(("GCJ-02 coordinates declared as BD-09", "give --crs gcj02", lambda g: geoms_to_wgs84(g, GCJ02)))
        out.append(("WGS84 coordinates declared as BD-09", "give --crs wgs84", lambda g: geoms_to_wgs84(g, WGS84)))
    else:
        out.append(
            (
                f"longitude/latitude declared as {spec.name}",
                "give --crs wgs84 (or gcj02)",
                lambda g: geoms_to_wgs84(g, WGS84),
            )
        )
    return out


def _guess_reading(
    src_geoms: np.ndarray, spec: CrsSpec, wgs: np.ndarray, district, district_name: str
) -> Problem | None:
    """When the features fit the district badly, the reading of the coordinates that
    fits it far better, if one does."""
    declared = _outside_share(wgs, district)
    if declared <= OUTSIDE_SHARE:
        return None
    best = None
    for what, advice, read in _readings(spec):
        try:
            with np.errstate(all="ignore"):
                share = _outside_share(np.asarray(read(src_geoms), dtype=object), district)
        except Exception:  # a reading PROJ cannot do at all fits nothing
            continue
        if best is None or share < best[0]:
            best = (share, what, advice)
    if best is None or best[0] > declared / 10 or best[0] > 0.05:
        return None
    return Problem(
        None,
        None,
        "crs",
        (
            f"{declared:.1%} of the features' area lies outside {district_name} as read in {spec.name}, "
            f"{best[0]:.2%} if {best[1]}: {best[2]}"
        ),
        "error",
    )


def _where(geom, district, district_name: str) -> str | None:
    """Where a feature nowhere near the district falls, or None when it is near."""
    p = shapely.point_on_surface(geom)
    if shapely.distance(district, p) == 0:
        return None
    line = shapely.shortest_line(district, p)
    (x0, y0), (x1, y1) = shapely.get_coordinates(line)
    d = haversine_m(x0, y0, x1, y1)
    if d < NEAR_M:
        return None
    return f"falls at {x1:.6f}, {y1:.6f} (WGS84), {d / 1000:,.1f} km from {district_name}"


# ---- the plan --------------------------------------------------------------------------------


def _district(session: Session) -> tuple[str, str, Any]:
    rows = store.districts(session.connection())
    if not rows:
        raise Conflict(
            "the database holds no district yet: start one with gridbranch init --district CODE --boundary FILE",
            field="district",
        )
    if len(rows) > 1:
        raise Conflict(f"the database holds several districts ({', '.join(c for c, _ in rows)})", field="district")
    code, name = rows[0]
    area = store.areas_by_code(session.connection(), code)[code]
    return code, name, shapely.from_wkb(area.wkb)


def plan_import(
    session: Session,
    kind: str,
    src: SourceFile,
    *,
    crs: str | None = None,
    mapping: dict[str, str] | None = None,
    do_repair: bool = False,
    tolerance_m2: float = 100.0,
    thresholds: Thresholds = Thresholds(),
    effective: datetime | None = None,
    retire_missing: bool = False,
) -> BoundaryPlan:
    """Validate ``src`` as ``areas`` or ``grids`` and compare it with the database;
    nothing is written (see the module docstring). Grids only: ``effective`` is when
    the generation takes effect (default: when committed), ``retire_missing`` retires
    the stored grids of the file's communities that it does not hold."""
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}", field="kind")
    if kind != "grids" and (effective is not None or retire_missing):
        raise InvalidInput(
            "only grids come in generations: --effective and --retire-missing are for ingest grids",
            field="effective" if effective is not None else "retire_missing",
        )
    mapping = mapping or {}
    conn = session.connection()
    versions = data_versions(session, ["areas", "grids"])
    dcode, dname, dgeom = _district(session)
    prefix = dcode[:6]
    c_code = _column(src, "code", mapping, True)
    c_name = _column(src, "name", mapping, True)
    c_parent = _column(src, "parent", mapping, False)
    lon0 = float(shapely.get_x(shapely.centroid(dgeom)))
    spec, notes = resolve_crs(src, crs, near_lon=lon0)
    problems: list[Problem] = []
    n = len(src)
    present = np.array([g is not None for g in src.geoms], bool)
    wgs = np.full(n, None, dtype=object)
    if present.any():
        with np.errstate(all="ignore"):
            wgs[present] = geoms_to_wgs84(src.geoms[present], spec)
    guess = _guess_reading(src.geoms[present], spec, wgs[present], dgeom, dname) if present.any() else None
    if guess is not None:
        problems.append(guess)

    # ---- every feature on its own ----------------------------------------------------------
    plain, near = _plain_geometries(wgs, dgeom)
    outcomes: list[Outcome] = []
    first_at: dict[str, int] = {}
    for i, record in enumerate(src.records):
        code = _code(record.get(c_code))
        name = _text(record.get(c_name))
        given_parent = _code(record.get(c_parent)) if c_parent else None
        out = Outcome(i + 1, code, name, None, given_parent)
        outcomes.append(out)
        before = len(problems)

        def err(fld: str, reason: str) -> None:  # (called within this iteration only)
            problems.append(Problem(i + 1, code, fld, reason))  # noqa: B023

        if i in src.feature_errors:
            fld, reason = src.feature_errors[i]
            err(fld, reason)
        if code is None:
            err(c_code, "code is missing")
        else:
            problem = grid_code_problem(code) if kind == "grids" else area_code_problem(code)
            if problem:
                err(c_code, problem)
            elif not code.startswith(prefix):
                err(c_code, f"{code} is not in the district {dcode} ({dname})")
            elif code in first_at:
                err(c_code, f"code {code} appears again (first at feature {first_at[code]})")
            else:
                first_at[code] = i + 1
                out.level = "grid" if kind == "grids" else level_of(code)
                derived = parent_code(code)
                if given_parent is not None and given_parent != derived:
                    err(
                        c_parent,
                        f"{code} is not under its parent's code {given_parent} (its code says its parent is {derived})",
                    )
                out.parent = derived
                if kind == "areas" and out.level == "district" and code != dcode:
                    err(c_code, f"{code} is another district than this deployment's {dcode}")
        if name is None:
            err(c_name, "name is missing")
        if i not in src.feature_errors and plain[i]:
            g = wgs[i]
            out.geom = g if shapely.get_type_id(g) == 6 else shapely.multipolygons([g])
            if not near[i]:
                where = _where(out.geom, dgeom, dname)
                if where:
                    err("geometry", where + (" (see the CRS problem above)" if guess else ""))
        elif i not in src.feature_errors:
            out.geom = _check_geometry(i, code, wgs[i], do_repair=do_repair, problems=problems, out=out)
            if out.geom is not None:
                where = _where(out.geom, dgeom, dname)
                if where:
                    err("geometry", where + (" (see the CRS problem above)" if guess else ""))
        if any(p.severity == "error" for p in problems[before:]):
            out.action = REJECT

    # ---- against the database and each other ---------------------------------------------
    stored_areas = store.areas_by_code(conn, prefix)
    stored_grids = store.grids_by_code(conn, prefix) if kind == "grids" else {}
    parent_geom: dict[str, Any] = {c: shapely.from_wkb(a.wkb) for c, a in stored_areas.items()}
    # every well-coded feature by code, rejected ones too (their children say so)
    in_file = {o.code: o for o in outcomes if o.level is not None}
    if kind == "areas":
        parent_geom.update({c: o.geom for c, o in in_file.items() if o.geom is not None})
    # valid and prepared once per parent, not once per child
    parent_geom = {c: g if g is None else _prepared(shapely.make_valid(g)) for c, g in parent_geom.items()}
    rank = {"district": 0, "street": 1, "community": 2, "grid": 3}
    # parents before children, a level at a time: a child of a unit rejected here is
    # rejected too; each level's place in its parents is measured for the level at once
    for level in sorted({o.level for o in outcomes}, key=lambda lv: rank.get(lv, 9)):
        placed: list[tuple[Outcome, Any]] = []
        for o in outcomes:
            if o.level != level or o.action == REJECT:
                continue
            if o.code in stored_grids and stored_grids[o.code].retired:
                problems.append(
                    Problem(
                        o.feature,
                        o.code,
                        c_code,
                        f"grid {o.code} was retired: this import does not bring retired grids back",
                    )
                )
                o.action = REJECT
                continue
            pg = _check_parent(o, kind, in_file, stored_areas, parent_geom, problems, c_parent)
            if pg is not None:
                placed.append((o, pg))
        _outside_parents(placed, tolerance_m2, problems)
    _topology(kind, outcomes, stored_areas, stored_grids, thresholds, problems)
    absent = _diff(kind, outcomes, stored_areas, stored_grids)
    if kind == "grids":
        _check_generation(conn, now_of(session), effective, outcomes, problems, c_code)

    if src.dropped:
        notes.append(f"{src.dropped} values dropped: boundaries are stored 2D")
    multipart = sum(1 for o in outcomes if o.geom is not None and shapely.get_num_geometries(o.geom) > 1)
    if multipart:
        notes.append(f"{multipart} multipart feature(s) kept as multipolygons")
    source = {
        "file": src.name,
        "driver": src.driver,
        "layer": src.layer,
        "features": n,
        "encoding": src.encoding,
        "encoding_note": src.encoding_note,
        "crs": spec.name,
        "geometry_type": src.geometry_type,
        "columns": {"code": c_code, "name": c_name, "parent": c_parent},
    }
    problems.sort(key=lambda p: (p.feature is not None, p.feature or 0))
    return BoundaryPlan(
        kind,
        source,
        {"code": dcode, "name": dname},
        outcomes,
        problems,
        absent,
        notes,
        versions,
        effective,
        retire_missing,
    )


def _check_generation(
    conn,
    now: datetime,
    effective: datetime | None,
    outcomes: list[Outcome],
    problems: list[Problem],
    c_code: str | None,
) -> None:
    """A generation takes effect now or later, after the last one; a later one carries
    only boundaries (names and communities are not versioned: they change at once)."""
    at = effective or now
    if effective is not None and effective < now:
        problems.append(
            Problem(
                None,
                None,
                "effective",
                f"{_day(effective)} has passed (now {_day(now)}): a "
                "generation takes effect now or later, history stays as it was",
            )
        )
        return
    last = store.last_start(conn)
    if last is not None and at < last:
        problems.append(
            Problem(
                None,
                None,
                "effective",
                f"the last generation takes effect on {_day(last)}: a new "
                "one takes effect after it (--effective a later day)",
            )
        )
    if effective is not None and effective > now:
        for o in outcomes:
            if o.action == CHANGE and o.reparented_from:
                problems.append(
                    Problem(
                        o.feature,
                        o.code,
                        c_code or "code",
                        f"moved from {o.reparented_from} to {o.parent}: a grid changes its "
                        "community at once, not on a later day (import it without --effective)",
                    )
                )
                o.action = REJECT
            elif o.action == CHANGE and o.renamed_from:
                problems.append(
                    Problem(
                        o.feature,
                        o.code,
                        "name",
                        f"renamed from {o.renamed_from} at once: names are not versioned, only "
                        f"the boundary waits for {_day(effective)}",
                        "warning",
                    )
                )


def _prepared(geom):
    shapely.prepare(geom)
    return geom


def _check_parent(
    o: Outcome,
    kind: str,
    good: dict[str, Outcome],
    stored: dict[str, store.StoredArea],
    parent_geom: dict[str, Any],
    problems: list[Problem],
    c_parent: str | None,
) -> Any:
    """Reject ``o`` when its parent is rejected, unknown or of the wrong level; else the
    parent's geometry to measure it against (:func:`_outside_parents`), or None."""
    if o.parent is None:
        return None
    want = {"grid": "community", "community": "street", "street": "district"}[o.level]
    mine = good.get(o.parent) if kind == "areas" else None
    if mine is not None and mine.action == REJECT:
        problems.append(
            Problem(
                o.feature, o.code, c_parent or "parent", f"its parent {o.parent} (feature {mine.feature}) is rejected"
            )
        )
        o.action = REJECT
        return None
    level = mine.level if mine else (stored[o.parent].level if o.parent in stored else None)
    if level is None:
        problems.append(
            Problem(
                o.feature,
                o.code,
                c_parent or "parent",
                f"its parent {o.parent} is neither in the file nor in the database"
                + (" (import the areas first)" if kind == "grids" else ""),
            )
        )
        o.action = REJECT
        return None
    if level != want:
        problems.append(
            Problem(
                o.feature,
                o.code,
                c_parent or "parent",
                f"its parent {o.parent} is a {level}, a {o.level}'s parent is a {want}",
            )
        )
        o.action = REJECT
        return None
    return parent_geom.get(o.parent)


def _outside_parents(placed: list[tuple[Outcome, Any]], tolerance_m2: float, problems: list[Problem]) -> None:
    """Reject the units lying more than ``tolerance_m2`` outside their (valid, prepared)
    parent; most are covered by it, which a predicate decides without an overlay."""
    if not placed:
        return
    geoms = np.asarray([o.geom for o, _ in placed], dtype=object)
    parents = np.asarray([pg for _, pg in placed], dtype=object)
    todo = np.flatnonzero(~shapely.covers(parents, geoms))
    if not len(todo):
        return
    outside = lonlat_area(shapely.difference(geoms[todo], parents[todo]))
    for k, m2 in zip(todo.tolist(), outside.tolist()):
        if m2 > tolerance_m2:
            o = placed[k][0]
            problems.append(
                Problem(
                    o.feature,
                    o.code,
                    "geometry",
                    f"{m2:,.1f} m² lie outside its parent {o.parent} (tolerance {tolerance_m2:g} m²)",
                )
            )
            o.action = REJECT


def _topology(
    kind: str,
    outcomes: list[Outcome],
    stored_areas: dict[str, store.StoredArea],
    stored_grids: dict[str, store.StoredGrid],
    thresholds: Thresholds,
    problems: list[Problem],
) -> None:
    """Overlaps, gaps and stray parts among siblings, in the layer the import would
    leave: the file's good features and the stored siblings it does not replace."""
    good = [o for o in outcomes if o.action != REJECT]
    by_code = {o.code: o for o in good}
    feature_of = {o.code: o.feature for o in good}
    levels = ("grid",) if kind == "grids" else ("street", "community")
    for level in levels:
        kids = [o for o in good if o.level == level]
        if not kids:
            continue
        parents = sorted({o.parent for o in kids})
        if kind == "grids":
            others = [
                (c, g.community, shapely.from_wkb(g.wkb))
                for c, g in stored_grids.items()
                if c not in by_code and g.community in parents and not g.retired and g.wkb is not None
            ]
        else:
            others = [
                (c, a.parent, shapely.from_wkb(a.wkb))
                for c, a in stored_areas.items()
                if c not in by_code and a.level == level and a.parent in parents
            ]
        children = sorted([(o.code, o.parent, o.geom) for o in kids] + others)

        def parent_geom(c: str):
            o = by_code.get(c)
            return o.geom if o is not None else shapely.from_wkb(stored_areas[c].wkb)

        present = [c for c in parents if c in by_code or c in stored_areas]
        topo = analyse_topology(
            area_codes=present,
            area_levels=[level_of(c) for c in present],
            area_parents=[None] * len(present),
            area_geoms=[parent_geom(c) for c in present],
            grid_codes=[c for c, _, _ in children],
            grid_areas=[p for _, p, _ in children],
            grid_geoms=[g for _, _, g in children],
            thresholds=thresholds,
        )
        for f in topo.findings:
            at = f"at {f.point[0]:.6f}, {f.point[1]:.6f}"
            if f.form == "overlap":
                a, b = f.codes
                mine = a if a in feature_of else b
                other = b if mine == a else a
                problems.append(
                    Problem(
                        feature_of.get(mine),
                        mine,
                        "geometry",
                        f"overlaps {other} by {f.area_m2:,.1f} m² {at}" + (" (a sliver)" if f.kind == "sliver" else ""),
                        "warning",
                        f.geom,
                    )
                )
            elif f.form == "gap":
                bordered = f", bordered by {', '.join(f.codes[1:])}" if len(f.codes) > 1 else ""
                problems.append(
                    Problem(
                        None,
                        f.codes[0],
                        "geometry",
                        f"{'a sliver' if f.kind == 'sliver' else 'a gap'} of {f.area_m2:,.1f} m² "
                        f"in {f.codes[0]} that none of its {level}s covers {at}{bordered}",
                        "warning",
                        f.geom,
                    )
                )
            elif f.kind == "stray_part" and f.codes[0] in feature_of:
                problems.append(
                    Problem(
                        feature_of[f.codes[0]],
                        f.codes[0],
                        "geometry",
                        f"a stray part of {f.area_m2:,.1f} m² {at} (multipart kept)",
                        "warning",
                    )
                )


def _diff(
    kind: str,
    outcomes: list[Outcome],
    stored_areas: dict[str, store.StoredArea],
    stored_grids: dict[str, store.StoredGrid],
) -> list[dict[str, str]]:
    """Set each good feature's action against what is stored; return the stored units of
    the file's scope (the parents its features belong to) that it does not hold."""
    for o in outcomes:
        if o.action == REJECT:
            continue
        if kind == "grids":
            s = stored_grids.get(o.code)
            old = (s.name, s.community, s.wkb) if s else None
        else:
            a = stored_areas.get(o.code)
            old = (a.name, a.parent, a.wkb) if a else None
        if old is None:
            o.action = ADD
            continue
        name, parent, wkb = old
        o.renamed_from = name if name != o.name else None
        o.reparented_from = parent if parent != o.parent else None
        before = shapely.from_wkb(wkb) if wkb is not None else None
        if before is None or not shapely.equals_exact(before, o.geom, 0):
            moved = (
                float(lonlat_area([shapely.symmetric_difference(shapely.make_valid(before), o.geom)])[0])
                if before is not None
                else float("inf")
            )
            o.moved_m2 = moved if moved >= CHANGE_M2 else None
        o.action = CHANGE if (o.renamed_from or o.reparented_from or o.moved_m2) else UNCHANGED
    in_file = {o.code for o in outcomes if o.code}
    scope = {o.parent for o in outcomes if o.action != REJECT and o.parent}
    if kind == "grids":
        return [
            {"code": c, "name": g.name}
            for c, g in stored_grids.items()
            if c not in in_file and not g.retired and g.community in scope
        ]
    return [
        {"code": c, "name": a.name}
        for c, a in stored_areas.items()
        if c not in in_file and a.parent in scope and a.level != "district"
    ]


# ---- committing -------------------------------------------------------------------------------


def _ewkb(geoms: list) -> list[str]:
    arr = shapely.set_srid(np.asarray(geoms, dtype=object), 4326)
    return shapely.to_wkb(arr, hex=True, include_srid=True).tolist()


def commit_plan(session: Session, plan: BoundaryPlan) -> dict[str, int]:
    """Write ``plan`` in the session's transaction (the caller commits): added units,
    renamed/reparented ones, redrawn boundaries (a grid's as a new version, the old one
    closed), retired grids. Grids that change anything make a new generation taking
    effect at ``plan.effective`` (or now): its versions start and the ones they replace
    end there. Refuses a plan with errors, and one planned on data that has changed
    since (re-plan). Returns what was written per kind of change (and the generation's
    id, for grids that wrote anything)."""
    if not plan.ok:
        raise InvalidInput(f"the import has {len(plan.errors)} error(s): nothing written", field="file")
    conn = session.connection()
    conn.execute(text("LOCK TABLE admin_areas, grids, grid_versions IN SHARE ROW EXCLUSIVE MODE"))
    now = data_versions(session, ["areas", "grids"])
    if now != plan.versions:
        raise Conflict("the areas or grids changed since this import was planned: plan it again", field="file")
    add = [o for o in plan.outcomes if o.action == ADD]
    change = [o for o in plan.outcomes if o.action == CHANGE]
    attrs = [o for o in change if o.renamed_from or o.reparented_from]
    moved = [o for o in change if o.moved_m2]
    counts = {
        "added": len(add),
        "renamed_or_reparented": len(attrs),
        "redrawn": len(moved),
        "unchanged": sum(1 for o in plan.outcomes if o.action == UNCHANGED),
    }
    retire = [a["code"] for a in plan.absent] if plan.kind == "grids" and plan.retire_missing else []
    if plan.kind == "grids":
        counts["retired"] = len(retire)
    if plan.kind == "areas":
        if add:
            store.insert_areas(
                conn,
                [o.code for o in add],
                [o.name for o in add],
                [o.level for o in add],
                [o.parent for o in add],
                _ewkb([o.geom for o in add]),
            )
        if change:
            # one statement: a name, a parent or a boundary, as each changed
            geoms = _ewkb([o.geom for o in change])
            store.update_areas(
                conn,
                [o.code for o in change],
                [o.name for o in change],
                [o.parent for o in change],
                [g if o.moved_m2 else None for o, g in zip(change, geoms)],
            )
    elif add or change or retire:
        if plan.effective is not None and plan.effective < now_of(session):
            raise Conflict(
                f"{_day(plan.effective)} has passed since this import was planned: plan it again", field="effective"
            )
        generation, at = store.create_generation(
            conn,
            effective=plan.effective,
            source=plan.source.get("file"),
            retire_missing=plan.retire_missing,
            counts=counts,
        )
        counts["generation"] = generation
        if add:
            store.insert_grids(
                conn,
                [o.code for o in add],
                [o.name for o in add],
                [o.parent for o in add],
                _ewkb([o.geom for o in add]),
                generation=generation,
                effective=at,
            )
        if attrs:
            store.update_grids(conn, [o.code for o in attrs], [o.name for o in attrs], [o.parent for o in attrs])
        if moved:
            store.redraw_grids(
                conn, [o.code for o in moved], _ewkb([o.geom for o in moved]), generation=generation, effective=at
            )
        store.retire_grids(conn, retire, generation=generation, effective=at)
    if add or change or retire:
        conn.execute(text("ANALYZE admin_areas" if plan.kind == "areas" else "ANALYZE grids, grid_versions"))
    return counts


# ---- the report ---------------------------------------------------------------------------------


def format_report(plan: BoundaryPlan) -> str:
    """The dry-run report: source, notes, one line per problem, the outcome per
    feature that changes anything, and a summary."""
    c = plan.counts()
    s = plan.source
    lines = [
        f"{plan.kind} from {s['file']}"
        + (f" (layer {s['layer']})" if s.get("layer") else "")
        + f": {s['features']} features, {s['driver']}"
        + (f", encoding {s['encoding']} ({s['encoding_note']})" if s.get("encoding_note") else "")
        + f"; district {plan.district['code']} {plan.district['name']}"
    ]
    lines += [f"  note: {n}" for n in plan.notes]
    for p in plan.problems:
        lines.append("  " + p.line())
    for o in plan.outcomes:
        if o.action == ADD:
            lines.append(f"  add {o.code} {o.name} (in {o.parent})")
        elif o.action == CHANGE:
            what = []
            if o.moved_m2:
                what.append(f"boundary moved by {o.moved_m2:,.1f} m²")
            if o.renamed_from:
                what.append(f"renamed from {o.renamed_from}")
            if o.reparented_from:
                what.append(f"moved from {o.reparented_from} to {o.parent}")
            lines.append(f"  change {o.code} {o.name}: {'; '.join(what)}")
    when = f"on {_day(plan.effective)}" if plan.effective else "when committed"
    for a in plan.absent:
        lines.append(
            f"  retire {a['code']} {a['name']}: stored, not in the file (retired {when})"
            if plan.retire_missing
            else f"  absent {a['code']} {a['name']}: stored, not in the file (kept)"
        )
    absent = f"retired {when}" if plan.retire_missing else "kept, none retired"
    if plan.kind == "grids":
        lines.append(f"  generation: the changes take effect {when}")
    lines.append(
        f"summary: {c['add']} to add, {c['change']} to change, {c['unchanged']} unchanged, "
        f"{c['reject']} rejected, {c['absent']} absent from the file ({absent}); "
        f"{c['errors']} error(s), {c['warnings']} warning(s)"
    )
    return "\n".join(lines)

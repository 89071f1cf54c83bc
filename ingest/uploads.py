"""Imports uploaded through the web map (数据导入): the same importers as the command
line — :mod:`ingest.boundaries` (areas, grids), :mod:`ingest.roster` (members,
branches, departments, categories) and :mod:`ingest.registrations` — called through
their public functions, with three things added for a service whose callers are admins
of an area:

- **scope**: an import by a street admin may only touch what lies in their street;
  every other feature or row is refused, one by one, with the reason (departments and
  categories are the district's, and its admins' alone);
- **a report and a preview as data**: the dry run's report as JSON (no names or phones:
  rejected rows are named by number and member number or code) and, for boundaries, a
  GeoJSON preview of what the import would add, change and leave, with the gaps and
  overlaps the coverage analysis finds in the layer it would leave;
- **a fingerprint** of the dry run, which the commit — running the dry run again inside
  its own transaction — compares, so that what is written is what was previewed.

Nothing here touches the HTTP layer or the file's life on disk (``geo_api.imports``).
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
from sqlalchemy import text
from sqlalchemy.orm import Session

from ingest import boundaries, roster, tables
from ingest import registrations as bulk
from ingest.files import ARCHIVES, FORMATS, FileError, read_features
from layers import boundaries as store
from layers.codes import area_prefix, level_of
from layers.coverage.topology import Thresholds
from layers.errors import Conflict, Forbidden, InvalidInput
from layers.geojson import collection
from layers.messages_zh import row_reason_zh
from layers.registrations import member_area
from layers.versions import data_versions

KINDS = ("areas", "grids", "members", "branches", "departments", "categories", "registrations")
KIND_NAMES = {
    "areas": "街道和社区",
    "grids": "网格",
    "members": "党员花名册",
    "branches": "党支部",
    "departments": "职能部门",
    "categories": "事件类别",
    "registrations": "报到名单",
}
#: Kinds that are the district's as a whole: its admins import them, nobody else.
DISTRICT_ONLY = ("departments", "categories")
_GIS = tuple(sorted(set(FORMATS) | set(ARCHIVES)))
SUFFIXES = {
    "areas": _GIS,
    "grids": _GIS,
    "members": (".csv", ".xlsx"),
    "branches": (".csv", ".xlsx"),
    "departments": (".csv", ".xlsx"),
    "categories": (".csv", ".xlsx"),
    "registrations": (".csv",),
}
#: Reject reasons kept in a report, at most (the counts are always whole).
MAX_REJECTS = 2000

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class Options:
    """How to read a file: the command line's options of the same names (``effective``
    as typed: a day or an instant, checked by :func:`Options.checked`)."""

    crs: str | None = None
    map: str | None = None
    layer: str | None = None
    encoding: str | None = None
    repair: bool = False
    effective: str | None = None
    retire_missing: bool = False

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Options:
        return cls(
            **{k: d.get(k) or None for k in ("crs", "map", "layer", "encoding", "effective")},
            repair=bool(d.get("repair")),
            retire_missing=bool(d.get("retire_missing")),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "crs": self.crs,
            "map": self.map,
            "layer": self.layer,
            "encoding": self.encoding,
            "repair": self.repair,
            "effective": self.effective,
            "retire_missing": self.retire_missing,
        }

    def checked(self, kind: str) -> Options:
        """Refuse (422) before any dry run what cannot be: a malformed ``effective``,
        or a generation option on another kind than grids."""
        if self.effective is not None:
            store.parse_instant(self.effective)
        if kind != "grids" and (self.effective is not None or self.retire_missing):
            raise InvalidInput(
                "only grids come in generations: effective and retire_missing are for grids",
                field="effective" if self.effective is not None else "retire_missing",
                detail_zh="只有网格按批次导入：生效日期和“撤销文件中没有的网格”仅用于网格",
            )
        return self


@dataclass
class Checked:
    """A dry run: the report (JSON-ready), the preview (GeoJSON, boundaries only),
    whether it may be committed, and its fingerprint."""

    report: dict[str, Any]
    preview: dict[str, Any] | None = None
    committable: bool = False
    fingerprint: Any = None
    plan: Any = field(default=None, repr=False)


_SUGGESTED = re.compile(r"give --crs ([\w:]+)|(?:near the district that is |zone prefix \([^)]*\): )(EPSG:\d+)")


def crs_suggestion(reason: str) -> str | None:
    """The one CRS a reason of the importers names as the file's real one (``give --crs
    gcj02``, the Gauss-Krüger zone the coordinates fit), or None: the map offers a new
    dry run in it."""
    m = _SUGGESTED.search(reason)
    return (m.group(1) or m.group(2)) if m else None


def zh_error(exc: InvalidInput, filename: str) -> dict[str, Any]:
    """A refusal of the file as a problem detail with its Chinese wording (and the CRS to
    try, when the reason names one)."""
    detail_zh = exc.extra.get("detail_zh") or f"文件“{filename}”无法导入：{exc.detail}"
    return {
        "status": exc.status,
        "title": exc.title,
        "detail": exc.detail,
        "detail_zh": detail_zh,
        "field": exc.field,
        "crs_suggestion": crs_suggestion(exc.detail) if exc.field == "crs" else None,
    }


def allowed_kind(kind: str, scope_code: str) -> None:
    """Refuse a kind the caller's level may not import (403 naming ``kind``)."""
    if kind not in KINDS:
        raise InvalidInput(
            f"kind must be one of {', '.join(KINDS)}",
            field="kind",
            detail_zh=f"数据类型应为：{'、'.join(KIND_NAMES.values())}",
        )
    if kind in DISTRICT_ONLY and level_of(scope_code) != "district":
        raise Forbidden(
            f"{kind} are the district's: only its admins import them",
            field="kind",
            detail_zh=f"{KIND_NAMES[kind]}由区级管理员导入",
        )


def check_file(kind: str, path: Path, filename: str) -> None:
    """What is refused before any dry run: a file type the kind is not read from, an
    archive that is not a whole zip (truncated, damaged)."""
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES[kind]:
        raise FileError(
            f"{filename}: a {kind} import reads {', '.join(SUFFIXES[kind])} files, not "
            f"{suffix or 'a file without a type'}",
            detail_zh=f"“{filename}”不是{KIND_NAMES[kind]}可用的文件类型（可用："
            f"{'、'.join(SUFFIXES[kind])}）；请检查所选的数据类型",
        )
    if path.stat().st_size == 0:
        raise FileError(f"{filename}: the file is empty", detail_zh=f"“{filename}”是空文件")
    if suffix in (*ARCHIVES, ".xlsx"):
        # the central directory closes a zip: a truncated one has none. Members are not
        # unpacked here (a zip bomb is stopped by the reader's limits, ingest.files)
        try:
            with zipfile.ZipFile(path) as zf:
                zf.infolist()
        except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:
            raise FileError(
                f"{filename}: not a readable zip archive (truncated or damaged?): {exc}",
                detail_zh=f"“{filename}”不是完整的压缩文件（可能上传不完整或已损坏）",
            ) from None


# ---- the dry run ------------------------------------------------------------------------------


def dry_run(
    session: Session,
    kind: str,
    path: Path,
    options: Options,
    *,
    scope_code: str,
    thresholds: Thresholds = Thresholds(),
    tolerance_m: float = 30.0,
    edge_m: float = 0.05,
    progress: Progress = lambda phase, share: None,
) -> Checked:
    """Read and check ``path`` as ``kind`` against the database for a caller whose area
    is ``scope_code``; nothing is written (temporary tables at most: the caller rolls
    back). A file that cannot be read raises :class:`InvalidInput` (the message names it)."""
    allowed_kind(kind, scope_code)
    if kind in ("areas", "grids"):
        return _boundaries(session, kind, path, options, scope_code, thresholds, progress)
    if kind == "registrations":
        return _registrations(session, path, options, scope_code, tolerance_m, edge_m, progress)
    return _table(session, kind, path, options, scope_code, progress)


def commit(
    session: Session, kind: str, path: Path, options: Options, *, scope_code: str, fingerprint: Any, actor: str, **dry
) -> dict[str, Any]:
    """Run the dry run again in the session's transaction, refuse (409) when it differs
    from the one the caller saw (``fingerprint``: the data changed since), and write it.
    Returns what was written; the caller commits."""
    checked = dry_run(session, kind, path, options, scope_code=scope_code, **dry)
    if not checked.committable:
        raise InvalidInput(
            "the import has errors: nothing written",
            field="file",
            detail_zh="预检有错误，不能导入；请修正文件后重新上传",
        )
    if _plain(checked.fingerprint) != _plain(fingerprint):
        raise Conflict(
            "the data changed since the dry run: check the file again",
            field="file",
            detail_zh="预检之后数据已有变化：请重新预检后再确认导入",
        )
    plan = checked.plan
    if kind in ("areas", "grids"):
        return boundaries.commit_plan(session, plan)
    if kind == "registrations":
        return bulk.commit_import(session.connection(), plan, actor=actor)
    return roster.changes(session.connection(), plan, write=True, actor=actor)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


# ---- boundaries -------------------------------------------------------------------------------


def _boundaries(
    session: Session,
    kind: str,
    path: Path,
    options: Options,
    scope_code: str,
    thresholds: Thresholds,
    progress: Progress,
) -> Checked:
    mapping = boundaries.parse_mapping(options.map)
    progress("reading", 0.1)
    src = read_features(path, layer=options.layer, encoding=options.encoding, geometry_field=mapping.get("geometry"))
    progress("checking", 0.4)
    plan = boundaries.plan_import(
        session,
        kind,
        src,
        crs=options.crs,
        mapping=mapping,
        do_repair=options.repair,
        thresholds=thresholds,
        effective=store.parse_instant(options.effective) if options.effective else None,
        retire_missing=options.retire_missing,
    )
    _scope_boundaries(plan, scope_code)
    progress("preview", 0.85)
    report = plan.as_dict()
    for p in report["problems"]:
        p["reason_zh"] = row_reason_zh(p["reason"])
    report["summary"] = boundaries.format_report(plan).splitlines()[-1]
    report["crs_suggestion"] = next(
        (c for p in plan.errors if p.field == "crs" and (c := crs_suggestion(p.reason))), None
    )
    return Checked(
        report,
        _preview(session, plan),
        plan.ok and bool(plan.outcomes),
        {"versions": plan.versions, "counts": plan.counts()},
        plan,
    )


def _scope_boundaries(plan: boundaries.BoundaryPlan, scope_code: str) -> None:
    """A street (or community) admin's import touches only what lies below their area:
    every other feature is rejected, naming the area; their own area's boundary may be
    in the file only as stored."""
    if level_of(scope_code) == "district":
        return
    prefix = area_prefix(scope_code)
    column = plan.source["columns"]["code"]
    for o in plan.outcomes:
        if o.action == boundaries.REJECT or o.code is None:
            continue
        if o.code == scope_code and o.action == boundaries.UNCHANGED:
            continue
        if o.code == scope_code or not o.code.startswith(prefix):
            why = (
                "your own area's boundary is changed by the district"
                if o.code == scope_code
                else f"it lies outside your area {scope_code}"
            )
            plan.problems.append(boundaries.Problem(o.feature, o.code, column, f"{o.code}: {why}"))
            o.action = boundaries.REJECT
    plan.absent = [a for a in plan.absent if a["code"].startswith(prefix)]
    plan.problems.sort(key=lambda p: (p.feature is not None, p.feature or 0))


def _feature(geom, props: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "geometry": json.loads(shapely.to_geojson(shapely.set_precision(geom, 1e-7))),
        "properties": props,
    }


def _preview(session: Session, plan: boundaries.BoundaryPlan) -> dict[str, Any]:
    """GeoJSON of the plan: each feature of the file by what the import does with it
    (``add``, ``change``, ``unchanged``, ``reject``; the new drawing), the stored units it
    leaves out (``absent``, as stored), and the gaps and overlaps of the layer it would
    leave (``gap``, ``overlap``, with their m²)."""
    features = []
    for o in plan.outcomes:
        if o.geom is None:
            continue
        features.append(
            _feature(
                o.geom,
                {
                    "action": o.action,
                    "code": o.code,
                    "name": o.name,
                    "feature": o.feature,
                    "moved_m2": o.moved_m2,
                    "renamed_from": o.renamed_from,
                },
            )
        )
    if plan.absent:
        conn = session.connection()
        prefix = plan.district["code"][:6]
        stored = store.grids_by_code(conn, prefix) if plan.kind == "grids" else store.areas_by_code(conn, prefix)
        for a in plan.absent:
            s = stored.get(a["code"])
            if s is not None and s.wkb is not None:
                features.append(
                    _feature(shapely.from_wkb(s.wkb), {"action": "absent", "code": a["code"], "name": a["name"]})
                )
    for p in plan.problems:
        geom = getattr(p, "geom", None)
        if geom is None or p.severity != "warning":
            continue
        kind = "overlap" if p.reason.startswith("overlaps") else "gap" if " that none of its " in p.reason else None
        if kind is not None:
            features.append(_feature(geom, {"action": kind, "code": p.code, "feature": p.feature, "reason": p.reason}))
    return collection(features)


# ---- tables (members, branches, departments, categories) ----------------------------------


def _table(session: Session, kind: str, path: Path, options: Options, scope_code: str, progress: Progress) -> Checked:
    mapping = tables.parse_mapping(options.map, roster.SPECS[kind].candidates)
    progress("reading", 0.1)
    table = roster.read(path, kind, encoding=options.encoding, sheet=options.layer)
    progress("checking", 0.4)
    plan = roster.plan(session, kind, table, mapping=mapping, default_crs=options.crs or "wgs84")
    if plan.file_error is not None:
        raise InvalidInput(plan.file_error, field="file")
    if level_of(scope_code) != "district":
        _scope_table(session, kind, plan, scope_code)
    progress("comparing", 0.7)
    # the comparison writes temporary tables only, undone with its savepoint (a commit
    # runs this inside its own transaction)
    nested = session.begin_nested()
    counts = roster.changes(session.connection(), plan, write=False)
    nested.rollback()
    rejects = sorted(plan.rejects, key=lambda r: r.row)
    report = {
        "kind": kind,
        "file": plan.file,
        "rows": plan.total,
        "good": len(plan.good),
        "rejected": len(rejects),
        "columns": plan.columns,
        "notes": plan.notes,
        "counts": counts,
        "rejects": [_reject(r.row, r.key, r.reason) for r in rejects[:MAX_REJECTS]],
        "summary": f"{plan.total} rows, {len(plan.good)} to import, {len(rejects)} rejected; would write: "
        + roster.format_counts(counts),
    }
    return Checked(
        report, None, bool(plan.good), {"counts": counts, "good": len(plan.good), "rejected": len(rejects)}, plan
    )


def _reject(row: int, key: str | None, reason: str) -> dict[str, Any]:
    return {"row": row, "key": (key or "")[:40] or None, "reason": reason, "reason_zh": row_reason_zh(reason)}


def _refuse(plan: tables.TablePlan, keep: list[bool], reasons: dict[int, str]) -> None:
    """Move the good rows not kept to the rejects, with their reasons."""
    good = []
    for g, ok in zip(plan.good, keep):
        if ok:
            good.append(g)
        else:
            plan.rejects.append(tables.Rejected(g[0], g[1], reasons[g[0]], {}))
    plan.good = good


def _outside(session: Session, scope_code: str, points: list[tuple[int, float, float]]) -> set[int]:
    """The keys of the WGS84 points (key, lon, lat) outside the area ``scope_code``."""
    if not points:
        return set()
    return set(
        session.execute(
            text(
                """SELECT s.k FROM unnest(CAST(:k AS int[]), CAST(:x AS float8[]), CAST(:y AS float8[])) AS s(k, x, y)
           WHERE NOT EXISTS (SELECT 1 FROM admin_areas a WHERE a.code = :c
                             AND ST_Covers(a.geom, ST_SetSRID(ST_MakePoint(s.x, s.y), 4326)))"""
            ),
            {"k": [p[0] for p in points], "x": [p[1] for p in points], "y": [p[2] for p in points], "c": scope_code},
        ).scalars()
    )


def _member_areas(session: Session, numbers: list[str]) -> dict[str, str | None]:
    """The area each stored member of ``numbers`` belongs to (:func:`member_area`)."""
    ids = dict(session.execute(text("SELECT number, id FROM members WHERE number = ANY(:n)"), {"n": numbers}).all())
    return {n: member_area(session, i) for n, i in ids.items()}


def _scope_table(session: Session, kind: str, plan: tables.TablePlan, scope_code: str) -> None:
    prefix = area_prefix(scope_code)
    outside = f"outside your area {scope_code}"
    reasons: dict[int, str] = {}
    if kind == "branches":
        communities = dict(session.execute(text("SELECT id, code FROM admin_areas WHERE level = 'community'")).all())
        stored = dict(
            session.execute(
                text("SELECT b.code, c.code FROM branches b LEFT JOIN admin_areas c ON c.id = b.community_id")
            ).all()
        )
        keep = []
        for g in plan.good:
            community = communities.get(g[6])
            was = stored.get(g[1], community)
            ok = community is not None and community.startswith(prefix) and was is not None and was.startswith(prefix)
            if not ok:
                reasons[g[0]] = (
                    f"branch {g[1]} is {outside}"
                    if community is not None
                    else "a work-unit branch is the district's to import"
                )
            keep.append(ok)
        _refuse(plan, keep, reasons)
        return
    # members: a stored member must belong to the area (layers.registrations.member_area)
    # and a residence the file gives must lie in it; a new member without one belongs
    # to no area below the district
    areas = _member_areas(session, [g[1] for g in plan.good])
    far = _outside(session, scope_code, [(g[0], g[6], g[7]) for g in plan.good if g[6] is not None])
    keep = []
    for g in plan.good:
        if g[1] in areas:
            area = areas[g[1]]
            ok = area is not None and area.startswith(prefix) and g[0] not in far
        else:
            ok = g[6] is not None and g[0] not in far
        if not ok:
            reasons[g[0]] = f"member {g[1]} is {outside}" if g[0] not in far else f"the residence lies {outside}"
        keep.append(ok)
    _refuse(plan, keep, reasons)


# ---- registrations ----------------------------------------------------------------------------


def _registrations(
    session: Session,
    path: Path,
    options: Options,
    scope_code: str,
    tolerance_m: float,
    edge_m: float,
    progress: Progress,
) -> Checked:
    from layers.locate import build_grid_index

    progress("reading", 0.1)
    data = path.read_bytes()
    progress("checking", 0.4)
    plan = bulk.plan_import(
        session,
        data,
        build_grid_index(session),
        tolerance_m=tolerance_m,
        edge_m=edge_m,
        default_crs=options.crs or "wgs84",
        encoding=options.encoding or "utf-8",
    )
    if plan.file_error is not None:
        raise InvalidInput(plan.file_error, field="file")
    if level_of(scope_code) != "district":
        prefix = area_prefix(scope_code)
        taken = [o for o in plan.outcomes if o.status in ("located", "nearest")]
        assert len(taken) == len(plan.good)  # the good rows are the located ones, in order
        areas = _member_areas(session, [g["number"] for g in plan.good])
        good = []
        for o, g in zip(taken, plan.good):
            area = areas.get(g["number"], o.grid)
            if o.grid.startswith(prefix) and area is not None and area.startswith(prefix):
                good.append(g)
            else:
                o.status = "invalid"
                o.reason = (
                    f"grid {o.grid} is outside your area {scope_code}"
                    if not o.grid.startswith(prefix)
                    else f"member {g['number']} is outside your area {scope_code}"
                )
        plan.good = good
    counts = plan.counts()
    rejects = plan.rejects
    report = {
        "kind": "registrations",
        "rows": len(plan.outcomes),
        "good": len(plan.good),
        "rejected": len(rejects),
        "counts": counts,
        "rejects": [
            dict(_reject(o.row, o.member_number, o.reason or ""), status=o.status) for o in rejects[:MAX_REJECTS]
        ],
        "summary": ", ".join(f"{k} {v}" for k, v in counts.items()),
    }
    versions = data_versions(session, ["members", "grids"])
    return Checked(report, None, bool(plan.good), {"counts": counts, "versions": versions}, plan)

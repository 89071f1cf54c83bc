"""Coverage findings: the model's topology and branch findings, the service roles
missing per grid (per members version), filtered by kind and area, with their messages
in Simplified Chinese."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from sqlalchemy.orm import Session

from layers.codes import area_prefix
from layers.coverage.members import _role_names, member_counts
from layers.coverage.model import KIND_GROUPS, KINDS, CoverageModel, _grid_finding, coverage_model
from layers.coverage.topology import Finding, Thresholds, assign_ids
from layers.errors import InvalidInput

if TYPE_CHECKING:
    from layers.caches import Caches


def current_findings(session: Session, caches: Caches, thresholds: Thresholds | None = None) -> list[dict[str, Any]]:
    """The topology findings of the current grid layer (cached on the grids/areas data
    versions): dicts ``{"kind", "form", "codes", "area_code", "area_m2", "point": [lon, lat],
    "message", "wkb": bytes}`` — WKB of the WGS84 geometry, areas in m², ``form`` gap|overlap
    for gaps, overlaps and slivers (None for the other kinds), ``message`` the finding in
    Simplified Chinese as the issues endpoint says it, and a stable ``id``
    (``kind:codes…``). Fresh dicts on every call."""
    model = coverage_model(session, caches, thresholds)
    return [
        {
            "id": f.fid,
            "kind": f.kind,
            "form": f.form,
            "codes": list(f.codes),
            "area_code": f.area_code,
            "area_m2": round(_measured(f), 2),
            "point": list(f.point),
            "message": _message(f, model),
            "wkb": shapely.to_wkb(f.geom),
        }
        for f in model.findings
    ]


def _measured(f: Finding) -> float:
    assert f.area_m2 is not None, f  # every topology finding has an area (a branch finding may not)
    return f.area_m2


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

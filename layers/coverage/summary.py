"""Coverage metrics by level (:func:`summary`): per area or grid and per unit of a level
inside it, with rankings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.orm import Session

from layers.coverage.findings import _roles_findings
from layers.coverage.members import MemberCounts, _role_names, member_counts
from layers.coverage.model import KINDS, LEVELS, CoverageModel, coverage_model
from layers.coverage.topology import Thresholds
from layers.errors import InvalidInput

if TYPE_CHECKING:
    from layers.caches import Caches

#: Metrics ranked in summaries, each best-first (all "higher is better").
RANKED = (
    "coverage_share",
    "branch_share",
    "registration_rate",
    "member_density_km2",
    "roles_filled_share",
    "members_registered",
)


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

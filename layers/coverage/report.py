"""The coverage report of ``gridbranch coverage report``: a printed table and three files
(issues as GeoJSON and CSV, the summary as CSV), all from :mod:`layers.coverage`."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from sqlalchemy.orm import Session

from layers import coverage as cov
from layers.caches import Caches
from layers.coverage.topology import Thresholds

BOM = "\ufeff"  # spreadsheet programs then read the Chinese text as UTF-8


def _width(s: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def _pad(s: str, width: int, right: bool = False) -> str:
    gap = " " * max(0, width - _width(s))
    return gap + s if right else s + gap


def _pct(v, decimals: int = 1) -> str:
    return "—" if v is None else f"{100 * v:.{decimals}f}%"


def format_table(result: dict, found: list[dict]) -> str:
    """The summary's units (then the whole area) and the findings by kind, as text."""
    head = ["代码", "名称", "网格", "有支部", "覆盖率", "常住党员", "已报到", "报到率", "密度/km²", "六员", "问题"]
    rows = []
    units = result["units"] + (
        [result["total"]] if result["total"]["code"] not in {u["code"] for u in result["units"]} else []
    )
    for u in units:
        filled = len(u["roles_filled"])
        total_roles = filled + len(u["roles_missing"])
        rows.append(
            [
                u["code"],
                u["name"] or "",
                str(u["grids"]),
                _pct(u["branch_share"]),
                _pct(u["coverage_share"], 2),
                str(u["members_resident"]),
                str(u["members_registered"]),
                _pct(u["registration_rate"]),
                "—" if u["member_density_km2"] is None else f"{u['member_density_km2']:,.1f}",
                f"{filled}/{total_roles}",
                str(sum(u["issues"].values())),
            ]
        )
    widths = [max(_width(r[i]) for r in [head] + rows) for i in range(len(head))]
    right = [False, False] + [True] * (len(head) - 2)
    lines = ["  ".join(_pad(h, w, r) for h, w, r in zip(head, widths, right))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(_pad(c, w, r) for c, w, r in zip(row, widths, right)))
    counts: dict[str, int] = {}
    for f in found:
        counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    lines.append("")
    lines.append("问题（findings）: " + (", ".join(f"{k} {counts[k]}" for k in cov.KINDS if k in counts) or "none"))
    return "\n".join(lines)


def write_report(
    session: Session,
    caches: Caches,
    *,
    within: str,
    out_dir: Path,
    level: str | None = None,
    thresholds: Thresholds | None = None,
) -> tuple[str, list[Path]]:
    """Analyse ``within``, write ``coverage_<code>_issues.geojson``, ``…_issues.csv`` and
    ``coverage_<code>_<level>_summary.csv`` into ``out_dir``; returns the table text and
    the paths written."""
    result = cov.summary(session, caches, code=within, level=level, thresholds=thresholds)
    found = cov.issues(session, caches, within=within, thresholds=thresholds)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        out_dir / f"coverage_{within}_issues.geojson",
        out_dir / f"coverage_{within}_issues.csv",
        out_dir / cov.summary_filename(result),
    ]
    collection = cov.issues_geojson(found, within=within)
    paths[0].write_text(json.dumps(collection, ensure_ascii=False), encoding="utf-8")
    paths[1].write_text(BOM + cov.issues_csv(found), encoding="utf-8")
    paths[2].write_text(BOM + cov.summary_csv(result), encoding="utf-8")
    title = f"{result['name']}（{within}）按{cov.LEVEL_NAMES[result['level']]}的覆盖分析"
    return title + "\n" + format_table(result, found), paths

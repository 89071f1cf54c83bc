"""The monthly report (layers.report) as a print-ready HTML page (print CSS, A4, page
numbers) and as PDF rendered on the server by WeasyPrint — a maintained HTML/CSS to PDF
library that needs no browser; the CJK text takes the system's Noto CJK fonts
(``fonts-noto-cjk``, installed by setup)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

_TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=select_autoescape(["html"])
)
LEVEL_ZH = {"district": "区县", "street": "街道", "community": "社区", "grid": "网格"}


def _pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value * 100:.{digits}f}%"


def html(report: dict[str, Any]) -> str:
    units = sorted(report["units"], key=lambda u: ((u.get("rank") or {}).get("registration_rate") or 10**9, u["code"]))
    from tiles.style import COLORS

    return _TEMPLATES.get_template("monthly.html").render(
        r=report, pct=_pct, level_zh=LEVEL_ZH, units_by_rate=units, colours=COLORS
    )


def pdf(report: dict[str, Any]) -> bytes:
    from weasyprint import HTML

    return HTML(string=html(report)).write_pdf()


def filename(report: dict[str, Any], extension: str) -> str:
    return f"report-{report['code']}-{report['month']}.{extension}"


def build(session, caches, settings, code: str, month: str, now) -> dict[str, Any]:
    """The report of ``code`` for ``month`` (YYYY-MM) with the service's settings, as of
    ``now`` (the clock)."""
    from layers import report

    s = settings.events
    calendar = s.calendar(session)
    first = report.parse_month(month, now.astimezone(calendar.tz).date())
    return report.monthly(
        session,
        caches,
        code=code,
        month=first,
        thresholds=settings.coverage.thresholds(),
        calendar=calendar,
        min_sample=s.min_sample,
        now=now,
    )

"""Rankings of the units of a staff member's area on the web map (ranking.js), in a real
browser: the table holds the coverage analysis of every unit below the signed-in area
(its figures and ranks as the service computes them), sorts by any figure, flies the map
to a unit clear of the panel, exports the service's CSV, and is there for admins and
dispatchers only."""

from __future__ import annotations

import csv
import io
from decimal import ROUND_HALF_UP, Decimal

import pytest

from tests.web_map.helpers import (
    bearer,
    get_json,
    open_map,
    sign_in,
)

pytestmark = pytest.mark.browser

READY = "document.getElementById('ranking').dataset.state === 'ready'"


def summary(base: str, username: str, level: str) -> list[dict]:
    answer = get_json(f"{base}/v1/coverage/summary?level={level}&format=geojson", bearer(base, username))
    return [{**f["properties"], "geometry": f["geometry"]} for f in answer["features"]]


def shown(page) -> list[dict]:
    return page.evaluate(
        """() => [...document.querySelectorAll('#ranking-table tbody tr')].map((tr) => ({
            code: tr.dataset.code,
            cells: [...tr.querySelectorAll('td')].map((td) => td.textContent),
        }))"""
    )


def expected_order(units: list[dict], key: str, ascending: bool = False) -> list[str]:
    def value(u):
        return sum(u["issues"].values()) if key == "issues" else u[key]

    known = [u for u in units if value(u) is not None]
    known.sort(key=lambda u: (value(u) if ascending else -value(u), u["code"]))
    return [u["code"] for u in known] + sorted(u["code"] for u in units if value(u) is None)


def percent(v) -> str:
    """As the page shows a share: a percentage to one decimal, halves rounded up (四舍五入)."""
    if v is None:
        return "—"
    return f"{(Decimal(str(v)) * 100).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}%"


def bbox(geometry: dict) -> tuple[float, float, float, float]:
    from shapely.geometry import shape

    return shape(geometry).bounds


def test_district_admin_ranks_streets_sorts_flies_and_exports(page, live_server):
    open_map(page, live_server)
    sign_in(page, "admin")
    page.wait_for_function(READY)
    assert page.is_visible("#ranking")
    assert page.eval_on_selector_all("#ranking-level option", "os => os.map((o) => o.value)") == [
        "street",
        "community",
        "grid",
    ]

    streets = summary(live_server, "admin", "street")
    by_code = {u["code"]: u for u in streets}
    rows = shown(page)
    # by registration rate, best first, each with the service's rank and figures
    assert [r["code"] for r in rows] == expected_order(streets, "registration_rate")
    assert len(rows) == 14
    for r in rows:
        u = by_code[r["code"]]
        rank, name, rate, registered, branch, roles, issues = r["cells"]
        assert rank == str(u["rank"]["registration_rate"]) and name == u["name"]
        assert rate == percent(u["registration_rate"]) and branch == percent(u["branch_share"])
        assert roles == percent(u["roles_filled_share"]) and registered == f"{u['members_registered']:,}"
        assert issues == str(sum(u["issues"].values()))

    # another figure, then the other way round
    page.click("#ranking-table button.sort[data-key=branch_share]")
    page.wait_for_function("document.getElementById('ranking').dataset.sort === 'branch_share'")
    rows = shown(page)
    assert [r["code"] for r in rows] == expected_order(streets, "branch_share")
    assert [r["cells"][0] for r in rows] == [str(by_code[r["code"]]["rank"]["branch_share"]) for r in rows]
    page.click("#ranking-table button.sort[data-key=branch_share]")
    rows = shown(page)
    assert [r["code"] for r in rows] == expected_order(streets, "branch_share", ascending=True)
    assert [r["cells"][0] for r in rows] == [str(i + 1) for i in range(len(rows))]  # positions, not ranks
    page.click("#ranking-table button.sort[data-key=issues]")
    assert [r["code"] for r in shown(page)] == expected_order(streets, "issues")

    # a unit's name flies the map there, beside the panel
    target = shown(page)[3]["code"]
    w, s, e, n = bbox(by_code[target]["geometry"])
    page.click(f'#ranking-table tr[data-code="{target}"] button.link')
    page.wait_for_function(
        """([w, s, e, n]) => { const m = window.gridbranchMap; const c = m.getCenter();
             return !m.isMoving() && c.lng > w && c.lng < e && c.lat > s && c.lat < n; }""",
        arg=[w, s, e, n],
        timeout=15_000,
    )
    corners = page.evaluate(
        """([w, s, e, n]) => [window.gridbranchMap.project([w, n]), window.gridbranchMap.project([e, s])]
             .map((p) => [p.x, p.y])""",
        [w, s, e, n],
    )
    panel = page.eval_on_selector("#panel", "p => p.getBoundingClientRect().right")
    width, height = page.viewport_size["width"], page.viewport_size["height"]
    assert corners[0][0] >= panel - 1 and corners[1][0] <= width + 1  # the whole street, clear of the panel
    assert corners[0][1] >= -1 and corners[1][1] <= height + 1

    # communities: every one of the district, in the order chosen before
    page.select_option("#ranking-level", "community")
    page.wait_for_function("document.getElementById('ranking').dataset.level === 'community'")
    page.wait_for_function(READY)
    communities = summary(live_server, "admin", "community")
    assert [r["code"] for r in shown(page)] == expected_order(communities, "issues")
    assert len(communities) == 92

    # the CSV is the service's, under its name
    with page.expect_download() as info:
        page.click("#ranking-csv")
    download = info.value
    assert download.suggested_filename == "coverage_410105000000_community_summary.csv"
    with open(download.path(), encoding="utf-8-sig") as f:
        table = list(csv.DictReader(f))
    assert {r["code"] for r in table if r["level"] == "community"} == {u["code"] for u in communities}
    assert [(r["code"], r["level"]) for r in table if r["level"] != "community"] == [("410105000000", "district")]

    # signed out: gone
    page.click("#signout")
    page.wait_for_function("document.body.dataset.role === undefined")
    assert page.is_hidden("#ranking") and shown(page) == []


def test_street_admin_ranks_only_inside_their_street(page, live_server):
    open_map(page, live_server)
    sign_in(page, "street_admin")
    page.wait_for_function(READY)
    me = get_json(f"{live_server}/v1/auth/me", bearer(live_server, "street_admin"))
    prefix = me["area_code"][:9]
    assert page.eval_on_selector_all("#ranking-level option", "os => os.map((o) => o.value)") == ["community", "grid"]
    rows = shown(page)
    assert rows and all(r["code"].startswith(prefix) for r in rows)
    assert [r["code"] for r in rows] == expected_order(
        summary(live_server, "street_admin", "community"), "registration_rate"
    )
    page.select_option("#ranking-level", "grid")
    page.wait_for_function("document.getElementById('ranking').dataset.level === 'grid'")
    page.wait_for_function(READY)
    grids = shown(page)
    assert len(grids) > len(rows) and all(r["code"].startswith(prefix) and len(r["code"]) == 15 for r in grids)


@pytest.mark.parametrize("username, visible", [("dispatcher", True), ("member", False), ("gridworker", False)])
def test_rankings_are_for_admins_and_dispatchers(page, live_server, username, visible):
    open_map(page, live_server)
    sign_in(page, username)
    if visible:
        page.wait_for_function(READY)
        assert len(shown(page)) == 14  # the district's streets
    else:
        page.wait_for_timeout(300)
        assert page.is_hidden("#ranking") and shown(page) == []


def test_csv_rows_match_the_table(page, live_server):
    """The export and the table are the same figures (the CSV parsed as a spreadsheet would)."""
    open_map(page, live_server)
    sign_in(page, "admin")
    page.wait_for_function(READY)
    with page.expect_download() as info:
        page.click("#ranking-csv")
    with open(info.value.path(), "rb") as f:
        text = f.read().decode("utf-8-sig")
    table = {r["code"]: r for r in csv.DictReader(io.StringIO(text))}
    for r in shown(page):
        assert percent(float(table[r["code"]]["registration_rate"])) == r["cells"][2]


def test_the_monthly_report_downloads_as_pdf(page, live_server):
    """月度报告 (issue 21 item 4) from the rankings panel: the month before the service's
    clock's, as a PDF made by the service (its first page names the district and month)."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    import pypdf

    from tests.conftest import TEST_CLOCK

    today = TEST_CLOCK.now().astimezone(ZoneInfo("Asia/Shanghai")).date()
    month = (today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    open_map(page, live_server)
    sign_in(page, "admin")
    page.wait_for_function(READY)
    assert len(page.input_value("#ranking-report-month")) == 7  # a month is proposed (YYYY-MM)
    page.fill("#ranking-report-month", month)
    with page.expect_download(timeout=60_000) as info:
        page.click("#ranking-report")
    download = info.value
    assert download.suggested_filename == f"report-410105000000-{month}.pdf"
    with open(download.path(), "rb") as f:
        reader = pypdf.PdfReader(f)
        first = reader.pages[0].extract_text()
    assert "金水区" in first and month in first
    page.wait_for_function("document.querySelector('.ranking-message').textContent.includes('已下载')")

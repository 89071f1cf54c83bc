"""Keeping a grid's worker and branches current on the web map (upkeep.js), in Debian's
chromium against the database: an admin corrects a grid worker (a bad phone refused with
the service's reason), sets up a grid branch whose activity site is picked on the map, and
dissolves it; the grid's colour on the map follows each step. Nobody else gets the panel."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.web_map.helpers import (
    api_grids,
    bearer,
    get_json,
    inner_point,
    move_to,
    open_map,
    pick_grid,
    sign_in,
    to_lonlat,
    to_screen,
)

pytestmark = pytest.mark.browser

HAS_BRANCH_ON_MAP = """(code) => {
    const found = window.gridbranchMap.querySourceFeatures('gridbranch',
        {sourceLayer: 'grids', filter: ['==', ['get', 'code'], code]});
    return found.length ? Boolean(found[0].properties.has_branch) : null;
}"""


def select_grid(page, code: str, x: float, y: float) -> None:
    page.mouse.click(x, y)
    page.wait_for_function(
        f"document.getElementById('grid-info').dataset.code === '{code}' && "
        "document.getElementById('grid-info').dataset.state === 'ready'"
    )


def wait_message(page, panel: str, text_: str) -> str:
    page.wait_for_function(
        "([panel, text]) => (document.querySelector(`${panel} .upkeep-message`)?.textContent || '').includes(text)",
        arg=[panel, text_],
        timeout=30_000,
    )
    return page.inner_text(f"{panel} .upkeep-message")


def test_an_admin_keeps_a_grids_worker_and_branch(page, page_log, live_server, demo_engine):
    open_map(page, live_server)
    grid, _ = pick_grid(page, live_server, False)
    code, name = grid["properties"]["code"], grid["properties"]["name"]
    lon, lat = inner_point(grid["geometry"])
    move_to(page, lon, lat, 16)
    x, y = to_screen(page, lon, lat)
    with demo_engine.connect() as conn:
        worker = conn.execute(text("SELECT worker_name, worker_phone FROM grids WHERE code = :c"), {"c": code}).one()
    panel = f".upkeep[data-code='{code}']"

    # anonymous: the grid's details, no upkeep
    select_grid(page, code, x, y)
    assert page.query_selector(panel) is None
    sign_in(page, "admin")
    page.wait_for_selector(panel)
    made = []
    try:
        # 1. the grid worker: a bad phone is refused with the service's reason, then saved
        page.fill(f"{panel} .upkeep-worker input[name=name]", "郑新")
        page.fill(f"{panel} .upkeep-worker input[name=phone]", "12345")
        page.click(f"{panel} .upkeep-worker button.save")
        refused = wait_message(page, panel, "保存失败")
        assert "worker_phone" in refused
        page.fill(f"{panel} .upkeep-worker input[name=phone]", "139 1111 2222")
        page.click(f"{panel} .upkeep-worker button.save")
        wait_message(page, panel, "已更新网格员：郑新")
        assert page.inner_text("#grid-info .grid-worker") == "郑新（13911112222）"
        with demo_engine.connect() as conn:
            assert conn.execute(
                text("SELECT worker_name, worker_phone FROM grids WHERE code = :c"), {"c": code}
            ).one() == ("郑新", "13911112222")

        # 2. a new grid branch, its activity site picked on the map (below the popup)
        assert page.evaluate(HAS_BRANCH_ON_MAP, code) is False
        page.click(f"{panel} button.new-branch")
        form = f"{panel} .upkeep-new-branch"
        assert page.input_value(f"{form} input[name=name]") == f"{name}党支部"
        page.fill(f"{form} input[name=secretary_name]", "周红")
        page.fill(f"{form} input[name=secretary_phone]", "13600002222")
        page.click(f"{form} button.pick-site")
        site_xy = (x, y + 40)
        site = to_lonlat(page, *site_xy)
        page.mouse.click(*site_xy)
        assert f"{site[0]:.6f}, {site[1]:.6f}" in page.inner_text(f"{form} .upkeep-site")
        assert page.evaluate("document.getElementById('grid-info').dataset.code") == code  # the click picked only
        page.click(f"{form} button.save")
        wait_message(page, panel, "已建立")
        with demo_engine.connect() as conn:
            row = conn.execute(
                text("""
                SELECT b.code, b.kind, b.active, b.secretary_name, ST_X(b.site), ST_Y(b.site)
                  FROM branches b JOIN branch_grids bg ON bg.branch_id = b.id JOIN grids g ON g.id = bg.grid_id
                 WHERE g.code = :c AND b.active"""),
                {"c": code},
            ).one()
        made.append(row[0])
        assert row[1:4] == ("grid", True, "周红")
        assert row[4] == pytest.approx(site[0], abs=1e-6) and row[5] == pytest.approx(site[1], abs=1e-6)
        page.wait_for_function(f"({HAS_BRANCH_ON_MAP})('{code}') === true", timeout=30_000)
        branch_row = f"{panel} .upkeep-branch[data-code='{row[0]}']"
        assert page.is_visible(branch_row) and page.query_selector(f"{panel} button.new-branch") is None

        # 3. renamed: the site, not picked again, stays where it was
        page.click(f"{branch_row} button.edit")
        page.wait_for_selector(f"{branch_row} form")
        page.fill(f"{branch_row} input[name=name]", "郑新网格党支部")
        page.click(f"{branch_row} button.save")
        wait_message(page, panel, "已保存：郑新网格党支部")
        with demo_engine.connect() as conn:
            assert conn.execute(
                text("SELECT name, ST_X(site), ST_Y(site) FROM branches WHERE code = :c"), {"c": row[0]}
            ).one() == ("郑新网格党支部", row[4], row[5])

        # 4. dissolved (a second click confirms): the grid is branchless on the map again
        page.click(f"{branch_row} button.edit")
        page.wait_for_selector(f"{branch_row} form")
        assert page.input_value(f"{branch_row} input[name=secretary_phone]") == "13600002222"
        page.click(f"{branch_row} button.dissolve")
        assert page.inner_text(f"{branch_row} button.dissolve") == "确认撤销"
        page.click(f"{branch_row} button.dissolve")
        wait_message(page, panel, "已撤销")
        with demo_engine.connect() as conn:
            assert conn.execute(text("SELECT active FROM branches WHERE code = :c"), {"c": row[0]}).scalar() is False
        page.wait_for_function(f"({HAS_BRANCH_ON_MAP})('{code}') === false", timeout=30_000)
        assert page.is_visible(f"{panel} button.new-branch")

        # the panel's record of it all, newest first, by whom
        log = page.locator(f"{panel} .upkeep-log li")
        page.wait_for_function(f'document.querySelectorAll("{panel} .upkeep-log li").length >= 5')
        lines = log.all_inner_texts()
        assert lines[0] == "最近维护记录"
        assert "admin 撤销：郑新网格党支部" in lines[1] and "admin 修改：郑新网格党支部" in lines[2]
        assert f"admin 建立：{name}党支部" in lines[3]
        assert "admin 网格员变更" in lines[4] and "→ 郑新" in lines[4]

        # 5. restored from the record: the grid has its branch again
        restore = f"{panel} .upkeep-log li:nth-child(2) button.restore"
        page.click(restore)
        wait_message(page, panel, "已恢复：郑新网格党支部")
        page.wait_for_function(f"({HAS_BRANCH_ON_MAP})('{code}') === true", timeout=30_000)
        with demo_engine.connect() as conn:
            assert conn.execute(text("SELECT active FROM branches WHERE code = :c"), {"c": row[0]}).scalar() is True
        page.wait_for_function(f'document.querySelectorAll("{panel} .upkeep-log li").length >= 2')
        assert "admin 恢复：郑新网格党支部" in page.locator(f"{panel} .upkeep-log li").nth(1).inner_text()
        assert page.query_selector(f"{panel} .upkeep-log button.restore") is None  # restored: nothing to restore

        # 6. signed out, the panel goes
        page.click("#signout")
        page.wait_for_function("document.body.dataset.role === undefined")
        page.wait_for_selector(panel, state="detached")
        assert page_log.page_errors == [] and page_log.foreign == []
        assert all(b.endswith(f"/v1/grids/{code}/worker") and " 422 " in f" {b} " for b in page_log.bad_status), (
            page_log.bad_status
        )
    finally:
        with demo_engine.begin() as conn:
            conn.execute(
                text("UPDATE grids SET worker_name = :n, worker_phone = :p WHERE code = :c"),
                {"n": worker[0], "p": worker[1], "c": code},
            )
            for branch in made:
                conn.execute(text("DELETE FROM branches WHERE code = :c"), {"c": branch})


def test_a_street_admin_keeps_only_the_grids_of_their_street(page, live_server):
    open_map(page, live_server)
    sign_in(page, "street_admin")
    street = get_json(f"{live_server}/v1/auth/me", bearer(live_server, "street_admin"))["area_code"]
    grids = sorted(api_grids(live_server), key=lambda g: g["properties"]["code"])
    inside = next(g for g in grids if g["properties"]["code"].startswith(street[:9]))
    outside = next(g for g in grids if not g["properties"]["code"].startswith(street[:9]))
    for grid, shown in ((inside, True), (outside, False)):
        code = grid["properties"]["code"]
        lon, lat = inner_point(grid["geometry"])
        move_to(page, lon, lat, 16)
        select_grid(page, code, *to_screen(page, lon, lat))
        assert (page.query_selector(f".upkeep[data-code='{code}']") is not None) is shown, code

"""A second real district in the browser (issue 16, item 6): 中原区 (410102) started from
files through the command line (its boundary and areas, no grids), then its district
admin imports through 数据导入 in chromium — the areas in the CRS the dry run names, then
the grids: upload, dry run with its progress, the report and the preview on the map,
commit — and the map draws 中原区's grids, locates
in them and counts them in the coverage line. On a phone (390×844) the import form is
usable in the bottom sheet."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import shapely
from sqlalchemy import text

from tests.conftest import scratch_engine
from tests.ingest.district_files import ADMIN_PASSWORD, NAME, build_district, start_deployment
from tests.web_map.conftest import PageLog, browser_settings, serving
from tests.web_map.helpers import (
    PHONE,
    move_to,
    open_map,
    pressable,
    to_screen,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def zhongyuan(server_url, tmp_path_factory):
    from geo_api.app import create_app
    from geo_api.settings import ImportSettings

    d = build_district()
    tmp = tmp_path_factory.mktemp("zhongyuan-browser")
    with scratch_engine(server_url, "imports_browser", pool=4, migrated=True) as engine:
        files = start_deployment(engine, tmp / "files", d, grids=False)
        settings = browser_settings()
        settings.imports = ImportSettings(dir=tmp / "uploads")
        with serving(create_app(settings, engine=engine)) as url:
            yield {"url": url, "engine": engine, "district": d, "files": files}


@pytest.fixture
def page_log(zhongyuan) -> PageLog:
    return PageLog(allowed={urlsplit(zhongyuan["url"]).netloc})


def sign_in(page) -> None:
    page.fill("#signin input[name=username]", "admin")
    page.fill("#signin input[name=password]", ADMIN_PASSWORD)
    page.click("#signin button[type=submit]")
    page.wait_for_function("document.body.dataset.role === 'admin'")


def test_the_district_admin_imports_grids_and_the_map_works_on_them(page, page_log, zhongyuan):
    d, engine = zhongyuan["district"], zhongyuan["engine"]
    open_map(page, zhongyuan["url"])
    assert page.inner_text("#panel h1") == f"{NAME}网格党支部地图"
    assert page.is_hidden("#imports")  # anonymous: no import
    sign_in(page)
    page.wait_for_selector("#imports", state="visible")
    # the areas again, as their Shapefile says (WGS84, though GCJ-02): the dry run names
    # the CRS they fit, and one click checks the same upload again in it
    page.set_input_files("#imports-form input[name=file]", str(zhongyuan["files"]["areas"]))
    page.select_option("#imports-form select[name=kind]", "areas")
    page.click("#imports-form button[type=submit]")
    page.wait_for_function("document.getElementById('imports').dataset.state === 'ready'", timeout=60_000)
    assert page.is_hidden("#imports-commit") and "请改用 --crs gcj02" in page.inner_text(".imports-problems")
    assert "GCJ-02" in page.inner_text("#imports-recheck")
    page.click("#imports-recheck")
    page.wait_for_function(
        "document.getElementById('imports').dataset.state === 'ready' && "
        "!document.getElementById('imports-commit').hidden",
        timeout=60_000,
    )
    n_areas = len(d.streets) + len(d.communities)
    assert f"不变 {n_areas}" in page.inner_text(".imports-summary")
    assert page.input_value("#imports-form select[name=crs]") == "gcj02"
    page.click("#imports-cancel")

    page.set_input_files("#imports-form input[name=file]", str(zhongyuan["files"]["grids"]))
    page.select_option("#imports-form select[name=crs]", "")
    page.select_option("#imports-form select[name=kind]", "grids")
    # the CRS left to the file, which says EPSG:4547
    # the progress bar shows while the file goes up and is checked
    page.click("#imports-form button[type=submit]")
    page.wait_for_function(
        "['uploading', 'checking'].includes(document.getElementById('imports').dataset.state)"
        " || document.getElementById('imports').dataset.state === 'ready'"
    )
    page.wait_for_function("document.getElementById('imports').dataset.state === 'ready'", timeout=60_000)
    assert page.is_hidden(".imports-progress")  # the bar goes once the dry run is done
    summary = page.inner_text(".imports-summary")
    assert f"新增 {len(d.grids)}" in summary and "EPSG:4547" in summary, summary
    assert page.evaluate("JSON.parse(document.getElementById('imports').dataset.preview)") == {"add": len(d.grids)}
    assert page.evaluate("Boolean(window.gridbranchMap.getLayer('import-preview-fill'))")
    assert "新增" in page.inner_text(".imports-legend")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM grids")).scalar() == 0  # a dry run writes nothing

    page.click("#imports-commit")
    page.wait_for_function("document.getElementById('imports').dataset.state === 'committed'", timeout=60_000)
    assert "已导入" in page.inner_text(".imports-message")
    assert not page.evaluate("Boolean(window.gridbranchMap.getLayer('import-preview-fill'))")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM grids")).scalar() == len(d.grids)

    # the map draws 中原区's grids from its tiles, a click on one opens it
    grid = d.grids[7]
    p = shapely.point_on_surface(grid.geom)
    move_to(page, p.x, p.y, 15)
    page.mouse.click(*to_screen(page, p.x, p.y))
    page.wait_for_function(f"document.getElementById('grid-info').dataset.code === '{grid.code}'")
    assert grid.name in page.inner_text("#grid-info")
    # locate answers on it, and the coverage line counts its grids
    located = page.evaluate(
        "async ([lon, lat]) => (await (await fetch(`/v1/locate?lon=${lon}&lat=${lat}`)).json())", [p.x, p.y]
    )
    assert located["grid"]["code"] == grid.code and located["district"]["name"] == NAME
    page.wait_for_function("document.body.dataset.stats === 'coverage'")
    page.wait_for_function(f"document.getElementById('stats').textContent.includes('{len(d.grids)}')")
    assert not page_log.page_errors and not page_log.foreign, (page_log.page_errors, page_log.foreign)


def test_a_generation_of_grids_for_a_later_day_from_the_form(page, page_log, zhongyuan, clock):
    """The generation options show for grids only and reach the dry run, whose report
    says the day it takes effect."""
    from datetime import timedelta
    from urllib.parse import parse_qs

    from layers.boundaries import LOCAL_TZ

    day = (clock.now().astimezone(LOCAL_TZ) + timedelta(days=30)).date().isoformat()
    open_map(page, zhongyuan["url"])
    sign_in(page)
    page.wait_for_selector("#imports", state="visible")
    page.select_option("#imports-form select[name=kind]", "areas")
    assert page.is_hidden(".imports-generation")
    page.select_option("#imports-form select[name=kind]", "grids")
    assert page.is_visible(".imports-generation")
    page.set_input_files("#imports-form input[name=file]", str(zhongyuan["files"]["grids"]))
    page.fill("#imports-form input[name=effective]", day)
    page.check("#imports-form input[name=retire_missing]")
    with page.expect_request(lambda r: r.method == "POST" and urlsplit(r.url).path == "/v1/imports") as sent:
        page.click("#imports-form button[type=submit]")
    query = parse_qs(urlsplit(sent.value.url).query)
    assert query["effective"] == [day] and query["retire_missing"] == ["true"]
    page.wait_for_function("document.getElementById('imports').dataset.state === 'ready'", timeout=60_000)
    summary = page.inner_text(".imports-summary")
    assert f"{day} 起生效" in summary and "撤销 0" in summary, summary
    page.click("#imports-cancel")
    assert not page_log.page_errors and not page_log.foreign, (page_log.page_errors, page_log.foreign)


def test_the_import_form_is_usable_on_a_phone(browser, zhongyuan):
    context = browser.new_context(
        viewport=PHONE, device_scale_factor=1, locale="zh-CN", is_mobile=True, has_touch=True, bypass_csp=True
    )  # (waits are evaluated JavaScript)
    page = context.new_page()
    try:
        open_map(page, zhongyuan["url"])
        sign_in(page)
        page.wait_for_selector("#imports", state="visible")
        page.evaluate("document.getElementById('panel').dataset.sheet = 'full'")
        page.eval_on_selector("#imports", "s => s.scrollIntoView({block: 'start'})")
        controls = "#imports-form select, #imports-form input, #imports-form button"
        widths = page.eval_on_selector_all(controls, "els => els.map(e => e.getBoundingClientRect().right)")
        assert widths and max(widths) <= PHONE["width"], widths  # nothing sticks out of the sheet
        heights = page.eval_on_selector_all(
            "#imports-form select, #imports-form button", "els => els.map(e => e.getBoundingClientRect().height)"
        )
        assert min(heights) >= 44, heights
        assert pressable(page, "#imports-form button") == ["上传并预检"]
        # a bad file is refused with the reason, in Chinese, inside the sheet
        page.set_input_files("#imports-form input[name=file]", str(zhongyuan["files"]["grids"]))
        page.select_option("#imports-form select[name=kind]", "members")
        page.click("#imports-form button[type=submit]")
        page.wait_for_function("document.getElementById('imports').dataset.state === 'failed'")
        assert "文件类型" in page.inner_text(".imports-message") and page.is_hidden(".imports-progress")
        assert pressable(page, ".imports-message")
    finally:
        context.close()

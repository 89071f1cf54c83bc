"""Signing in brings the account to its area (issue 22 item 5), at desk and phone sizes:
a street admin sees their street fitted and the summary line of their street, a grid
worker their grid and its own line, instead of the whole district's 共 500 个网格."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.web_map.conftest import VIEWPORT
from tests.web_map.helpers import PHONE, bearer, get_json, open_map, sign_in

pytestmark = pytest.mark.browser

VIEW = """() => { const m = window.gridbranchMap; const b = m.getBounds();
    return {zoom: m.getZoom(), bounds: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()]}; }"""


def area_of(engine, username: str) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT area_code FROM users WHERE username = :u"), {"u": username}).scalar_one()


def fitted(view: dict, bbox: list[float]) -> bool:
    """The area is in view, and the view is not much wider than the area (not the district)."""
    w, s, e, n = view["bounds"]
    inside = w <= bbox[0] + 1e-6 and s <= bbox[1] + 1e-6 and e >= bbox[2] - 1e-6 and n >= bbox[3] - 1e-6
    return inside and (e - w) < 4 * max(bbox[2] - bbox[0], bbox[3] - bbox[1]) + 0.01


@pytest.mark.parametrize("size", [VIEWPORT, PHONE], ids=["desktop", "phone"])
def test_signing_in_brings_the_account_to_its_area(page, live_server, demo_engine, size):
    page.set_viewport_size(size)
    open_map(page, live_server)
    district = page.evaluate(VIEW)
    everything = page.inner_text("#stats")
    assert everything.startswith("共 500 个网格")

    street = area_of(demo_engine, "street_admin")
    sign_in(page, "street_admin")
    assert page.evaluate("document.body.dataset.area") == street
    place = get_json(f"{live_server}/v1/places?q={street}&limit=1")["features"][0]
    assert place["properties"]["code"] == street
    view = page.evaluate(VIEW)
    assert fitted(view, place["bbox"]) and view["zoom"] > district["zoom"], (view, place["bbox"])
    total = get_json(f"{live_server}/v1/coverage/summary", bearer(live_server, "street_admin"))["total"]
    assert 0 < total["grids"] < 500
    page.wait_for_function("document.body.dataset.stats === 'coverage'")
    line = page.inner_text("#stats")
    without = total["grids"] - total["grids_with_branch"]
    assert line.startswith(f"共 {total['grids']} 个网格，其中 {without} 个无党支部"), line
    assert place["properties"]["name"] in line

    grid = area_of(demo_engine, "gridworker")
    sign_in(page, "gridworker")
    assert page.evaluate("document.body.dataset.area") == grid
    place = get_json(f"{live_server}/v1/places?q={grid}&limit=1")["features"][0]
    view = page.evaluate(VIEW)
    assert fitted(view, place["bbox"]) and view["zoom"] >= 14, (view, place["bbox"])
    page.wait_for_function("document.body.dataset.stats === 'grid'")
    own = get_json(f"{live_server}/v1/grids/{grid}", bearer(live_server, "gridworker"))["properties"]
    line = page.inner_text("#stats")
    assert line.startswith(f"共 1 个网格，其中 {0 if own['has_branch'] else 1} 个无党支部"), line
    assert f"{own['name']}（本网格）" in line
    page.screenshot(path=f"/tmp/gridbranch-area-{size['width']}.png")

    # an account without an area (the dispatcher) stays where it is, with the district's line
    sign_in(page, "dispatcher")
    assert page.evaluate("document.body.dataset.area") == ""
    page.wait_for_function("document.body.dataset.stats === 'coverage'")
    assert page.inner_text("#stats").startswith("共 500 个网格")

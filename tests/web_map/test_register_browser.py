"""Registration at the residence grid on the web map, in a real browser: a member signs
in, finds where they live (coordinates typed from Amap in GCJ-02, a click on the map,
the phone's position), sees the grid it falls in, registers with a service role; an
admin sees the pending registration, rejects it with a reason or confirms it; the
member sees the outcome. Every step is checked against the database.

The member and their account are made for each test and removed afterwards, with
everything they registered, so the demo's figures are as before."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.crs import from_wgs84
from tests.conftest import TEST_PASSWORD
from tests.factories import add_member, add_user
from tests.web_map.helpers import (
    get_json,
    inner_point,
    open_map,
    pick_grid,
    registrations,
    sign_in,
    submit,
    to_screen,
    wait_located,
    wait_state,
)

pytestmark = pytest.mark.browser

MEMBER = "reg_member"
NAME = "测试报到党员"


@pytest.fixture
def member(demo_engine):
    with Session(demo_engine) as s:
        mid = add_member(s, NAME, number="TEST-REG-0001", phone="13912345678")
        add_user(s, MEMBER, "member", member_id=mid, password=TEST_PASSWORD)
        s.commit()
    try:
        yield mid
    finally:
        with demo_engine.begin() as conn:
            conn.execute(text("DELETE FROM registrations WHERE member_id = :m"), {"m": mid})
            conn.execute(text("DELETE FROM residences WHERE member_id = :m"), {"m": mid})
            conn.execute(text("DELETE FROM users WHERE username = :u"), {"u": MEMBER})
            conn.execute(text("DELETE FROM members WHERE id = :m"), {"m": mid})


REGISTERED_ON_MAP = """(code) => {
    const found = window.gridbranchMap.querySourceFeatures('gridbranch',
        {sourceLayer: 'grids', filter: ['==', ['get', 'code'], code]});
    return found.length ? found[0].properties.registered : null;
}"""


def registered_on_map(page, code: str):
    """The grid's confirmed registrations as the map's grids tiles hold them."""
    return page.evaluate(REGISTERED_ON_MAP, code)


def test_member_registers_where_they_live_and_an_admin_decides(page, page_log, live_server, demo_engine, member):
    open_map(page, live_server)
    grid, _ = pick_grid(page, live_server, True)
    code, lon, lat = grid["properties"]["code"], *inner_point(grid["geometry"])
    roles = get_json(f"{live_server}/v1/registrations/roles")["roles"]

    sign_in(page, MEMBER)
    wait_state(page, "none")
    assert page.inner_text("#register-current") == "尚未在居住地网格报到。"
    assert page.is_hidden("#pending") and page.is_hidden(".register-move")
    # the roles arrive by their own request: wait for them rather than read a half-filled list
    page.wait_for_function(
        "(n) => document.querySelectorAll('#register-form select[name=role] option').length > n", arg=len(roles)
    )
    options = page.eval_on_selector_all(
        "#register-form select[name=role] option", "os => os.map((o) => [o.value, o.text])"
    )
    assert options[1:] == [[r["code"], r["name"]] for r in roles]

    # 1. coordinates copied from Amap (GCJ-02): converted and located by the service
    gx, gy = from_wgs84(lon, lat, "gcj02")
    page.select_option("#register-form select[name=crs]", "gcj02")
    page.fill("#register-form input[name=lon]", f"{gx:.7f}")
    page.fill("#register-form input[name=lat]", f"{gy:.7f}")
    page.press("#register-form input[name=lat]", "Tab")
    wait_located(page, code)
    assert grid["properties"]["name"] in page.inner_text("#register-located")
    submit(page, roles[0]["code"])
    wait_state(page, "pending")
    assert "已提交报到" in page.inner_text(".register-message")
    assert f"当前报到：{grid['properties']['name']}" in page.inner_text("#register-current")
    (first,) = registrations(demo_engine, member)
    assert first[1:5] == ("pending", None, roles[0]["code"], code)
    assert first[5] == "gcj02" and first[6] == pytest.approx(gx, abs=1e-7) and first[7] == pytest.approx(gy, abs=1e-7)
    assert first[8] == pytest.approx(lon, abs=1e-6) and first[9] == pytest.approx(lat, abs=1e-6)

    # 2. with one active the form waits behind 重新报到, which offers the move; a second
    # registration without it is refused, and the page says how to move house
    assert page.is_hidden("#register-form") and page.is_visible("#register-again")
    page.click("#register-again")
    assert page.is_visible("#register-form") and page.is_hidden("#register-again")
    assert page.is_visible(".register-move") and page.is_checked("#register-form input[name=move]")
    page.uncheck("#register-form input[name=move]")
    submit(page, roles[1]["code"])
    page.wait_for_function("document.querySelector('.register-message').textContent.includes('已搬家')")
    assert len(registrations(demo_engine, member)) == 1

    # 3. the admin rejects it: a reason is required
    sign_in(page, "admin")
    item = f"#pending-list li[data-id='{first[0]}']"
    page.wait_for_selector(item)
    assert page.is_hidden("#register")
    assert f"{NAME} → {grid['properties']['name']}" in page.inner_text(item)
    page.click(f"{item} button.reject")
    assert page.is_visible(f"{item} input.reason")
    page.click(f"{item} button.reject")
    assert page.inner_text(f"{item} .pending-error") == "请填写退回原因。"
    assert registrations(demo_engine, member)[0][1] == "pending"
    page.fill(f"{item} input.reason", "门牌号与网格不符")
    page.click(f"{item} button.reject")
    page.wait_for_selector(item, state="detached")
    assert "已退回" in page.inner_text(".pending-summary")
    assert registrations(demo_engine, member)[0][1:3] == ("rejected", "门牌号与网格不符")

    # 4. the member sees why, and registers again by clicking where they live on the map
    sign_in(page, MEMBER)
    wait_state(page, "none")
    assert "已被退回：门牌号与网格不符" in page.inner_text("#register-current")
    page.click("#register-pick")
    x, y = to_screen(page, lon, lat)
    page.mouse.click(x, y)
    wait_located(page, code)
    assert page.query_selector(".maplibregl-popup") is None  # the click placed the residence, nothing else
    assert page.input_value("#register-form select[name=crs]") == "wgs84"
    submit(page, roles[2]["code"])
    wait_state(page, "pending")
    second = registrations(demo_engine, member)[-1]
    assert second[1] == "pending" and second[3] == roles[2]["code"] and second[4] == code and second[5] == "wgs84"
    assert second[8] == pytest.approx(lon, abs=2e-3) and second[9] == pytest.approx(lat, abs=2e-3)

    # 5. the admin confirms it: the grid's figure on the map follows at once (the page
    # fetches its tiles again, revalidated); the member sees it confirmed
    sign_in(page, "admin")
    item = f"#pending-list li[data-id='{second[0]}']"
    page.wait_for_selector(item)
    before = registered_on_map(page, code)
    assert isinstance(before, int)
    page.click(f"{item} button.confirm")
    page.wait_for_selector(item, state="detached")
    assert registrations(demo_engine, member)[-1][1] == "confirmed"
    page.wait_for_function(f"({REGISTERED_ON_MAP})({json.dumps(code)}) === {before + 1}", timeout=30_000)
    sign_in(page, MEMBER)
    wait_state(page, "confirmed")
    assert page.inner_text("#register-current").endswith("已确认")
    assert page.is_hidden("#register-form") and page.is_visible("#register-again")
    home = [float(v) for v in page.get_attribute("#register", "data-home").split(",")]
    assert home == [pytest.approx(second[8], abs=1e-7), pytest.approx(second[9], abs=1e-7)]
    assert len(page.query_selector_all(".maplibregl-marker")) == 1  # the grey pin; no new point chosen yet
    page.click("#signout")
    page.wait_for_function("document.body.dataset.role === undefined")
    assert page.query_selector_all(".maplibregl-marker") == [] and page.get_attribute("#register", "data-home") is None

    assert page_log.page_errors == [] and page_log.failed == [] and page_log.foreign == []
    assert all(" 409 " in f" {b} " and b.endswith("/v1/registrations") for b in page_log.bad_status), (
        page_log.bad_status
    )


def test_member_registers_from_the_phones_position(page, live_server, demo_engine, member):
    open_map(page, live_server)
    grid, _ = pick_grid(page, live_server, False)
    code, lon, lat = grid["properties"]["code"], *inner_point(grid["geometry"])
    sign_in(page, MEMBER)
    wait_state(page, "none")

    # without the permission the page says so and offers the other ways
    page.click("#register-locate-me")
    page.wait_for_function("document.querySelector('.register-message').textContent.includes('无法获取当前位置')")
    assert page.is_hidden("#register-located")

    page.context.grant_permissions(["geolocation"], origin=live_server)
    page.context.set_geolocation({"longitude": lon, "latitude": lat, "accuracy": 18})
    page.click("#register-locate-me")
    wait_located(page, code)
    assert page.input_value("#register-form input[name=lon]") == f"{lon:.7f}"
    assert page.input_value("#register-form input[name=lat]") == f"{lat:.7f}"
    page.wait_for_function("window.gridbranchMap.getZoom() >= 15 && !window.gridbranchMap.isMoving()")
    submit(page, get_json(f"{live_server}/v1/registrations/roles")["roles"][0]["code"])
    wait_state(page, "pending")
    (reg,) = registrations(demo_engine, member)
    assert reg[4] == code and reg[5] == "wgs84" and reg[10] == 18
    assert reg[8] == pytest.approx(lon, abs=1e-7) and reg[9] == pytest.approx(lat, abs=1e-7)


def test_on_a_phone_the_form_comes_into_view_after_signing_in(page, live_server, member):
    from playwright.sync_api import expect

    page.set_viewport_size({"width": 390, "height": 844})
    open_map(page, live_server)
    sign_in(page, MEMBER)
    wait_state(page, "none")
    expect(page.locator("#register-title")).to_be_in_viewport()
    expect(page.locator("#register-locate-me")).to_be_in_viewport()


def test_pending_registrations_page_in_newest_first(page, live_server, demo_engine):
    with demo_engine.connect() as conn:
        expected = [
            r[0]
            for r in conn.execute(
                text("SELECT id FROM registrations WHERE status = 'pending' ORDER BY created_at DESC, id DESC")
            )
        ]
    if len(expected) <= 50:
        raise AssertionError(f"the demo has only {len(expected)} pending registrations: too few to page")
    open_map(page, live_server)
    sign_in(page, "admin")
    page.wait_for_selector("#pending-list li.pending-item")

    def ids():
        return page.eval_on_selector_all("#pending-list li.pending-item", "ls => ls.map((l) => Number(l.dataset.id))")

    assert ids() == expected[:50]
    assert f"本辖区有 {len(expected)} 条报到待确认（已显示最新 50 条）" in page.inner_text(".pending-summary")
    page.click("#pending-list li.pending-more button")
    page.wait_for_function("document.querySelectorAll('#pending-list li.pending-item').length > 50")
    assert ids() == expected[:100]
    more = page.query_selector_all("#pending-list li.pending-more")
    if len(expected) > 100:
        assert len(more) == 1 and f"还有 {len(expected) - 100} 条" in more[0].inner_text()
    else:
        assert more == []


ENGLISH = r"[A-Za-z]{3,}"  # a word of English prose (codes and numbers are digits)


def test_on_a_phone_typed_points_speak_chinese_paste_whole_and_move_the_map(page, live_server, demo_engine, member):
    """Found on a phone (issue 22, item 4): the service's refusals reached the member in
    English, a geolocation failure stayed after coordinates were typed, a pasted
    ``lon,lat`` pair did nothing, typed points did not move the map, and registering
    again in the grid of a confirmed registration made it pending without a word."""
    import re

    open_map(page, live_server)
    grid, _ = pick_grid(page, live_server, False)  # (at desktop size: a grid clear of overlaps)
    code, lon, lat = grid["properties"]["code"], *inner_point(grid["geometry"])
    roles = get_json(f"{live_server}/v1/registrations/roles")["roles"]
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page, MEMBER)
    wait_state(page, "none")
    page.click("#register-locate-me")  # no permission: the page says so
    page.wait_for_function("document.querySelector('.register-message').textContent.includes('无法获取当前位置')")

    # a latitude out of range: refused in Chinese, and the geolocation failure is gone
    page.fill("#register-form input[name=lon]", "113.69")
    page.fill("#register-form input[name=lat]", "95")
    page.press("#register-form input[name=lat]", "Tab")
    page.wait_for_function("!document.getElementById('register-located').hidden")
    refusal = page.inner_text("#register-located")
    assert "纬度" in refusal and not re.search(ENGLISH, refusal), refusal
    assert page.is_hidden(".register-message")
    # far from every grid: the nearest one named, in Chinese
    page.fill("#register-form input[name=lon]", "114.30")
    page.fill("#register-form input[name=lat]", "34.80")
    page.press("#register-form input[name=lat]", "Tab")
    page.wait_for_function("document.getElementById('register-located').textContent.includes('米')")
    refusal = page.inner_text("#register-located")
    assert "最近的网格" in refusal and not re.search(ENGLISH, refusal), refusal

    # a pair copied from a map app, pasted into 经度: both fields, located, the map there
    assert page.evaluate("window.gridbranchMap.getZoom()") < 15  # (refusals leave the map as it was)
    page.fill("#register-form input[name=lon]", f"{lon:.7f},{lat:.7f}")
    wait_located(page, code)
    assert page.input_value("#register-form input[name=lon]") == f"{lon:.7f}"
    assert page.input_value("#register-form input[name=lat]") == f"{lat:.7f}"
    page.wait_for_function(
        "([x, y]) => { const m = window.gridbranchMap; "
        "return !m.isMoving() && m.getZoom() >= 15 && m.getBounds().contains([x, y]); }",
        arg=[lon, lat],
    )
    # in Baidu's and Google's order (lat, lon) with a full-width comma: the same point
    page.fill("#register-form input[name=lat]", f"{lat:.7f}，{lon:.7f}")
    assert page.input_value("#register-form input[name=lon]") == f"{lon:.7f}"
    wait_located(page, code)
    submit(page, roles[0]["code"])
    wait_state(page, "pending")

    # confirmed (by the grid's admin); registering again there with another role warns first
    (reg,) = registrations(demo_engine, member)
    with demo_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE registrations SET status = 'confirmed', decided_at = gridbranch_now(), "
                "decided_by = 'admin' WHERE id = :r"
            ),
            {"r": reg[0]},
        )
    page.reload()
    open_map(page, live_server)
    if page.is_visible("#signin input[name=username]"):
        sign_in(page, MEMBER)
    wait_state(page, "confirmed")
    page.click("#register-again")
    page.fill("#register-form input[name=lon]", f"{lon:.7f},{lat:.7f}")
    wait_located(page, code)
    submit(page, roles[1]["code"])
    page.wait_for_function("document.querySelector('.register-message').textContent.includes('重新审核')")
    assert [r[1] for r in registrations(demo_engine, member)] == ["confirmed"]  # nothing sent yet
    page.click("#register-form button[type=submit]")
    wait_state(page, "pending")
    assert [r[1] for r in registrations(demo_engine, member)][-1] == "pending"

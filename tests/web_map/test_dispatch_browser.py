"""Event handling on the web map, in a real browser: a dispatcher clicks an event just
reported, sees its record and the actions their role may take, registers and dispatches
it to the department the service routes it to (reasons required where the lifecycle
asks for one), and the map redraws the event from fresh tiles. Checked against the
database; the event is made for the test and removed afterwards."""

from __future__ import annotations

import json
from urllib.request import Request, urlopen

import pytest
from sqlalchemy import text

from tests.web_map.helpers import (
    PHONE,
    bearer,
    department_code,
    drop_events,
    get_json,
    inner_point,
    move_to,
    open_map,
    pick_grid,
    post_json,
    pressable,
    sign_in,
    source_features,
    to_screen,
    wait_idle,
)

pytestmark = [pytest.mark.browser, pytest.mark.clock]


@pytest.fixture
def fresh_event(page, live_server, demo_engine):
    """An event reported anonymously inside a big grid with a branch; removed afterwards."""
    open_map(page, live_server)
    grid, _ = pick_grid(page, live_server, True)
    lon, lat = inner_point(grid["geometry"])
    category = get_json(f"{live_server}/v1/events/categories")["categories"][0]["code"]
    body = json.dumps({"lon": lon, "lat": lat, "category": category, "description": "浏览器测试：路面积水"}).encode()
    with urlopen(
        Request(f"{live_server}/v1/events", data=body, headers={"Content-Type": "application/json"}), timeout=30
    ) as r:
        event = json.load(r)
    try:
        yield {**event, "lon": lon, "lat": lat}
    finally:
        drop_events(demo_engine, [event["id"]])


def db_event(engine, event_id: int):
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT e.status, d.code FROM events e LEFT JOIN departments d ON d.id = e.department_id WHERE e.id = :e"
            ),
            {"e": event_id},
        ).one()


def test_dispatcher_registers_and_dispatches_an_event_from_the_map(
    page, page_log, live_server, demo_engine, fresh_event
):
    eid = fresh_event["id"]
    assert db_event(demo_engine, eid)[0] == "reported"
    sign_in(page, "dispatcher")
    move_to(page, fresh_event["lon"], fresh_event["lat"], 17)
    wait_idle(page)
    assert any(f["id"] == eid and f["properties"]["status"] == "reported" for f in source_features(page, "events"))
    page.mouse.click(*to_screen(page, fresh_event["lon"], fresh_event["lat"]))
    box = f".event-actions[data-id='{eid}']"
    page.wait_for_selector(f"{box}[data-status='reported']")
    actions = page.eval_on_selector_all(f"{box} button.action", "bs => bs.map((b) => b.dataset.action)")
    assert actions == ["register", "reject", "mark_duplicate"]

    # a rejection needs a reason: nothing is sent without one
    page.click(f"{box} button[data-action='reject']")
    page.click(f"{box} button.action-submit")
    assert page.inner_text(f"{box} .action-message") == "请填写原因。"
    assert db_event(demo_engine, eid)[0] == "reported"

    # 登记: nothing to ask but the confirmation (no action is taken on one click)
    page.click(f"{box} button[data-action='register']")
    page.click(f"{box} button.action-submit")
    page.wait_for_selector(f"{box}[data-status='registered']")
    assert db_event(demo_engine, eid)[0] == "registered"

    # 派遣: the routed department proposed, then sent
    routing = get_json(f"{live_server}/v1/events/{eid}/routing", bearer(live_server, "dispatcher"))
    page.click(f"{box} button[data-action='dispatch']")
    page.wait_for_selector(f"{box} input.department")
    assert page.input_value(f"{box} input.department") == routing["department"]["name"]
    page.click(f"{box} button.action-submit")
    page.wait_for_selector(f"{box}[data-status='dispatched']")
    assert db_event(demo_engine, eid) == ("dispatched", routing["department"]["code"])
    assert f"承办：{routing['department']['name']}" in page.inner_text(f"{box} .action-summary")

    # the map fetched its tiles again: the event is drawn as dispatched
    page.wait_for_function(
        """(id) => window.gridbranchMap.querySourceFeatures('gridbranch', {sourceLayer: 'events'})
            .some((f) => f.id === id && f.properties.status === 'dispatched')""",
        arg=eid,
    )
    assert page_log.page_errors == [] and page_log.failed == [] and page_log.bad_status == []


def test_anonymous_and_member_callers_get_no_event_actions(page, live_server, demo_engine, fresh_event):
    move_to(page, fresh_event["lon"], fresh_event["lat"], 17)
    page.mouse.click(*to_screen(page, fresh_event["lon"], fresh_event["lat"]))
    page.wait_for_selector(".popup-event")
    assert page.query_selector(".event-actions") is None


def test_lifecycle_actions_ask_first_and_closing_says_it_is_final(page, live_server, demo_engine, fresh_event):
    """Issue 22 item 3: a lifecycle button opens a confirmation, never acts on one click;
    结案 says the event will be archived, can be cancelled, and closes only when confirmed."""
    eid = fresh_event["id"]
    department = department_code(demo_engine)
    base = f"{live_server}/v1/events/{eid}/transitions"
    centre, staff = bearer(live_server, "dispatcher"), bearer(live_server, "department")
    event = post_json(base, {"action": "register", "version": fresh_event.get("version", 1)}, centre)
    event = post_json(base, {"action": "dispatch", "version": event["version"], "department": department}, centre)
    event = post_json(base, {"action": "start", "version": event["version"]}, staff)
    post_json(base, {"action": "handle", "version": event["version"], "note": "浏览器测试：已清理积水"}, staff)
    assert db_event(demo_engine, eid)[0] == "handled"

    sign_in(page, "dispatcher")
    move_to(page, fresh_event["lon"], fresh_event["lat"], 17)
    page.mouse.click(*to_screen(page, fresh_event["lon"], fresh_event["lat"]))
    box = f".event-actions[data-id='{eid}']"
    page.wait_for_selector(f"{box}[data-status='handled']")
    assert "close" in page.eval_on_selector_all(f"{box} button.action", "bs => bs.map((b) => b.dataset.action)")

    # one click on 结案 asks: the warning says it is final, nothing is sent
    page.click(f"{box} button[data-action='close']")
    warning = page.locator(f"{box} .action-form .action-confirm.action-final")
    warning.wait_for()
    assert "结案后事件归档，不能再办理" in warning.inner_text()
    assert page.inner_text(f"{box} button.action-submit-final") == "确定结案"
    page.screenshot(path="/tmp/gridbranch-confirm-close.png")
    assert db_event(demo_engine, eid)[0] == "handled"

    # cancelled: the form goes, the event stays as it was
    page.click(f"{box} button.action-cancel")
    assert page.is_hidden(f"{box} .action-form")
    assert page.get_attribute(box, "data-status") == "handled" and db_event(demo_engine, eid)[0] == "handled"

    # a non-final action asks too, without the final warning
    page.click(f"{box} button[data-action='return']")
    assert page.locator(f"{box} .action-form .action-final").count() == 0
    assert page.is_visible(f"{box} .action-form .action-confirm") and page.is_visible(f"{box} button.action-cancel")
    page.click(f"{box} button.action-cancel")

    # confirmed: closed, in the database and on the page
    page.click(f"{box} button[data-action='close']")
    page.click(f"{box} button.action-submit-final")
    page.wait_for_selector(f"{box}[data-status='closed']")
    assert db_event(demo_engine, eid)[0] == "closed"


def test_event_record_shows_what_the_tile_cannot_and_two_events_at_one_point(
    page, page_log, live_server, demo_engine, fresh_event
):
    """Issue 22 item 2: the record shows the description, photos, the reporter's contact
    (to staff covering the grid) and the track; after an action the header's 办理状态
    follows; two events at one point are both reached in the popup (desk) and the sheet
    (phone)."""
    first = fresh_event["id"]
    report = {
        "lon": fresh_event["lon"],
        "lat": fresh_event["lat"],
        "category": get_json(f"{live_server}/v1/events/categories")["categories"][0]["code"],
        "description": "浏览器测试：同一地点第二件",
        "photos": ["https://img.example/second.jpg"],
        "contact": "13900001111",
    }
    second = post_json(f"{live_server}/v1/events", report, {})["id"]
    try:
        sign_in(page, "dispatcher")
        move_to(page, fresh_event["lon"], fresh_event["lat"], 17)
        page.mouse.click(*to_screen(page, fresh_event["lon"], fresh_event["lat"]))
        boxes = {eid: f".maplibregl-popup .event-actions[data-id='{eid}']" for eid in (first, second)}
        for box in boxes.values():
            page.wait_for_selector(f"{box}[data-status='reported']")
        one = boxes[second]
        assert page.inner_text(f"{one} dd.event-description") == "浏览器测试：同一地点第二件"
        assert page.get_attribute(f"{one} .event-photos a", "href") == "https://img.example/second.jpg"
        assert "13900001111" in page.inner_text(f"{one} dd.event-contact")
        assert page.inner_text(f"{boxes[first]} dd.event-description") == "浏览器测试：路面积水"
        page.wait_for_function("(box) => document.querySelector(box + ' .event-track-entry')", arg=one)
        page.click(f"{one} .event-track-box summary")  # the track folds open
        assert "上报" in page.inner_text(f"{one} .event-track")
        # the popup fits the screen, and both events' buttons are reached by scrolling it
        box = page.locator(".maplibregl-popup").bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 900 + 1, box
        for selector in boxes.values():
            button = page.locator(f"{selector} button[data-action='register']")
            button.scroll_into_view_if_needed()
            assert "登记" in pressable(page, f"{selector} button.action")

        # an action: the header above the record follows (it said 已上报 after 登记 before)
        page.click(f"{one} button[data-action='register']")
        page.click(f"{one} button.action-submit")
        page.wait_for_selector(f"{one}[data-status='registered']")
        header = page.locator(
            ".maplibregl-popup .popup-event", has=page.locator(f".event-actions[data-id='{second}']")
        ).locator("dd.event-status")
        assert header.inner_text() == "已登记"
        page.screenshot(path="/tmp/gridbranch-two-events.png")

        # on a phone the same two are in the sheet, each reachable
        page.set_viewport_size(PHONE)
        move_to(page, fresh_event["lon"], fresh_event["lat"], 17)
        x, y = to_screen(page, fresh_event["lon"], fresh_event["lat"])
        page.evaluate("([dx, dy]) => { window.gridbranchMap.panBy([dx, dy], {animate: false}); }", [0, y - 200])
        wait_idle(page)
        page.mouse.click(*to_screen(page, fresh_event["lon"], fresh_event["lat"]))
        for eid in (first, second):
            selector = f"#details .event-actions[data-id='{eid}']"
            page.wait_for_selector(f"{selector} button.action")
            page.locator(f"{selector} button.action").first.scroll_into_view_if_needed()
            assert pressable(page, f"{selector} button.action"), eid
        page.screenshot(path="/tmp/gridbranch-two-events-phone.png")
        assert page_log.page_errors == []
    finally:
        drop_events(demo_engine, [second])

"""The web map on a phone (390×844), in a real browser: the panel is a bottom sheet with a
handle (peek, half, full; dragged or tapped), and what a tap on the map finds opens inside
the sheet, where its buttons can be pressed, instead of in a popup under the sheet."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.web_map.helpers import (
    PHONE,
    move_to,
    open_map,
    pressable,
    rendered,
    sign_in,
    to_screen,
    wait_idle,
)

pytestmark = pytest.mark.browser

#: Where the probe tapped an event whose details opened under the sheet.
PROBE = (113.6899, 34.8049)


def sheet(page) -> dict:
    return page.evaluate(
        """() => { const p = document.getElementById('panel'); const r = p.getBoundingClientRect();
                   return {state: p.dataset.sheet, top: r.top, height: r.height}; }"""
    )


def nearest_reported_event(engine) -> tuple[int, float, float]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                text(
                    """SELECT id, ST_X(geom), ST_Y(geom) FROM events WHERE status = 'reported' AND grid_id IS NOT NULL
               ORDER BY geom <-> ST_SetSRID(ST_MakePoint(:x, :y), 4326) LIMIT 1"""
                ),
                {"x": PROBE[0], "y": PROBE[1]},
            ).one()
        )


def test_an_event_tapped_just_above_the_sheet_opens_inside_it(page, live_server, demo_engine):
    page.set_viewport_size(PHONE)
    open_map(page, live_server)
    sign_in(page, "dispatcher")
    event_id, lon, lat = nearest_reported_event(demo_engine)
    move_to(page, lon, lat, 17)
    # bring the event just above the sheet's top edge, where a popup would open under it
    top = sheet(page)["top"]
    x, y = to_screen(page, lon, lat)
    page.evaluate(
        "([dx, dy]) => { window.gridbranchMap.panBy([dx, dy], {animate: false}); }",
        [x - PHONE["width"] / 2, y - (top - 24)],
    )
    wait_idle(page)
    x, y = to_screen(page, lon, lat)
    assert abs(y - (top - 24)) < 2
    assert event_id in {f["id"] for f in rendered(page, ["events-circle"], (x, y), 4)}

    page.mouse.click(x, y)
    details = page.locator("#details")
    details.wait_for(state="visible")
    assert page.query_selector(".maplibregl-popup") is None  # nothing opens under the sheet
    assert f"#{event_id}" in page.inner_text("#details .popup-event")
    page.wait_for_selector("#details .event-actions button.action")
    assert sheet(page)["state"] in ("half", "full")
    # the details are the first thing in the sheet, and every action can be pressed there
    actions = page.eval_on_selector_all(
        "#details .event-actions button.action", "bs => bs.map((b) => b.textContent.trim())"
    )
    assert actions and set(actions) <= set(pressable(page, "#details .event-actions button.action")), actions
    assert "关闭" in pressable(page, "#details-close")
    heights = page.eval_on_selector_all("#details button", "bs => bs.map((b) => b.getBoundingClientRect().height)")
    assert min(heights) >= 44, heights  # thumb-sized
    page.screenshot(path="/tmp/gridbranch-phone-event.png")

    # an action asks in the sheet too: its form comes up, its submit can be pressed
    page.click("#details .event-actions button.action-reject")
    page.wait_for_selector("#details .event-actions .action-submit")
    page.locator("#details .event-actions .action-submit").scroll_into_view_if_needed()
    assert pressable(page, "#details .event-actions .action-submit")

    page.click("#details-close")
    details.wait_for(state="hidden")


def test_the_sheet_is_dragged_and_tapped_between_peek_half_and_full(page, live_server):
    page.set_viewport_size(PHONE)
    open_map(page, live_server)
    handle = page.locator("#sheet-handle")
    assert sheet(page)["state"] == "half" and abs(sheet(page)["height"] - PHONE["height"] / 2) < 2
    box = handle.bounding_box()
    assert box["height"] >= 36 and box["width"] == PHONE["width"]  # a target a thumb finds

    def drag_to(y: float) -> None:
        b = handle.bounding_box()
        page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2)
        page.mouse.down()
        for step in range(1, 6):
            page.mouse.move(b["x"] + b["width"] / 2, b["y"] + (y - b["y"]) * step / 5)
        page.mouse.up()
        page.wait_for_timeout(300)  # the snap's transition

    drag_to(60)
    full = sheet(page)
    assert full["state"] == "full" and full["top"] <= 60
    drag_to(PHONE["height"] - 10)
    peek = sheet(page)
    assert peek["state"] == "peek" and peek["height"] <= 100
    # at peek the map is nearly whole and the title still shows
    assert page.locator(".panel-header h1").is_visible()
    drag_to(PHONE["height"] * 0.55)
    assert sheet(page)["state"] == "half"
    # a tap goes one height up, from full back to peek; the keyboard moves it too
    handle.click()
    assert sheet(page)["state"] == "full"
    handle.click()
    assert sheet(page)["state"] == "peek"
    handle.focus()
    page.keyboard.press("ArrowUp")
    assert sheet(page)["state"] == "half"
    page.keyboard.press("ArrowDown")
    assert sheet(page)["state"] == "peek"


def test_on_a_wide_screen_details_stay_a_popup_and_the_handle_is_gone(page, live_server, demo_engine):
    open_map(page, live_server)
    assert not page.locator("#sheet-handle").is_visible()
    event_id, lon, lat = nearest_reported_event(demo_engine)
    move_to(page, lon, lat, 17)
    x, y = to_screen(page, lon, lat)
    page.mouse.click(x, y)
    page.wait_for_selector(".maplibregl-popup .popup-event")
    assert f"#{event_id}" in page.inner_text(".maplibregl-popup .popup-event")
    assert page.locator("#details").is_hidden()

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
    bearer,
    get_json,
    inner_point,
    move_to,
    open_map,
    pick_grid,
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
        with demo_engine.begin() as conn:
            # the log is append-only (a trigger refuses deletes): set aside for this cleanup only,
            # and the events version bumped by hand, so no cached tile keeps the event
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text("DELETE FROM event_log WHERE event_id = :e"), {"e": event["id"]})
            conn.execute(text("DELETE FROM events WHERE id = :e"), {"e": event["id"]})
            conn.execute(text("UPDATE data_versions SET version = version + 1 WHERE layer = 'events'"))


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

    # 登记: nothing to ask, done at once
    page.click(f"{box} button[data-action='register']")
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

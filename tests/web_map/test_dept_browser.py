"""A department on the web map, in a real browser, in one walk: the demo department
account signs in and sees its queue (list and map points, due times, warning states) and
its own evaluation figures; on a desktop it starts an event and handles it with its
feedback; on a phone (the bottom sheet) it sends another back to the centre with a
reason. Checked against the database; the two events are made for the test (dispatched
to the department by the dispatcher) and removed afterwards."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.web_map.helpers import (
    PHONE,
    bearer,
    department_code,
    drop_events,
    get_json,
    inner_point,
    open_map,
    pick_grid,
    post_json,
    pressable,
    sign_in,
)

pytestmark = pytest.mark.browser  # compared with the service, whatever the instant


@pytest.fixture
def two_dispatched(page, live_server, demo_engine):
    """Two events reported inside a grid and dispatched to the demo department account's
    department; removed afterwards."""
    open_map(page, live_server)
    grid, _ = pick_grid(page, live_server, True)
    lon, lat = inner_point(grid["geometry"])
    department = department_code(demo_engine)
    category = get_json(f"{live_server}/v1/events/categories")["categories"][0]["code"]
    centre = bearer(live_server, "dispatcher")
    ids = []
    try:
        for text_ in ("浏览器测试：井盖松动", "浏览器测试：占道经营"):
            event = post_json(
                f"{live_server}/v1/events", {"lon": lon, "lat": lat, "category": category, "description": text_}, {}
            )
            ids.append(event["id"])
            base = f"{live_server}/v1/events/{event['id']}/transitions"
            post_json(base, {"action": "register", "version": 1}, centre)
            post_json(base, {"action": "dispatch", "version": 2, "department": department}, centre)
        yield ids
    finally:
        drop_events(demo_engine, ids)


def db_track(engine, event_id: int):
    with engine.connect() as conn:
        status = conn.execute(text("SELECT status FROM events WHERE id = :e"), {"e": event_id}).scalar_one()
        last = conn.execute(
            text(
                "SELECT actor, action, note, photos FROM event_log WHERE event_id = :e "
                "ORDER BY at DESC, id DESC LIMIT 1"
            ),
            {"e": event_id},
        ).one()
    return status, tuple(last)


def test_a_department_works_its_queue_on_desktop_and_phone(page, page_log, live_server, demo_engine, two_dispatched):
    first, second = two_dispatched
    sign_in(page, "department")
    page.wait_for_function("document.getElementById('dept-queue')?.dataset.state === 'ready'")
    assert page.is_hidden("#ranking")  # the centre's rankings are not a department's
    # the queue: the department's events in hand, the most urgent first, with their states
    service = get_json(
        f"{live_server}/v1/events?status=dispatched,in_progress&limit=500", bearer(live_server, "department")
    )
    rows = page.eval_on_selector_all(
        "#dept-queue-list li", "ls => ls.map((l) => [Number(l.dataset.id), l.dataset.timeState])"
    )
    assert sorted(i for i, _ in rows) == sorted(e["id"] for e in service["items"]) and {first, second} <= {
        i for i, _ in rows
    }
    due = {e["id"]: e["due_at"] for e in service["items"]}
    assert [due[i] for i, _ in rows] == sorted(due[i] for i, _ in rows)
    states = {e["id"]: e["time_state"] for e in service["items"]}
    assert all(state == states[i] for i, state in rows)
    if any(s != "normal" for s in states.values()):
        assert page.locator("#dept-queue-list .badge").count() == sum(s != "normal" for s in states.values())
    points = page.evaluate("window.gridbranchMap.getSource('dept-queue').serialize().data.features.length")
    assert points == len(rows)
    # its own figures, from the service
    own = get_json(f"{live_server}/v1/events/evaluation?level=department", bearer(live_server, "department"))
    assert page.get_attribute("#dept-figures", "data-rank") == str(own["units"][0]["rank"] or "")
    assert page.inner_text("#dept-figures .figure-received") == str(own["units"][0]["received"])

    # desktop: start, then handle with feedback (required) and a photo URL
    row = f"#dept-queue-list li[data-id='{first}']"
    page.click(f"{row} .dept-item-head")
    box = f"{row} .event-actions"
    page.wait_for_selector(f"{box}[data-status='dispatched']")
    assert page.eval_on_selector_all(f"{box} button.action", "bs => bs.map((b) => b.dataset.action)") == [
        "start",
        "return",
    ]
    page.click(f"{box} button[data-action='start']")
    page.click(f"{box} button.action-submit")  # confirmed: no action is taken on one click
    page.wait_for_selector(f"{row} .event-actions[data-status='in_progress']")
    page.click(f"{row} .event-actions button[data-action='handle']")
    page.click(f"{row} .event-actions button.action-submit")
    assert page.inner_text(f"{row} .event-actions .action-message") == "请填写处置情况。"
    page.fill(f"{row} .event-actions textarea.feedback", "已紧固井盖，现场恢复通行")
    page.fill(f"{row} .event-actions textarea.feedback-photos", "https://img.example/after.jpg")
    page.click(f"{row} .event-actions button.action-submit")
    # handled: out of the queue in hand, in the department's history
    page.wait_for_function(f'!document.querySelector("{row}")')
    assert db_track(demo_engine, first) == (
        "handled",
        ("department", "handle", "已紧固井盖，现场恢复通行", ["https://img.example/after.jpg"]),
    )
    page.click("#dept-queue .dept-tab[data-scope='all']")
    page.wait_for_selector(
        f"#dept-queue[data-scope='all'][data-state='ready'] li[data-id='{first}'][data-status='handled']"
    )
    page.click("#dept-queue .dept-tab[data-scope='open']")
    page.wait_for_selector("#dept-queue[data-scope='open'][data-state='ready']")

    # phone: the queue in the bottom sheet; send the other event back, with a reason
    page.set_viewport_size(PHONE)
    for _ in range(3):  # tapped up to full height
        if page.get_attribute("#panel", "data-sheet") == "full":
            break
        page.click("#sheet-handle")
    assert page.get_attribute("#panel", "data-sheet") == "full"
    row = f"#dept-queue-list li[data-id='{second}']"
    page.locator(f"{row} .dept-item-head").scroll_into_view_if_needed()
    page.wait_for_function(
        "(s) => { const b = document.querySelector(s).getBoundingClientRect(); "
        "const hit = document.elementFromPoint(b.left + b.width / 2, b.top + b.height / 2); "
        "return hit && document.querySelector(s).contains(hit); }",
        arg=f"{row} .dept-item-head",
    )  # once the sheet has moved: nothing over it
    assert pressable(page, f"{row} .dept-item-head")
    page.click(f"{row} .dept-item-head")
    page.click(f"{row} .event-actions button[data-action='return']")
    page.click(f"{row} .event-actions button.action-submit")
    assert page.inner_text(f"{row} .event-actions .action-message") == "请填写原因。"
    page.fill(f"{row} .event-actions input.reason", "非本单位职责")
    page.locator(f"{row} .event-actions button.action-submit").scroll_into_view_if_needed()
    page.click(f"{row} .event-actions button.action-submit")
    page.wait_for_function(f'!document.querySelector("{row}")')
    assert db_track(demo_engine, second) == ("returned", ("department", "return", "非本单位职责", None))
    # (tiles MapLibre cancels itself are not in page_log.failed: tests/web_map/conftest.py)
    assert page_log.page_errors == [] and page_log.failed == [] and page_log.bad_status == []

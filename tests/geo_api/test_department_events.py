"""Departments handle their own events (issue 17, item 2): department staff see the events
dispatched to their department (now or before) and nothing else, start and handle them
with feedback, send them back to the centre as not theirs; the track, the re-dispatch and
the evaluation per department follow their own actions. On hand-made data."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.conftest import token_for
from tests.factories import add_user
from tests.factories.events import act, post


@pytest.fixture
def depts(events_world):
    # xfyh is routed to D02; D03 is another department
    add_user(events_world["db"], "dept_a", "department_staff", department="D02")
    add_user(events_world["db"], "dept_b", "department_staff", department="D03")
    events_world["h"].update(dept_a=token_for("dept_a"), dept_b=token_for("dept_b"))
    return events_world


def dispatched(w, department=None, **dispatch) -> int:
    e = post(w, "disp", channel="hotline", contact="来电人 13700000001").json()["id"]
    assert act(w, e, "register").status_code == 200
    r = act(w, e, "dispatch", **({"department": department} if department else {}), **dispatch)
    assert r.status_code == 200, r.text
    return e


def get(w, url, user, **params):
    return w["c"].get(url, headers=w["h"][user], params=params)


def test_a_department_sees_its_queue_only_and_no_personal_data(depts):
    w = depts
    mine = dispatched(w, member_id=w["members"]["near"])
    theirs = dispatched(w, "D03")
    queue = get(w, "/v1/events", "dept_a")
    assert queue.status_code == 200, queue.text
    assert [e["id"] for e in queue.json()["items"]] == [mine] and queue.json()["total"] == 1
    item = queue.json()["items"][0]
    assert item["department"]["code"] == "D02" and item["due_at"] and item["time_state"] == "normal"
    assert item["actions"] == ["start", "return"]
    for body in (
        queue.text,
        get(w, f"/v1/events/{mine}", "dept_a").text,
        get(w, f"/v1/events/{mine}/log", "dept_a").text,
    ):
        assert "13700000001" not in body and "近党员" not in body and '"reporter"' not in body
    assert get(w, f"/v1/events/{mine}/log", "dept_a").json()["log"][0]["actor"] is None  # who reported: not theirs
    assert [e["id"] for e in get(w, "/v1/events", "dept_b").json()["items"]] == [theirs]
    # the other department's event: not to see, not to touch
    for url in (f"/v1/events/{theirs}", f"/v1/events/{theirs}/log"):
        assert get(w, url, "dept_a").status_code == 403
    r = act(w, theirs, "start", user="dept_a")
    assert r.status_code == 403 and r.json()["field"] == "event_id"
    # the district's events are not theirs to filter by area, nor the centre's tools
    r = get(w, "/v1/events", "dept_a", within="410105001000")
    assert r.status_code == 403 and r.json()["field"] == "within"
    for url in (f"/v1/events/{mine}/routing", "/v1/events/calendar", "/v1/events/routes"):
        assert get(w, url, "dept_a").status_code == 403, url
    assert get(w, "/v1/registrations", "dept_a").status_code == 403


def test_start_and_handle_with_feedback_in_the_track(depts):
    w = depts
    e = dispatched(w)
    r = act(w, e, "start", user="dept_a", photos=["https://img.example/a.jpg"])
    assert r.status_code == 422 and r.json()["field"] == "photos"  # photos come with the handling
    r = act(w, e, "start", user="dept_a")
    assert r.status_code == 200 and r.json()["status"] == "in_progress" and r.json()["assignee"] == "dept_a"
    assert r.json()["actions"] == ["handle", "return"] and "contact" not in r.json()
    r = act(w, e, "handle", user="dept_a", note="已清理", photos=["file:///etc/passwd"])
    assert r.status_code == 422 and r.json()["field"] == "photos.0"
    photos = ["https://img.example/before.jpg", "https://img.example/after.jpg"]
    r = act(w, e, "handle", user="dept_a", note="杂物已清理，通道畅通", photos=photos)
    assert r.status_code == 200 and r.json()["status"] == "handled" and r.json()["actions"] == []
    # verifying and closing stay the centre's
    assert act(w, e, "return", user="dept_a", reason="x").status_code == 403
    assert act(w, e, "close", user="dept_a").status_code == 403
    log = get(w, f"/v1/events/{e}/log", "disp").json()["log"]
    assert [(x["action"], x["actor"], (x["department"] or {}).get("code")) for x in log] == [
        ("report", "disp", None),
        ("register", "disp", None),
        ("dispatch", "disp", "D02"),
        ("start", "dept_a", "D02"),
        ("handle", "dept_a", "D02"),
    ]
    assert log[-1]["note"] == "杂物已清理，通道畅通" and log[-1]["photos"] == photos
    assert act(w, e, "close").json()["status"] == "closed"


def test_return_needs_a_reason_goes_back_to_the_centre_and_counts_as_returned(depts):
    w = depts
    closed_here = dispatched(w)
    for action in ("start", "handle"):
        assert act(w, closed_here, action, user="dept_a").status_code == 200
    assert act(w, closed_here, "close").status_code == 200
    e = dispatched(w)
    r = act(w, e, "return", user="dept_a")
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = act(w, e, "return", user="dept_a", reason="非本单位职责，属市场监管")
    assert r.status_code == 200 and r.json()["status"] == "returned"
    assert r.json()["return_count"] == 0 and r.json()["reason"] == "非本单位职责，属市场监管"  # not rework
    assert r.json()["actions"] == []
    last = get(w, f"/v1/events/{e}/log", "disp").json()["log"][-1]
    assert (last["action"], last["actor"], last["from"], last["note"], last["department"]["code"]) == (
        "return",
        "dept_a",
        "dispatched",
        "非本单位职责，属市场监管",
        "D02",
    )
    # the centre dispatches it again, to another department
    r = act(w, e, "dispatch", department="D03")
    assert r.status_code == 200 and r.json()["department"]["code"] == "D03"
    # the first department still sees it in its history, no longer to act on
    seen = get(w, f"/v1/events/{e}", "dept_a")
    assert seen.status_code == 200 and seen.json()["actions"] == []
    assert e in [x["id"] for x in get(w, "/v1/events", "dept_a").json()["items"]]
    assert act(w, e, "start", user="dept_a").status_code == 403
    for action in ("start", "handle"):
        assert act(w, e, action, user="dept_b").status_code == 200
    assert act(w, e, "close").status_code == 200

    units = {u["code"]: u for u in get(w, "/v1/events/evaluation", "disp", level="department").json()["units"]}
    a, b = units["D02"], units["D03"]
    # D02: both events were dispatched to it; it closed one and sent the other back
    assert (a["received"], a["dispatched"], a["due"], a["closed"], a["returned"], a["reworked"]) == (2, 2, 1, 1, 1, 0)
    # D03 closed the returned event: its close, not D02's
    assert (b["received"], b["due"], b["closed"], b["closed_on_time"], b["returned"]) == (1, 1, 1, 1, 0)
    # a department sees its own figures and rank, nobody else's
    own = get(w, "/v1/events/evaluation", "dept_a", level="department")
    assert own.status_code == 200, own.text
    assert [u["code"] for u in own.json()["units"]] == ["D02"] and own.json()["units"][0] == a
    assert own.json()["ranked"] == sum(1 for u in units.values() if u["rank"] is not None)
    csv_rows = get(w, "/v1/events/evaluation", "dept_a", level="department", format="csv").text.splitlines()
    assert len(csv_rows) == 2 and ",D02," in csv_rows[1]
    r = get(w, "/v1/events/evaluation", "dept_a", level="street")
    assert r.status_code == 403 and r.json()["field"] == "level"


def test_the_demo_has_a_department_account(demo_db):
    row = demo_db.execute(
        text(
            "SELECT u.role, d.code, u.display_name = d.name FROM users u JOIN departments d ON d.id = u.department_id "
            "WHERE u.username = 'department'"
        )
    ).one()
    assert row[0] == "department_staff" and row[2]
    queue = demo_db.execute(
        text(
            "SELECT count(*) FROM events e JOIN departments d ON d.id = e.department_id "
            "WHERE d.code = :c AND e.status IN ('dispatched', 'in_progress')"
        ),
        {"c": row[1]},
    ).scalar()
    assert queue > 0  # something in hand to show

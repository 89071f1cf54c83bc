"""The events API: reporting (and its bad input), routing with member suggestions,
the lifecycle over HTTP, time-limit warnings, the calendar and routing overrides,
evaluation (JSON and CSV) — on hand-made data, then on the Jinshui demo."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from layers.crs import from_wgs84
from layers.events import CLOCK, load_calendar
from layers.workcal import add_working_hours
from tests.conftest import token_for
from tests.factories import COMMUNITY, GRID_A, GRID_B
from tests.factories.events import P, X, Y, act, add_event_users, evaluation_world, insert_event, post

pytestmark = pytest.mark.clock  # depends on the present: run at every CLOCK_INSTANT


def count(db, table="events"):
    return db.execute(text(f"SELECT count(*) FROM {table}")).scalar()


def test_anonymous_public_report_is_located_routed_and_private(events_world):
    r = post(events_world, contact="王先生 13700000000")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "reported" and body["version"] == 1 and isinstance(body["id"], int)
    assert body["grid"]["code"] == GRID_A and body["grid"]["name"] == "测试社区第1网格" and body["match"] == "inside"
    assert body["routing"]["department"] == {"code": "D02", "name": "区应急管理局"}
    assert body["routing"]["branch"]["code"] == "B001" and body["routing"]["grid_worker"]["name"] == "张网格"
    assert body["due_at"] is None and body["time_limit_hours"] == 12.0 and body["possible_duplicates"] == []
    assert "suggestions" not in body["routing"] and "13700000000" not in r.text
    assert events_world["c"].get(f"/v1/events/{body['id']}").status_code == 401
    full = events_world["c"].get(f"/v1/events/{body['id']}", headers=events_world["h"]["disp"]).json()
    assert full["contact"] == "王先生 13700000000" and full["reporter"] is None and full["channel"] == "public"
    assert full["actions"] == ["register", "reject", "mark_duplicate"]
    log = events_world["c"].get(f"/v1/events/{body['id']}/log", headers=events_world["h"]["gw_a"]).json()["log"]
    assert [(x["action"], x["actor"]) for x in log] == [("report", "群众")]


def test_report_in_another_crs_keeps_what_was_sent(events_world):
    x, y = from_wgs84(P[0], P[1], "gcj02")
    body = post(events_world, "gw_a", lon=x, lat=y, crs="gcj02", channel="grid_worker").json()
    assert body["grid"]["code"] == GRID_A and body["source"] == {"crs": "gcj02", "x": x, "y": y}
    assert body["point"] == pytest.approx([P[0], P[1]], abs=1e-6)
    row = (
        events_world["db"]
        .execute(text("SELECT reporter, source_crs FROM events WHERE id = :i"), {"i": body["id"]})
        .first()
    )
    assert tuple(row) == ("gw_a", "gcj02")


@pytest.mark.parametrize(
    "user, body, status, field",
    [
        (None, {"category": "nope"}, 422, "category"),
        (None, {"lon": X + 0.3}, 422, "lon"),
        (None, {"description": "长" * 2001}, 422, "description"),
        (None, {"description": "   "}, 422, "description"),
        (None, {"photos": [f"https://img.example/{i}.jpg" for i in range(10)]}, 422, "photos"),
        (None, {"photos": ["file:///etc/passwd"]}, 422, "photos.0"),
        (None, {"lat": None}, 422, "lat"),
        (None, {"lon": 200}, 422, "lon"),
        (None, {"crs": "EPSG:99999"}, 422, "crs"),
        (None, {"channel": "hotline"}, 403, "channel"),
        ("m1", {"channel": "grid_worker"}, 403, "channel"),
        (None, {"channel": "pigeon"}, 422, "channel"),
    ],
)
def test_bad_reports_are_refused_and_nothing_is_written(events_world, user, body, status, field):
    before, logs = count(events_world["db"]), count(events_world["db"], "event_log")
    r = post(events_world, user, **body)
    assert r.status_code == status, r.text
    assert r.json()["field"] == field and r.headers["content-type"].startswith("application/problem+json")
    assert count(events_world["db"]) == before and count(events_world["db"], "event_log") == logs


def test_outside_names_the_nearest_grid(events_world):
    r = post(events_world, lon=X + 0.3, lat=Y + 0.02)
    assert r.status_code == 422
    assert r.json()["nearest_grid"]["code"] == GRID_B and r.json()["nearest_grid"]["distance_m"] > 10_000
    assert "outside the service area" in r.json()["detail"]


def test_dispatcher_routing_suggests_members_by_role_and_band_only(events_world):
    r = post(events_world, "disp", channel="hotline", contact="来电人")
    assert r.status_code == 201
    assert "suggestions" not in r.json()["routing"]  # never in the report's answer
    assert not any(name in r.text for name in ("近党员", "中党员", "忙党员"))
    routing = events_world["c"].get(f"/v1/events/{r.json()['id']}/routing", headers=events_world["h"]["disp"])
    suggestions = routing.json()["suggestions"]
    assert [s["name"] for s in suggestions] == ["近党员", "中党员", "忙党员"]
    assert all(set(s) == {"member_id", "name", "role", "distance_band", "open_tasks"} for s in suggestions)
    assert routing.json()["department"]["rule"] == "category"
    residences = events_world["db"].execute(text("SELECT source_x FROM residences")).scalars().all()
    assert not any(f"{x:.6f}"[:9] in routing.text for x in residences)  # no member coordinates anywhere
    assert (
        events_world["c"].get(f"/v1/events/{r.json()['id']}/routing", headers=events_world["h"]["gw_a"]).status_code
        == 403
    )
    assert (
        events_world["c"].get(f"/v1/events/{r.json()['id']}/routing", headers=events_world["h"]["other"]).status_code
        == 403
    )


def test_the_lifecycle_over_http(events_world):
    e = post(events_world).json()["id"]
    r = act(events_world, e, "register", version=1)
    assert r.status_code == 200 and r.json()["status"] == "registered" and r.json()["version"] == 2
    assert r.json()["grid"] == {"code": GRID_A, "name": "测试社区第1网格", "version": 1}
    assert act(events_world, e, "dispatch", version=1).status_code == 409  # stale
    stale = act(events_world, e, "dispatch", version=1).json()
    assert stale["field"] == "version" and stale["current_version"] == 2
    illegal = act(events_world, e, "close", version=2)
    assert illegal.status_code == 409 and illegal.json()["allowed"] == ["reject", "mark_duplicate", "dispatch"]
    assert act(events_world, e, "dispatch", user="gw_a", version=2).status_code == 403
    assert act(events_world, e, "dispatch", user="m1", version=2).status_code == 403
    r = act(
        events_world, e, "dispatch", version=2, assignee="区应急管理局·李四", member_id=events_world["members"]["near"]
    )
    assert r.status_code == 200 and r.json()["due_at"] and r.json()["time_state"] == "normal"
    assert r.json()["member"]["name"] == "近党员" and r.json()["department"]["code"] == "D02"
    assert act(events_world, e, "start", user="gw_b").status_code == 403
    assert act(events_world, e, "start", user="gw_a").json()["status"] == "in_progress"
    assert act(events_world, e, "handle", user="gw_a").json()["status"] == "handled"
    assert act(events_world, e, "return", user="gw_a", reason="x").status_code == 403
    r = act(events_world, e, "return", reason="现场核查未整改到位")
    assert r.json()["status"] == "returned" and r.json()["return_count"] == 1
    for action, user in (("dispatch", "disp"), ("start", "gw_a"), ("handle", "gw_a")):
        assert act(events_world, e, action, user=user).status_code == 200
    r = act(events_world, e, "close", user="cadmin", note="核查属实，结案")
    assert r.json()["status"] == "closed" and r.json()["version"] == 10 and r.json()["closed_on_time"] is True
    assert act(events_world, e, "reopen").status_code == 422
    assert act(events_world, e, "close").status_code == 409
    log = events_world["c"].get(f"/v1/events/{e}/log", headers=events_world["h"]["cadmin"]).json()["log"]
    assert [x["to"] for x in log] == [
        "reported",
        "registered",
        "dispatched",
        "in_progress",
        "handled",
        "returned",
        "dispatched",
        "in_progress",
        "handled",
        "closed",
    ]
    assert log[-1]["actor"] == "cadmin" and log[3]["actor"] == "gw_a"
    # a member sees their own reports, not others'
    own = post(events_world, "m1", channel="member").json()["id"]
    assert events_world["c"].get(f"/v1/events/{own}", headers=events_world["h"]["m1"]).json()["reporter"] == "m1"
    assert events_world["c"].get(f"/v1/events/{e}", headers=events_world["h"]["m1"]).status_code == 403


def test_warning_and_overdue_lists(events_world):
    db, a = events_world["db"], events_world["grids"]["A"]
    now = db.execute(text("SELECT gridbranch_now()")).scalar()
    overdue = insert_event(
        db, a, "in_progress", dispatched_at=now - timedelta(hours=30), due_at=now - timedelta(hours=1)
    )
    warning = insert_event(db, a, "dispatched", dispatched_at=now - timedelta(hours=9), due_at=now + timedelta(hours=1))
    normal = insert_event(db, a, "dispatched", dispatched_at=now - timedelta(hours=1), due_at=now + timedelta(hours=9))
    insert_event(db, a, "deferred", dispatched_at=now - timedelta(hours=30), due_at=now - timedelta(hours=1))
    insert_event(db, a, "closed", dispatched_at=now - timedelta(hours=30), due_at=now - timedelta(hours=20))

    def ids(**params):
        r = events_world["c"].get("/v1/events", params=params, headers=events_world["h"]["disp"])
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["items"]]

    assert ids(time_state="overdue") == [overdue]
    assert ids(time_state="warning") == [warning]
    assert ids(time_state="normal") == [normal]
    item = events_world["c"].get(f"/v1/events/{overdue}", headers=events_world["h"]["disp"]).json()
    assert item["due_at"] == (now - timedelta(hours=1)).isoformat() and item["time_state"] == "overdue"
    assert set(ids(status="deferred,closed")) == set(ids()) - {overdue, warning, normal}
    assert (
        events_world["c"].get("/v1/events", params={"status": "lost"}, headers=events_world["h"]["disp"]).status_code
        == 422
    )
    # grid workers see their grid; admins of other streets nothing of it
    assert set(ids()) == set(
        i["id"] for i in events_world["c"].get("/v1/events", headers=events_world["h"]["gw_a"]).json()["items"]
    )
    assert events_world["c"].get("/v1/events", headers=events_world["h"]["gw_b"]).json()["total"] == 0
    assert (
        events_world["c"]
        .get("/v1/events", params={"within": COMMUNITY}, headers=events_world["h"]["other"])
        .status_code
        == 403
    )
    assert events_world["c"].get("/v1/events", headers=events_world["h"]["m1"]).status_code == 403


def test_dispatch_due_time_follows_the_working_calendar(events_world):
    c, db = events_world["c"], events_world["db"]
    now = db.execute(text("SELECT gridbranch_now()")).scalar()
    today = now.astimezone(ZoneInfo("Asia/Shanghai")).date()
    for k in (1, 2, 3):
        r = c.put(
            f"/v1/events/calendar/{today + timedelta(days=k)}",
            json={"working": False, "note": "节日"},
            headers=events_world["h"]["disp"],
        )
        assert r.status_code == 200, r.text
    assert (
        c.put(f"/v1/events/calendar/{today}", json={"working": False}, headers=events_world["h"]["cadmin"]).status_code
        == 403
    )
    assert len(c.get("/v1/events/calendar", headers=events_world["h"]["disp"]).json()["days"]) >= 1
    e = post(events_world).json()["id"]
    act(events_world, e, "register")
    due = datetime.fromisoformat(act(events_world, e, "dispatch").json()["due_at"])
    s = c.app.state.settings.events
    cal = load_calendar(db, periods=s.work_periods, weekend=s.weekend, timezone=s.timezone)
    assert due == add_working_hours(now, 12, cal)
    assert due.date() > today + timedelta(days=3)  # the three days off count nothing
    assert not any(cal.is_working_day(today + timedelta(days=k)) for k in (1, 2, 3))


def test_routing_override_endpoint(events_world):
    c, h = events_world["c"], events_world["h"]
    r = c.put("/v1/events/routes/xfyh/410105001000", json={"department": "区市场监督管理局"}, headers=h["disp"])
    assert r.status_code == 200 and r.json()["routes"][0]["department"]["code"] == "D03"
    assert post(events_world).json()["routing"]["department"]["code"] == "D03"
    assert post(events_world).json()["routing"]["rule"] == "street override"
    assert (
        c.put("/v1/events/routes/xfyh/410105001000", json={"department": "D01"}, headers=h["other"]).status_code == 403
    )
    assert (
        c.put("/v1/events/routes/xfyh/410105001000", json={"department": "无此部门"}, headers=h["disp"]).status_code
        == 422
    )
    assert (
        c.put("/v1/events/routes/xfyh/410105001000", json={"department": None}, headers=h["disp"]).json()["routes"]
        == []
    )
    assert post(events_world).json()["routing"]["department"]["code"] == "D02"
    cats = c.get("/v1/events/categories").json()["categories"]
    assert [x["code"] for x in cats] == ["qt", "xfyh", "zdjy"] and cats[1]["role"]["name"] == "平安创建示范员"


def test_evaluation_json_and_csv(empty_db, empty_client):
    evaluation_world(empty_db)
    h = add_event_users(empty_db)
    empty_client.app.state.settings.events.min_sample = 2
    params = {"level": "street", "from": "2026-10-01", "to": "2026-10-31"}
    r = empty_client.get("/v1/events/evaluation", params=params, headers=h["disp"])
    assert r.status_code == 200, r.text
    units = r.json()["units"]
    assert [(u["code"], u["rank"], u["due"], u["closed"], u["on_time_rate"]) for u in units] == [
        ("410105002000", 1, 2, 2, 1.0),
        ("410105001000", 2, 3, 2, 0.3333),
    ]
    assert units[1]["overdue_open"] == 1 and units[1]["mean_handling_hours"] == 4.0
    r = empty_client.get("/v1/events/evaluation", params={**params, "format": "csv"}, headers=h["disp"])
    assert r.headers["content-type"].startswith("text/csv") and "attachment" in r.headers["content-disposition"]
    assert r.content.startswith("\ufeff".encode())
    rows = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert [(x["code"], x["name"], x["rank"], x["closure_rate"]) for x in rows] == [
        ("410105002000", "东街道", "1", "1.0"),
        ("410105001000", "西街道", "2", "0.6667"),
    ]
    # an admin of the east street sees only theirs; not the west
    own = empty_client.get("/v1/events/evaluation", params=params, headers=h["other"]).json()["units"]
    assert [u["code"] for u in own] == ["410105002000"]
    assert (
        empty_client.get(
            "/v1/events/evaluation", params={**params, "within": "410105001000"}, headers=h["other"]
        ).status_code
        == 403
    )
    assert empty_client.get("/v1/events/evaluation", params=params, headers=h["gw_a"]).status_code == 403
    assert (
        empty_client.get("/v1/events/evaluation", params={**params, "to": "2026-09-01"}, headers=h["disp"]).status_code
        == 422
    )


# --------------------------------------------------------------------------------------
# On the Jinshui demo
# --------------------------------------------------------------------------------------


def test_demo_report_routes_and_suggests_fitting_members(client, demo_db):
    h = token_for("dispatcher")
    point = demo_db.execute(
        text(
            """SELECT ST_X(ST_PointOnSurface(gv.geom)), ST_Y(ST_PointOnSurface(gv.geom)), g.code
           FROM grid_versions gv JOIN grids g ON g.id = gv.grid_id
           WHERE gv.valid_to IS NULL ORDER BY g.code OFFSET 100 LIMIT 1"""
        )
    ).first()
    r = client.post(
        "/v1/events",
        json={
            "lon": point[0],
            "lat": point[1],
            "category": "xfyh",
            "channel": "hotline",
            "description": "楼道内电动车充电",
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["grid"]["code"] == point[2] and body["routing"]["department"]["name"] == "区消防救援大队"
    assert "suggestions" not in body["routing"]
    suggestions = client.get(f"/v1/events/{body['id']}/routing", headers=h).json()["suggestions"]
    assert suggestions and all(s["role"]["name"] == "平安创建示范员" for s in suggestions)
    bands = ["本网格", "< 500 m", "500 m–1 km", "1–2 km"]
    assert [bands.index(s["distance_band"]) for s in suggestions] == sorted(
        bands.index(s["distance_band"]) for s in suggestions
    )
    ids = [s["member_id"] for s in suggestions]
    roles = (
        demo_db.execute(
            text("SELECT DISTINCT role_code FROM registrations WHERE member_id = ANY(:m) AND status = 'confirmed'"),
            {"m": ids},
        )
        .scalars()
        .all()
    )
    assert roles == ["pingan"]
    # the first is registered in the nearest grid holding a fitting member (a plain scan,
    # no index): here the event's own grid
    nearest = demo_db.execute(
        text(
            """SELECT g.code FROM registrations r JOIN grids g ON g.id = r.grid_id
           JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL
           WHERE r.status = 'confirmed' AND r.role_code = 'pingan'
           ORDER BY ST_Distance(gv.geom::geography, ST_SetSRID(ST_MakePoint(:x, :y), 4326)::geography), g.code
           LIMIT 1"""
        ),
        {"x": point[0], "y": point[1]},
    ).scalar()
    first = demo_db.execute(
        text(
            "SELECT g.code FROM registrations r JOIN grids g ON g.id = r.grid_id "
            "WHERE r.member_id = :m AND r.status = 'confirmed'"
        ),
        {"m": ids[0]},
    ).scalar()
    assert first == nearest


def test_demo_overdue_list_and_evaluation(client, demo_db):
    h = token_for("dispatcher")
    r = client.get("/v1/events", params={"time_state": "overdue", "limit": 1000}, headers=h)
    items = r.json()["items"]
    now = demo_db.execute(text("SELECT gridbranch_now()")).scalar()
    assert items and all(i["status"] in CLOCK and datetime.fromisoformat(i["due_at"]) <= now for i in items)
    expected = demo_db.execute(
        text(
            f"SELECT count(*) FROM events WHERE status IN ({', '.join(repr(s) for s in CLOCK)}) AND due_at <= gridbranch_now()"
        )
    ).scalar()
    assert r.json()["total"] == expected
    params = {"level": "street", "from": "2026-01-01", "to": "2026-11-27"}
    units = client.get("/v1/events/evaluation", params=params, headers=h).json()["units"]
    received = demo_db.execute(
        text(
            "SELECT count(*) FROM events WHERE grid_id IS NOT NULL AND reported_at >= '2026-01-01T00:00:00+08' "
            "AND reported_at < '2026-11-28T00:00:00+08'"
        )
    ).scalar()
    assert len(units) == 14 and sum(u["received"] for u in units) == received
    assert all(u["rated"] and 0 < u["on_time_rate"] <= u["closure_rate"] <= 1 for u in units)
    assert [u["rank"] for u in units] == list(range(1, 15))
    street_admin = client.get(
        "/v1/events/evaluation", params={**params, "level": "community"}, headers=token_for("street_admin")
    ).json()["units"]
    assert street_admin and len({u["code"][:9] for u in street_admin}) == 1


def test_a_redrawn_grid_layer_is_picked_up_between_reports(events_world):
    from tests.factories import add_grid, rect

    assert post(events_world).status_code == 201  # the app now holds the grid index of this layer
    strip = (X + 0.0501, Y + 0.07)  # in the gap strip between A and C
    assert post(events_world, lon=strip[0], lat=strip[1]).json()["match"] == "nearest"
    add_grid(events_world["db"], COMMUNITY + "004", "测试社区第4网格", rect(X + 0.05, Y + 0.05, X + 0.0502, Y + 0.1))
    r = post(events_world, lon=strip[0], lat=strip[1])
    assert r.status_code == 201 and r.json()["grid"]["code"] == COMMUNITY + "004" and r.json()["match"] == "inside"


def _refuse_routed(events_world):
    """Make the routed endpoint fail for anonymous callers: only the fast path can answer."""
    from geo_api.deps import get_caller

    def boom():
        raise RuntimeError("the routed endpoint was used")

    events_world["c"].app.dependency_overrides[get_caller] = boom


def test_anonymous_reports_take_the_fast_path_and_answer_as_the_route_does(events_world):
    app = events_world["c"].app
    _refuse_routed(events_world)
    fast = post(
        events_world, description="快速通道", lon=P[0], lat=P[1], contact="李 139", ignored="extra keys are ignored"
    )
    assert fast.status_code == 201, fast.text
    with pytest.raises(RuntimeError):  # a signed-in caller goes through the route
        post(events_world, "gw_a", channel="grid_worker")
    del app.dependency_overrides[next(k for k in app.dependency_overrides if k.__name__ == "get_caller")]
    app.state.settings.events.fast_path = False
    try:
        routed = post(events_world, description="路由", contact="李 139")
    finally:
        app.state.settings.events.fast_path = True
    assert routed.status_code == 201, routed.text
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    a, b = fast.json(), routed.json()
    assert [d["id"] for d in b.pop("possible_duplicates")] == [a["id"]] and a.pop("possible_duplicates") == []
    assert b.pop("id") > a.pop("id") and a.pop("reported_at") <= b.pop("reported_at")
    assert a == b
    row = (
        events_world["db"]
        .execute(text("SELECT reporter, reporter_contact, channel FROM events WHERE id = :i"), {"i": fast.json()["id"]})
        .first()
    )
    assert tuple(row) == (None, "李 139", "public")


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"lon": str(P[0])}, 201, None),  # a numeric string: the model takes it, so the route answers
        ({"lat": int(P[1])}, 422, "lon"),  # an integer (34): the fast path takes it; outside → the route's 422
        ({"photos": None}, 422, "photos"),
        ({"crs": None}, 422, "crs"),
        ({"channel": "public", "category": 7}, 422, "category"),
    ],
)
def test_bodies_the_fast_path_leaves_to_the_route(events_world, body, status, field):
    r = post(events_world, **body)
    assert r.status_code == status, r.text
    assert r.json().get("field") == field


def test_a_report_with_a_nul_character_is_refused_and_nothing_is_written(events_world):
    before = count(events_world["db"])
    r = post(events_world, description="含\x00字符")
    assert r.status_code == 422 and r.json()["field"] == "description"
    assert count(events_world["db"]) == before

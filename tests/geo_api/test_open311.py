"""Open311 GeoReport v2: an Open311 client reports and reads; status follows the
lifecycle; filters; errors in the specification's shape; nothing personal."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.conftest import token_for
from tests.factories import add_user
from tests.factories.events import P, X, Y, east, event_world

pytestmark = pytest.mark.clock  # depends on the present: run at every CLOCK_INSTANT

BASE = "/open311/v2"


@pytest.fixture
def world(empty_db, empty_client):
    w = event_world(empty_db)
    add_user(empty_db, "disp", "dispatcher")
    return {**w, "c": empty_client, "db": empty_db, "h": token_for("disp")}


def post_form(c, **fields):
    data = {
        "service_code": "xfyh",
        "lat": str(P[1]),
        "long": str(P[0]),
        "description": "楼道内电动车充电",
        "first_name": "小明",
        "last_name": "王",
        "email": "wang@example.cn",
        "phone": "13711112222",
        "api_key": "anything",
        **fields,
    }
    return c.post(f"{BASE}/requests.json", data={k: v for k, v in data.items() if v is not None})


def act(w, event_id, action, **body):
    version = w["c"].get(f"/v1/events/{event_id}", headers=w["h"]).json()["version"]
    r = w["c"].post(
        f"/v1/events/{event_id}/transitions", json={"action": action, "version": version, **body}, headers=w["h"]
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_discovery_and_services(world):
    c = world["c"]
    d = c.get(f"{BASE}/discovery.json").json()
    assert d["endpoints"][0]["url"].endswith("/open311/v2") and "application/json" in d["endpoints"][0]["formats"]
    services = c.get(f"{BASE}/services.json").json()
    assert [s["service_code"] for s in services] == ["qt", "xfyh", "zdjy"]
    xfyh = services[1]
    assert xfyh["service_name"] == "消防隐患" and xfyh["group"] == "区应急管理局" and xfyh["metadata"] is False
    assert xfyh["type"] == "realtime"
    assert c.get(f"{BASE}/services/xfyh.json").json() == {"service_code": "xfyh", "attributes": []}
    r = c.get(f"{BASE}/services/nope.json")
    assert r.status_code == 404 and r.json()[0]["code"] == 404
    assert c.get(f"{BASE}/services.json", params={"jurisdiction_id": "410105000000"}).status_code == 200
    assert c.get(f"{BASE}/services.json", params={"jurisdiction_id": "110101"}).status_code == 404


def test_round_trip_report_follow_and_close(world):
    c = world["c"]
    r = post_form(c)
    assert r.status_code == 200, r.text
    [created] = r.json()
    assert set(created) == {"service_request_id", "service_notice", "account_id"}
    assert created["account_id"] is None and "12" in created["service_notice"]
    rid = created["service_request_id"]

    [got] = c.get(f"{BASE}/requests/{rid}.json").json()
    assert got["service_request_id"] == rid and got["status"] == "open" and got["service_code"] == "xfyh"
    assert got["agency_responsible"] == "区应急管理局" and got["expected_datetime"] is None
    # anonymous: not accepted yet, so no description; not public space, so at the grid's
    # label point (where the map writes its name), not at the reporter's door
    assert got["description"] is None and got["media_url"] is None and got["requested_datetime"]
    assert (got["lat"], got["long"]) != (pytest.approx(P[1]), pytest.approx(P[0]))
    # the staff of its area see it as stored
    [full] = c.get(f"{BASE}/requests/{rid}.json", headers=world["h"]).json()
    assert full["lat"] == pytest.approx(P[1]) and full["long"] == pytest.approx(P[0])
    assert full["description"] == "楼道内电动车充电"
    text = c.get(f"{BASE}/requests/{rid}.json").text
    for private in ("小明", "wang@example.cn", "13711112222"):
        assert private not in text
    # the centre sees the contact the reporter left
    internal = c.get(f"/v1/events/{rid}", headers=world["h"]).json()
    assert internal["contact"] == "王 小明 13711112222 wang@example.cn" and internal["channel"] == "public"

    act(world, int(rid), "register")
    [got] = c.get(f"{BASE}/requests/{rid}.json").json()
    assert got["description"] == "楼道内电动车充电"  # accepted (立案): shown to anyone
    dispatched = act(world, int(rid), "dispatch", department="D03")
    [got] = c.get(f"{BASE}/requests/{rid}.json").json()
    assert got["expected_datetime"] is not None and got["agency_responsible"] == "区市场监督管理局"
    assert got["expected_datetime"][:16] == dispatched["due_at"][:16]
    assert got["status"] == "open" and got["status_notes"] == "已派遣"
    for action in ("start", "handle", "close"):
        act(world, int(rid), action)
    [got] = c.get(f"{BASE}/requests/{rid}.json").json()
    assert got["status"] == "closed" and got["status_notes"] == "已结案"
    assert got["updated_datetime"] >= got["requested_datetime"]


def test_json_post_and_rejected_requests(world):
    c = world["c"]
    r = c.post(
        f"{BASE}/requests.json",
        json={
            "service_code": "zdjy",
            "lat": P[1],
            "long": P[0],
            "description": "占道经营",
            "media_url": "https://img.example/1.jpg",
        },
    )
    assert r.status_code == 200, r.text
    rid = r.json()[0]["service_request_id"]
    assert c.get(f"{BASE}/requests/{rid}.json").json()[0]["media_url"] is None  # not accepted yet
    staff = c.get(f"{BASE}/requests/{rid}.json", headers=world["h"]).json()[0]
    assert staff["media_url"] == "https://img.example/1.jpg"
    # outside public space the public sees the grid's label point; a category of public
    # space (a road, a street light) shows where it was reported
    [got] = c.get(f"{BASE}/requests/{rid}.json").json()
    assert (got["lat"], got["long"]) != (pytest.approx(P[1]), pytest.approx(P[0]))
    world["db"].execute(text("UPDATE event_categories SET public_space = true WHERE code = 'zdjy'"))
    [got] = c.get(f"{BASE}/requests/{rid}.json").json()
    assert got["lat"] == pytest.approx(P[1]) and got["long"] == pytest.approx(P[0])
    act(world, int(rid), "reject", reason="不属于受理范围")
    [got] = c.get(f"{BASE}/requests/{rid}.json").json()
    assert got["status"] == "closed" and "不属于受理范围" in got["status_notes"]
    assert got["description"] is None  # never accepted: never shown


def test_filters(world):
    c = world["c"]
    a = post_form(c).json()[0]["service_request_id"]
    b = post_form(c, service_code="zdjy", lat=str(east(500)[1]), long=str(east(500)[0])).json()[0]["service_request_id"]
    closed = post_form(c, service_code="qt").json()[0]["service_request_id"]
    act(world, int(closed), "reject", reason="重复")

    def ids(**params):
        r = c.get(f"{BASE}/requests.json", params=params)
        assert r.status_code == 200, r.text
        return sorted(x["service_request_id"] for x in r.json())

    assert ids() == sorted([a, b, closed])
    assert ids(service_code="xfyh") == [a] and ids(service_code="xfyh,zdjy") == sorted([a, b])
    assert ids(status="open") == sorted([a, b]) and ids(status="closed") == [closed]
    assert ids(service_request_id=f"{a},{closed}") == sorted([a, closed])
    assert ids(start_date="2000-01-01T00:00:00Z", end_date="2001-01-01T00:00:00Z") == []
    assert ids(start_date="2000-01-01T00:00:00+08:00") == sorted([a, b, closed])
    for params in ({"status": "pending"}, {"start_date": "yesterday"}, {"service_request_id": "x"}):
        r = c.get(f"{BASE}/requests.json", params=params)
        assert r.status_code == 400 and r.json()[0]["code"] == 400
    assert c.get(f"{BASE}/requests/999999.json").status_code == 404
    assert c.get(f"{BASE}/requests/abc.json").json()[0]["code"] == 404


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"service_code": "nope"}, "unknown category"),
        ({"service_code": None}, "service_code"),
        ({"lat": None}, "lat and long are required"),
        ({"lat": "north"}, "numbers"),
        ({"long": str(X + 0.3), "lat": str(Y + 0.02)}, "nearest grid"),
        ({"description": "长" * 5000}, "characters"),
        ({"jurisdiction_id": "110101"}, "jurisdiction"),
    ],
)
def test_bad_requests_in_the_open311_shape_and_nothing_written(world, fields, words):
    from sqlalchemy import text

    before = world["db"].execute(text("SELECT count(*) FROM events")).scalar()
    r = post_form(world["c"], **fields)
    assert r.status_code in (400, 404), r.text
    [err] = r.json()
    assert err["code"] == r.status_code and words in err["description"]
    assert world["db"].execute(text("SELECT count(*) FROM events")).scalar() == before

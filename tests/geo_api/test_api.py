"""The foundation API on the Jinshui demo: health, areas, grids, errors, auth, access."""

import gc

import pytest
from fastapi.testclient import TestClient
from shapely.geometry import box, shape

from geo_api.app import create_app
from geo_api.deps import Access
from geo_api.settings import AuthSettings, DatabaseSettings, ServiceSettings, Settings
from layers.errors import ConfigError
from tests.conftest import make_settings
from tests.factories.api import api_routes


def test_healthz_tells_versions_to_admins_only(client):
    from tests.conftest import token_for

    for headers in ({}, token_for("dispatcher"), token_for("member"), token_for("gridworker")):
        r = client.get("/healthz", headers=headers)
        assert r.status_code == 200 and r.json() == {"status": "ok"}, headers
    body = client.get("/healthz", headers=token_for("admin")).json()
    assert body["status"] == "ok"
    assert body["database"]["postgresql"].startswith("15")
    assert body["database"]["postgis"].startswith("3.")


def test_area_tree_has_the_jinshui_levels(client):
    tree = client.get("/v1/areas").json()["areas"]
    assert [a["code"] for a in tree] == ["410105000000"]
    district = tree[0]
    assert district["name"] == "金水区" and district["level"] == "district"
    streets = district["children"]
    assert len(streets) == 14
    assert all(isinstance(s["code"], str) and s["code"].startswith("410105") for s in streets)
    communities = [c for s in streets for c in s["children"]]
    assert len(communities) == 92
    assert all(c["code"][:9] == s["code"][:9] for s in streets for c in s["children"])


def test_area_boundaries_geojson(client):
    fc = client.get("/v1/areas/boundaries", params={"level": "street"}).json()
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 14
    district = shape(client.get("/v1/areas/boundaries", params={"level": "district"}).json()["features"][0]["geometry"])
    # The real boundary, converted from GCJ-02 to WGS84: Jinshui lies around 113.6–113.9 E, 34.7–34.9 N.
    minx, miny, maxx, maxy = district.bounds
    assert 113.5 < minx < maxx < 114.0 and 34.6 < miny < maxy < 35.0
    for f in fc["features"]:
        assert shape(f["geometry"]).buffer(1e-6).within(district.buffer(1e-5))


def test_grids_paged_with_next_link(client):
    first = client.get("/v1/grids", params={"limit": 50}).json()
    assert first["numberReturned"] == 50 and 450 <= first["numberMatched"] <= 550
    codes = [f["properties"]["code"] for f in first["features"]]
    assert codes == sorted(codes) and all(len(c) == 15 for c in codes)
    assert all(f["properties"]["name"] for f in first["features"])
    nxt = [link["href"] for link in first["links"] if link["rel"] == "next"]
    assert len(nxt) == 1
    second = client.get(nxt[0]).json()
    assert second["features"][0]["properties"]["code"] > codes[-1]
    everything = client.get("/v1/grids", params={"limit": 1000}).json()
    assert not [link for link in everything["links"] if link["rel"] == "next"]
    assert everything["numberReturned"] == everything["numberMatched"]


def test_grids_bbox_filter(client):
    everything = client.get("/v1/grids", params={"limit": 1000}).json()["features"]
    bbox = (113.66, 34.76, 113.68, 34.78)
    expected = {f["properties"]["code"] for f in everything if shape(f["geometry"]).intersects(box(*bbox))}
    got = client.get("/v1/grids", params={"limit": 1000, "bbox": ",".join(map(str, bbox))}).json()
    assert {f["properties"]["code"] for f in got["features"]} == expected
    assert 0 < len(expected) < len(everything)


def test_one_grid_with_branches(client):
    code = client.get("/v1/grids", params={"limit": 1}).json()["features"][0]["properties"]["code"]
    g = client.get(f"/v1/grids/{code}").json()
    assert g["properties"]["code"] == code
    assert isinstance(g["properties"]["branches"], list)
    assert shape(g["geometry"]).is_valid


@pytest.mark.parametrize(
    "path, params, status, field",
    [
        ("/v1/grids", {"bbox": "1,2,3"}, 422, "bbox"),
        ("/v1/grids", {"bbox": "a,b,c,d"}, 422, "bbox"),
        ("/v1/grids", {"bbox": "113,34,112,35"}, 422, "bbox"),
        ("/v1/grids", {"bbox": "113,91,114,92"}, 422, "bbox"),
        ("/v1/grids", {"bbox": "nan,34,114,35"}, 422, "bbox"),
        ("/v1/grids", {"limit": "many"}, 422, "limit"),
        ("/v1/grids", {"limit": 0}, 422, "limit"),
        ("/v1/grids", {"within": "41"}, 422, "within"),
        ("/v1/grids/123", {}, 422, "code"),
        ("/v1/grids/410105999999999", {}, 404, "code"),
        ("/v1/areas/410105999999", {}, 404, "code"),
        ("/v1/areas/boundaries", {"level": "province"}, 422, "level"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(client, path, params, status, field):
    r = client.get(path, params=params)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["field"] == field and body["detail"]


HEAD_URLS = [
    ("/healthz", None),
    ("/v1/grids?limit=2", None),
    ("/v1/areas/410105000000", None),
    ("/v1/grids/nope", None),  # a 404: its problem+json's length, no body
    ("/v1/locate?lon=113.68&lat=34.79", None),  # the locate fast path
    ("/v1/registrations/stats?level=street", "admin"),
    ("/tiles/grids/14/13366/6495.mvt", None),  # the tile fast path
    ("/tiles/grids/14/13366/6495.mvt", "dispatcher"),  # signed in: the tile route
    ("/tiles/grids.json", None),
    ("/tiles/style.json", None),
    ("/map", None),  # the web map's page (static files)
    ("/v1/auth/token", None),  # POST only: 405, as for GET
]


@pytest.mark.parametrize("url, user", HEAD_URLS)
def test_head_answers_as_get_without_the_body(client, url, user):
    """HEAD (RFC 9110) is answered everywhere — routes, fast paths, static files — with
    GET's status and headers (ETag and Content-Length included) and no body."""
    from tests.conftest import token_for

    headers = {"Accept-Encoding": "gzip", **(token_for(user) if user else {})}
    got = client.get(url, headers=headers)
    head = client.head(url, headers=headers)
    assert head.status_code == got.status_code and head.content == b""
    drop = {"date"}
    assert {k: v for k, v in head.headers.items() if k not in drop} == {
        k: v for k, v in got.headers.items() if k not in drop
    }
    assert int(head.headers.get("content-length", len(got.content))) == len(got.content)
    if "etag" in got.headers:  # conditional HEAD
        again = client.head(url, headers={**headers, "If-None-Match": got.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


@pytest.mark.clock
def test_token_and_me(client, login):
    headers = login("street_admin")
    me = client.get("/v1/auth/me", headers=headers).json()
    assert me["role"] == "admin" and len(me["area_code"]) == 12 and me["area_code"].endswith("000")


def test_wrong_password_and_bad_token(client):
    r = client.post("/v1/auth/token", data={"username": "admin", "password": "wrong"})
    assert r.status_code == 401 and r.json()["field"] == "password"
    assert client.get("/v1/auth/me").status_code == 401
    assert client.get("/v1/auth/me", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401


def test_passwords_are_argon2_hashed(demo_db):
    from sqlalchemy import text

    from geo_api.accounts import demo_accounts

    hashes = demo_db.execute(text("SELECT password_hash FROM users")).scalars().all()
    assert len(hashes) == len(demo_accounts(demo_db)) >= 6  # admins, dispatcher, worker, member, department
    assert all(h.startswith("$argon2id$") for h in hashes)


def test_every_route_declares_its_access():
    app = create_app(make_settings())
    routes = list(api_routes(app.routes))
    assert len(routes) >= 15
    undeclared = []
    for route in routes:
        calls = [d.call for d in route.dependant.dependencies]
        if sum(isinstance(c, Access) for c in calls) != 1:
            undeclared.append(route.path)
    assert not undeclared, f"routes without exactly one access declaration: {undeclared}"


def test_no_default_secret_outside_the_demo():
    settings = Settings(
        database=DatabaseSettings(database_url="postgresql://x@127.0.0.1:1/x"),
        auth=AuthSettings(auth_secret=None),
        service=ServiceSettings(demo=False),
    )
    with pytest.raises(ConfigError, match="AUTH_SECRET"):
        create_app(settings)
    settings.service.demo = True
    assert create_app(settings) is not None


def test_the_served_app_freezes_its_start_up_heap(migrated_engine):
    """With ``gc_freeze`` (on when served) the lifespan moves the start-up objects out of
    the cyclic collector's reach; off, it leaves the collector alone."""
    gc.unfreeze()
    try:
        with TestClient(create_app(make_settings(gc_freeze=False), engine=migrated_engine)) as c:
            assert c.get("/healthz").status_code == 200
            assert gc.get_freeze_count() == 0
        with TestClient(create_app(make_settings(gc_freeze=True), engine=migrated_engine)) as c:
            frozen = gc.get_freeze_count()
            # the imported modules and the app alone are far more than this
            assert frozen > 50_000
            assert c.get("/healthz").status_code == 200
            # what a full collection still walks is what came after start-up
            assert len(gc.get_objects(generation=2)) < frozen / 10
    finally:
        gc.unfreeze()

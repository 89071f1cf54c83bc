"""OGC API – Features at /ogc on the demo: the documents, keyed paging against the
database's own counts, CRS output and bbox-crs checked against pyproj, datetime over
boundary generations, access rules and the audit, and 400 problem details."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pyproj import Transformer
from shapely.geometry import shape
from sqlalchemy import text

from geo_api.audit import writer_of
from layers import coverage as cov
from layers.caches import Caches
from layers.codes import area_prefix
from tests.conftest import TEST_CLOCK, token_for
from tests.zh import zh_fault

EPSG = "http://www.opengis.net/def/crs/EPSG/0/"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"


def walk(client, url: str, headers=None, **params) -> tuple[list[dict], list[dict]]:
    """Every feature of ``url`` by following ``next`` links; and the pages."""
    features, pages = [], []
    r = client.get(url, params=params, headers=headers)
    while True:
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/geo+json")
        page = r.json()
        assert page["numberReturned"] == len(page["features"])
        pages.append(page)
        features += page["features"]
        nxt = [link["href"] for link in page["links"] if link["rel"] == "next"]
        if not nxt:
            return features, pages
        r = client.get(nxt[0], headers=headers)


def current_grids(db) -> int:
    return db.execute(
        text(
            "SELECT count(*) FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id "
            "WHERE gridbranch_in_force(gv.valid_from, gv.valid_to) AND gridbranch_live(g.retired_at)"
        )
    ).scalar()


def test_landing_conformance_and_collections(client):
    r = client.get("/ogc")
    assert r.status_code == 200
    rels = {link["rel"]: link["href"] for link in r.json()["links"]}
    assert {"self", "service-desc", "conformance", "data"} <= set(rels)
    assert client.get(rels["service-desc"]).json()["paths"]["/ogc/collections/{collectionId}/items"]
    conf = client.get("/ogc/conformance").json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core" in conf
    assert "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs" in conf
    public = {c["id"] for c in client.get("/ogc/collections").json()["collections"]}
    assert public == {"areas", "grids", "branches", "events"}
    admin = client.get("/ogc/collections", headers=token_for("admin")).json()["collections"]
    assert {c["id"] for c in admin} == public | {"coverage-findings"}
    grids = client.get("/ogc/collections/grids").json()
    assert CRS84 in grids["crs"] and EPSG + "4490" in grids["crs"] and EPSG + "4547" in grids["crs"]
    assert grids["extent"]["temporal"]["interval"] == [[None, None]]
    assert "temporal" not in client.get("/ogc/collections/areas").json()["extent"]
    minx, miny, maxx, maxy = grids["extent"]["spatial"]["bbox"][0]
    assert 113 < minx < maxx < 114.5 and 34 < miny < maxy < 35.5


def test_every_grid_once_over_keyed_pages(client, demo_db):
    features, pages = walk(client, "/ogc/collections/grids/items", limit=70)
    n = current_grids(demo_db)
    assert len(features) == n == pages[0]["numberMatched"] and len(pages) == -(-n // 70)
    codes = [f["id"] for f in features]
    assert codes == sorted(set(codes))
    g = features[0]["properties"]
    assert set(g) >= {"code", "name", "community", "community_name", "version", "has_branch", "branches"}
    with_branch = demo_db.execute(
        text(
            "SELECT count(DISTINCT bg.grid_id) FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id "
            "JOIN grids g ON g.id = bg.grid_id WHERE b.active AND g.retired_at IS NULL"
        )
    ).scalar()
    assert sum(f["properties"]["has_branch"] for f in features) == with_branch


def test_a_page_boundary_holds_while_grids_are_added(client, demo_db):
    """A grid coded before the cursor appearing between two pages shifts nothing."""
    first = client.get("/ogc/collections/areas/items", params={"limit": 10}).json()
    nxt = next(link["href"] for link in first["links"] if link["rel"] == "next")
    demo_db.execute(
        text(
            "INSERT INTO admin_areas (code, name, level, parent_id, geom) "
            "SELECT '410105000001', '插入的区域', 'community', id, geom FROM admin_areas WHERE code = '410105000000'"
        )
    )
    second = client.get(nxt).json()
    ids = [f["id"] for f in first["features"]] + [f["id"] for f in second["features"]]
    assert len(ids) == len(set(ids)) == 20 and second["features"][0]["id"] > first["features"][-1]["id"]
    assert second["numberMatched"] == first["numberMatched"] + 1


def test_crs_output_follows_the_crs_axis_order(client):
    plain = client.get("/ogc/collections/branches/items", params={"limit": 5}).json()["features"]
    sited = [f for f in plain if f["geometry"]]
    assert sited
    code = sited[0]["id"]
    lon, lat = sited[0]["geometry"]["coordinates"]
    to_4547 = Transformer.from_crs(4326, 4547, always_xy=True)
    east, north = to_4547.transform(lon, lat)
    for uri, expected, tol in (
        (EPSG + "4326", (lat, lon), 1e-7),
        (EPSG + "4490", (lat, lon), 1e-6),  # CGCS2000 ≈ WGS84 (PostGIS applies no shift)
        (EPSG + "4547", (north, east), 0.01),
        ("[EPSG:4547]", (north, east), 0.01),
    ):
        r = client.get(f"/ogc/collections/branches/items/{code}", params={"crs": uri})
        assert r.status_code == 200, r.text
        assert r.headers["content-crs"] == f"<{EPSG}{uri.strip('[]').split(':')[-1].split('/')[-1]}>"
        got = r.json()["geometry"]["coordinates"]
        assert got[0] == pytest.approx(expected[0], abs=tol) and got[1] == pytest.approx(expected[1], abs=tol)
    assert client.get(f"/ogc/collections/branches/items/{code}").headers["content-crs"] == f"<{CRS84}>"


def test_bbox_in_another_crs_selects_the_same_grids(client):
    box = (113.66, 34.76, 113.70, 34.80)
    plain, _ = walk(client, "/ogc/collections/grids/items", bbox=",".join(map(str, box)), limit=1000)
    assert 0 < len(plain) < 500
    t = Transformer.from_crs(4326, 4547, always_xy=True)
    (e1, e2), (n1, n2) = t.transform([box[0], box[2]], [box[1], box[3]])
    # northing first, as EPSG:4547 orders its axes; a slightly larger box (the projected
    # one is not a rectangle in degrees) holds at least the same grids
    projected = f"{n1 - 200},{e1 - 200},{n2 + 200},{e2 + 200}"
    more, _ = walk(client, "/ogc/collections/grids/items", bbox=projected, limit=1000, **{"bbox-crs": EPSG + "4547"})
    assert {f["id"] for f in plain} <= {f["id"] for f in more}
    lat_first = f"{box[1]},{box[0]},{box[3]},{box[2]}"
    same, _ = walk(client, "/ogc/collections/grids/items", bbox=lat_first, limit=1000, **{"bbox-crs": EPSG + "4326"})
    assert {f["id"] for f in same} == {f["id"] for f in plain}


def test_datetime_reads_the_boundary_generations(client, demo_db):
    """A grid redrawn now: before now the old version answers, now the new one, and an
    interval over both the last one in force in it."""
    code = demo_db.execute(text("SELECT code FROM grids WHERE retired_at IS NULL ORDER BY code LIMIT 1")).scalar()
    now = TEST_CLOCK.now()
    old = client.get(f"/ogc/collections/grids/items/{code}").json()["properties"]["version"]
    demo_db.execute(
        text(
            "UPDATE grid_versions SET valid_to = :now WHERE grid_id = (SELECT id FROM grids WHERE code = :c) "
            "AND valid_to IS NULL"
        ),
        {"now": now, "c": code},
    )
    demo_db.execute(
        text(
            "INSERT INTO grid_versions (grid_id, version, geom, valid_from) "
            "SELECT grid_id, version + 1, ST_Multi(ST_Buffer(geom, -0.0001)), :now FROM grid_versions "
            "WHERE grid_id = (SELECT id FROM grids WHERE code = :c) AND version = :v"
        ),
        {"now": now, "c": code, "v": old},
    )
    before = (now - timedelta(days=1)).isoformat()
    at = {
        "now": client.get(f"/ogc/collections/grids/items/{code}").json()["properties"]["version"],
        "before": client.get(
            "/ogc/collections/grids/items", params={"datetime": before, "bbox": _bbox_of(client, code)}
        ).json(),
        "span": client.get(
            "/ogc/collections/grids/items", params={"datetime": f"{before}/..", "bbox": _bbox_of(client, code)}
        ).json(),
    }
    assert at["now"] == old + 1
    assert _version(at["before"], code) == old and _version(at["span"], code) == old + 1
    # a day, as /v1/locate?at= reads it, and an instant before every grid: none
    empty = client.get("/ogc/collections/grids/items", params={"datetime": "2000-01-01"}).json()
    assert empty["numberMatched"] == 0 and empty["features"] == []


def _bbox_of(client, code: str) -> str:
    geom = shape(client.get(f"/ogc/collections/grids/items/{code}").json()["geometry"])
    return ",".join(str(v) for v in geom.bounds)


def _version(page: dict, code: str) -> int:
    return next(f["properties"]["version"] for f in page["features"] if f["id"] == code)


def test_events_show_the_public_view_and_bbox_selects_by_it(client, demo_db):
    row = demo_db.execute(
        text(
            "SELECT e.id, ST_X(e.geom) AS lon, ST_Y(e.geom) AS lat FROM events e "
            "JOIN event_categories c ON c.code = e.category_code WHERE NOT c.public_space ORDER BY e.id LIMIT 1"
        )
    ).first()
    anon = client.get(f"/ogc/collections/events/items/{row.id}").json()
    lon, lat = anon["geometry"]["coordinates"]
    assert (round(lon, 6), round(lat, 6)) != (round(row.lon, 6), round(row.lat, 6))
    assert "reporter" not in anon["properties"] and "contact" not in str(anon["properties"])
    tiny = f"{row.lon - 1e-5},{row.lat - 1e-5},{row.lon + 1e-5},{row.lat + 1e-5}"
    found = client.get("/ogc/collections/events/items", params={"bbox": tiny}).json()
    assert row.id not in [f["id"] for f in found["features"]]
    staff = client.get(f"/ogc/collections/events/items/{row.id}", headers=token_for("dispatcher")).json()
    assert staff["geometry"]["coordinates"] == [pytest.approx(row.lon, abs=1e-7), pytest.approx(row.lat, abs=1e-7)]
    total = demo_db.execute(text("SELECT count(*) FROM events")).scalar()
    assert client.get("/ogc/collections/events/items", params={"limit": 1}).json()["numberMatched"] == total
    since = TEST_CLOCK.now() - timedelta(days=7)
    recent = demo_db.execute(text("SELECT count(*) FROM events WHERE reported_at >= :s"), {"s": since}).scalar()
    page = client.get("/ogc/collections/events/items", params={"datetime": f"{since.isoformat()}/.."}).json()
    assert page["numberMatched"] == recent


def test_private_findings_need_a_token_and_stay_in_the_area(client, demo_db):
    r = client.get("/ogc/collections/coverage-findings/items")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert not zh_fault(r.json())
    assert client.get("/ogc/collections/coverage-findings", headers=token_for("member")).status_code == 403
    area = _area_of(demo_db, "street_admin")
    street, _ = walk(client, "/ogc/collections/coverage-findings/items", token_for("street_admin"), limit=25)
    expected = cov.issues(demo_db, Caches(), within=area)
    assert sorted(str(f["id"]) for f in street) == sorted(str(f["id"]) for f in expected) and expected
    everything = client.get(
        "/ogc/collections/coverage-findings/items", params={"limit": 1}, headers=token_for("dispatcher")
    ).json()
    assert everything["numberMatched"] == len(cov.issues(demo_db, Caches())) > len(street)


def _area_of(db, username: str) -> str:
    return db.execute(text("SELECT area_code FROM users WHERE username = :u"), {"u": username}).scalar()


def test_secretaries_only_for_their_admins_and_audited(client, demo_db):
    anon, _ = walk(client, "/ogc/collections/branches/items", limit=1000)
    assert anon and all("secretary_name" not in f["properties"] for f in anon)
    active = demo_db.execute(text("SELECT count(*) FROM branches WHERE active")).scalar()
    assert len(anon) == active
    last = demo_db.execute(text("SELECT COALESCE(max(id), 0) FROM audit_log")).scalar()
    admin = token_for("street_admin")
    page = client.get("/ogc/collections/branches/items", params={"limit": 1000}, headers=admin).json()
    shown = [f for f in page["features"] if f["properties"].get("secretary_name")]
    prefix = area_prefix(_area_of(demo_db, "street_admin"))
    assert shown and all(f["properties"]["community"].startswith(prefix) for f in shown)
    writer_of(client.app).flush()
    rows = demo_db.execute(
        text("SELECT endpoint, fields, detail FROM audit_log WHERE id > :l AND actor = 'street_admin'"), {"l": last}
    ).all()
    assert rows and rows[0].endpoint == "/ogc/collections/{collectionId}/items"
    assert set(rows[0].fields) == {"name", "phone"}
    assert sorted(rows[0].detail["branches"]) == sorted(f["id"] for f in shown)


@pytest.mark.parametrize(
    "path, params, field",
    [
        ("/ogc/collections/grids/items", {"crs": "EPSG:3857"}, "crs"),
        ("/ogc/collections/grids/items", {"bbox": "1,2,3"}, "bbox"),
        ("/ogc/collections/grids/items", {"bbox": "114,35,113,34"}, "bbox"),
        ("/ogc/collections/grids/items", {"bbox": "1,2,3,4", "bbox-crs": "EPSG:1"}, "bbox-crs"),
        ("/ogc/collections/grids/items", {"datetime": "yesterday"}, "datetime"),
        ("/ogc/collections/grids/items", {"datetime": "2026-02-01/2026-01-01"}, "datetime"),
        ("/ogc/collections/grids/items", {"limit": "0"}, "limit"),
        ("/ogc/collections/grids/items", {"limit": "x"}, "limit"),
        ("/ogc/collections/grids/items", {"offset": "10"}, "offset"),
        ("/ogc/collections/events/items", {"cursor": "x"}, "cursor"),
        ("/ogc/collections", {"f": "html"}, "f"),
    ],
)
def test_bad_parameters_are_400_problems_in_chinese(client, path, params, field):
    r = client.get(path, params=params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert r.headers["content-type"] == "application/problem+json" and body["field"] == field
    assert not zh_fault(body), body


def test_unknown_collections_and_features_are_404(client):
    for path in ("/ogc/collections/members", "/ogc/collections/grids/items/999", "/ogc/collections/events/items/x"):
        r = client.get(path)
        assert r.status_code == 404 and not zh_fault(r.json()), r.text


def test_a_large_limit_is_answered_with_the_most(client, demo_db):
    page = client.get("/ogc/collections/grids/items", params={"limit": "99999999"}).json()
    assert page["numberReturned"] == current_grids(demo_db) and not [x for x in page["links"] if x["rel"] == "next"]

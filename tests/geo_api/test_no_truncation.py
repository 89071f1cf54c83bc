"""No GeoJSON list of the API is cut short without saying so (issue 23 item 2): each
answers ``numberMatched`` and ``numberReturned``; a reader that does not page gets the
whole collection (``/v1/grids`` without ``limit``), and a page short of the whole has a
``next`` link. The counts are checked against the database."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.conftest import token_for


def _current_grids(db) -> int:
    return db.execute(
        text(
            "SELECT count(*) FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id "
            "WHERE gridbranch_in_force(gv.valid_from, gv.valid_to)"
        )
    ).scalar()


def test_grids_without_limit_are_the_whole_collection(client, demo_db):
    whole = client.get("/v1/grids").json()
    n = _current_grids(demo_db)
    assert n > 100  # more than any default page would hold
    assert whole["numberMatched"] == whole["numberReturned"] == len(whole["features"]) == n
    assert not [link for link in whole["links"] if link["rel"] == "next"]
    within = client.get("/v1/grids", params={"within": "410105001000"}).json()
    assert within["numberMatched"] == within["numberReturned"] == len(within["features"]) > 0


def test_grids_with_limit_page_with_next_links_to_the_end(client, demo_db):
    seen, url, params = [], "/v1/grids", {"limit": 333}
    while url:
        page = client.get(url, params=params).json()
        params = None
        assert page["numberReturned"] == len(page["features"]) and page["numberMatched"] == _current_grids(demo_db)
        seen += [f["properties"]["code"] for f in page["features"]]
        nxt = [link["href"] for link in page["links"] if link["rel"] == "next"]
        assert bool(nxt) == (len(seen) < page["numberMatched"])
        url = nxt[0] if nxt else None
    assert len(seen) == len(set(seen)) == _current_grids(demo_db)


@pytest.mark.parametrize(
    "path, params, account",
    [
        ("/v1/areas/boundaries", {}, None),
        ("/v1/areas/boundaries", {"level": "community"}, None),
        ("/v1/coverage/issues", {}, "admin"),
        ("/v1/coverage/summary", {"format": "geojson", "level": "community"}, "admin"),
        ("/v1/coverage/h3", {"res": 8}, None),
        ("/v1/places", {"q": "社区", "limit": 50}, None),
        ("/ogc/collections/grids/items", {"limit": 10}, None),
    ],
)
def test_every_geojson_list_says_whether_it_is_whole(client, path, params, account):
    r = client.get(path, params=params, headers=token_for(account) if account else None)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["type"] == "FeatureCollection"
    assert body["numberReturned"] == len(body["features"]) > 0
    assert body["numberMatched"] >= body["numberReturned"]
    if path == "/v1/places":
        # a search answers its best `limit` (at most 50), and says how many matched
        assert body["numberMatched"] > body["numberReturned"] == 50
    elif body["numberMatched"] > body["numberReturned"]:
        assert [link for link in body["links"] if link["rel"] == "next"]
    else:
        assert body["numberMatched"] == body["numberReturned"]


def test_area_boundaries_count_the_database(client, demo_db):
    n = demo_db.execute(text("SELECT count(*) FROM admin_areas")).scalar()
    body = client.get("/v1/areas/boundaries").json()
    assert body["numberMatched"] == body["numberReturned"] == len(body["features"]) == n

"""Finding places (GET /v1/places) on the Jinshui demo: by name, part of a name, the
characters of a name in order, code or code prefix; ranked; points inside their place;
bad queries refused; a rename found at once."""

from __future__ import annotations

import pytest
import shapely
from shapely.geometry import Point
from sqlalchemy import text

PROPERTIES = {"level", "code", "name", "within"}


def rows(db, sql: str, **params):
    return db.execute(text(sql), params).all()


def places(db) -> dict[str, tuple[str, str, object]]:
    """code → (level, name, geometry) of every area and current grid."""
    found = rows(
        db,
        """
        SELECT code::text, level::text, name, ST_AsBinary(geom) FROM admin_areas
        UNION ALL
        SELECT g.code, 'grid', g.name, ST_AsBinary(gv.geom)
          FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL
         WHERE g.retired_at IS NULL""",
    )
    return {code: (level, name, shapely.from_wkb(bytes(wkb))) for code, level, name, wkb in found}


def find(client, q: str, limit: int | None = None) -> dict:
    params = {"q": q} if limit is None else {"q": q, "limit": limit}
    r = client.get("/v1/places", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def test_places_are_found_by_name_or_code_and_lie_where_they_are(client, demo_db):
    known = places(demo_db)
    street_code, (_, street_name, street_geom) = next((c, v) for c, v in sorted(known.items()) if v[0] == "street")
    body = find(client, street_name)
    first = body["features"][0]
    assert first["properties"] == {"level": "street", "code": street_code, "name": street_name, "within": ["金水区"]}
    assert first["id"] == street_code and first["geometry"]["type"] == "Point"
    assert street_geom.contains(Point(first["geometry"]["coordinates"]))
    assert first["bbox"] == pytest.approx(list(street_geom.bounds), abs=1e-6)

    # a code prefix: the street and everything inside it, the street first, then by level
    inside = sorted(c for c in known if c.startswith(street_code[:9]))
    body = find(client, street_code[:9], limit=50)
    assert body["numberMatched"] == len(inside) and body["numberReturned"] == min(50, len(inside))
    codes = [f["properties"]["code"] for f in body["features"]]
    assert codes[0] == street_code and set(codes) <= set(inside)
    levels = [f["properties"]["level"] for f in body["features"]]
    assert levels == sorted(levels, key=["district", "street", "community", "grid"].index)

    # every place found lies inside what it names, and its bounds are its own
    for f in body["features"]:
        level, name, geom = known[f["properties"]["code"]]
        assert (f["properties"]["level"], f["properties"]["name"]) == (level, name)
        assert set(f["properties"]) == PROPERTIES  # no grid worker, no phone, nothing else
        assert geom.contains(Point(f["geometry"]["coordinates"])), name
        assert f["bbox"] == pytest.approx(list(geom.bounds), abs=1e-6)


def test_a_grid_is_found_by_the_characters_of_its_name_in_order(client, demo_db):
    grid = rows(
        demo_db,
        """
        SELECT g.code, g.name, c.name AS community, s.name AS street FROM grids g
          JOIN admin_areas c ON c.id = g.community_id JOIN admin_areas s ON s.id = c.parent_id
         WHERE g.retired_at IS NULL AND g.name LIKE '%第3网格' ORDER BY g.code LIMIT 1""",
    )[0]
    # 凤鸣社区第3网格 → "凤鸣3": no name holds it as it is, but this one holds its characters in order
    q = grid.name[:2] + "3"
    found = find(client, q, limit=50)["features"]
    assert grid.code in [f["properties"]["code"] for f in found]
    hit = next(f for f in found if f["properties"]["code"] == grid.code)
    assert hit["properties"]["within"] == ["金水区", grid.street, grid.community]
    assert all(q not in f["properties"]["name"] for f in found)
    # space-separated words, each held by the name
    words = find(client, f"{grid.community} 第3")["features"]
    assert words[0]["properties"]["code"] == grid.code


def test_the_best_match_comes_first(client, demo_db):
    community = rows(
        demo_db,
        """SELECT code, name FROM admin_areas WHERE level = 'community'
                                  AND EXISTS (SELECT 1 FROM grids g WHERE g.community_id = admin_areas.id)
                                  ORDER BY code LIMIT 1""",
    )[0]
    found = find(client, community.name, limit=50)["features"]
    names = [f["properties"]["name"] for f in found]
    assert found[0]["properties"]["code"] == community.code  # the name itself
    # then the names starting with it (its grids), then the names merely holding it
    starts = [n.startswith(community.name) for n in names[1:]]
    assert starts == sorted(starts, reverse=True) and any(starts)
    assert all(community.name in n for n in names)
    # the district by part of its name, its exact code, and nothing for a name nowhere
    assert find(client, "金水")["features"][0]["properties"]["level"] == "district"
    assert find(client, "410105000000")["features"][0]["properties"]["name"] == "金水区"
    assert find(client, "410105000000")["numberMatched"] == 1
    empty = find(client, "不存在的地方")
    assert empty["features"] == [] and empty["numberMatched"] == 0


@pytest.mark.parametrize(
    "params, field",
    [
        ({}, "q"),
        ({"q": ""}, "q"),
        ({"q": "   "}, "q"),
        ({"q": "网" * 51}, "q"),
        ({"q": "网格", "limit": 0}, "limit"),
        ({"q": "网格", "limit": 51}, "limit"),
        ({"q": "网格", "limit": "many"}, "limit"),
    ],
)
def test_bad_queries_are_refused_by_name(client, params, field):
    r = client.get("/v1/places", params=params)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == field and r.json()["detail"]


def test_a_renamed_grid_is_found_by_its_new_name_at_once(client, demo_db):
    code, name = rows(demo_db, "SELECT code, name FROM grids WHERE retired_at IS NULL ORDER BY code LIMIT 1")[0]
    assert [f["properties"]["code"] for f in find(client, name)["features"]][:1] == [code]
    demo_db.execute(text("UPDATE grids SET name = '测试更名网格' WHERE code = :c"), {"c": code})
    found = find(client, "测试更名网格")["features"]
    assert [f["properties"]["code"] for f in found] == [code]
    assert all(f["properties"]["code"] != code for f in find(client, name)["features"])

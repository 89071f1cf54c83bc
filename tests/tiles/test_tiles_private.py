"""Tiles with personal data: the members layer only for admins, only inside their area,
and every members tile audited with the members it holds."""

from __future__ import annotations

import pytest
import shapely

from tests.conftest import token_for
from tests.factories.tiles import decode, every, features, one, path, tile_at, to_lonlat
from tiles.tms import MARGIN, Tile


@pytest.mark.parametrize("user", [None, "dispatcher", "gridworker", "member"])
def test_members_layer_is_404_without_an_admin(tiles_client, user):
    headers = token_for(user) if user else {}
    for url in ("/tiles/members/15/26730/13000.mvt", "/tiles/grids,members/15/26730/13000.mvt", "/tiles/members.json"):
        r = tiles_client.get(url, headers=headers)
        assert r.status_code == 404 and r.json()["field"] == "layers", (user, url)
    style = tiles_client.get("/tiles/style.json", headers=headers).json()
    assert "members" not in style["sources"]


def test_admin_members_points_only_in_their_area_at_z15(tiles_client, demo_engine):
    street = one(demo_engine, "SELECT area_code FROM users WHERE username = 'street_admin'")[0]
    area = shapely.from_wkb(
        bytes(one(demo_engine, "SELECT ST_AsBinary(geom) FROM admin_areas WHERE code = :c", c=street)[0])
    )
    # a z15 tile crossing the street's boundary
    boundary = area.exterior if area.geom_type == "Polygon" else area.geoms[0].exterior
    lon, lat = boundary.coords[0]
    tile = tile_at(lon, lat, 15)
    admin = tiles_client.get(path("members", tile), headers=token_for("admin"))
    scoped = tiles_client.get(path("members", tile), headers=token_for("street_admin"))
    assert admin.status_code == scoped.status_code == 200
    for r in (admin, scoped):
        assert r.headers["cache-control"].startswith("private")
        assert "Authorization" in r.headers["vary"] and "access-control-allow-origin" not in r.headers
    everyone = features(admin.content, "members")
    mine = features(scoped.content, "members")
    assert 0 < len(mine) < len(everyone)
    assert {f["id"] for f in mine} < {f["id"] for f in everyone}
    for f in mine:
        assert set(f["properties"]) == {"status"} and f["properties"]["status"] in ("confirmed", "pending", "none")
        assert area.buffer(1e-6).contains(to_lonlat(tile, f["geometry"]))
    assert admin.headers["etag"] != scoped.headers["etag"]
    expected = one(
        demo_engine,
        f"""
        SELECT count(*) FROM residences r WHERE r.ended_at IS NULL
           AND ST_Intersects(ST_Transform(r.geom, 3857), ST_TileEnvelope({tile.z}, {tile.x}, {tile.y}, margin => {MARGIN}))
           AND ST_Intersects(r.geom, (SELECT geom FROM admin_areas WHERE code = :c))""",
        c=street,
    )[0]
    assert len(mine) == expected
    # below zoom 15 there is no members layer
    z14 = Tile(14, tile.x // 2, tile.y // 2)
    r = tiles_client.get(path("members", z14), headers=token_for("admin"))
    assert r.status_code == 404 and r.json()["field"] == "z"
    # composite: public layers plus members, private as a whole
    both = tiles_client.get(path("grids,members", tile), headers=token_for("street_admin"))
    assert set(decode(both.content)) == {"grids", "members"} and both.headers["cache-control"].startswith("private")


def test_a_members_tile_is_audited_with_the_members_it_holds(tiles_client, demo_engine):
    from geo_api.audit import writer_of

    lon, lat = one(
        demo_engine, "SELECT ST_X(geom), ST_Y(geom) FROM residences WHERE ended_at IS NULL ORDER BY id LIMIT 1"
    )
    tile = tile_at(lon, lat, 16)
    # the rows of the module's earlier members tiles are written first, not counted here
    writer_of(tiles_client.app).flush()
    before = one(demo_engine, "SELECT COALESCE(max(id), 0) FROM audit_log")[0]
    r = tiles_client.get(path("members", tile), headers=token_for("admin"))
    assert r.status_code == 200
    again = tiles_client.get(path("members", tile), headers=token_for("admin"))  # from the cache
    assert again.status_code == 200
    assert tiles_client.get(path("grids", tile)).status_code == 200  # public: not audited
    writer_of(tiles_client.app).flush()
    rows = every(
        demo_engine,
        "SELECT a.actor, a.endpoint, a.fields, r.member_ids, a.detail FROM audit_log a "
        "JOIN audit_records r ON r.digest = a.records WHERE a.id > :b ORDER BY a.id",
        b=before,
    )
    ids = sorted(f["id"] for f in features(r.content, "members"))
    assert ids
    assert [(a, e, list(f), list(m)) for a, e, f, m, _ in rows] == [
        ("admin", "/tiles/{layers}/{z}/{x}/{y}.mvt", ["residence"], ids)
    ] * 2
    assert rows[0].detail == {"tile": f"{tile.z}/{tile.x}/{tile.y}", "layers": ["members"]}

"""Tiles over HTTP: ETags, 304s and gzip, empty tiles, and freshness — a write reaches the
very next tile, derived records as fresh as asked for, the data versions the tile
statements answer, and tiles drawn across a write served but not cached."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.conftest import TEST_CLOCK, token_for
from tests.factories.tiles import PUBLIC, decode, every, features, make_client, one, path, tile_at
from tiles.layers import LAYERS


def test_etag_304_gzip_and_cache_headers(tiles_client, demo_engine):
    row = one(
        demo_engine, "SELECT ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM admin_areas WHERE level = 'district'"
    )
    url = path("grids", tile_at(row[0], row[1], 13))
    plain = tiles_client.get(url, headers={"Accept-Encoding": "identity"})
    zipped = tiles_client.get(url, headers={"Accept-Encoding": "gzip, deflate"})
    assert plain.status_code == zipped.status_code == 200
    assert "content-encoding" not in plain.headers and zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == plain.content  # httpx decodes the gzip body
    assert plain.headers["etag"] != zipped.headers["etag"] and zipped.headers["etag"].endswith('-gz"')
    assert plain.headers["cache-control"] == "public, no-cache"
    assert plain.headers["vary"] == "Accept-Encoding" and plain.headers["access-control-allow-origin"] == "*"
    for etag, enc in ((plain.headers["etag"], "identity"), (zipped.headers["etag"], "gzip")):
        for sent in (etag, "W/" + etag, f'"nope", {etag}', "*"):
            r = tiles_client.get(url, headers={"If-None-Match": sent, "Accept-Encoding": enc})
            assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag
    r = tiles_client.get(url, headers={"If-None-Match": '"nope"', "Accept-Encoding": "identity"})
    assert r.status_code == 200 and r.content == plain.content
    # gzip=q=0 refuses gzip
    assert "content-encoding" not in tiles_client.get(url, headers={"Accept-Encoding": "gzip;q=0"}).headers
    # the route (a signed-in caller) and the fast path (anonymous) answer alike
    routed = tiles_client.get(url, headers={"Accept-Encoding": "identity", **token_for("dispatcher")})
    assert routed.content == plain.content and routed.headers["etag"] == plain.headers["etag"]
    assert routed.headers["cache-control"] == plain.headers["cache-control"]


def test_raw_gzip_bytes(tiles_client, demo_engine):
    row = one(
        demo_engine, "SELECT ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM admin_areas WHERE level = 'district'"
    )
    url = path("grids", tile_at(row[0], row[1], 12))
    with tiles_client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
    assert gzip.decompress(raw) == tiles_client.get(url, headers={"Accept-Encoding": "identity"}).content


def test_small_tiles_are_sent_uncompressed_even_when_gzip_is_accepted(tiles_client, demo_engine):
    from tiles.service import GZIP_MIN_BYTES

    site = one(
        demo_engine,
        "SELECT ST_X(site), ST_Y(site) FROM branches WHERE active AND site IS NOT NULL ORDER BY code LIMIT 1",
    )
    url = path("branches", tile_at(site[0], site[1], 16))
    plain = tiles_client.get(url, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and 0 < len(plain.content) < GZIP_MIN_BYTES
    with tiles_client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
        assert "content-encoding" not in r.headers and r.headers["etag"] == plain.headers["etag"]
        assert r.headers["vary"] == "Accept-Encoding" and int(r.headers["content-length"]) == len(raw)
    assert raw == plain.content
    assert (
        tiles_client.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": plain.headers["etag"]}).status_code
        == 304
    )


def test_empty_tiles_are_204_with_validators(tiles_client):
    for url in ("/tiles/grids/14/0/0.mvt", f"/tiles/{PUBLIC}/14/0/0.mvt", "/tiles/events/16/0/65535.mvt"):
        for headers in ({}, token_for("dispatcher"), {"Accept-Encoding": "gzip"}):
            r = tiles_client.get(url, headers=headers)
            assert r.status_code == 204 and r.content == b"" and r.headers["etag"], url
            assert "content-encoding" not in r.headers
            again = tiles_client.get(url, headers={**headers, "If-None-Match": r.headers["etag"]})
            assert again.status_code == 304


def _event_insert(conn, lon: float, lat: float) -> int:
    return conn.execute(
        text(
            """INSERT INTO events (geom, source_crs, category_code, channel, description, status)
           VALUES (ST_SetSRID(ST_MakePoint(:x, :y), 4326), 'wgs84', (SELECT min(code) FROM event_categories),
                   'public', 'tile test', 'reported') RETURNING id"""
        ),
        {"x": lon, "y": lat},
    ).scalar()


def test_a_write_reaches_the_very_next_tile(tiles_client, demo_engine):
    row = one(
        demo_engine,
        """SELECT g.id, g.code, g.name, ST_X(ST_PointOnSurface(gv.geom)), ST_Y(ST_PointOnSurface(gv.geom))
                              FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL
                              ORDER BY g.code DESC LIMIT 1""",
    )
    grid_id, code, name, lon, lat = row
    tile = tile_at(lon, lat, 15)
    url = path("grids,events", tile)
    before = tiles_client.get(url)
    assert before.status_code == 200
    assert tiles_client.get(url, headers={"If-None-Match": before.headers["etag"]}).status_code == 304
    event_id = None
    try:
        with demo_engine.begin() as conn:  # committed: the tile service reads on its own connections
            event_id = _event_insert(conn, lon, lat)
        after = tiles_client.get(url, headers={"If-None-Match": before.headers["etag"]})
        assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
        assert event_id in {f["id"] for f in features(after.content, "events")}
        assert event_id not in {f["id"] for f in features(before.content, "events")}
        with demo_engine.begin() as conn:
            conn.execute(text("UPDATE grids SET name = :n WHERE id = :g"), {"n": name + "（改）", "g": grid_id})
        renamed = tiles_client.get(url)
        assert [
            f["properties"]["name"] for f in features(renamed.content, "grids") if f["properties"]["code"] == code
        ] == [name + "（改）"]
    finally:
        with demo_engine.begin() as conn:
            if event_id is not None:
                conn.execute(text("DELETE FROM events WHERE id = :e"), {"e": event_id})
            conn.execute(text("UPDATE grids SET name = :n WHERE id = :g"), {"n": name, "g": grid_id})
    restored = tiles_client.get(url)
    assert event_id not in {f["id"] for f in features(restored.content, "events")}
    assert restored.content == before.content and restored.headers["etag"] != before.headers["etag"]
    assert tiles_client.app.state.tiles.cache.hits > 0


def test_a_registration_changes_only_the_grids_tiles_showing_its_grid(tiles_client, demo_engine):
    """Grid figures are filed by the records a tile holds: a registration confirmed in
    one grid gives the tiles showing that grid new figures and a new ETag at once, while
    a grids tile elsewhere keeps its ETag (304) and is served from the cache, not drawn
    again."""
    reg, code, lon, lat, far_lon, far_lat = one(
        demo_engine,
        """
        WITH g AS (SELECT g.id, g.code, ST_PointOnSurface(gv.geom) AS p
                     FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL)
        SELECT r.id, g.code, ST_X(g.p), ST_Y(g.p), ST_X(far.p), ST_Y(far.p)
          FROM registrations r JOIN g ON g.id = r.grid_id,
               LATERAL (SELECT p FROM g AS o ORDER BY o.p <-> g.p DESC LIMIT 1) far
         WHERE r.status = 'pending' ORDER BY r.id LIMIT 1""",
    )
    near, far = path("grids", tile_at(lon, lat, 15)), path("grids", tile_at(far_lon, far_lat, 15))
    service = tiles_client.app.state.tiles

    def registered(body: bytes) -> int:
        return next(f["properties"]["registered"] for f in features(body, "grids") if f["properties"]["code"] == code)

    before_near, before_far = tiles_client.get(near), tiles_client.get(far)
    assert code not in {f["properties"]["code"] for f in features(before_far.content, "grids")}
    try:
        with demo_engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE registrations SET status = 'confirmed', decided_at = gridbranch_now(), "
                    "decided_by = 'test' WHERE id = :r"
                ),
                {"r": reg},
            )
        after_near = tiles_client.get(near, headers={"If-None-Match": before_near.headers["etag"]})
        assert after_near.status_code == 200 and after_near.headers["etag"] != before_near.headers["etag"]
        assert registered(after_near.content) == registered(before_near.content) + 1
        hits = service.cache.hits
        assert tiles_client.get(far, headers={"If-None-Match": before_far.headers["etag"]}).status_code == 304
        again = tiles_client.get(far)
        assert again.content == before_far.content and again.headers["etag"] == before_far.headers["etag"]
        assert service.cache.hits == hits + 2  # both answered from the cached copy
    finally:
        with demo_engine.begin() as conn:
            conn.execute(
                text("UPDATE registrations SET status = 'pending', decided_at = NULL, decided_by = NULL WHERE id = :r"),
                {"r": reg},
            )
    restored = tiles_client.get(near)
    assert restored.content == before_near.content and restored.headers["etag"] == before_near.headers["etag"]


def test_requests_after_a_write_share_one_build_of_the_grid_figures(tiles_client, demo_engine):
    """Twenty grids tiles asked for at once after a registration: one build of the grid
    figures serves them all — even when another write lands as the build starts (its
    snapshot is then newer than what the requests asked for, and fresher is as good) —
    and none is served figures older than the registration."""
    from tiles.service import layers_at_zoom, parse_layers

    service = tiles_client.app.state.tiles
    rows = every(
        demo_engine,
        """SELECT ST_X(ST_PointOnSurface(gv.geom)), ST_Y(ST_PointOnSurface(gv.geom))
                                   FROM grid_versions gv WHERE gv.valid_to IS NULL ORDER BY gv.grid_id LIMIT 20""",
    )
    tiles = [tile_at(x, y, 16) for x, y in rows]
    reg = one(demo_engine, "SELECT id FROM registrations WHERE status = 'pending' ORDER BY id LIMIT 1")[0]
    layers = layers_at_zoom(parse_layers("grids", role=None, area_code=None), 16)

    async def all_at_once():
        return await asyncio.gather(
            *(service.tile(layers, t, scope=None, gzip=False, if_none_match_header=None) for t in tiles)
        )

    tiles_client.portal.call(all_at_once)  # cached, records built
    try:
        with demo_engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE registrations SET status = 'confirmed', decided_at = gridbranch_now(), "
                    "decided_by = 'test' WHERE id = :r"
                ),
                {"r": reg},
            )
            members = conn.execute(text("SELECT version FROM data_versions WHERE layer = 'members'")).scalar()
        calls = []
        build = service._build

        def racing_build(*args):  # another member write commits just before the snapshot
            calls.append(args)
            with demo_engine.begin() as conn:
                conn.execute(
                    text("UPDATE data_versions SET version = nextval('data_version_seq') WHERE layer = 'members'")
                )
            return build(*args)

        service._build = racing_build
        try:
            replies = tiles_client.portal.call(all_at_once)
        finally:
            service._build = build
        assert len(calls) == 1 and all(r.status == 200 for r in replies)
        assert service.known["members"] > members  # the build's snapshot holds the write, and the next
    finally:
        with demo_engine.begin() as conn:
            conn.execute(
                text("UPDATE registrations SET status = 'pending', decided_at = NULL, decided_by = NULL WHERE id = :r"),
                {"r": reg},
            )


def test_derived_records_as_fresh_as_asked_or_fresher():
    from tiles.derived import DerivedCache

    cache = DerivedCache()
    for at in ((1, 5), (2, 5), (2, 7)):
        cache.put(("grids", at), f"grids at {at}")
    cache.put(("h3", (9,), 10, 5), "h3 res 10")
    assert cache.at_least("grids", (2, 5)) == "grids at (2, 7)"  # the newest that is fresh enough
    assert cache.at_least("grids", (1, 1)) == "grids at (2, 7)"
    assert cache.at_least("grids", (2, 8)) is None and cache.at_least("grids", (3, 5)) is None
    assert cache.at_least("grids", (None, 5)) is None
    assert cache.at_least("h3", (9,), (10, 5)) == "h3 res 10" and cache.at_least("h3", (9,), (9, 5)) is None


def test_a_new_service_role_reaches_the_grid_figures_at_once(tiles_client, demo_engine):
    """The roles a grid misses follow the configured role list (service_roles): a role
    added is missing in every grid in the very next tile and coverage summary, and gone
    again once removed — no cache keeps the old list."""
    row = one(
        demo_engine,
        """SELECT g.code, ST_X(ST_PointOnSurface(gv.geom)), ST_Y(ST_PointOnSurface(gv.geom))
                              FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL
                              ORDER BY g.code LIMIT 1""",
    )
    code, lon, lat = row
    url = path("grids", tile_at(lon, lat, 15))
    admin = token_for("admin")

    def figures():
        tile = {f["properties"]["code"]: f["properties"] for f in features(tiles_client.get(url).content, "grids")}
        summary = tiles_client.get(
            "/v1/coverage/summary", params={"code": code[:12], "level": "grid"}, headers=admin
        ).json()
        unit = next(u for u in summary["units"] if u["code"] == code)
        return tile[code]["roles_missing"], tile[code]["roles_missing_names"], unit["roles_missing"]

    before = figures()
    try:
        with demo_engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO service_roles (code, name, position, active) "
                    "VALUES ('test_role', '测试岗位', 99, true)"
                )
            )
        missing, names, listed = figures()
        assert missing == before[0] + 1 and names.split(",")[-1] == "测试岗位" and listed[-1] == "测试岗位"
    finally:
        with demo_engine.begin() as conn:
            conn.execute(text("DELETE FROM service_roles WHERE code = 'test_role'"))
    assert figures() == before


@pytest.mark.clock
def test_events_tiles_expire_when_the_clock_flips_a_flag(tiles_client, demo_engine):
    service = tiles_client.app.state.tiles
    due = one(
        demo_engine,
        """SELECT ST_X(geom), ST_Y(geom), due_at FROM events
                              WHERE status IN ('dispatched', 'in_progress') AND due_at IS NOT NULL
                              ORDER BY due_at DESC LIMIT 1""",
    )
    tile = tile_at(due[0], due[1], 16)
    layers = (LAYERS["events"],)

    def render(now):
        async def draw():
            return await service.render(layers, tile, None, await service.reader.read(), now)

        return tiles_client.portal.call(draw)

    early = render(due[2] - timedelta(days=400))
    late = render(due[2] + timedelta(seconds=1))
    assert early.valid_until is not None and early.valid_until <= due[2]
    assert early.etag != late.etag and early.body != late.body
    assert early.fresh(early.versions, due[2] - timedelta(days=400))
    assert not early.fresh(early.versions, early.valid_until)
    # drawn at a later simulated instant with the same flags: the same validator
    same_flags = render(due[2] + timedelta(seconds=2))
    assert late.etag == same_flags.etag
    now = TEST_CLOCK.now()
    current = render(now)
    assert current.valid_until is None or current.valid_until > now


def test_cache_off_a_write_reaches_the_next_tile_without_a_version_read(demo_engine):
    row = one(
        demo_engine,
        """SELECT g.id, g.code, g.name, ST_X(ST_PointOnSurface(gv.geom)), ST_Y(ST_PointOnSurface(gv.geom))
                              FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL
                              ORDER BY g.code LIMIT 1""",
    )
    grid_id, code, name, lon, lat = row
    url = path("grids,events", tile_at(lon, lat, 15))
    with make_client(demo_engine, cache=False) as c:
        service = c.app.state.tiles
        before = c.get(url)
        assert before.status_code == 200
        assert c.get(url, headers={"If-None-Match": before.headers["etag"]}).status_code == 304
        reads, builds = service.reader.reads, service.derived.builds
        event_id = None
        try:
            with demo_engine.begin() as conn:
                conn.execute(text("UPDATE grids SET name = :n WHERE id = :g"), {"n": name + "（新）", "g": grid_id})
                event_id = _event_insert(conn, lon, lat)
            after = c.get(url, headers={"If-None-Match": before.headers["etag"]})
            assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
            assert [
                f["properties"]["name"] for f in features(after.content, "grids") if f["properties"]["code"] == code
            ] == [name + "（新）"]
            assert event_id in {f["id"] for f in features(after.content, "events")}
            # the grid figures were rebuilt at the versions the statement answered,
            # and no request read data_versions on its own
            assert service.derived.builds == builds + 1 and service.reader.reads == reads
            again = c.get(url)
            assert again.headers["etag"] == after.headers["etag"] and again.content == after.content
        finally:
            with demo_engine.begin() as conn:
                if event_id is not None:
                    conn.execute(text("DELETE FROM events WHERE id = :e"), {"e": event_id})
                conn.execute(text("UPDATE grids SET name = :n WHERE id = :g"), {"n": name, "g": grid_id})
        restored = c.get(url)
        assert restored.content == before.content and restored.headers["etag"] != before.headers["etag"]


def test_a_tile_drawn_with_stale_derived_records_is_drawn_again(tiles_client, demo_engine):
    service = tiles_client.app.state.tiles
    centre = one(
        demo_engine, "SELECT ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM admin_areas WHERE level = 'district'"
    )
    tile = tile_at(centre[0], centre[1], 13)
    layers = (LAYERS["grids"],)
    now = TEST_CLOCK.now()

    async def draw(stale: bool):
        versions = await service.reader.read()
        if stale:  # records as of another grids version than the database's
            versions = {**versions, "grids": versions["grids"] - 1_000_000}
        return await service.render(layers, tile, None, versions, now)

    right = tiles_client.portal.call(draw, False)
    redrawn = tiles_client.portal.call(draw, True)
    assert redrawn.body == right.body and redrawn.etag == right.etag and redrawn.versions == right.versions
    current = dict(every(demo_engine, "SELECT layer, version FROM data_versions"))
    # filed by the grids version its statement reads and the records at the current versions
    records = tiles_client.portal.call(service.params, LAYERS["grids"], tile, None, current, now)[5]
    assert dict(right.versions) == {
        "grids": current["grids"],
        "records:grids": hashlib.blake2b(records.encode(), digest_size=16).hexdigest(),
    }


def test_tiles_drawn_at_mixed_versions_are_served_but_not_cached():
    from tiles.cache import CachedTile, TileCache

    cache = TileCache(1 << 20)
    mixed = CachedTile(versions=None, etag="e", body=b"x")
    cache.put(("grids", 1, 0, 0, None), mixed)
    assert len(cache) == 0 and not mixed.fresh((), TEST_CLOCK.now())
    assert not cache.holds(("grids", 1, 0, 0, None)) and cache.misses == 1


@pytest.mark.parametrize("size", [1, 200, 511, 513, 4000, 16 * 1024, 16 * 1024 + 1, 70_000, 300_000])
def test_gzip_bodies_round_trip_and_repeat(size):
    import random

    from tiles.cache import gzip_body

    rng = random.Random(size)
    body = bytes(rng.choice(b"abcdefgh\x00\x01\x02") for _ in range(size))
    for level in (1, 6, 9):
        packed = gzip_body(body, level)
        assert gzip.decompress(packed) == body and packed == gzip_body(body, level)
        assert packed[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + packed[8:10]  # no name, mtime 0


def test_a_tile_whose_data_keeps_changing_is_served_but_not_filed(tiles_client, demo_engine, caplog):
    from tiles.service import RENDER_ATTEMPTS

    service = tiles_client.app.state.tiles
    centre = one(
        demo_engine, "SELECT ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM admin_areas WHERE level = 'district'"
    )
    tile = tile_at(centre[0], centre[1], 13)
    layers = (LAYERS["grids"], LAYERS["areas"])
    now = TEST_CLOCK.now()
    run, draws = service.pool.run, []

    async def written_then_drawn(work):
        with demo_engine.begin() as conn:  # a grid edit commits between the records' build and every draw
            conn.execute(text("UPDATE data_versions SET version = version + 1 WHERE layer = 'grids'"))
        rows = await run(work)
        draws.append(rows)
        return rows

    async def draw():
        return await service.render(layers, tile, None, await service.reader.read(), now)

    service.pool.run = written_then_drawn
    try:
        with caplog.at_level("WARNING", logger="gridbranch.tiles"):
            changing = tiles_client.portal.call(draw)
    finally:
        service.pool.run = run
    assert len(draws) == RENDER_ATTEMPTS
    assert "kept changing" in caplog.text
    assert changing.versions is None and changing.body  # served, with an ETag of its own, not filed
    settled = tiles_client.portal.call(draw)
    assert settled.versions is not None and settled.etag != changing.etag
    assert decode(settled.body).keys() == decode(changing.body).keys() == {"grids", "areas"}

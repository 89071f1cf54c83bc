"""Vector tiles on the Jinshui demo: decoded features and attributes, clipping at tile
edges, composites, entitlement, ETags and 304s, gzip, invalidation after writes, empty
tiles, feature limits, bad input."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import math
from datetime import UTC, timedelta

import h3
import pytest
import shapely
from fastapi.testclient import TestClient
from shapely.geometry import box, shape
from shapely.ops import polylabel
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.caches import Caches
from layers.coverage import current_findings, h3_cells
from layers.events import event_row
from layers.registrations import registration_stats
from tests.conftest import TEST_CLOCK, make_settings, token_for
from tests.factories.tiles import decode, make_client, path, tile_at, to_lonlat
from tiles.layers import LAYERS, PUBLIC_LAYERS
from tiles.tms import BUFFER, EXTENT, MARGIN, Tile, tile_bounds

MVT = "application/vnd.mapbox-vector-tile"
PUBLIC = ",".join(PUBLIC_LAYERS)


def one(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).first()


def every(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).all()


def grid_geometry(engine, code: str):
    row = one(
        engine,
        """SELECT ST_AsBinary(gv.geom) FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id
                         AND gv.valid_to IS NULL WHERE g.code = :c""",
        c=code,
    )
    return shapely.from_wkb(bytes(row[0]))


def features(body: bytes, layer: str) -> list[dict]:
    return decode(body).get(layer, {}).get("features", [])


# --------------------------------------------------------------------------------------
# Features, attributes, geometry
# --------------------------------------------------------------------------------------


def test_grid_tile_attributes_match_the_database(tiles_client, demo_engine):
    # a grid without a branch and one with, each at the tile of its inner point
    for has_branch in (False, True):
        row = one(
            demo_engine,
            f"""
            SELECT g.id, g.code, g.name, c.code AS community, ST_X(ST_PointOnSurface(gv.geom)) AS x,
                   ST_Y(ST_PointOnSurface(gv.geom)) AS y
              FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL
              JOIN admin_areas c ON c.id = g.community_id
             WHERE {"" if has_branch else "NOT"} EXISTS (SELECT 1 FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id
                                                          WHERE bg.grid_id = g.id AND b.active)
             ORDER BY g.code LIMIT 1""",
        )
        tile = tile_at(row.x, row.y, 14)
        r = tiles_client.get(path("grids", tile))
        assert r.status_code == 200 and r.headers["content-type"] == MVT
        found = [f for f in features(r.content, "grids") if f["properties"]["code"] == row.code]
        assert len(found) == 1
        f = found[0]
        assert f["id"] == row.id
        p = f["properties"]
        assert p["name"] == row.name and p["community"] == row.community and p["has_branch"] is has_branch
        assert set(p) <= set(LAYERS["grids"].fields)
        branch = one(
            demo_engine,
            """SELECT b.name FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id
                                     WHERE bg.grid_id = :g AND b.active ORDER BY (b.kind <> 'grid'), b.code LIMIT 1""",
            g=row.id,
        )
        assert p.get("branch") == (branch[0] if branch else None)
        with Session(demo_engine) as session:
            stats = {s["code"]: s for s in registration_stats(session, Caches(), level="grid", within=row.code)}[
                row.code
            ]
        confirmed = one(
            demo_engine, "SELECT count(*) FROM registrations WHERE grid_id = :g AND status = 'confirmed'", g=row.id
        )[0]
        assert p["registered"] == confirmed == stats["registered"]
        assert p.get("rate") == pytest.approx(stats["rate"]) if stats["rate"] is not None else "rate" not in p
        assert p["roles_missing"] == len(stats["roles_missing"])
        assert p["roles_missing_names"] == ",".join(stats["roles_missing"])
        # the decoded polygon is the grid clipped to the tile (plus its buffer)
        drawn = to_lonlat(tile, f["geometry"])
        expected = grid_geometry(demo_engine, row.code).intersection(box(*tile_bounds(tile, MARGIN)))
        assert drawn.symmetric_difference(expected).area / expected.area < 0.01


def test_the_whole_district_view_of_a_phone_carries_every_grid(tiles_client, demo_engine):
    """At z9 (the district fitted on a phone's screen) the grids layer is drawn: the
    tiles over the district's extent hold every current grid, with its branch flag."""
    bounds = one(
        demo_engine,
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
        "FROM (SELECT ST_Extent(geom) e FROM admin_areas WHERE level = 'district') s",
    )
    nw, se = tile_at(bounds[0], bounds[3], 9), tile_at(bounds[2], bounds[1], 9)
    seen = {}
    for x in range(nw.x, se.x + 1):
        for y in range(nw.y, se.y + 1):
            r = tiles_client.get(path("grids", Tile(9, x, y)))
            assert r.status_code == 200 and "x-tile-truncated" not in r.headers
            for f in features(r.content, "grids"):
                seen[f["properties"]["code"]] = f["properties"]["has_branch"]
    with demo_engine.connect() as conn:
        expected = dict(
            conn.execute(
                text(
                    "SELECT g.code, EXISTS (SELECT 1 FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id "
                    "                        WHERE bg.grid_id = g.id AND b.active) "
                    "  FROM grids g WHERE g.retired_at IS NULL"
                )
            ).all()
        )
    assert seen == expected and len(expected) >= 500


def test_polygons_are_clipped_at_tile_edges_and_continue_across(tiles_client, demo_engine):
    # a grid crossing the boundary between two z16 tiles
    z = 16
    rows = every(
        demo_engine,
        """
        SELECT g.code, ST_XMin(gv.geom) AS x0, ST_XMax(gv.geom) AS x1, ST_Y(ST_PointOnSurface(gv.geom)) AS y
          FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL ORDER BY g.code""",
    )
    for row in rows:
        left, right = tile_at(row.x0, row.y, z), tile_at(row.x1, row.y, z)
        if right.x == left.x + 1 and left.y == right.y:
            break
    else:
        pytest.fail("no grid crosses a z16 column boundary")
    geom = grid_geometry(demo_engine, row.code)
    pieces = []
    for tile in (left, right):
        r = tiles_client.get(path("grids", tile))
        found = [f for f in features(r.content, "grids") if f["properties"]["code"] == row.code]
        assert len(found) == 1, tile
        coords = shapely.get_coordinates(shape(found[0]["geometry"]))
        assert coords.min() >= -BUFFER and coords.max() <= EXTENT + BUFFER  # clipped to tile + buffer
        assert coords[:, 0].min() < 0 if tile == right else coords[:, 0].max() > EXTENT  # crosses into the buffer
        pieces.append(to_lonlat(tile, found[0]["geometry"]).intersection(box(*tile_bounds(tile))))
    both = box(*tile_bounds(left)).union(box(*tile_bounds(right)))
    expected = geom.intersection(both)
    drawn = shapely.union_all(pieces)
    assert drawn.symmetric_difference(expected).area / expected.area < 0.01


def test_composite_tile_holds_each_layer_as_served_alone(tiles_client, demo_engine):
    row = one(demo_engine, "SELECT ST_X(site), ST_Y(site) FROM branches WHERE site IS NOT NULL ORDER BY code LIMIT 1")
    tile = tile_at(row[0], row[1], 14)
    r = tiles_client.get(path(PUBLIC, tile))
    assert r.status_code == 200
    layers = decode(r.content)
    assert {"areas", "grids", "branches", "events", "coverage_issues", "members_h3", "labels"} >= set(layers)
    assert {"areas", "grids", "branches", "members_h3"} <= set(layers)
    for name in PUBLIC_LAYERS:
        alone = decode(tiles_client.get(path(name, tile)).content).get(name, {"features": []})["features"]
        assert layers.get(name, {"features": []})["features"] == alone, name
    # areas: every level, attributes as declared
    levels = {f["properties"]["level"] for f in layers["areas"]["features"]}
    assert levels == {"district", "street", "community"}
    assert all(set(f["properties"]) == {"level", "code", "name"} for f in layers["areas"]["features"])
    branch = layers["branches"]["features"][0]["properties"]
    assert set(branch) <= set(LAYERS["branches"].fields) and "secretary" not in str(branch)
    # zoom ranges: at z8 only the areas layer and the coverage findings are drawn (and the
    # district's name, in the tile it lies in; gaps are looked for on the whole district),
    # at z9 the grids too (a phone's whole-district view)
    z8 = tile_at(row[0], row[1], 8)
    assert set(decode(tiles_client.get(path(PUBLIC, z8)).content)) - {"labels"} == {"areas", "coverage_issues"}
    z9 = tile_at(row[0], row[1], 9)
    assert set(decode(tiles_client.get(path(PUBLIC, z9)).content)) - {"labels"} == {"areas", "grids", "coverage_issues"}


@pytest.mark.parametrize("z", range(9, 17))
def test_composite_tile_is_the_layers_served_alone_byte_for_byte(tiles_client, demo_engine, z):
    """One composite statement draws the same bytes as each layer's own statement."""
    centre = one(
        demo_engine, "SELECT ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM admin_areas WHERE level = 'district'"
    )
    for dx, dy in ((0, 0), (1, 0), (0, 1)):
        t = tile_at(centre[0], centre[1], z)
        tile = Tile(z, t.x + dx, t.y + dy)
        both = tiles_client.get(path(PUBLIC, tile), headers={"Accept-Encoding": "identity"})
        drawn = [n for n in PUBLIC_LAYERS if LAYERS[n].minzoom <= z <= LAYERS[n].maxzoom]
        assert len(drawn) >= 2
        alone = [tiles_client.get(path(name, tile), headers={"Accept-Encoding": "identity"}) for name in drawn]
        assert both.status_code in (200, 204) and all(r.status_code in (200, 204) for r in alone)
        assert "x-tile-truncated" not in both.headers
        assert both.content == b"".join(r.content for r in alone), (z, tile)


def district_tiles_at(engine, z: int) -> list[Tile]:
    """Every tile at zoom ``z`` meeting the district."""
    district = shapely.from_wkb(
        bytes(one(engine, "SELECT ST_AsBinary(geom) FROM admin_areas WHERE level = 'district'")[0])
    )
    minx, miny, maxx, maxy = district.bounds
    nw, se = tile_at(minx, maxy, z), tile_at(maxx, miny, z)
    return [
        Tile(z, x, y)
        for x in range(nw.x, se.x + 1)
        for y in range(nw.y, se.y + 1)
        if district.intersects(box(*tile_bounds(Tile(z, x, y))))
    ]


def label_units(engine) -> dict[tuple[str, str], tuple[str, object]]:
    """(level, code) → (name, geometry) of the district, streets, communities and current grids."""
    rows = every(
        engine,
        """
        SELECT level::text, code::text, name, ST_AsBinary(geom) FROM admin_areas
        UNION ALL
        SELECT 'grid', g.code, g.name, ST_AsBinary(gv.geom)
          FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL
         WHERE g.retired_at IS NULL""",
    )
    return {(level, code): (name, shapely.from_wkb(bytes(wkb))) for level, code, name, wkb in rows}


@pytest.mark.parametrize("z", [8, 10, 11, 13, 14, 15, 16])
def test_labels_write_each_name_once_inside_its_unit(tiles_client, demo_engine, z):
    """Over every tile of the district at a zoom: each unit of the levels labelled there
    has its name written exactly once (a point in the buffer belongs to the neighbour),
    inside its own boundary; no other level is labelled."""
    from tiles.layers import label_levels

    units = label_units(demo_engine)
    seen: dict[tuple[str, str], tuple[str, object, Tile]] = {}
    for tile in district_tiles_at(demo_engine, z):
        r = tiles_client.get(path("labels", tile))
        assert r.status_code in (200, 204)
        for f in features(r.content, "labels"):
            x, y = f["geometry"]["coordinates"]
            if not (0 <= x < EXTENT and 0 <= y < EXTENT):
                continue  # in the buffer: written by the tile it lies in
            props = f["properties"]
            assert set(props) == {"level", "code", "name"}
            key = (props["level"], props["code"])
            assert key not in seen, (key, tile, seen.get(key))
            seen[key] = (props["name"], to_lonlat(tile, f["geometry"]), tile)
    levels = label_levels(z)
    assert levels and set(seen) == {k for k in units if k[0] in levels}
    for key, (name, point, tile) in seen.items():
        assert name == units[key][0], key
        minx, _, maxx, _ = tile_bounds(tile)
        assert units[key][1].distance(point) <= 2 * (maxx - minx) / EXTENT, key  # the encoding's rounding
        # well inside, not by an edge: at least a fifth of the largest inscribed circle's radius away
        largest = max(shapely.get_parts(units[key][1]), key=lambda g: g.area)
        radius = polylabel(largest, 1e-6).distance(largest.boundary)  # its inscribed circle's
        assert units[key][1].boundary.distance(point) > 0.2 * radius, key


def test_a_renamed_grid_is_relabelled_at_once_and_only_where_it_is_written(tiles_client, demo_engine):
    from layers.places import label_point

    grids = sorted((k, v) for k, v in label_units(demo_engine).items() if k[0] == "grid")
    (_, code), (name, geom) = grids[0]
    (_, far_code), (far_name, far_geom) = grids[-1]
    tile, far = tile_at(*label_point(geom), 15), tile_at(*label_point(far_geom), 15)
    assert tile != far

    def names(t):
        r = tiles_client.get(path("labels", t))
        return r, {f["properties"]["code"]: f["properties"]["name"] for f in features(r.content, "labels")}

    before, shown = names(tile)
    far_before, far_shown = names(far)
    assert shown[code] == name and far_shown[far_code] == far_name
    renamed = f"{name}（更名）"
    with demo_engine.begin() as conn:
        conn.execute(text("UPDATE grids SET name = :n WHERE code = :c"), {"n": renamed, "c": code})
    try:
        after, shown = names(tile)
        assert shown[code] == renamed and after.headers["etag"] != before.headers["etag"]
        # the grids version moved, but the far tile's labels did not: same ETag, a 304
        again = tiles_client.get(path("labels", far), headers={"If-None-Match": far_before.headers["etag"]})
        assert again.status_code == 304
    finally:
        with demo_engine.begin() as conn:
            conn.execute(text("UPDATE grids SET name = :n WHERE code = :c"), {"n": name, "c": code})
    assert names(tile)[1][code] == name


def test_composite_statements_stay_prepared_within_a_bound(tiles_client, demo_engine):
    from layers.pg import execute
    from tiles.service import COMPOSITES_PER_CONNECTION

    service = tiles_client.app.state.tiles
    row = one(demo_engine, "SELECT ST_X(site), ST_Y(site) FROM branches WHERE site IS NOT NULL ORDER BY code LIMIT 1")
    tile = tile_at(row[0], row[1], 15)
    names = list(PUBLIC_LAYERS)
    combos = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]] + [tuple(names), tuple(names[:3])]
    assert len(combos) > COMPOSITES_PER_CONNECTION
    bodies = {}
    for combo in combos + combos[:3]:  # the first three again, after they were deallocated
        r = tiles_client.get(path(",".join(combo), tile), headers={"Accept-Encoding": "identity"})
        assert r.status_code in (200, 204)
        assert bodies.setdefault(combo, r.content) == r.content
        assert r.content == b"".join(
            tiles_client.get(path(n, tile), headers={"Accept-Encoding": "identity"}).content for n in combo
        )

    async def prepared(conn):
        return await execute(conn, "SELECT name FROM pg_prepared_statements WHERE name LIKE 'gb_tiles_%'", fetch="all")

    held = tiles_client.portal.call(service.pool.run, prepared)
    assert 0 < len(held) <= COMPOSITES_PER_CONNECTION


@pytest.mark.clock
def test_event_flags_follow_the_events_module(tiles_client, demo_engine):
    warn_share = tiles_client.app.state.settings.events.warn_share
    centre = one(
        demo_engine, "SELECT ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM admin_areas WHERE level = 'district'"
    )
    tile = tile_at(centre[0], centre[1], 12)
    found = features(tiles_client.get(path("events", tile)).content, "events")
    assert len(found) > 20
    states = {"overdue": 0, "warning": 0}
    with Session(demo_engine) as session:
        for f in found:
            row = event_row(session, f["id"], warn_share=warn_share)
            p = f["properties"]
            assert p["status"] == row.status and p["category"] == row.category_code
            assert set(p) <= set(LAYERS["events"].fields)
            if row.due_at is None:
                assert "due_at" not in p and not p["overdue"] and not p["warning"]
                continue
            assert p["due_at"] == row.due_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            assert p["overdue"] == (row.time_state == "overdue"), f["id"]
            assert p["warning"] == (row.time_state == "warning"), f["id"]
            states["overdue"] += p["overdue"]
            states["warning"] += p["warning"]
    assert states["overdue"] > 0
    # priority order: overdue first, then warnings
    flags = [(f["properties"]["overdue"], f["properties"]["warning"]) for f in found]
    assert flags == sorted(flags, key=lambda t: (not t[0], not t[1]))


def test_h3_counts_are_suppressed_below_the_minimum(tiles_client, demo_engine):
    k = tiles_client.app.state.settings.coverage.h3_min_count
    centre = one(
        demo_engine, "SELECT ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM admin_areas WHERE level = 'district'"
    )
    tile = tile_at(centre[0], centre[1], 15)  # resolution 9
    found = features(tiles_client.get(path("members_h3", tile)).content, "members_h3")
    with Session(demo_engine) as session:
        every = {
            c["cell"]: c["count"]
            for c in h3_cells(session, Caches(), res=9, metric="members", within=None, suppress_below=None)
        }
    assert found and all(f["properties"]["res"] == 9 for f in found)
    assert all(f["properties"]["count"] >= k for f in found)
    assert all(every[f["properties"]["cell"]] == f["properties"]["count"] for f in found)
    # cells under the minimum in this tile exist and are left out
    bounds = box(*tile_bounds(tile))
    small = [c for c, n in every.items() if n < k and bounds.contains(shapely.Point(h3.cell_to_latlng(c)[::-1]))]
    shown = {f["properties"]["cell"] for f in found}
    assert small and not shown & set(small)


@pytest.mark.parametrize("z", [11, 13, 15, 16])  # resolutions 7, 8, 9, 10
def test_h3_tiles_agree_with_the_public_api(tiles_client, demo_engine, z):
    """The public members_h3 layer is the API's unentitled answer, cell for cell: the
    same hierarchy and complementary suppression at every zoom, counts ≥ k only."""
    from tests.factories.h3 import points, true_counts
    from tiles.service import H3_RES

    res, k = H3_RES[z], tiles_client.app.state.settings.coverage.h3_min_count
    r = tiles_client.get("/v1/coverage/h3", params={"res": res, "metric": "members"})
    assert r.status_code == 200 and r.json()["suppressed"] is True
    api = {f["properties"]["cell"]: f["properties"]["count"] for f in r.json()["features"]}
    with Session(demo_engine) as session:
        true = true_counts(points(session, "members"))[res]
    biggest = max(api, key=lambda c: (api[c], c))  # the tile of the most populous published cell
    lat, lon = h3.cell_to_latlng(biggest)
    tile = tile_at(lon, lat, z)
    found = features(tiles_client.get(path("members_h3", tile)).content, "members_h3")
    shown = {f["properties"]["cell"]: f["properties"]["count"] for f in found}
    assert found and all(f["properties"]["res"] == res for f in found)
    assert all(n >= k for n in shown.values())
    assert shown == {c: api[c] for c in shown} and all(api[c] == true[c] for c in shown)
    bounds = box(*tile_bounds(tile))
    here = {c for c in true if bounds.contains(shapely.Point(h3.cell_to_latlng(c)[::-1]))}
    assert here & set(api) <= set(shown)  # what the API publishes in the tile is drawn
    assert not (here - set(api)) & set(shown)  # what it withholds is not
    if z == 13:  # on the demo this tile withholds a cell of ≥ k people (a complement)
        assert any(true[c] >= k for c in here - set(api))
    if z == 16:
        assert len(here - set(api)) > len(shown)


def test_coverage_issues_show_the_demo_defects(tiles_client, demo_engine):
    with Session(demo_engine) as session:
        findings = [f for f in current_findings(session, Caches()) if f["kind"] in ("gap", "overlap", "sliver")]
    assert findings
    for f in findings:
        tile = tile_at(f["point"][0], f["point"][1], 15)
        found = features(tiles_client.get(path("coverage_issues", tile)).content, "coverage_issues")
        match = [
            g
            for g in found
            if g["properties"]["kind"] == f["kind"] and g["properties"]["codes"] == ",".join(f["codes"])
        ]
        assert match, f
        assert match[0]["properties"]["area_m2"] == pytest.approx(f["area_m2"])


# --------------------------------------------------------------------------------------
# Personal data
# --------------------------------------------------------------------------------------


def test_nothing_personal_in_public_tiles(tiles_client, demo_engine):
    with demo_engine.connect() as conn:
        names = set(conn.execute(text("SELECT name FROM members")).scalars())
        phones = {p for p in conn.execute(text("SELECT phone FROM members")).scalars() if p}
        phones |= {p for p in conn.execute(text("SELECT secretary_phone FROM branches")).scalars() if p}
        phones |= {p for p in conn.execute(text("SELECT worker_phone FROM grids")).scalars() if p}
        homes = conn.execute(
            text("SELECT ST_X(geom), ST_Y(geom) FROM residences WHERE ended_at IS NULL LIMIT 400")
        ).all()
    seen = 0
    for lon, lat in homes[::40]:
        tile = tile_at(lon, lat, 16)
        for headers in ({}, token_for("dispatcher"), token_for("gridworker")):
            r = tiles_client.get(path(PUBLIC, tile), headers=headers)
            assert r.status_code in (200, 204)
            assert "members" not in decode(r.content)
            for name, layer in decode(r.content).items():
                declared = set(LAYERS[name].fields) if name in LAYERS else {"layer", "limit"}
                for f in layer["features"]:
                    assert set(f["properties"]) <= declared
                    values = {str(v) for v in f["properties"].values()}
                    assert not values & names and not values & phones
                    seen += 1
    assert seen > 100


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


# --------------------------------------------------------------------------------------
# HTTP caching
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Data versions answered by the tile statements
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Feature limits
# --------------------------------------------------------------------------------------


def test_feature_limit_keeps_the_stated_priority_and_says_so(demo_engine):
    centre = one(
        demo_engine, "SELECT ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM admin_areas WHERE level = 'district'"
    )
    tile = tile_at(centre[0], centre[1], 11)
    with make_client(demo_engine, feature_limits={"grids": 7, "areas": 3}) as c:
        r = c.get(path("areas,grids", tile))
        layers = decode(r.content)
    assert len(layers["grids"]["features"]) == 7 and len(layers["areas"]["features"]) == 3
    assert {(f["properties"]["layer"], f["properties"]["limit"]) for f in layers["truncated"]["features"]} == {
        ("grids", 7),
        ("areas", 3),
    }
    assert r.headers["x-tile-truncated"] == "areas;limit=3, grids;limit=7"
    expected = [
        row.code
        for row in every(
            demo_engine,
            f"""
        SELECT g.code FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL
         WHERE g.retired_at IS NULL
           AND gv.geom && ST_Transform(ST_TileEnvelope({tile.z}, {tile.x}, {tile.y}, margin => {MARGIN}), 4326)
         ORDER BY EXISTS (SELECT 1 FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id
                           WHERE bg.grid_id = g.id AND b.active),
                  round(ST_Area(gv.geom::geography)::numeric, 1) DESC, g.code LIMIT 7""",
        )
    ]
    assert [f["properties"]["code"] for f in layers["grids"]["features"]] == expected
    assert [f["properties"]["has_branch"] for f in layers["grids"]["features"]].count(False) >= 1
    assert [f["properties"]["level"] for f in layers["areas"]["features"]][:2] == ["district", "street"]


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, status, field",
    [
        ("/tiles/nope/14/13368/6500.mvt", 404, "layers"),
        ("/tiles/grids,nope/14/13368/6500.mvt", 404, "layers"),
        ("/tiles/grids,grids/14/13368/6500.mvt", 422, "layers"),
        ("/tiles/grids,/14/13368/6500.mvt", 422, "layers"),
        ("/tiles/grids/17/13368/6500.mvt", 404, "z"),
        ("/tiles/grids/8/200/100.mvt", 404, "z"),
        ("/tiles/grids/99/1/1.mvt", 404, "z"),
        ("/tiles/grids/14/16384/6500.mvt", 404, "x"),
        ("/tiles/grids/14/13368/16384.mvt", 404, "y"),
        ("/tiles/grids/14/-1/6500.mvt", 404, "x"),
        ("/tiles/grids/14/13368/99999999999999999999.mvt", 404, "y"),
        ("/tiles/grids/z/13368/6500.mvt", 422, "z"),
        ("/tiles/grids/14/1.5/6500.mvt", 422, "x"),
        ("/tiles/nope.json", 404, "layers"),
    ],
)
def test_bad_tile_requests_are_4xx_naming_the_part(tiles_client, url, status, field):
    for headers in ({}, token_for("dispatcher")):
        r = tiles_client.get(url, headers=headers)
        assert r.status_code == status, (url, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert body["field"] == field and body["detail"]


# --------------------------------------------------------------------------------------
# TileJSON and style
# --------------------------------------------------------------------------------------


def test_tilejson_for_a_layer_and_a_composite(tiles_client, demo_engine):
    extent = one(
        demo_engine,
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) e FROM admin_areas) s",
    )
    tj = tiles_client.get("/tiles/grids.json").json()
    assert tj["tilejson"] == "3.0.0" and tj["scheme"] == "xyz"
    assert tj["tiles"] == ["http://testserver/tiles/grids/{z}/{x}/{y}.mvt"]
    assert (tj["minzoom"], tj["maxzoom"]) == (9, 16)
    assert tj["bounds"] == pytest.approx(list(extent), abs=1e-5)
    layer = tj["vector_layers"][0]
    assert layer["id"] == "grids" and set(layer["fields"]) == set(LAYERS["grids"].fields)
    both = tiles_client.get("/tiles/areas,events.json").json()
    assert [v["id"] for v in both["vector_layers"]] == ["areas", "events", "truncated"]
    assert (both["minzoom"], both["maxzoom"]) == (8, 16)
    assert both["tiles"] == ["http://testserver/tiles/areas,events/{z}/{x}/{y}.mvt"]
    admin = tiles_client.get("/tiles/members.json", headers=token_for("admin"))
    assert admin.status_code == 200 and admin.headers["cache-control"].startswith("private")


def test_urls_hold_behind_a_reverse_proxy(tiles_client):
    proxied = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "map.example.org",
        "X-Forwarded-Prefix": "/gridbranch/",
    }
    tj = tiles_client.get("/tiles/grids.json", headers=proxied).json()
    assert tj["tiles"] == ["https://map.example.org/gridbranch/tiles/grids/{z}/{x}/{y}.mvt"]
    style = tiles_client.get("/tiles/style.json", headers=proxied).json()
    assert style["sources"]["gridbranch"]["tiles"][0].startswith("https://map.example.org/gridbranch/tiles/")
    odd = tiles_client.get(
        "/tiles/grids.json",
        headers={"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "a b/c", "X-Forwarded-Prefix": "no-slash"},
    ).json()
    assert odd["tiles"] == ["http://testserver/tiles/grids/{z}/{x}/{y}.mvt"]
    assert "X-Forwarded-Host" in tiles_client.get("/tiles/grids.json").headers["vary"]


def test_style_is_usable_offline_by_maplibre(tiles_client):
    r = tiles_client.get("/tiles/style.json")
    assert r.status_code == 200
    style = r.json()
    assert style["version"] == 8 and "glyphs" not in style and "sprite" not in style
    assert all(layer["type"] in ("background", "fill", "line", "circle", "symbol") for layer in style["layers"])
    source = style["sources"]["gridbranch"]
    assert source["tiles"] == [f"http://testserver/tiles/{PUBLIC}/{{z}}/{{x}}/{{y}}.mvt"]
    for layer in style["layers"]:
        if layer["type"] != "background":
            assert layer["source"] == "gridbranch" and layer["source-layer"] in PUBLIC_LAYERS
        if layer["type"] == "symbol":  # names only, in local fonts: no icons, no named fonts
            assert layer["source-layer"] == "labels" and layer["layout"]["text-field"] == ["get", "name"]
            assert not {"icon-image", "text-font"} & set(layer["layout"])
        else:
            assert "text-field" not in layer.get("layout", {})
    assert (
        style["layers"][-1]["id"] == "labels-text" and style["layers"][-1]["source-layer"] == "labels"
    )  # names on top
    urls = [u for s in style["sources"].values() for u in s["tiles"]]
    assert all(u.startswith("http://testserver/") for u in urls)
    admin = tiles_client.get("/tiles/style.json", headers=token_for("admin"))
    assert "members" in admin.json()["sources"] and admin.headers["cache-control"].startswith("private")


# --------------------------------------------------------------------------------------
# Tile arithmetic against PostGIS
# --------------------------------------------------------------------------------------


def test_tile_bounds_match_postgis(demo_engine):
    for t in (Tile(10, 835, 405), Tile(16, 53449, 25990), Tile(5, 3, 28), Tile(0, 0, 0), Tile(3, 0, 7)):
        for margin in (0.0, MARGIN):
            got = tile_bounds(t, margin)
            expected = one(
                demo_engine,
                f"""SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (
                SELECT ST_Transform(ST_TileEnvelope({t.z}, {t.x}, {t.y}, margin => {margin}), 4326) AS e) s""",
            )
            if not (margin and t.x in (0, (1 << t.z) - 1)):
                assert got == pytest.approx(tuple(expected), abs=1e-9), (t, margin)
            else:  # the buffer crosses the antimeridian: all longitudes, a superset
                assert (got[0], got[2]) == (-180, 180) and got[1::2] == pytest.approx(tuple(expected)[1::2])
    assert math.isclose(tile_bounds(Tile(1, 0, 0))[2], 0.0, abs_tol=1e-12)


def test_style_passes_the_maplibre_style_spec_validator(tiles_client, tmp_path):
    """The style-spec package MapLibre itself ships (web_map's npm install) validates it."""
    import json
    import shutil
    import subprocess
    from pathlib import Path

    web_map = Path(__file__).resolve().parents[2] / "web_map"
    spec = web_map / "node_modules" / "@maplibre" / "maplibre-gl-style-spec"
    node = shutil.which("node")
    if node is None or not spec.exists():
        pytest.fail("node or web_map's npm packages are not installed: scripts/test.sh installs them")
    for headers in ({}, token_for("admin")):
        path_ = tmp_path / "style.json"
        path_.write_text(json.dumps(tiles_client.get("/tiles/style.json", headers=headers).json()))
        script = (
            "const spec = require('@maplibre/maplibre-gl-style-spec');"
            f"const errors = spec.validateStyleMin(require({json.dumps(str(path_))}));"
            "console.log(JSON.stringify(errors));"
        )
        done = subprocess.run([node, "-e", script], cwd=web_map, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == []


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


# --------------------------------------------------------------------------------------
# Public aggregates and the audit of private tiles
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [None, 15], ids=["default-k", "k15"])
def test_public_grid_figures_hold_no_small_count_and_resist_differencing(tiles_client, demo_engine, k):
    """The public grids tiles over the whole district (z9): no registered count below k
    (figures withheld instead, ``suppressed``), and no community's or street's true total
    minus its shown grids leaves fewer than k (but more than 0) members unaccounted. The
    demo's grids all count at least the default 5; at k = 15 a few dozen do not, and
    some of their siblings are withheld with them."""
    from geo_api.app import create_app
    from geo_api.settings import CoverageSettings

    if k is None:
        client, k = tiles_client, make_settings().coverage.h3_min_count
    else:
        settings = make_settings()
        settings.coverage = CoverageSettings(h3_min_count=k)
        client = TestClient(create_app(settings, engine=demo_engine))
        client.__enter__()
    try:
        _check_public_grid_figures(client, demo_engine, k)
    finally:
        if client is not tiles_client:
            client.__exit__(None, None, None)


def _check_public_grid_figures(tiles_client, demo_engine, k: int) -> None:
    bounds = one(
        demo_engine,
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
        "FROM (SELECT ST_Extent(geom) e FROM admin_areas WHERE level = 'district') s",
    )
    nw, se = tile_at(bounds[0], bounds[3], 9), tile_at(bounds[2], bounds[1], 9)
    shown: dict[str, int | None] = {}
    for x in range(nw.x, se.x + 1):
        for y in range(nw.y, se.y + 1):
            for f in features(tiles_client.get(path("grids", Tile(9, x, y))).content, "grids"):
                p = f["properties"]
                assert p["suppressed"] is ("registered" not in p) and p["suppressed"] is ("rate" not in p)
                shown[p["code"]] = p.get("registered")
    true = dict(
        every(
            demo_engine,
            """SELECT g.code, count(r.id) FROM grids g LEFT JOIN registrations r
                                      ON r.grid_id = g.id AND r.status = 'confirmed'
                                      WHERE g.retired_at IS NULL GROUP BY g.code""",
        )
    )
    assert set(shown) == set(true)
    assert all(n is None or n >= k for n in shown.values())
    assert all(n == true[c] for c, n in shown.items() if n is not None)
    small = [c for c, n in true.items() if n < k]
    assert all(shown[c] is None for c in small)
    complements = [c for c, n in shown.items() if n is None and true[c] >= k]
    if k == 15:  # the demo at 15: primary and complementary suppression both at work
        assert len(small) > 10 and complements
    for width in (12, 9, 6):  # community, street, district totals minus their shown grids
        for unit in {c[:width] for c in true}:
            left = sum(n for c, n in true.items() if c[:width] == unit and shown[c] is None)
            assert left == 0 or left >= k, (unit, left)


def test_a_members_tile_is_audited_with_the_members_it_holds(tiles_client, demo_engine):
    from geo_api.audit import writer_of

    lon, lat = one(
        demo_engine, "SELECT ST_X(geom), ST_Y(geom) FROM residences WHERE ended_at IS NULL ORDER BY id LIMIT 1"
    )
    tile = tile_at(lon, lat, 16)
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


def test_behind_nginx_public_tiles_are_marked_for_revalidation_and_private_ones_never(demo_engine):
    """GRIDBRANCH_TILES_PROXY_REVALIDATE (set by the stack, tests/stack) marks public tiles
    ``X-Accel-Expires: @1`` — kept by nginx, yet asked again every time — on the fast path
    and the route alike, their 304s included; tiles with personal data never."""
    tile = tile_at(113.6849, 34.7979, 15)
    with make_client(demo_engine, proxy_revalidate=True) as c:
        fast = c.get(path("grids", tile))
        routed = c.get(path("grids", tile), headers=token_for("dispatcher"))
        again = c.get(path("grids", tile), headers={"If-None-Match": fast.headers["etag"]})
        private = c.get(path("members", tile), headers=token_for("admin"))
    assert fast.status_code == routed.status_code == 200 and again.status_code == 304
    assert fast.headers["x-accel-expires"] == routed.headers["x-accel-expires"] == "@1"
    assert again.headers["x-accel-expires"] == "@1"
    assert private.status_code in (200, 204) and "x-accel-expires" not in private.headers
    assert private.headers["cache-control"] == "private, no-store"
    with make_client(demo_engine) as c:  # without nginx in front: no such header
        assert "x-accel-expires" not in c.get(path("grids", tile)).headers

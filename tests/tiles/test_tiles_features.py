"""Vector tiles on the Jinshui demo: decoded features and their attributes against the
database, clipping at tile edges, composites, labels, event flags, H3 counts, coverage
issues, feature limits, and the tile arithmetic against PostGIS."""

from __future__ import annotations

import math
from datetime import UTC

import h3
import pytest
import shapely
from shapely.geometry import box, shape
from shapely.ops import polylabel
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.caches import Caches
from layers.coverage import current_findings, h3_cells
from layers.events import event_row
from layers.registrations import registration_stats
from tests.factories.tiles import (
    MVT,
    PUBLIC,
    decode,
    every,
    features,
    grid_geometry,
    make_client,
    one,
    path,
    tile_at,
    to_lonlat,
)
from tiles.layers import LAYERS, PUBLIC_LAYERS
from tiles.tms import BUFFER, EXTENT, MARGIN, Tile, tile_bounds


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
    # zoom ranges: at z8 only the areas layer is drawn (and the district's name, in the
    # tile it lies in), at z9 the grids too (a phone's whole-district view)
    z8 = tile_at(row[0], row[1], 8)
    assert set(decode(tiles_client.get(path(PUBLIC, z8)).content)) - {"labels"} == {"areas"}
    z9 = tile_at(row[0], row[1], 9)
    assert set(decode(tiles_client.get(path(PUBLIC, z9)).content)) - {"labels"} == {"areas", "grids"}


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

"""What public tiles hold: nothing personal, and grid figures that hold no small count
and cannot be differenced into one."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import make_settings, token_for
from tests.factories.tiles import PUBLIC, decode, every, features, one, path, tile_at
from tiles.layers import LAYERS
from tiles.tms import Tile


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

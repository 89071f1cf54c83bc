"""Locating points on a hand-made layer whose answers are known exactly."""

import numpy as np
import pytest
from pyproj import Geod

from layers.crs import haversine_m
from layers.locate import BOUNDARY, INSIDE, NEAREST, OUTSIDE, GridIndexCache, build_grid_index
from tests.factories import GRID_A, GRID_B, GRID_C, add_grid, rect, small_layout

X, Y = 113.60, 34.70


@pytest.fixture
def index(empty_db):
    small_layout(empty_db, X, Y)
    return build_grid_index(empty_db)


def locate(index, points, tolerance_m=30.0):
    lon = np.array([p[0] for p in points], float)
    lat = np.array([p[1] for p in points], float)
    return index.locate(lon, lat, tolerance_m=tolerance_m, edge_m=0.05)


def codes(index, located, i):
    return index.grids[int(located.grid[i])]["code"]


def test_inside(index):
    r = locate(index, [(X + 0.02, Y + 0.02), (X + 0.07, Y + 0.02), (X + 0.07, Y + 0.08)])
    assert list(r.match) == [INSIDE] * 3
    assert [codes(index, r, i) for i in range(3)] == [GRID_A, GRID_B, GRID_C]
    assert list(r.distance_m) == [0, 0, 0]


def test_shared_edge_is_boundary_with_a_deterministic_choice(index):
    r = locate(index, [(X + 0.05, Y + 0.02), (X + 0.05, Y)])
    assert list(r.match) == [BOUNDARY, BOUNDARY]
    assert codes(index, r, 0) == GRID_A
    assert [index.grids[g]["code"] for g in r.candidates[0]] == [GRID_A, GRID_B]


def test_outer_edge_of_one_grid_is_boundary_with_one_candidate(index):
    r = locate(index, [(X, Y + 0.05)])
    assert r.match[0] == BOUNDARY and codes(index, r, 0) == GRID_A and 0 not in r.candidates


def test_gap_within_tolerance_is_nearest_with_metres(index):
    # 0.00005° east of A's edge, 0.00015° west of C's edge, inside the gap strip
    lon, lat = X + 0.05005, Y + 0.08
    r = locate(index, [(lon, lat)])
    assert r.match[0] == NEAREST and codes(index, r, 0) == GRID_A
    expected = haversine_m(lon, lat, X + 0.05, lat)
    assert abs(r.distance_m[0] - expected) < 0.01 * expected
    assert 4 < r.distance_m[0] < 5


def test_gap_beyond_tolerance_is_outside(index):
    r = locate(index, [(X + 0.05005, Y + 0.08)], tolerance_m=2.0)
    assert r.match[0] == OUTSIDE and codes(index, r, 0) == GRID_A


def test_far_outside_names_the_nearest_grid(index):
    lon, lat = X + 0.2, Y + 0.02  # ≈ 9.2 km east of B
    r = locate(index, [(lon, lat)])
    assert r.match[0] == OUTSIDE and codes(index, r, 0) == GRID_B
    geodesic = Geod(ellps="WGS84").inv(lon, lat, X + 0.1, lat)[2]
    assert abs(r.distance_m[0] - geodesic) < 0.001 * geodesic
    assert not r.swapped[0]


def test_swapped_coordinates_are_recognised(empty_db):
    # a service area where both orders are valid coordinates
    small_layout(empty_db, 40.0, 45.0)
    index = build_grid_index(empty_db)
    r = locate(index, [(45.02, 40.02)])
    assert r.match[0] == OUTSIDE and r.swapped[0]


def test_overlap_is_inside_with_both_candidates(index, empty_db):
    add_grid(empty_db, "410105001001004", "重叠网格", rect(X + 0.01, Y + 0.01, X + 0.03, Y + 0.03))
    index = build_grid_index(empty_db)
    r = locate(index, [(X + 0.02, Y + 0.02)])
    assert r.match[0] == INSIDE and codes(index, r, 0) == GRID_A
    assert [index.grids[g]["code"] for g in r.candidates[0]] == [GRID_A, "410105001001004"]


def test_branches_and_hierarchy_travel_with_the_grid(index):
    a = next(g for g in index.grids if g["code"] == GRID_A)
    assert a["community_code"] == "410105001001" and a["street_code"] == "410105001000"
    assert a["district_code"] == "410105000000"
    assert [b["code"] for b in a["branches"]] == ["B001"] and a["branch_id"] is not None
    c = next(g for g in index.grids if g["code"] == GRID_C)
    assert c["branches"] == [] and c["branch_id"] is None


def test_cache_rebuilds_exactly_when_the_grid_layer_changes(empty_db):
    small_layout(empty_db, X, Y)
    cache = GridIndexCache()
    first = cache.get(empty_db)
    assert cache.get(empty_db) is first
    add_grid(empty_db, "410105001001009", "新网格", rect(X + 0.2, Y, X + 0.3, Y + 0.1))
    second = cache.get(empty_db)
    assert second is not first and len(second) == len(first) + 1


def test_small_and_large_batches_agree(index, monkeypatch):
    rng = np.random.default_rng(3)
    lon = rng.uniform(X - 0.01, X + 0.11, 6000)
    lat = rng.uniform(Y - 0.01, Y + 0.11, 6000)
    big = index.locate(lon, lat, tolerance_m=30, edge_m=0.05)
    monkeypatch.setattr(type(index), "SMALL_BATCH", 10**9)
    small = index.locate(lon, lat, tolerance_m=30, edge_m=0.05)
    assert (big.match == small.match).all() and (big.grid == small.grid).all()
    assert np.allclose(big.distance_m, small.distance_m)
    assert {INSIDE, NEAREST, OUTSIDE} <= set(big.match.tolist())


def _general(index, body, answer):
    import orjson

    from layers.locate import locate_rows, locate_rows_csv
    from layers.points import columns_from_csv, points_from_columns

    cols = columns_from_csv(body)
    batch = points_from_columns(cols["id"], cols["lon"], cols["lat"], cols.get("crs"), default_crs="wgs84")
    if answer == "csv":
        return locate_rows_csv(index, batch, tolerance_m=30, edge_m=0.05).encode()
    return orjson.dumps({"results": locate_rows(index, batch, tolerance_m=30, edge_m=0.05)})


@pytest.mark.parametrize("answer", ["csv", "json"])
def test_clean_csv_batches_answer_byte_for_byte_as_the_general_path(empty_db, answer):
    from layers.locate import locate_plain, plain_csv_points

    small_layout(empty_db, X, Y)
    add_grid(empty_db, "410105001001004", "重叠网格", rect(X + 0.01, Y + 0.01, X + 0.03, Y + 0.03))
    index = build_grid_index(empty_db)
    rng = np.random.default_rng(11)
    lon = np.round(rng.uniform(X - 0.02, X + 0.12, 3000), 7)
    lat = np.round(rng.uniform(Y - 0.02, Y + 0.12, 3000), 7)
    # every kind: inside, overlap (candidates), shared edge, gap (nearest), outside, tiny values
    extra = [
        (X + 0.02, Y + 0.02),
        (X + 0.05, Y + 0.01),
        (X + 0.05005, Y + 0.08),
        (X + 0.3, Y + 0.02),
        (0.00001, 0.00002),
        (X + 0.06, Y + 0.01),
    ]
    rows = [f"{i},{x!r},{y!r}" for i, (x, y) in enumerate(zip(lon.tolist(), lat.tolist()))]
    rows += [f"x{i},{x},{y}" for i, (x, y) in enumerate(extra)] + ["a-b_c,113.6000000,34.70"]
    body = ("id,lon,lat\n" + "\n".join(rows) + "\n").encode()
    plain = plain_csv_points(body, 10**6)
    assert plain is not None
    fast = locate_plain(index, *plain, tolerance_m=30, edge_m=0.05, answer=answer)
    assert fast == _general(index, body, answer)
    kinds = set(locate(index, list(zip(plain[1], plain[2]))).match.tolist())
    assert kinds == {INSIDE, BOUNDARY, NEAREST, OUTSIDE}


@pytest.mark.parametrize(
    "body",
    [
        b"id,lon,lat\n1,113.6,34.7\n\n2,113.6,34.7\n",  # blank line
        b'id,lon,lat\n"1",113.6,34.7\n',  # quoted
        b"id,lon,lat\n1,113.6\n",  # short row
        b"id,lon,lat\n1,113.6,34.7,x\n",  # long row
        b"id,lon,lat\n1,nan,34.7\n",
        b"id,lon,lat\n1,113.6,95\n",
        b"id,lon,lat\n1,east,34.7\n",
        b"id,lon,lat\n1, 113.6,34.7\n",
        b"id,lon,lat\na_1,113_6,34.7\n",
        b"id,lon,lat,crs\n1,113.6,34.7,gcj02\n",
        b"lon,lat,id\n113.6,34.7,1\n",
        b"id,lon,lat\r\n1,113.6,34.7\r\n",
        "id,lon,lat\n点,113.6,34.7\n".encode(),
        b"id,lon,lat\n",
        b"id,lon,lat\n1,113.6,34.7\n2,113.6,34.7\n",  # too many rows for max_rows=1
    ],
)
def test_other_csv_bodies_go_to_the_general_reader(body):
    from layers.locate import plain_csv_points

    assert plain_csv_points(body, 1) is None
    assert plain_csv_points(b"id,lon,lat\n1,113.6,34.7\n", 1) is not None


def test_repr_texts_are_repr():
    from layers.locate import _repr_texts

    rng = np.random.default_rng(5)
    values = np.round(np.concatenate([rng.uniform(-180, 180, 20000), rng.uniform(-0.001, 0.001, 2000)]), 7)
    values = values.tolist() + [0.0, -0.0, 1e-4, 1e-5, 179.9999999, 12345.67]
    assert _repr_texts(values) == [repr(v).encode() for v in values]
    big = [v for v in values if v == 0 or abs(v) >= 1e-4]
    assert _repr_texts(big) == [repr(v).encode() for v in big]


def _pure_agrees_with_the_exact_path(index, lon, lat):
    """Every point ``pure_grid`` answers is strictly inside that grid alone by the
    vectorised exact path, and its single-point answer is the exact path's bytes."""
    import orjson

    from geo_api.routers.locate import point_answer
    from geo_api.settings import LocateSettings

    pure = np.array([index.pure_grid(x, y) for x, y in zip(lon.tolist(), lat.tolist())])
    exact = index.locate(lon, lat, tolerance_m=30, edge_m=0.05)
    sel = np.flatnonzero(pure >= 0)
    assert (exact.match[sel] == INSIDE).all() and (exact.grid[sel] == pure[sel]).all()
    assert not set(exact.candidates) & set(sel.tolist())
    settings = LocateSettings()
    for i in sel[:3000].tolist():
        assert point_answer(index, float(lon[i]), float(lat[i]), settings) == orjson.dumps(
            index.describer.describe(exact, i, float(lon[i]), float(lat[i]), 30.0)
        )
    return pure


def test_pure_cells_answer_only_points_strictly_inside_one_grid(index, empty_db):
    add_grid(empty_db, "410105001001004", "重叠网格", rect(X + 0.01, Y + 0.01, X + 0.03, Y + 0.03))
    index = build_grid_index(empty_db)
    rng = np.random.default_rng(5)
    lon = rng.uniform(X - 0.01, X + 0.11, 40_000)
    lat = rng.uniform(Y - 0.01, Y + 0.11, 40_000)
    pure = _pure_agrees_with_the_exact_path(index, lon, lat)
    assert (pure >= 0).mean() > 0.5  # most of the layer is far from every edge
    # in the overlap, on a shared edge, in a gap, outside: never pure
    for x, y in [(X + 0.02, Y + 0.02), (X + 0.05, Y + 0.02), (X + 0.2, Y + 0.2), (float("nan"), Y)]:
        assert index.pure_grid(x, y) == -1


def test_pure_cells_on_the_demo_district(demo_db):
    index = build_grid_index(demo_db)
    minx, miny, maxx, maxy = index.extent
    rng = np.random.default_rng(11)
    lon = rng.uniform(minx, maxx, 60_000)
    lat = rng.uniform(miny, maxy, 60_000)
    pure = _pure_agrees_with_the_exact_path(index, lon, lat)
    assert (pure >= 0).sum() > 10_000

"""GET /v1/locate and POST /v1/locate/batch: every match kind, every CRS, bad input."""

import pytest
from shapely.geometry import shape
from sqlalchemy import text

from layers.crs import from_wgs84
from tests.factories import GRID_A, GRID_B, add_grid, rect, small_layout

X, Y = 113.60, 34.70


@pytest.fixture
def layout(empty_db, empty_client):
    small_layout(empty_db, X, Y)
    return empty_client


def test_inside_answers_the_whole_hierarchy(layout):
    r = layout.get("/v1/locate", params={"lon": X + 0.02, "lat": Y + 0.02})
    assert r.status_code == 200
    body = r.json()
    assert body["match"] == "inside" and body["distance_m"] == 0
    assert body["grid"]["code"] == GRID_A and body["grid"]["name"] == "测试社区第1网格"
    assert body["community"] == {"code": "410105001001", "name": "测试社区"}
    assert body["street"]["code"] == "410105001000" and body["district"]["code"] == "410105000000"
    assert body["branches"] == [{"code": "B001", "name": "测试社区第1网格党支部", "kind": "grid"}]
    assert body["grid_worker"]["name"] == "张网格"
    assert body["point"] == [round(X + 0.02, 7), round(Y + 0.02, 7)]


def test_boundary_lists_candidates(layout):
    body = layout.get("/v1/locate", params={"lon": X + 0.05, "lat": Y + 0.01}).json()
    assert body["match"] == "boundary" and body["grid"]["code"] == GRID_A
    assert [c["code"] for c in body["candidates"]] == [GRID_A, GRID_B]


def test_nearest_in_a_gap_gives_metres(layout):
    body = layout.get("/v1/locate", params={"lon": X + 0.05005, "lat": Y + 0.08}).json()
    assert body["match"] == "nearest" and body["grid"]["code"] == GRID_A
    assert 4.0 < body["distance_m"] < 5.0


def test_outside_is_404_naming_the_nearest_grid(layout):
    r = layout.get("/v1/locate", params={"lon": X + 0.3, "lat": Y + 0.02})
    assert r.status_code == 404
    body = r.json()
    assert body["nearest_grid"]["code"] == GRID_B and "nearest grid" in body["detail"]
    assert 18_000 < body["nearest_grid"]["distance_m"] < 19_000 and body["swapped"] is False


def test_swapped_lon_lat_is_pointed_out(layout):
    r = layout.get("/v1/locate", params={"lon": Y + 0.02, "lat": X + 0.02})
    assert r.status_code == 422 and r.json()["field"] == "lat"
    assert "swapped" in r.json()["detail"]


def test_swapped_within_valid_ranges_is_a_404_that_says_so(empty_db, empty_client):
    small_layout(empty_db, 40.0, 45.0)
    r = empty_client.get("/v1/locate", params={"lon": 45.02, "lat": 40.02})
    assert r.status_code == 404 and r.json()["swapped"] is True and "swapped" in r.json()["detail"]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"lon": "nan", "lat": 34.7}, "lon"),
        ({"lon": 113.6, "lat": "inf"}, "lat"),
        ({"lon": 113.6, "lat": 91}, "lat"),
        ({"lon": 181, "lat": 34}, "lon"),
        ({"lon": "east", "lat": 34}, "lon"),
        ({"lat": 34}, "lon"),
        ({"lon": 113.6, "lat": 34.7, "crs": "EPSG:999999"}, "crs"),
        ({"lon": 113.6, "lat": 34.7, "crs": "google"}, "crs"),
    ],
)
def test_bad_input_is_422_naming_the_field(layout, params, field):
    r = layout.get("/v1/locate", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


def test_batch_keeps_order_ids_and_bad_rows(layout):
    rows = [
        {"id": "a", "lon": X + 0.02, "lat": Y + 0.02},
        {"id": 2, "lon": "x", "lat": Y},
        {"id": "c", "lon": X + 0.05, "lat": Y + 0.01},
        {"id": "d", "lon": X + 0.05005, "lat": Y + 0.08},
        {"id": "e", "lon": X + 0.3, "lat": Y + 0.02},
        {"id": "f", "lon": X + 0.02, "lat": Y + 0.02, "crs": "nonsense"},
        {"id": "g", "lon": X + 0.02, "lat": 95},
        "not an object",
    ]
    r = layout.post("/v1/locate/batch", json=rows)
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x.get("id") for x in res] == ["a", 2, "c", "d", "e", "f", "g", None]
    assert [x["match"] for x in res] == ["inside", None, "boundary", "nearest", "outside", None, None, None]
    assert res[1]["error"]["field"] == "lon" and res[5]["error"]["field"] == "crs" and res[6]["error"]["field"] == "lat"
    assert res[4]["nearest_grid"]["code"] == GRID_B
    single = layout.get("/v1/locate", params={"lon": X + 0.02, "lat": Y + 0.02}).json()
    assert {k: v for k, v in res[0].items() if k != "id"} == single


def test_batch_from_csv_with_crs_column(layout):
    gx, gy = from_wgs84(X + 0.07, Y + 0.02, "gcj02")
    body = f"id,lon,lat,crs\n1,{X + 0.02},{Y + 0.02},wgs84\n2,{gx!r},{gy!r},gcj02\n3,,{Y},\n"
    r = layout.post("/v1/locate/batch", content=body.encode(), headers={"Content-Type": "text/csv"})
    res = r.json()["results"]
    assert [x["id"] for x in res] == ["1", "2", "3"]
    assert res[0]["grid"]["code"] == GRID_A and res[1]["grid"]["code"] == GRID_B
    assert res[2]["error"]["field"] == "lon"


@pytest.mark.parametrize(
    "body, ctype, detail",
    [
        (b"", "application/json", "empty"),
        (b"{not json", "application/json", "not valid JSON"),
        (b'{"a": 1}', "application/json", "JSON list"),
        (b"x,y\n1,2\n", "text/csv", "missing id, lon, lat"),
    ],
)
def test_batch_bad_bodies_are_422(layout, body, ctype, detail):
    r = layout.post("/v1/locate/batch", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 422 and detail in r.json()["detail"]


# --- on the Jinshui demo: offset datums move points across grids ---------------------


def demo_points(client, n=60):
    features = client.get("/v1/grids", params={"limit": 1000}).json()["features"]
    out = []
    for f in features[:: max(1, len(features) // n)]:
        p = shape(f["geometry"]).representative_point()
        out.append((f["properties"]["code"], p.x, p.y))
    return out


@pytest.mark.parametrize("crs", ["gcj02", "bd09"])
def test_offset_datums_land_in_the_right_grid_where_wgs84_would_not(client, crs):
    moved = 0
    for code, lon, lat in demo_points(client):
        x, y = from_wgs84(lon, lat, crs)
        right = client.get("/v1/locate", params={"lon": x, "lat": y, "crs": crs}).json()
        assert right["grid"]["code"] == code
        assert abs(right["point"][0] - lon) < 1e-7 and abs(right["point"][1] - lat) < 1e-7
        naive = client.get("/v1/locate", params={"lon": x, "lat": y, "crs": "wgs84"})
        if naive.status_code == 404 or naive.json()["grid"]["code"] != code:
            moved += 1
    assert moved >= 10, "the offset should move many points to another grid"


@pytest.mark.parametrize("crs", ["EPSG:4547", "cgcs2000", "EPSG:4490", "EPSG:4326"])
def test_projected_and_cgcs2000_inputs(client, crs):
    for code, lon, lat in demo_points(client, 10):
        x, y = from_wgs84(lon, lat, crs)
        assert client.get("/v1/locate", params={"lon": x, "lat": y, "crs": crs}).json()["grid"]["code"] == code


def test_batch_answers_csv_when_asked(layout):
    import csv
    import io

    body = f'id,lon,lat\n"a,1",{X + 0.02},{Y + 0.02}\nb,{X + 0.3},{Y + 0.02}\nc,oops,{Y}\n'
    r = layout.post(
        "/v1/locate/batch", content=body.encode(), headers={"Content-Type": "text/csv", "Accept": "text/csv"}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["id"] for row in rows] == ["a,1", "b", "c"]
    assert rows[0]["match"] == "inside" and rows[0]["grid_code"] == GRID_A and rows[0]["branches"] == "B001"
    assert rows[1]["match"] == "outside" and rows[1]["grid_code"] == GRID_B and float(rows[1]["distance_m"]) > 18000
    assert rows[2]["match"] == "" and rows[2]["error"].startswith("lon:")


# --- the anonymous fast path (geo_api/fastpath.py) -----------------------------------


@pytest.fixture
def fast_answers(monkeypatch):
    """Bodies the fast path answered itself (None where it handed over to the route)."""
    from geo_api.fastpath import LocateFastPath

    seen = []
    original = LocateFastPath.locate

    async def counting(app, *args):
        try:
            body = await original(app, *args)
        except Exception:
            seen.append(None)
            raise
        seen.append(body)
        return body

    monkeypatch.setattr(LocateFastPath, "locate", staticmethod(counting))
    return seen


def _routed(client, params, headers=None):
    client.app.state.locate_fast_path = False
    try:
        return client.get("/v1/locate", params=params, headers=headers)
    finally:
        client.app.state.locate_fast_path = True


@pytest.mark.parametrize(
    "params",
    [
        {"lon": X + 0.02, "lat": Y + 0.02},  # inside
        {"lon": X + 0.05, "lat": Y + 0.01},  # boundary, two candidates
        {"lon": X + 0.05005, "lat": Y + 0.08},  # nearest
        {"lon": X + 0.06, "lat": Y + 0.07, "crs": "gcj02"},
        {"lon": X + 0.02, "lat": Y + 0.02, "crs": "wgs84"},
    ],
)
def test_fast_path_answers_the_same_bytes_as_the_route(layout, fast_answers, params):
    fast = layout.get("/v1/locate", params=params)
    assert fast_answers and fast_answers[-1] is not None, "the fast path should have answered"
    routed = _routed(layout, params)
    assert len(fast_answers) == 1, "the routed request must not go through the fast path"
    assert fast.status_code == routed.status_code == 200
    assert fast.content == routed.content
    assert fast.headers.items() == routed.headers.items()


@pytest.mark.parametrize(
    "params",
    [
        {"lon": X + 0.3, "lat": Y + 0.02},  # outside: 404 naming the nearest grid
        {"lon": Y + 0.02, "lat": X + 0.02},  # swapped: 422 with the hint
        {"lon": "nan", "lat": Y},
        {"lon": "1e2", "lat": Y},
        {"lon": X, "lat": Y, "crs": "EPSG:999999"},
        {"lon": X + 0.02, "lat": Y + 0.02, "extra": "1"},  # unusual: the route answers (200)
        {"lat": Y},
    ],
)
def test_fast_path_leaves_errors_and_oddities_to_the_route(layout, fast_answers, params):
    fast = layout.get("/v1/locate", params=params)
    assert all(body is None for body in fast_answers)
    routed = _routed(layout, params)
    assert fast.status_code == routed.status_code and fast.content == routed.content
    if "extra" not in params:
        assert fast.status_code in (404, 422)


def test_signed_in_callers_take_the_route(client, fast_answers):
    r = client.get("/v1/locate", params={"lon": 113.66, "lat": 34.78}, headers={"Authorization": "Bearer nonsense"})
    assert r.status_code == 401 and fast_answers == []


def test_fast_path_sees_a_grid_edit_in_the_same_session(layout, empty_db, fast_answers):
    assert layout.get("/v1/locate", params={"lon": X + 0.25, "lat": Y + 0.05}).status_code == 404
    add_grid(empty_db, "410105001001009", "新网格", rect(X + 0.2, Y, X + 0.3, Y + 0.1))
    r = layout.get("/v1/locate", params={"lon": X + 0.25, "lat": Y + 0.05})
    assert r.status_code == 200 and r.json()["grid"]["code"] == "410105001001009"
    assert fast_answers[-1] is not None


@pytest.fixture(scope="module")
def committed_engine(server_url):
    """A database of its own whose writes are committed (the production path: versions
    read by the fast path's own connection, indexes built from new sessions)."""
    from tests.conftest import scratch_engine

    with scratch_engine(server_url, "locatefp", pool=3, migrated=True) as engine:
        yield engine


def test_fast_path_on_committed_data_sees_the_next_edit(committed_engine, fast_answers):
    from fastapi.testclient import TestClient
    from sqlalchemy.orm import Session

    from geo_api.app import create_app
    from tests.conftest import make_settings

    with Session(committed_engine) as session:
        small_layout(session, X, Y)
        session.commit()
    with TestClient(create_app(make_settings(), engine=committed_engine)) as client:
        params = {"lon": X + 0.02, "lat": Y + 0.02}
        first = client.get("/v1/locate", params=params)
        assert first.status_code == 200 and fast_answers[-1] is not None
        assert first.content == _routed(client, params).content
        for k in range(3):  # an edit committed just before a request is in its answer, every time
            x0 = X + 0.2 + 0.02 * k
            far = {"lon": x0 + 0.01, "lat": Y + 0.05}
            assert client.get("/v1/locate", params=far).status_code == 404
            with Session(committed_engine) as session:
                n = session.execute(text("SELECT count(*) FROM grids")).scalar()
                code = f"410105001001{n + 1:03d}"
                add_grid(session, code, f"新网格{n}", rect(x0, Y, x0 + 0.02, Y + 0.1))
                session.commit()
            r = client.get("/v1/locate", params=far)
            assert r.status_code == 200 and r.json()["grid"]["code"] == code, r.text
            assert fast_answers[-1] is not None

"""A district from nothing, from files only: 中原区 (410102), not the Jinshui demo.

``gridbranch init`` with the real boundary (GCJ-02 GeoJSON), then ``ingest areas`` from
a GBK Shapefile in GCJ-02 and ``ingest grids`` from a GeoPackage in EPSG:4547 — each a
dry run, a commit and the same file again — through the command line on a scratch
database; then the service answers on the new district: the area tree, locate, the
grids tiles decoded, the demo accounts scoped to it. What landed is compared with the
generated truth in WGS84.
"""

from __future__ import annotations

import contextlib
import io

import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo_api.cli import main
from layers.coverage.topology import EqualArea
from tests.conftest import clocked, make_settings, scratch_engine
from tests.factories.tiles import decode, path, tile_at, to_lonlat
from tests.ingest.district_files import (
    AREA_MAP,
    CODE,
    GRID_MAP,
    NAME,
    build_district,
    write_areas_shapefile,
    write_grids_gpkg,
)

ADMIN_PASSWORD = "zhongyuan-2026"
DISTRICT = CODE + "000000"


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def versions(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT layer, version FROM data_versions")).all())


def counts(engine) -> tuple[int, int, int]:
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT (SELECT count(*) FROM admin_areas), (SELECT count(*) FROM grids), "
                "(SELECT count(*) FROM grid_versions)"
            )
        ).one()


@pytest.fixture(scope="module")
def district():
    return build_district()


@pytest.fixture(scope="module")
def built(server_url, district, tmp_path_factory):
    """The deployment built through the command line, with what every step printed and
    the data versions and row counts after it."""
    tmp = tmp_path_factory.mktemp("zhongyuan")
    areas = write_areas_shapefile(district, tmp / "areas")
    grids = write_grids_gpkg(district, tmp / "grids.gpkg")
    steps: dict[str, dict] = {}
    with scratch_engine(server_url, "zhongyuan", pool=4, migrated=True) as engine, pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDBRANCH_DATABASE_URL", engine.url.render_as_string(hide_password=False))
        mp.setenv("GRIDBRANCH_INIT_ADMIN_PASSWORD", ADMIN_PASSWORD)
        # the command line keeps the tests' clock: what it writes starts at the instant the service stands at
        from geo_api import cli

        engine_of = cli._engine
        mp.setattr(cli, "_engine", lambda settings: clocked(engine_of(settings)))
        for name, argv in (
            (
                "init",
                (
                    "init",
                    "--district",
                    CODE,
                    "--boundary",
                    str(district.boundary_file),
                    "--crs",
                    "gcj02",
                    "--name",
                    NAME,
                ),
            ),
            (
                "init_again",
                (
                    "init",
                    "--district",
                    "410103",
                    "--boundary",
                    str(district.boundary_file),
                    "--crs",
                    "gcj02",
                    "--name",
                    "二七区",
                ),
            ),
            ("areas_no_crs", ("ingest", "areas", str(areas), "--map", AREA_MAP)),
            ("areas_dry", ("ingest", "areas", str(areas), "--crs", "gcj02", "--map", AREA_MAP)),
            ("areas_commit", ("ingest", "areas", str(areas), "--crs", "gcj02", "--map", AREA_MAP, "--commit")),
            ("areas_again", ("ingest", "areas", str(areas), "--crs", "gcj02", "--map", AREA_MAP, "--commit")),
            ("grids_dry", ("ingest", "grids", str(grids), "--map", GRID_MAP)),
            ("grids_commit", ("ingest", "grids", str(grids), "--map", GRID_MAP, "--commit")),
            ("grids_again", ("ingest", "grids", str(grids), "--map", GRID_MAP, "--commit")),
        ):
            rc, out, err = run(*argv)
            steps[name] = {"rc": rc, "out": out, "err": err, "versions": versions(engine), "counts": counts(engine)}
        yield engine, steps


def test_init_starts_an_empty_deployment(built):
    engine, steps = built
    init = steps["init"]
    assert init["rc"] == 0, init["err"]
    with engine.connect() as conn:
        district = conn.execute(text("SELECT code, name, level FROM admin_areas WHERE parent_id IS NULL")).all()
        roles = conn.execute(text("SELECT count(*) FROM service_roles WHERE active")).scalar()
        days = conn.execute(text("SELECT count(*) FROM work_calendar_days")).scalar()
        admin = conn.execute(text("SELECT role, area_code, display_name FROM users")).all()
        logged = conn.execute(text("SELECT actor, username, action, area FROM account_log")).all()
        nothing_else = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM members) + (SELECT count(*) FROM events) + (SELECT count(*) FROM branches)"
                " + (SELECT count(*) FROM departments)"
            )
        ).scalar()
    assert district == [(DISTRICT, NAME, "district")]
    assert init["counts"] == (1, 0, 0)  # the district alone, until its files come
    assert roles == 6 and "法治建设宣传员" in init["out"]
    assert days > 0 and f"{days} days added" in init["out"]
    assert admin == [("admin", DISTRICT, f"{NAME}委组织部")]
    assert logged == [("cli", "admin", "create", DISTRICT)]  # the first admin has its log row too
    assert nothing_else == 0  # no demo data at all
    # a second init refuses and says which district is there
    again = steps["init_again"]
    assert again["rc"] != 0 and DISTRICT in again["err"] and NAME in again["err"]
    assert again["counts"] == init["counts"]


def test_gcj02_shapefile_declared_as_wgs84_is_explained(built):
    _, steps = built
    s = steps["areas_no_crs"]
    assert s["rc"] == 1
    assert "GCJ-02" in s["out"] and "give --crs gcj02" in s["out"]
    assert "encoding GB18030 (detected, no .cpg)" in s["out"]
    assert s["versions"] == steps["init"]["versions"] and s["counts"] == steps["init"]["counts"]


def test_dry_run_commit_and_the_same_file_again(built, district):
    _, steps = built
    n_areas = len(district.streets) + len(district.communities)
    n_grids = len(district.grids)
    before = steps["init"]
    dry = steps["areas_dry"]
    assert dry["rc"] == 0, dry["out"] + dry["err"]
    assert f"summary: {n_areas} to add, 0 to change, 0 unchanged, 0 rejected" in dry["out"]
    assert "林山寨街道" in dry["out"] and "dry run: nothing written" in dry["out"]
    assert dry["versions"] == before["versions"] and dry["counts"] == before["counts"]
    commit = steps["areas_commit"]
    assert commit["rc"] == 0 and f"added {n_areas}" in commit["out"]
    assert commit["counts"][0] == 1 + n_areas and commit["versions"]["areas"] > before["versions"]["areas"]
    again = steps["areas_again"]
    assert again["rc"] == 0 and f"0 to add, 0 to change, {n_areas} unchanged" in again["out"]
    assert "nothing to write" in again["out"]
    assert again["versions"] == commit["versions"] and again["counts"] == commit["counts"]

    dry = steps["grids_dry"]
    assert dry["rc"] == 0, dry["out"] + dry["err"]
    assert f"summary: {n_grids} to add" in dry["out"] and "EPSG:4547" in dry["out"]
    assert dry["versions"] == again["versions"]
    commit = steps["grids_commit"]
    assert commit["rc"] == 0 and commit["counts"][1:] == (n_grids, n_grids)
    again = steps["grids_again"]
    assert f"{n_grids} unchanged" in again["out"] and again["versions"] == commit["versions"]
    assert again["counts"] == commit["counts"]


def _metres_apart(a, b, ea: EqualArea) -> float:
    return float(shapely.hausdorff_distance(ea.project(a), ea.project(b)))


def test_geometries_land_where_they_should_in_wgs84(built, district):
    """GCJ-02 → WGS84 (areas) and EPSG:4547 → WGS84 (grids): within a metre of the truth."""
    engine, _ = built
    ea = EqualArea.around([district.boundary])
    with engine.connect() as conn:
        stored = {
            c: shapely.from_wkb(bytes(g))
            for c, g in conn.execute(text("SELECT code, ST_AsBinary(geom) FROM admin_areas"))
        }
        stored.update(
            {
                c: shapely.from_wkb(bytes(g))
                for c, g in conn.execute(
                    text("SELECT g.code, ST_AsBinary(v.geom) FROM grids g JOIN grid_versions v ON v.grid_id = g.id")
                )
            }
        )
    truth = {u.code: u.geom for u in district.streets + district.communities + district.grids}
    truth[DISTRICT] = district.boundary
    assert set(stored) == set(truth)
    worst = max(_metres_apart(stored[c], truth[c], ea) for c in truth)
    assert worst < 1.0
    # and not trivially: the GCJ-02 boundary as given is ~500 m off
    gcj = shapely.from_geojson(district.boundary_file.read_text(encoding="utf-8"))
    assert _metres_apart(gcj, stored[DISTRICT], ea) > 300


@pytest.fixture(scope="module")
def api(built):
    from geo_api.app import create_app

    engine, _ = built
    with TestClient(create_app(make_settings(), engine=engine)) as c:
        yield c


def test_areas_and_locate_answer_on_the_new_district(api, district):
    tree = api.get("/v1/areas").json()["areas"]
    assert [(a["code"], a["name"]) for a in tree] == [(DISTRICT, NAME)]
    assert sorted(s["name"] for s in tree[0]["children"]) == sorted(s.name for s in district.streets)
    assert sum(len(s["children"]) for s in tree[0]["children"]) == len(district.communities)
    for grid in district.grids[::7]:
        p = shapely.point_on_surface(grid.geom)
        r = api.get("/v1/locate", params={"lon": p.x, "lat": p.y})
        assert r.status_code == 200, r.text
        assert r.json()["grid"]["code"] == grid.code
        # the same point as a GCJ-02 map app sends it
        from layers.crs import wgs84_to_gcj02

        gx, gy = wgs84_to_gcj02(p.x, p.y)
        assert api.get("/v1/locate", params={"lon": gx, "lat": gy, "crs": "gcj02"}).json()["grid"]["code"] == grid.code


def test_grids_tile_decodes_to_the_imported_grids(api, district):
    grid = district.grids[3]
    p = shapely.point_on_surface(grid.geom)
    tile = tile_at(p.x, p.y, 15)
    r = api.get(path("grids", tile))
    assert r.status_code == 200
    feats = decode(r.content)["grids"]["features"]
    by_code = {f["properties"]["code"]: f for f in feats}
    assert grid.code in by_code and set(by_code) <= {g.code for g in district.grids}
    drawn = to_lonlat(tile, by_code[grid.code]["geometry"])
    assert drawn.buffer(1e-5).covers(p)
    ea = EqualArea.around([grid.geom])
    clip = shapely.box(
        *to_lonlat(
            tile, {"type": "Polygon", "coordinates": [[(0, 0), (4096, 0), (4096, 4096), (0, 4096), (0, 0)]]}
        ).bounds
    )
    truth = shapely.intersection(grid.geom, clip)
    # tile units are ~1.2 m at z15: the drawing matches the truth to a few of them
    assert _metres_apart(shapely.intersection(drawn, clip), truth, ea) < 5.0


def test_signing_in_and_demo_accounts_take_the_loaded_district(api, built):
    engine, _ = built
    r = api.post("/v1/auth/token", data={"username": "admin", "password": ADMIN_PASSWORD})
    assert r.status_code == 200, r.text
    from geo_api.accounts import demo_accounts

    with Session(engine) as session:
        accounts = {a["username"]: a for a in demo_accounts(session)}
    assert accounts["admin"]["area_code"] == DISTRICT and accounts["admin"]["display_name"] == f"{NAME}委组织部"
    assert accounts["street_admin"]["area_code"].startswith(CODE)
    assert accounts["gridworker"]["area_code"].startswith(CODE)

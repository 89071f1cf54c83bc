"""Imports through the API (数据导入: ``/v1/imports``) on a second real district, 中原区
(410102), started from files through the command line: the dry run's report and
preview, the commit and its repetition, a dry run gone stale, expiry by the clock, a
street admin's scope, and bad files — each refused with a Chinese detail, never a 500,
nothing written."""

from __future__ import annotations

import stat

import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo_api.settings import ImportSettings
from tests.conftest import make_settings, scratch_engine, token_for
from tests.factories import add_user
from tests.ingest.district_files import CODE, Unit, build_district, start_deployment, write_grids_gpkg
from tests.zh import CJK, untranslated_reasons

STREET1, STREET2 = f"{CODE}001000", f"{CODE}002000"

# The tests walk one deployment in order (its grids come in with the first, the later ones
# import on top of them): one worker runs them all (scripts/test.sh: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("zhongyuan-imports")


@pytest.fixture(scope="module")
def zy(server_url, tmp_path_factory):
    """中原区 with its areas but no grids yet; an app with its imports directory."""
    from geo_api.app import create_app

    d = build_district()
    tmp = tmp_path_factory.mktemp("imports")
    with scratch_engine(server_url, "imports", pool=4, migrated=True) as engine:
        files = start_deployment(engine, tmp / "files", d, grids=False)
        with Session(engine) as s:
            add_user(s, "street1", "admin", STREET1)
            add_user(s, "street2", "admin", STREET2)
            add_user(s, "community1", "admin", f"{CODE}001001")
            s.commit()
        settings = make_settings()
        settings.imports = ImportSettings(dir=tmp / "uploads", max_bytes=1 << 20)
        app = create_app(settings, engine=engine)
        with TestClient(app) as client:
            yield {
                "client": client,
                "app": app,
                "engine": engine,
                "district": d,
                "files": files,
                "tmp": tmp,
                "root": tmp / "uploads",
            }


def upload(zy, user, path, kind, **params):
    return zy["client"].post(
        "/v1/imports",
        params={"kind": kind, "filename": path.name, **params},
        content=path.read_bytes(),
        headers=token_for(user),
    )


def checked(zy, user, r):
    assert r.status_code == 202, r.text
    zy["app"].state.uploads.drain()
    got = zy["client"].get(f"/v1/imports/{r.json()['id']}", headers=token_for(user))
    assert got.status_code == 200, got.text
    report = got.json()["report"] or {}
    told = report.get("problems", []) + report.get("rejects", [])
    # the web map shows each reason in Chinese
    assert all(CJK.search(t["reason_zh"]) for t in told) and not untranslated_reasons(t["reason"] for t in told)
    return got.json()


def state(engine):
    with engine.connect() as conn:
        versions = dict(conn.execute(text("SELECT layer, version FROM data_versions")).all())
        n = conn.execute(text("SELECT (SELECT count(*) FROM grids), (SELECT count(*) FROM members)")).one()
    return versions, tuple(n)


def test_grids_dry_run_preview_commit_and_again(zy):
    d, client, engine = zy["district"], zy["client"], zy["engine"]
    before = state(engine)
    job = checked(zy, "admin", upload(zy, "admin", zy["files"]["grids"], "grids"))
    assert job["status"] == "ready" and job["progress"] == 1
    report = job["report"]
    assert report["committable"] and report["counts"]["add"] == len(d.grids) and report["source"]["crs"] == "EPSG:4547"
    assert state(engine) == before  # a dry run writes nothing
    preview = client.get(f"/v1/imports/{job['id']}/preview", headers=token_for("admin"))
    assert preview.status_code == 200 and preview.headers["content-type"].startswith("application/geo+json")
    feats = preview.json()["features"]
    assert preview.json()["numberMatched"] == preview.json()["numberReturned"] == len(feats)  # the whole preview
    assert sorted(f["properties"]["code"] for f in feats if f["properties"]["action"] == "add") == sorted(
        g.code for g in d.grids
    )
    truth = {g.code: g.geom for g in d.grids}
    f = feats[0]
    # drawn where the truth is, to about a metre (EPSG:4547 and back, 1e-7° precision)
    assert shapely.hausdorff_distance(shapely.geometry.shape(f["geometry"]), truth[f["properties"]["code"]]) < 1e-5

    r = client.post(f"/v1/imports/{job['id']}/commit", headers=token_for("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "committed" and r.json()["result"]["added"] == len(d.grids)
    after = state(engine)
    assert after[1][0] == len(d.grids) and after[0]["grids"] > before[0]["grids"]
    assert not (zy["root"] / job["id"]).exists()  # the file is gone once committed
    again = client.post(f"/v1/imports/{job['id']}/commit", headers=token_for("admin"))
    assert again.status_code == 200 and again.json()["result"] == r.json()["result"]
    assert state(engine) == after  # the second commit wrote nothing


def _redrawn(d) -> list[Unit]:
    """The grids with the first one shrunk (leaving a gap in its community) and the last
    one left out."""
    first = d.grids[0]
    shrunk = (
        shapely.multipolygons([shapely.buffer(first.geom, -0.0005).geoms[0]])
        if shapely.get_type_id(shapely.buffer(first.geom, -0.0005)) == 6
        else shapely.multipolygons([shapely.buffer(first.geom, -0.0005)])
    )
    return [Unit(first.code, first.name, first.parent, shrunk), *d.grids[1:-1]]


def test_a_redrawn_file_previews_changes_gaps_and_absent_grids_and_goes_stale(zy, tmp_path):
    d, client, engine = zy["district"], zy["client"], zy["engine"]
    path = write_grids_gpkg(d, tmp_path / "redrawn.gpkg", grids=_redrawn(d))
    job = checked(zy, "admin", upload(zy, "admin", path, "grids"))
    counts = job["report"]["counts"]
    assert (counts["change"], counts["absent"], counts["unchanged"]) == (1, 1, len(d.grids) - 2)
    actions = {}
    for f in client.get(f"/v1/imports/{job['id']}/preview", headers=token_for("admin")).json()["features"]:
        actions.setdefault(f["properties"]["action"], []).append(f["properties"]["code"])
    assert actions["change"] == [d.grids[0].code] and actions["absent"] == [d.grids[-1].code]
    assert d.grids[0].parent in actions["gap"]  # the community the shrunk grid leaves uncovered
    # the data change after the dry run: the commit refuses, nothing written, and checks again
    with engine.begin() as conn:
        conn.execute(text("UPDATE grids SET name = name WHERE code = :c"), {"c": d.grids[1].code})
    before = state(engine)
    r = client.post(f"/v1/imports/{job['id']}/commit", headers=token_for("admin"))
    assert r.status_code == 409 and "重新预检" in r.json()["detail_zh"]
    assert state(engine) == before
    zy["app"].state.uploads.drain()
    again = client.get(f"/v1/imports/{job['id']}", headers=token_for("admin")).json()
    assert again["status"] == "ready" and again["report"]["counts"] == counts


def test_imports_expire_by_the_clock(zy, clock):
    job = checked(zy, "admin", upload(zy, "admin", zy["files"]["grids"], "grids"))
    assert (zy["root"] / job["id"]).is_dir()
    from datetime import timedelta

    clock.advance(timedelta(minutes=121))
    r = zy["client"].get(f"/v1/imports/{job['id']}", headers=token_for("admin"))
    assert r.json()["status"] == "expired" and not (zy["root"] / job["id"]).exists()
    c = zy["client"].post(f"/v1/imports/{job['id']}/commit", headers=token_for("admin"))
    assert c.status_code == 409 and "过期" in c.json()["detail_zh"]


def test_a_street_admin_touches_only_their_street(zy, tmp_path):
    d, client = zy["district"], zy["client"]
    mine = [g for g in d.grids if g.code.startswith(STREET1[:9])]
    path = write_grids_gpkg(d, tmp_path / "street.gpkg", grids=[*mine[:2], d.grids[-1]])
    job = checked(zy, "street1", upload(zy, "street1", path, "grids"))
    refused = [p for p in job["report"]["problems"] if "outside your area" in p["reason"]]
    assert [p["code"] for p in refused] == [d.grids[-1].code] and not job["report"]["committable"]
    r = client.post(f"/v1/imports/{job['id']}/commit", headers=token_for("street1"))
    assert r.status_code == 422 and r.json()["detail_zh"]
    # another account's import is nobody else's to see or commit
    for user in ("street2", "admin"):
        assert client.get(f"/v1/imports/{job['id']}", headers=token_for(user)).status_code == 404
        assert client.post(f"/v1/imports/{job['id']}/commit", headers=token_for(user)).status_code == 404
    assert upload(zy, "community1", path, "grids").status_code == 403
    assert upload(zy, "street1", path, "departments").status_code == 403


def test_a_roster_through_multipart_by_a_street_admin(zy):
    d, client, engine = zy["district"], zy["client"], zy["engine"]
    inside = shapely.point_on_surface(d.grids[0].geom)  # street 1
    outside = shapely.point_on_surface(d.grids[-1].geom)  # street 3
    csv = (
        "党员编号,姓名,手机号码,经度,纬度\n"
        f"ZY0001,张三,13912345678,{inside.x:.6f},{inside.y:.6f}\n"
        f"ZY0002,李四,13912345679,{outside.x:.6f},{outside.y:.6f}\n"
    ).encode()
    r = client.post(
        "/v1/imports",
        files={"file": ("党员花名册.csv", csv, "text/csv")},
        data={"kind": "members"},
        headers=token_for("street1"),
    )
    assert r.status_code == 202, r.text
    path = zy["root"] / r.json()["id"] / "党员花名册.csv"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    job = checked(zy, "street1", r)
    report = job["report"]
    assert (report["good"], report["rejected"]) == (1, 1) and report["counts"]["members_created"] == 1
    assert report["rejects"][0]["key"] == "ZY0002" and "outside your area" in report["rejects"][0]["reason"]
    assert "李四" not in str(job) and "13912345679" not in str(job)  # no names or phones in the report
    c = client.post(f"/v1/imports/{job['id']}/commit", headers=token_for("street1"))
    assert c.status_code == 200 and c.json()["result"]["members_created"] == 1
    assert not path.exists() and c.json()["report"] is None  # a roster's report goes with its file
    with engine.connect() as conn:
        assert conn.execute(text("SELECT number FROM members")).scalars().all() == ["ZY0001"]


def _truncated_zip(path) -> bytes:
    data = path.read_bytes()
    return data[: len(data) // 2]


def test_bad_files_are_refused_in_chinese_and_write_nothing(zy, tmp_path):
    client, engine = zy["client"], zy["engine"]
    before = state(engine)
    leftovers = set(zy["root"].iterdir()) if zy["root"].exists() else set()
    admin = token_for("admin")
    cases = [
        ({"kind": "areas", "filename": "areas.zip"}, _truncated_zip(zy["files"]["areas"]), 422, "压缩文件"),
        ({"kind": "members", "filename": "grids.gpkg"}, zy["files"]["grids"].read_bytes(), 422, "文件类型"),
        ({"kind": "grids", "filename": "empty.gpkg"}, b"", 422, "空文件"),
        ({"filename": "grids.gpkg"}, zy["files"]["grids"].read_bytes(), 422, "数据类型"),
        ({"kind": "grids"}, zy["files"]["grids"].read_bytes(), 422, "文件名"),
        ({"kind": "grids", "filename": "big.geojson"}, b" " * ((1 << 20) + 1), 413, None),
    ]
    for params, body, status, words in cases:
        r = client.post("/v1/imports", params=params, content=body, headers=admin)
        assert r.status_code == status, (params, r.text)
        if words:
            assert words in r.json()["detail_zh"], r.json()
    # a roster sent as grids: read in the background, failed with the reason, its file deleted
    roster = tmp_path / "党员花名册.csv"
    roster.write_text("党员编号,姓名\nZY9,王五\n", encoding="utf-8")
    job = checked(zy, "admin", upload(zy, "admin", roster, "grids"))
    assert job["status"] == "failed" and job["error"]["status"] == 422 and "无法导入" in job["error"]["detail_zh"]
    assert job["kept"]  # a boundary file waits for another dry run (the right kind, here)
    again = client.post(f"/v1/imports/{job['id']}/check", params={"kind": "members"}, headers=admin)
    assert again.status_code == 202, again.text
    zy["app"].state.uploads.drain()
    job = client.get(f"/v1/imports/{job['id']}", headers=admin).json()
    assert job["status"] == "ready" and job["kind"] == "members" and job["report"]["counts"]["members_created"] == 1
    # a roster that cannot be read is deleted at once
    bad = tmp_path / "坏名册.csv"
    bad.write_text("编号,名称\n1,x\n", encoding="utf-8")
    failed = checked(zy, "admin", upload(zy, "admin", bad, "members"))
    assert failed["status"] == "failed" and not failed["kept"] and not (zy["root"] / failed["id"]).exists()
    assert state(engine) == before
    assert set(zy["root"].iterdir()) - leftovers == {zy["root"] / job["id"]}


def test_a_file_in_another_crs_than_it_says_is_checked_again_in_the_one_named(zy):
    """The areas Shapefile (GCJ-02 in a .prj saying WGS84): the dry run names gcj02, and
    the same upload checked again in it matches what is stored."""
    d, client = zy["district"], zy["client"]
    admin = token_for("admin")
    job = checked(zy, "admin", upload(zy, "admin", zy["files"]["areas"], "areas"))
    assert job["status"] == "ready" and not job["report"]["committable"] and job["kept"]
    assert job["report"]["crs_suggestion"] == "gcj02"
    r = client.post(f"/v1/imports/{job['id']}/check", params={"crs": "gcj02"}, headers=admin)
    assert r.status_code == 202 and r.json()["status"] == "checking"
    zy["app"].state.uploads.drain()
    job = client.get(f"/v1/imports/{job['id']}", headers=admin).json()
    n = len(d.streets) + len(d.communities)
    assert job["report"]["committable"] and job["report"]["counts"]["unchanged"] == n


def test_registrations_by_a_street_admin_stay_in_their_street(zy):
    d, client, engine = zy["district"], zy["client"], zy["engine"]
    inside = shapely.point_on_surface(d.grids[1].geom)  # street 1
    outside = shapely.point_on_surface(d.grids[-2].geom)  # street 3
    csv = (
        "member_id,name,phone,lon,lat,crs,role\n"
        f"ZY0001,张三,13912345678,{inside.x:.6f},{inside.y:.6f},wgs84,平安创建示范员\n"
        f"ZY0003,王六,13912345670,{outside.x:.6f},{outside.y:.6f},wgs84,平安创建示范员\n"
    ).encode()
    r = client.post(
        "/v1/imports",
        params={"kind": "registrations", "filename": "报到.csv"},
        content=csv,
        headers=token_for("street1"),
    )
    job = checked(zy, "street1", r)
    assert (job["report"]["good"], job["report"]["rejected"]) == (1, 1), job["report"]
    assert (
        job["report"]["rejects"][0]["key"] == "ZY0003" and "outside your area" in job["report"]["rejects"][0]["reason"]
    )
    c = client.post(f"/v1/imports/{job['id']}/commit", headers=token_for("street1"))
    assert c.status_code == 200 and c.json()["result"]["registrations_created"] == 1
    with engine.connect() as conn:
        assert conn.execute(
            text(
                "SELECT m.number, g.code FROM registrations r JOIN members m ON m.id = r.member_id "
                "JOIN grids g ON g.id = r.grid_id"
            )
        ).all() == [("ZY0001", d.grids[1].code)]


def test_a_generation_of_grids_set_for_a_later_day_through_the_web(zy, tmp_path, clock):
    """The panel's 生效日期 and 撤销缺失网格 reach the importer as the CLI's --effective
    and --retire-missing; a malformed day or a generation option on another kind is a 422
    before any dry run. (Last in the module: it leaves a generation waiting.)"""
    from datetime import timedelta

    from layers.boundaries import LOCAL_TZ

    d, client, engine = zy["district"], zy["client"], zy["engine"]
    path = write_grids_gpkg(d, tmp_path / "next-year.gpkg", grids=_redrawn(d))
    folders = set(zy["root"].iterdir())
    bad = upload(zy, "admin", path, "grids", effective="明年元旦")
    assert bad.status_code == 422 and bad.json()["field"] == "effective" and "日期" in bad.json()["detail_zh"]
    other = upload(zy, "admin", zy["files"]["areas"], "areas", retire_missing="true")
    assert other.status_code == 422 and other.json()["field"] == "retire_missing" and other.json()["detail_zh"]
    assert set(zy["root"].iterdir()) == folders  # a refused upload leaves no file behind

    day = (clock.now().astimezone(LOCAL_TZ) + timedelta(days=10)).date()
    job = checked(zy, "admin", upload(zy, "admin", path, "grids", effective=day.isoformat(), retire_missing="true"))
    report = job["report"]
    assert report["committable"], report["problems"]
    assert report["effective"].startswith(day.isoformat()) and report["retire_missing"] is True
    assert report["counts"]["retire"] == 1 and report["counts"]["change"] == 1
    r = client.post(f"/v1/imports/{job['id']}/commit", headers=token_for("admin"))
    assert r.status_code == 200, r.text
    assert r.json()["result"]["retired"] == 1 and r.json()["result"]["generation"]
    with engine.connect() as conn:
        at, retire = conn.execute(
            text("SELECT effective_at, retire_missing FROM boundary_generations WHERE id = :g"),
            {"g": r.json()["result"]["generation"]},
        ).one()
    assert at.astimezone(LOCAL_TZ).date() == day and at.astimezone(LOCAL_TZ).hour == 0 and retire

    gone = shapely.point_on_surface(d.grids[-1].geom)

    def located():
        got = client.get("/v1/locate", params={"lon": gone.x, "lat": gone.y})
        return got.json()["grid"]["code"] if got.status_code == 200 else None

    assert located() == d.grids[-1].code  # until the day, the grid is there
    clock.advance(timedelta(days=11))
    assert located() != d.grids[-1].code  # retired on the day, no restart, no write


def test_folders_no_open_import_owns_are_swept(zy):
    """A process that died mid-upload (a folder with no import) or between a commit and
    its deletion (a folder of a committed import) leaves a folder: the next sweep deletes
    it once it is older than the imports' time to live; a younger rowless folder is an
    upload still arriving and stays, as do the folders of open imports."""
    import os
    import time

    client, root = zy["client"], zy["root"]
    job = checked(zy, "admin", upload(zy, "admin", zy["files"]["areas"], "areas"))  # open: ready
    with zy["engine"].connect() as conn:  # committed by the tests above
        committed = conn.execute(text("SELECT id FROM imports WHERE status = 'committed' LIMIT 1")).scalar_one()
    ttl = zy["app"].state.settings.imports.ttl_minutes * 60
    old = time.time() - ttl - 60

    def leftover(name: str, age: float | None) -> os.PathLike:
        folder = root / name
        folder.mkdir(mode=0o700)
        (folder / "roster.csv").write_text("member_id,name\nZY9,某某\n", encoding="utf-8")
        if age is not None:
            os.utime(folder, (age, age))
        return folder

    crashed = leftover("0" * 32, old)  # died before its import was recorded
    arriving = leftover("1" * 32, None)  # still arriving
    after_commit = leftover(committed, None)  # the commit's deletion never ran
    got = client.get(f"/v1/imports/{job['id']}", headers=token_for("admin"))  # any read sweeps
    assert got.status_code == 200 and got.json()["status"] == "ready"
    assert not crashed.exists() and not after_commit.exists()
    assert arriving.exists() and (root / job["id"]).exists()
    os.utime(arriving, (old, old))
    client.get(f"/v1/imports/{job['id']}", headers=token_for("admin"))
    assert not arriving.exists() and (root / job["id"]).exists()

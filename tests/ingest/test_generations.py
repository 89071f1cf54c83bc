"""Boundary generations on 中原区 with the tests' frozen clock: a first import, then a
generation redrawing the border between two grids and retiring a third, taking effect
on a later day. Until that day locate, tiles, coverage and the data versions answer the
old layer; once the clock passes it they answer the new one in the same running service
(no write in between), ``at=`` still answers history, and the registration whose
residence changed grid is listed for the admins, not moved.
"""

from __future__ import annotations

import contextlib
import io
from datetime import timedelta

import shapely
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo_api.security import hash_password
from ingest.boundaries import commit_plan, format_report, parse_mapping, plan_import
from ingest.district import start_district
from ingest.files import read_features
from layers.boundaries import LOCAL_TZ
from tests.conftest import clocked, make_settings, scratch_engine
from tests.factories.tiles import decode, path, tile_at, to_lonlat
from tests.ingest.district_files import (
    AREA_MAP,
    CODE,
    GRID_MAP,
    NAME,
    Unit,
    build_district,
    write_areas_shapefile,
    write_grids_gpkg,
)
from tests.zh import untranslated_reasons

PASSWORD = "generations-2026"


def _plan(engine, kind, file, *, mapping=GRID_MAP, **kw):
    m = parse_mapping(mapping)
    with Session(engine) as session:
        plan = plan_import(session, kind, read_features(file), mapping=m, **kw)
    assert not untranslated_reasons(p.reason for p in plan.problems)  # the web map shows each in Chinese
    return plan


def _commit(engine, plan) -> dict:
    with Session(engine) as session:
        counts = commit_plan(session, plan)
        session.commit()
    return counts


def _cli(engine, monkeypatch, *argv) -> tuple[int, str]:
    """``gridbranch ARGV`` on ``engine``'s database, by the tests' clock."""
    from geo_api import cli

    engine_of = cli._engine
    monkeypatch.setenv("GRIDBRANCH_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    monkeypatch.setattr(cli, "_engine", lambda settings: clocked(engine_of(settings)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(list(argv))
    return rc, out.getvalue()


def _versions(engine) -> dict[str, int]:
    with Session(engine) as session:
        from layers.versions import data_versions

        return data_versions(session, ["grids", "areas"])


def test_a_generation_takes_effect_on_its_day(server_url, tmp_path, clock, monkeypatch):
    district = build_district()
    with scratch_engine(server_url, "generations", pool=4, migrated=True) as engine:
        with Session(engine) as session:
            start_district(
                session,
                code=CODE,
                boundary=read_features(district.boundary_file),
                crs="gcj02",
                name=NAME,
                admin_password_hash=hash_password(PASSWORD),
            )
            session.commit()
        _commit(
            engine,
            _plan(engine, "areas", write_areas_shapefile(district, tmp_path / "a"), crs="gcj02", mapping=AREA_MAP),
        )
        grids = district.grids[:5]  # one community's
        first = _commit(engine, _plan(engine, "grids", write_grids_gpkg(district, tmp_path / "v1.gpkg", grids=grids)))
        assert first["added"] == 5 and first["generation"] == 1

        # the border between grids 0 and 1 moves into grid 0; grid 4 is left out of the file
        a, b, gone = grids[0], grids[1], grids[4]
        shift = shapely.intersection(shapely.buffer(b.geom, 0.0003), district.communities[0].geom)
        handed = shapely.intersection(a.geom, shift)
        new_a = shapely.multipolygons(shapely.get_parts(shapely.difference(a.geom, shift)))
        new_b = shapely.multipolygons(shapely.get_parts(shapely.union(b.geom, handed)))
        p = shapely.point_on_surface(shapely.difference(handed, shapely.buffer(b.geom, 0.00005)))
        assert a.geom.contains(p) and new_b.contains(p)
        q = shapely.point_on_surface(gone.geom)
        # a member registered at grid 0, living at p
        with Session(engine) as session:
            member = session.execute(
                text("INSERT INTO members (number, name, status) VALUES ('Z0001', '王居民', 'in_service') RETURNING id")
            ).scalar()
            session.execute(
                text(
                    """WITH res AS (INSERT INTO residences (member_id, geom, source_crs, source_x, source_y)
                                VALUES (:m, ST_SetSRID(ST_MakePoint(:x, :y), 4326), 'wgs84', :x, :y) RETURNING id)
                   INSERT INTO registrations (member_id, residence_id, grid_id, grid_version_id, status)
                   SELECT :m, res.id, g.id, v.id, 'confirmed' FROM res, grids g
                     JOIN grid_versions v ON v.grid_id = g.id WHERE g.code = :g"""
                ),
                {"m": member, "x": p.x, "y": p.y, "g": a.code},
            )
            dept = session.execute(
                text("INSERT INTO departments (code, name) VALUES ('CG', '城管局') RETURNING id")
            ).scalar()
            session.execute(
                text(
                    "INSERT INTO event_categories (code, name, department_id, time_limit_hours) "
                    "VALUES ('ljdf', '垃圾堆放', :d, 24)"
                ),
                {"d": dept},
            )
            session.commit()

        clock.advance(days=1)
        day = (clock.now().astimezone(LOCAL_TZ) + timedelta(days=30)).date()
        v2 = [Unit(a.code, a.name, a.parent, new_a), Unit(b.code, b.name, b.parent, new_b), grids[2], grids[3]]
        file = write_grids_gpkg(district, tmp_path / "v2.gpkg", grids=v2)
        # a day gone by is refused, naming the parameter
        past = _plan(engine, "grids", file, effective=clock.now() - timedelta(days=2))
        assert not past.ok and [p_.field for p_ in past.errors] == ["effective"]

        before = _versions(engine)
        rc, out = _cli(
            engine,
            monkeypatch,
            "ingest",
            "grids",
            str(file),
            "--map",
            GRID_MAP,
            "--effective",
            day.isoformat(),
            "--retire-missing",
            "--commit",
        )
        assert rc == 0, out
        assert f"retire {gone.code}" in out and f"retired on {day.isoformat()}" in out
        assert f"committed: generation 2, taking effect on {day.isoformat()}" in out
        assert "redrawn 2" in out and "retired 1" in out
        # listed for the admins at the day it takes effect: a → b, nothing moved
        assert f"{a.code} v1 → {b.code}" in out and "member Z0001" in out
        pending = _versions(engine)
        assert pending["grids"] > before["grids"]  # the commit is a write

        with TestClient(create_app_on(engine)) as api:
            admin: dict[str, str] = {}

            def sign_in():  # a token lasts hours: the clock moves a month
                token = api.post("/v1/auth/token", data={"username": "admin", "password": PASSWORD}).json()
                admin["Authorization"] = f"Bearer {token['access_token']}"

            def locate(pt, **kw):
                r = api.get("/v1/locate", params={"lon": pt.x, "lat": pt.y, **kw})
                return r.json()["grid"]["code"] if r.status_code == 200 else r.json()["nearest_grid"]["code"]

            def tile_state():
                tile = tile_at(p.x, p.y, 16)
                r = api.get(path("grids", tile))
                feats = {f["properties"]["code"]: f for f in decode(r.content)["grids"]["features"]}
                holder = [c for c, f in feats.items() if to_lonlat(tile, f["geometry"]).buffer(1e-6).covers(p)]
                return r.headers["etag"], holder

            def grids_of_community():
                r = api.get("/v1/coverage/summary", params={"code": a.parent, "level": "grid"}, headers=admin)
                assert r.status_code == 200, r.text
                return sorted(u["code"] for u in r.json()["units"])

            def report() -> int:
                r = api.post(
                    "/v1/events",
                    json={
                        "lon": p.x,
                        "lat": p.y,
                        "category": "ljdf",
                        "channel": "public",
                        "description": "楼下垃圾堆放",
                    },
                )
                assert r.status_code == 201, r.text
                return r.json()["id"]

            def fell_in(event_id: int):
                with engine.connect() as conn:
                    return tuple(
                        conn.execute(
                            text(
                                """SELECT g.code, v.version FROM events e JOIN grids g ON g.id = e.grid_id
                           JOIN grid_versions v ON v.id = e.grid_version_id WHERE e.id = :e"""
                            ),
                            {"e": event_id},
                        ).one()
                    )

            def moved(**kw):
                r = api.get("/v1/registrations/moved", params={"within": a.parent, **kw}, headers=admin)
                assert r.status_code == 200, r.text
                return [(m["member_number"], m["grid"]["code"], m["now_in"]["code"]) for m in r.json()["items"]]

            # until the day: the old layer everywhere
            sign_in()
            assert locate(p) == a.code and locate(q) == gone.code
            etag, holder = tile_state()
            assert holder == [a.code]
            assert gone.code in grids_of_community()
            assert moved() == [] and moved(at=day.isoformat()) == [("Z0001", a.code, b.code)]
            assert _versions(engine) == pending
            early = report()
            assert fell_in(early) == (a.code, 1)

            # the clock passes the day: no write, no restart
            clock.set(clock.now().replace(year=day.year, month=day.month, day=day.day) + timedelta(hours=1))
            assert _versions(engine)["grids"] > pending["grids"]
            assert _versions(engine)["areas"] == pending["areas"]
            assert locate(p) == b.code
            assert locate(q) != gone.code
            new_etag, holder = tile_state()
            assert new_etag != etag and holder == [b.code]
            sign_in()
            assert gone.code not in grids_of_community() and len(grids_of_community()) == 4
            assert moved() == [("Z0001", a.code, b.code)]
            # events keep the grid version they fell in; a new one falls in the new layer
            assert fell_in(early) == (a.code, 1) and fell_in(report()) == (b.code, 2)
            # history still answers, with the version the point fell in
            yesterday = (day - timedelta(days=1)).isoformat()
            old = api.get("/v1/locate", params={"lon": p.x, "lat": p.y, "at": yesterday}).json()
            assert old["grid"]["code"] == a.code and old["grid"]["version"] == 1
            assert locate(q, at=yesterday) == gone.code
            assert locate(p, at=(day - timedelta(days=9)).isoformat()) == a.code
            assert api.app.state.caches.history_index.built == 1  # one index for the days before the generation
            assert api.get("/v1/locate", params={"lon": p.x, "lat": p.y, "at": "2027-13-01"}).json()["field"] == "at"

        with engine.connect() as conn:
            history = conn.execute(
                text(
                    """SELECT g.code, v.version, v.generation_id, v.valid_to IS NULL FROM grids g
                   JOIN grid_versions v ON v.grid_id = g.id WHERE g.code IN (:a, :b, :c)
                   ORDER BY g.code, v.version"""
                ),
                {"a": a.code, "b": b.code, "c": gone.code},
            ).all()
            registration = conn.execute(
                text("SELECT g.code FROM registrations r JOIN grids g ON g.id = r.grid_id")
            ).scalar()
        assert history == [
            (a.code, 1, 1, False),
            (a.code, 2, 2, True),
            (b.code, 1, 1, False),
            (b.code, 2, 2, True),
            (gone.code, 1, 1, False),
        ]
        assert registration == a.code  # listed, not moved

        rc, out = _cli(engine, monkeypatch, "ingest", "generations", "--moved")
        assert rc == 0
        assert "generation 1:" in out and f"generation 2: takes effect {day.isoformat()} (in force)" in out
        assert f"{a.code} v1 → {b.code}" in out
        # the same file again writes nothing and makes no generation
        again = _plan(engine, "grids", file)
        assert again.counts()["unchanged"] == 4 and again.ok, format_report(again)
        assert "generation" not in _commit(engine, again)


def create_app_on(engine):
    from geo_api.app import create_app

    return create_app(make_settings(), engine=engine)

"""The ``gis`` views (migration 0023) and their read-only accounts (``gridbranch db
grant-reader``), on the demo: a reader sees boundaries with their codes and names,
branches and events, and none of the personal data; the QGIS layer definition names
views that exist, styled with the map's colours."""

from __future__ import annotations

import contextlib
import io
import os
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from geo_api.cli import main
from layers import db, gis_reader
from layers.errors import Conflict, InvalidInput
from tests.conftest import _worker, clocked
from tiles.style import COLORS

#: columns that would carry personal data (members, phones, residences, reporters)
PERSONAL = ("phone", "secretary", "reporter", "contact", "description", "member", "residence", "worker", "photos")


@pytest.fixture
def reader(demo_engine):
    name = f"reader_{_worker()}".lower()
    password = "Ok'but:odd %s pass"  # a quote, a colon, a percent: all reach the server as typed
    with demo_engine.begin() as conn:
        assert gis_reader.grant_reader(conn, name, password) is True
    url = db.url_for_user(demo_engine.url.render_as_string(hide_password=False), name)
    engine = clocked(db.make_engine(url.replace(f"{name}@", f"{name}:{_quoted(password)}@"), 1))
    yield name, engine, password
    engine.dispose()
    with demo_engine.begin() as conn:
        gis_reader.revoke_reader(conn, name)


def _rgb(hex_colour: str) -> str:
    return ",".join(str(int(hex_colour[i : i + 2], 16)) for i in (1, 3, 5))


def _quoted(password: str) -> str:
    from urllib.parse import quote

    return quote(password, safe="")


def test_a_reader_reads_the_views_with_codes_and_names(demo_engine, reader):
    _, engine, _ = reader
    with demo_engine.connect() as conn:
        truth = conn.execute(
            text(
                """SELECT count(*), count(*) FILTER (WHERE EXISTS (
                       SELECT 1 FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id
                       WHERE bg.grid_id = g.id AND b.active))
                   FROM grids g WHERE gridbranch_live(g.retired_at)"""
            )
        ).one()
        n_versions, n_branches, n_events = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM grid_versions), (SELECT count(*) FROM branches), (SELECT count(*) FROM events)"
            )
        ).one()
    with engine.connect() as conn:
        grids = conn.execute(text("SELECT count(*), count(*) FILTER (WHERE has_branch) FROM gis.grids")).one()
        assert tuple(grids) == tuple(truth) and truth[0] > 400
        row = conn.execute(
            text(
                "SELECT code, name, community_code, street_code, ST_GeometryType(geom) FROM gis.grids ORDER BY code LIMIT 1"
            )
        ).one()
        assert len(row.code) == 15 and row.name and row.code.startswith(row.community_code) and row.street_code
        assert row[4] == "ST_MultiPolygon"
        assert (
            conn.execute(text("SELECT count(*) FROM gis.grid_versions WHERE code IS NOT NULL")).scalar() == n_versions
        )
        assert conn.execute(text("SELECT count(*) FROM gis.branches")).scalar() == n_branches
        assert conn.execute(text("SELECT count(*) FROM gis.events")).scalar() == n_events
        # an event's own point only in a public space (the test below); the others give their grid
        points = conn.execute(
            text("SELECT count(*) FILTER (WHERE geom IS NOT NULL), count(grid_code) FROM gis.events")
        ).one()
        assert 0 < points[0] < n_events and points[1] > 0
        kinds = dict(
            conn.execute(text("SELECT f_table_name, type FROM geometry_columns WHERE f_table_schema = 'gis'")).all()
        )
        assert kinds == {
            "areas": "MULTIPOLYGON",
            "grids": "MULTIPOLYGON",
            "grid_versions": "MULTIPOLYGON",
            "branches": "POINT",
            "events": "POINT",
        }
        columns = conn.execute(
            text("SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = 'gis'")
        ).scalars()
        assert not [c for c in columns if any(p in c for p in PERSONAL)]


def test_a_reader_reads_nothing_else(demo_engine, reader):
    _, engine, _ = reader
    with demo_engine.connect() as conn:
        tables = (
            conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'spatial_ref_sys'")
            )
            .scalars()
            .all()
        )
    assert {"members", "residences", "registrations", "users", "events", "audit_log", "branches"} <= set(tables)
    for table in tables:
        with engine.connect() as conn, pytest.raises(ProgrammingError, match="permission denied"):
            conn.execute(text(f'SELECT 1 FROM public."{table}" LIMIT 1'))
    with engine.connect() as conn, pytest.raises(ProgrammingError, match="read-only|permission denied"):
        conn.execute(text("CREATE TABLE gis.mine (id int)"))


def test_the_event_points_a_reader_sees_are_public_spaces(demo_engine, reader):
    _, engine, _ = reader
    with engine.connect() as conn:
        seen = set(conn.execute(text("SELECT id FROM gis.events WHERE geom IS NOT NULL")).scalars())
    with demo_engine.connect() as conn:
        public = set(
            conn.execute(
                text(
                    "SELECT e.id FROM events e JOIN event_categories c ON c.code = e.category_code WHERE c.public_space"
                )
            ).scalars()
        )
    assert seen == public and public


def test_grant_again_refusals_and_revoke(demo_engine, reader):
    name, _, _ = reader
    with demo_engine.begin() as conn:
        assert gis_reader.grant_reader(conn, name, "another-password") is False  # again: the password set anew
        with pytest.raises(Conflict):
            gis_reader.grant_reader(conn, "postgres", "x")  # never takes over a role it did not make
        for bad in ("Robert'); DROP", "1abc", "pg_reader", ""):
            with pytest.raises(InvalidInput):
                gis_reader.grant_reader(conn, bad, "x")
    with demo_engine.begin() as conn:
        assert gis_reader.revoke_reader(conn, name) is True
        assert gis_reader.revoke_reader(conn, name) is False
        assert not conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).scalar()


def _cli(*argv: str, env: dict[str, str]) -> tuple[int, str]:
    out = io.StringIO()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out):
            rc = main(list(argv))
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return rc, out.getvalue()


def test_the_commands_url_grant_and_the_qgis_layer_definition(demo_engine, tmp_path):
    url = demo_engine.url.render_as_string(hide_password=False)
    env = {"GRIDBRANCH_DATABASE_URL": url, "GRIDBRANCH_READER_PASSWORD": "qgis-reader-pw"}
    rc, out = _cli("db", "url", env=env)
    assert rc == 0 and out.strip().startswith("postgresql://") and "+psycopg2" not in out
    rc, out = _cli("db", "url", "--sqlalchemy", env=env)
    assert rc == 0 and out.strip().startswith("postgresql+psycopg2://")
    name = f"qgis_{_worker()}".lower()
    rc, out = _cli("db", "url", "--reader", name, env=env)
    assert rc == 0 and f"postgresql://{name}@" in out  # no password
    rc, out = _cli("db", "grant-reader", name, env=env)
    try:
        assert rc == 0 and "created" in out and "qgis-reader-pw" not in out  # a given password is not echoed
        qlr = tmp_path / "gridbranch.qlr"
        rc, out = _cli("db", "qgis", "--reader", name, "--out", str(qlr), env=env)
        assert rc == 0 and qlr.exists()
        root = ET.fromstring(qlr.read_bytes().split(b"\n", 1)[1])
        layers = root.findall("./maplayers/maplayer")
        assert {lyr.findtext("layername") for lyr in layers} >= {"网格", "党支部", "社区边界"}
        reader_engine = db.make_engine(db.url_for_user(url, name).replace(f"{name}@", f"{name}:qgis-reader-pw@"), 1)
        try:
            for lyr in layers:
                source = lyr.findtext("datasource")
                assert f"user='{name}'" in source and "password" not in source
                view = source.split('table="gis"."', 1)[1].split('"', 1)[0]
                with reader_engine.connect() as conn:  # each layer's view reads, as the reader
                    conn.execute(text(f"SELECT id, geom FROM gis.{view} LIMIT 1")).all()
            grids = next(lyr for lyr in layers if lyr.findtext("layername") == "网格")
            renderer = grids.find("renderer-v2")
            assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "has_branch"
            colour = grids.find(".//symbol[@name='0']//prop[@k='color']").get("v")
            assert colour.startswith(_rgb(COLORS["without_branch"]))  # the map's branchless grids
        finally:
            reader_engine.dispose()
    finally:
        rc, out = _cli("db", "revoke-reader", name, env=env)
        assert rc == 0 and "dropped" in out

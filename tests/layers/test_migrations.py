"""Migrations up and down against a real PostGIS, and the constraints they create."""

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import DataError, IntegrityError, InternalError

from layers import migrate
from tests.conftest import scratch_engine as conftest_scratch

TABLES = {
    "admin_areas",
    "grids",
    "grid_versions",
    "branches",
    "branch_grids",
    "service_roles",
    "members",
    "residences",
    "registrations",
    "departments",
    "event_categories",
    "events",
    "event_log",
    "users",
    "data_versions",
}


@pytest.fixture
def scratch_engine(server_url):
    with conftest_scratch(server_url, "test_migrations") as engine:
        yield engine


def test_up_down_up(scratch_engine):
    migrate.upgrade(scratch_engine)
    assert migrate.current_revision(scratch_engine) == migrate.head_revision()
    assert TABLES <= set(inspect(scratch_engine).get_table_names())
    migrate.downgrade(scratch_engine, "base")
    assert migrate.current_revision(scratch_engine) is None
    assert not TABLES & set(inspect(scratch_engine).get_table_names())
    migrate.upgrade(scratch_engine)
    assert TABLES <= set(inspect(scratch_engine).get_table_names())


def test_every_geometry_has_a_gist_index(migrated_engine):
    with migrated_engine.connect() as conn:
        # the tables' (the views of the gis schema read them through these indexes)
        geometry_columns = set(
            conn.execute(
                text("SELECT f_table_name, f_geometry_column FROM geometry_columns WHERE f_table_schema = 'public'")
            ).all()
        )
        indexed = set(
            conn.execute(
                text(
                    """SELECT t.relname, a.attname FROM pg_index x
                       JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid
                       JOIN pg_am am ON am.oid = i.relam JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(x.indkey)
                       WHERE am.amname = 'gist'"""
                )
            ).all()
        )
    assert len(geometry_columns) == 5
    assert geometry_columns <= indexed


def test_default_roles_seeded(empty_db):
    names = empty_db.execute(text("SELECT name FROM service_roles ORDER BY position")).scalars().all()
    assert names[0] == "法治建设宣传员" and len(names) == 6


def _insert_area(session, code, geom_wkt, srid=4326):
    session.execute(
        text("INSERT INTO admin_areas (code, name, level, geom) VALUES (:c, 'x', 'district', ST_GeomFromText(:g, :s))"),
        {"c": code, "g": geom_wkt, "s": srid},
    )


@pytest.mark.parametrize(
    "code, wkt, srid",
    [
        ("41010500000", "MULTIPOLYGON(((0 0,1 0,1 1,0 0)))", 4326),  # 11 digits
        ("410105000000", "MULTIPOLYGON(((0 0,1 1,1 0,0 1,0 0)))", 4326),  # self-intersecting bow tie
        ("410105000000", "MULTIPOLYGON(((0 0,1 0,1 1,0 0)))", 3857),  # wrong SRID
        ("410105000000", "POLYGON((0 0,1 0,1 1,0 0))", 4326),  # wrong geometry type
    ],
)
def test_constraints_refuse_bad_rows(empty_db, code, wkt, srid):
    with pytest.raises((IntegrityError, InternalError, DataError)) as info:
        with empty_db.begin_nested():
            _insert_area(empty_db, code, wkt, srid)
    assert info.value is not None


def test_event_log_is_append_only(empty_db):
    empty_db.execute(text("INSERT INTO departments (code, name) VALUES ('D01', '区城市管理局')"))
    empty_db.execute(
        text(
            "INSERT INTO event_categories (code, name, department_id, time_limit_hours) SELECT 'c', '占道经营', id, 24 FROM departments"
        )
    )
    eid = empty_db.execute(
        text(
            "INSERT INTO events (geom, source_crs, category_code, channel, description, status) "
            "VALUES (ST_SetSRID(ST_MakePoint(113.7, 34.8), 4326), 'wgs84', 'c', 'public', 'x', 'reported') RETURNING id"
        )
    ).scalar()
    empty_db.execute(
        text("INSERT INTO event_log (event_id, actor, action, to_status) VALUES (:e, 'a', 'report', 'reported')"),
        {"e": eid},
    )
    for stmt in ("UPDATE event_log SET note = 'changed'", "DELETE FROM event_log"):
        with pytest.raises(InternalError, match="append-only"):
            with empty_db.begin_nested():
                empty_db.execute(text(stmt))


def test_writes_bump_their_layer_version_in_the_same_transaction(empty_db):
    from layers.versions import data_versions

    before = data_versions(empty_db)
    assert set(before) == {"areas", "grids", "branches", "members", "residences", "events"}
    _insert_area(empty_db, "410105000000", "MULTIPOLYGON(((113 34,114 34,114 35,113 34)))")
    after = data_versions(empty_db)
    assert after["areas"] > before["areas"]
    assert after["grids"] == before["grids"] and after["events"] == before["events"]


def test_versions_never_repeat_after_a_rollback(migrated_engine):
    from sqlalchemy.orm import Session

    from layers.versions import data_versions

    seen = []
    for _ in range(2):
        with Session(migrated_engine) as session:
            _insert_area(session, "410105000000", "MULTIPOLYGON(((113 34,114 34,114 35,113 34)))")
            seen.append(data_versions(session)["areas"])
            session.rollback()
    assert seen[0] != seen[1]


def test_0017_fills_in_the_department_of_existing_tracks(scratch_engine):
    """Entries from an event's first dispatch on name the department of the last dispatch
    before them: the one its note names, else the event's current one; earlier entries and
    undispatched events none."""
    migrate.upgrade(scratch_engine, "0013")
    with scratch_engine.begin() as conn:
        d = dict(
            conn.execute(
                text(
                    "INSERT INTO departments (code, name) VALUES ('D01', '区城市管理局'), ('D02', '区应急管理局') "
                    "RETURNING code, id"
                )
            ).all()
        )
        conn.execute(
            text(
                "INSERT INTO event_categories (code, name, department_id, time_limit_hours) "
                "VALUES ('qt', '其他', :d, 8)"
            ),
            {"d": d["D01"]},
        )
        moved, waiting = (
            conn.execute(
                text(
                    "INSERT INTO events (geom, source_crs, category_code, channel, description, status, department_id, "
                    "reported_at, dispatched_at, due_at) VALUES (ST_SetSRID(ST_MakePoint(113.7, 34.8), 4326), 'wgs84', 'qt', "
                    "'public', '测试', :s, :d, '2026-10-12T08:00+08', :at, :due) RETURNING id"
                ),
                {"s": status, "d": d["D02"] if status == "in_progress" else d["D01"], "at": at, "due": due},
            ).scalar()
            for status, at, due in (
                ("in_progress", "2026-10-12T09:00+08", "2026-10-13T09:00+08"),
                ("registered", None, None),
            )
        )
        steps = {
            moved: [
                ("report", None, "reported", None),
                ("register", "reported", "registered", None),
                ("dispatch", "registered", "dispatched", "派遣至区城市管理局"),
                ("return", "dispatched", "returned", "非本单位职责"),
                ("dispatch", "returned", "dispatched", "派遣"),
                ("start", "dispatched", "in_progress", None),
            ],
            waiting: [("report", None, "reported", None), ("register", "reported", "registered", None)],
        }
        for event, rows in steps.items():
            for i, (action, from_, to, note) in enumerate(rows):
                conn.execute(
                    text(
                        "INSERT INTO event_log (event_id, at, actor, action, from_status, to_status, note) "
                        "VALUES (:e, timestamptz '2026-10-12T08:00+08' + :i * interval '10 minutes', 'x', :a, :f, :t, :n)"
                    ),
                    {"e": event, "i": i, "a": action, "f": from_, "t": to, "n": note},
                )
    migrate.upgrade(scratch_engine)
    with scratch_engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT l.event_id, l.action, d.code FROM event_log l LEFT JOIN departments d ON d.id = l.department_id "
                "ORDER BY l.event_id, l.at"
            )
        ).all()
    assert [tuple(r) for r in found] == [
        (moved, "report", None),
        (moved, "register", None),
        (moved, "dispatch", "D01"),
        (moved, "return", "D01"),
        (moved, "dispatch", "D02"),
        (moved, "start", "D02"),
        (waiting, "report", None),
        (waiting, "register", None),
    ]
    with pytest.raises(InternalError), scratch_engine.begin() as conn:  # still append-only
        conn.execute(text("UPDATE event_log SET department_id = NULL"))

"""The personal-data audit's table and endpoint, and the public grid figures' suppression.
Which answers are audited is checked over every route × role by
tests/geo_api/test_scope_matrix.py (an answer with personal data and no row fails)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from geo_api.audit import writer_of
from layers import audit as audit_log
from layers.suppression import suppressed_grids
from tests.conftest import token_for
from tests.factories.api import api_routes

#: The routes that can answer personal data: each declares geo_api.audit.Audited.
PERSONAL_ROUTES = {
    ("POST", "/v1/registrations"),
    ("GET", "/v1/registrations"),
    ("GET", "/v1/registrations/mine"),
    ("GET", "/v1/registrations/{registration_id}"),
    ("POST", "/v1/registrations/{registration_id}/confirm"),
    ("POST", "/v1/registrations/{registration_id}/reject"),
    ("GET", "/v1/branches/{code}"),
    ("POST", "/v1/branches"),
    ("PATCH", "/v1/branches/{code}"),
    ("GET", "/v1/branches/{code}/unregistered"),
    ("GET", "/v1/upkeep"),
    ("GET", "/v1/events"),
    ("GET", "/v1/events/{event_id}"),
    ("GET", "/v1/events/{event_id}/routing"),
    ("POST", "/v1/events/{event_id}/transitions"),
    ("GET", "/tiles/{layers}/{z}/{x}/{y}.mvt"),
    ("POST", "/v1/activation-codes"),
    # a member account's display name is its member's name
    ("GET", "/v1/accounts"),
    ("GET", "/v1/accounts/{username}"),
    # a branch's secretary, for the admins of its community (OGC API – Features)
    ("GET", "/ogc/collections/{collectionId}/items"),
    ("GET", "/ogc/collections/{collectionId}/items/{featureId}"),
    ("POST", "/v1/accounts/{username}/disable"),
    ("POST", "/v1/accounts/{username}/enable"),
}


def _audited(route) -> bool:
    def walk(dependant):
        return any(getattr(d.call, "__name__", "") == "_auditor" or walk(d) for d in dependant.dependencies)

    return walk(route.dependant)


def test_the_personal_routes_declare_the_audit(client):
    declared = {(m, r.path) for r in api_routes(client.app.routes) for m in r.methods - {"HEAD"} if _audited(r)}
    assert declared == PERSONAL_ROUTES


def test_rows_are_written_read_filtered_exported_and_never_changed(client, demo_db):
    member = demo_db.execute(
        text("SELECT member_id FROM registrations WHERE status = 'confirmed' ORDER BY id LIMIT 1")
    ).scalar()
    reg = demo_db.execute(
        text("SELECT id FROM registrations WHERE member_id = :m AND status = 'confirmed'"), {"m": member}
    ).scalar()
    admin = token_for("admin")
    assert client.get(f"/v1/registrations/{reg}", headers=admin).status_code == 200
    writer_of(client.app).flush()
    r = client.get("/v1/audit", params={"member_id": member, "account": "admin"}, headers=admin)
    assert r.status_code == 200, r.text
    row = r.json()["items"][0]
    assert row["endpoint"] == "/v1/registrations/{registration_id}" and member in row["member_ids"]
    assert set(row["fields"]) == {"name", "phone", "residence"} and row["role"] == "admin"
    csv = client.get("/v1/audit", params={"member_id": member, "format": "csv"}, headers=admin)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert "/v1/registrations/{registration_id}" in csv.text
    # a street admin is no district admin
    assert client.get("/v1/audit", headers=token_for("street_admin")).status_code == 403
    # append-only: the database refuses changes, and a purge keeps at least a day
    for sql in (
        "UPDATE audit_log SET actor = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
        "UPDATE audit_records SET member_ids = '{}'",
        "DELETE FROM audit_records",
        "TRUNCATE audit_records",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            with demo_db.begin_nested():
                demo_db.execute(text(sql))
    with pytest.raises(DBAPIError, match="at least one day"):
        with demo_db.begin_nested():
            audit_log.purge(demo_db, 0.5)
    with demo_db.begin_nested():
        demo_db.execute(
            text(
                "INSERT INTO audit_log (at, actor, role, method, endpoint, path, status, fields) "
                "VALUES (gridbranch_now() - interval '400 days', 'old', 'admin', 'GET', '/x', '/x', 200, "
                "'{name}')"
            )
        )
        demo_db.execute(
            text("INSERT INTO audit_records (digest, member_ids, event_ids) VALUES ('orphan', '{1}', '{}')")
        )
        assert audit_log.purge(demo_db, 365) >= 1
        assert demo_db.execute(text("SELECT count(*) FROM audit_log WHERE actor = 'old'")).scalar() == 0
        assert demo_db.execute(text("SELECT count(*) FROM audit_records WHERE digest = 'orphan'")).scalar() == 0
        # the record sets rows still name are kept
        assert (
            demo_db.execute(
                text(
                    "SELECT count(*) FROM audit_log a WHERE a.records IS NOT NULL AND NOT EXISTS "
                    "(SELECT 1 FROM audit_records r WHERE r.digest = a.records)"
                )
            ).scalar()
            == 0
        )


def test_refusals_and_public_reads_are_not_audited(client, demo_db):
    writer_of(client.app).flush()
    last = demo_db.execute(text("SELECT COALESCE(max(id), 0) FROM audit_log")).scalar()
    assert client.get("/v1/registrations").status_code == 401
    assert client.get("/v1/grids", params={"limit": 5}).status_code == 200
    writer_of(client.app).flush()
    assert demo_db.execute(text("SELECT count(*) FROM audit_log WHERE id > :l"), {"l": last}).scalar() == 0


def test_grid_suppression_follows_the_h3_rule_and_defeats_differencing():
    # one community of three grids: 7, 7, 3 — the 3 is withheld, and so is a 7 (else the
    # community total minus the published grids gives the 3 away)
    counts = {"410105001001001": 7, "410105001001002": 7, "410105001001003": 3, "410105001002001": 12}
    hidden = suppressed_grids(counts, 5)
    assert "410105001001003" in hidden and len(hidden & {"410105001001001", "410105001001002"}) == 1
    assert "410105001002001" not in hidden


def test_public_grids_hold_no_small_count_and_differencing_fails(client, demo_db):
    features = []
    offset = 0
    while True:
        page = client.get("/v1/grids", params={"limit": 1000, "offset": offset}).json()
        features += page["features"]
        offset += 1000
        if offset >= page["numberMatched"]:
            break
    shown = {f["properties"]["code"]: f["properties"]["registered"] for f in features}
    assert all(v is None or v >= 5 for v in shown.values())
    true = dict(
        demo_db.execute(
            text(
                "SELECT g.code, count(r.id) FROM grids g LEFT JOIN registrations r "
                "ON r.grid_id = g.id AND r.status = 'confirmed' WHERE g.retired_at IS NULL "
                "GROUP BY g.code"
            )
        ).all()
    )
    for unit_len in (12, 9):  # a community's / street's total minus its published grids
        for unit in {c[:unit_len] for c in true}:
            withheld = sum(n for c, n in true.items() if c[:unit_len] == unit and shown.get(c) is None)
            assert withheld == 0 or withheld >= 5, (unit, withheld)
    # an admin of the area sees every figure
    full = client.get("/v1/grids", params={"limit": 50}, headers=token_for("admin")).json()["features"]
    assert all(not f["properties"]["suppressed"] for f in full)


def test_the_grid_worker_can_be_kept_out_of_public_answers(demo_engine, demo_db):
    from fastapi.testclient import TestClient

    from geo_api.app import create_app
    from geo_api.deps import get_session
    from geo_api.settings import AuditSettings
    from tests.conftest import make_settings

    code, x, y = demo_db.execute(
        text(
            "SELECT g.code, ST_X(ST_PointOnSurface(gv.geom)), ST_Y(ST_PointOnSurface(gv.geom)) FROM grids g "
            "JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL WHERE g.worker_name IS NOT NULL "
            "ORDER BY g.code LIMIT 1"
        )
    ).one()
    for public in (True, False):
        settings = make_settings()
        settings.audit = AuditSettings(public_grid_worker=public)
        app = create_app(settings, engine=demo_engine)
        app.dependency_overrides[get_session] = lambda: demo_db
        with TestClient(app) as c:
            located = c.get("/v1/locate", params={"lon": x, "lat": y}).json()
            grid = c.get(f"/v1/grids/{code}").json()["properties"]
            staff = c.get(f"/v1/grids/{code}", headers=token_for("admin")).json()["properties"]
        assert (located["grid_worker"] is not None) is public
        assert (grid["grid_worker"] is not None) is public and (grid["grid_worker_phone"] is not None) is public
        assert staff["grid_worker"] is not None  # the staff of its area always see who is in charge


def test_a_member_accounts_display_name_is_an_audited_read(client, demo_db):
    """A member account answers its member's name (display_name): audited like any other
    read of it; a staff account names no member and leaves no row."""
    member = demo_db.execute(text("SELECT member_id FROM users WHERE username = 'member'")).scalar_one()
    demo_db.execute(text("UPDATE users SET display_name = '测试党员' WHERE username = 'member'"))
    demo_db.commit()
    admin = token_for("admin")

    def rows(**params):
        writer_of(client.app).flush()
        query = {"account": "admin", "endpoint": "/v1/accounts/{username}", **params}
        return client.get("/v1/audit", params=query, headers=admin).json()["items"]

    before = len(rows())
    assert client.get("/v1/accounts/dispatcher", headers=admin).status_code == 200
    assert len(rows()) == before  # no member named: nothing recorded
    assert client.get("/v1/accounts/member", headers=admin).json()["display_name"] == "测试党员"
    assert len(rows()) == before + 1
    assert any(r["fields"] == ["name"] and r["member_ids"] == [member] for r in rows(member_id=member))

"""The registration lifecycle and its permissions, on a hand-made layer."""

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.conftest import token_for
from tests.factories import COMMUNITY, GRID_A, GRID_B, add_member, add_user, small_layout

X, Y = 113.60, 34.70
IN_A = {"lon": X + 0.02, "lat": Y + 0.02}
IN_B = {"lon": X + 0.07, "lat": Y + 0.02}


@pytest.fixture
def world(empty_db, empty_client):
    small_layout(empty_db, X, Y)
    m1 = add_member(empty_db, "李党员")
    m2 = add_member(empty_db, "王党员")
    add_user(empty_db, "m1", "member", member_id=m1)
    add_user(empty_db, "m2", "member", member_id=m2)
    add_user(empty_db, "cadmin", "admin", area_code=COMMUNITY)
    add_user(empty_db, "dadmin", "admin", area_code="410105000000")
    add_user(empty_db, "other", "admin", area_code="410105002000")
    add_user(empty_db, "gw_a", "grid_worker", area_code=GRID_A)
    add_user(empty_db, "gw_b", "grid_worker", area_code=GRID_B)
    add_user(empty_db, "disp", "dispatcher")
    h = {u: token_for(u) for u in ("m1", "m2", "cadmin", "dadmin", "other", "gw_a", "gw_b", "disp")}
    return {"m1": m1, "m2": m2, "h": h, "c": empty_client, "db": empty_db}


def register(w, user="m1", **body):
    payload = {**IN_A, "role": "平安创建示范员", **body}
    return w["c"].post("/v1/registrations", json=payload, headers=w["h"][user])


def test_member_registers_and_sees_own_residence(world):
    r = register(world, accuracy_m=12)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "pending" and body["grid"]["code"] == GRID_A
    assert body["branch"]["code"] == "B001" and body["role"]["code"] == "pingan"
    assert body["residence"]["point"] == [round(X + 0.02, 7), round(Y + 0.02, 7)]
    assert body["residence"]["source"]["crs"] == "wgs84" and body["residence"]["accuracy_m"] == 12
    assert body["member"]["name"] == "李党员"


def test_second_active_registration_is_409_and_the_database_refuses_it_too(world):
    first = register(world).json()
    r = register(world, **IN_B)
    assert r.status_code == 409 and r.json()["field"] == "member_id"
    db = world["db"]
    with pytest.raises(IntegrityError):
        with db.begin_nested():
            db.execute(
                text(
                    """INSERT INTO registrations (member_id, residence_id, grid_id, grid_version_id, status)
                       SELECT member_id, residence_id, grid_id, grid_version_id, 'confirmed' FROM registrations WHERE id = :i"""
                ),
                {"i": first["id"]},
            )


def test_confirm_by_the_area_admin_and_not_by_others(world):
    reg = register(world).json()
    c, h = world["c"], world["h"]
    for outsider in ("other", "gw_b"):
        r = c.post(f"/v1/registrations/{reg['id']}/confirm", headers=h[outsider])
        assert r.status_code == 403, outsider
    for not_allowed in ("m1", "disp"):
        assert c.post(f"/v1/registrations/{reg['id']}/confirm", headers=h[not_allowed]).status_code == 403
    assert c.post(f"/v1/registrations/{reg['id']}/confirm").status_code == 401
    r = c.post(f"/v1/registrations/{reg['id']}/confirm", headers=h["cadmin"])
    assert r.status_code == 200 and r.json()["status"] == "confirmed" and r.json()["decided_by"] == "cadmin"
    assert c.post(f"/v1/registrations/{reg['id']}/confirm", headers=h["cadmin"]).status_code == 409


def test_grid_worker_rejects_with_a_reason(world):
    reg = register(world).json()
    c, h = world["c"], world["h"]
    r = c.post(f"/v1/registrations/{reg['id']}/reject", json={}, headers=h["gw_a"])
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = c.post(f"/v1/registrations/{reg['id']}/reject", json={"reason": "地址不在本网格"}, headers=h["gw_a"])
    assert r.status_code == 200 and r.json()["status"] == "rejected" and r.json()["reason"] == "地址不在本网格"
    # rejected is not active: the member may register again
    assert register(world).status_code == 201


def test_moving_house_ends_the_old_registration_and_keeps_it(world):
    c, h = world["c"], world["h"]
    old = register(world).json()
    c.post(f"/v1/registrations/{old['id']}/confirm", headers=h["cadmin"])
    new = register(world, move=True, **IN_B).json()
    assert new["grid"]["code"] == GRID_B and new["status"] == "pending" and new["branch"] is None
    again = c.get(f"/v1/registrations/{old['id']}", headers=h["m1"]).json()
    assert again["status"] == "ended" and again["ended_at"] is not None
    rows = (
        world["db"]
        .execute(
            text("SELECT count(*), count(*) FILTER (WHERE ended_at IS NULL) FROM residences WHERE member_id = :m"),
            {"m": world["m1"]},
        )
        .one()
    )
    assert tuple(rows) == (2, 1)


def test_members_register_only_themselves_and_admins_only_in_their_area(world):
    r = register(world, member_id=world["m2"])
    assert r.status_code == 403
    # m2 has no registration, residence or work-unit branch yet: a member of no area below
    # the district, so only the district's admins act for them (the same 404 as no member)
    r = register(world, user="cadmin", member_id=world["m2"])
    assert r.status_code == 404 and r.json()["field"] == "member_id" and "王党员" not in r.text
    assert r.json()["detail"] == register(world, user="cadmin", member_id=10**6).json()["detail"].replace(
        str(10**6), str(world["m2"])
    )
    r = register(world, user="dadmin", member_id=world["m2"])
    assert r.status_code == 201 and r.json()["member_id"] == world["m2"]
    # now registered in the community: its admin may move them within it
    r = register(world, user="cadmin", member_id=world["m2"], move=True, **IN_B)
    assert r.status_code == 201 and r.json()["grid"]["code"] == GRID_B
    r = register(world, user="other", member_id=world["m2"], move=True)
    assert r.status_code == 404 and "王党员" not in r.text
    assert register(world, user="disp", member_id=world["m1"]).status_code == 403
    assert world["c"].post("/v1/registrations", json={**IN_A, "role": "fuwu"}).status_code == 401


def test_others_cannot_read_a_registration(world):
    reg = register(world).json()
    c, h = world["c"], world["h"]
    assert c.get(f"/v1/registrations/{reg['id']}", headers=h["m2"]).status_code == 403
    assert c.get(f"/v1/registrations/{reg['id']}", headers=h["other"]).status_code == 403
    assert c.get(f"/v1/registrations/{reg['id']}", headers=h["gw_a"]).json()["member"]["name"] == "李党员"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"role": "宣传委员"}, "role"),
        ({"lat": "NaN"}, "lat"),
        ({"lat": 91}, "lat"),
        ({"lon": "inf"}, "lon"),
        ({"lon": "east"}, "lon"),
        ({"crs": "EPSG:999999"}, "crs"),
        ({"crs": "mercator-ish"}, "crs"),
        ({"lon": X + 0.3}, "lon"),  # outside the service area
        ({"accuracy_m": -1}, "accuracy_m"),
    ],
)
def test_bad_registrations_are_422_naming_the_field_and_write_nothing(world, body, field):
    r = register(world, **body)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field
    n = world["db"].execute(text("SELECT count(*) FROM registrations")).scalar()
    m = world["db"].execute(text("SELECT count(*) FROM residences")).scalar()
    assert (n, m) == (0, 0)


def test_outside_names_the_nearest_grid(world):
    r = register(world, lon=X + 0.3)
    assert "nearest grid" in r.json()["detail"] and r.json()["nearest_grid"]["code"] == GRID_B


def test_admin_lists_within_their_area_only(world):
    c, h = world["c"], world["h"]
    register(world)
    r = c.get("/v1/registrations", params={"within": COMMUNITY, "status": "pending"}, headers=h["cadmin"])
    assert r.status_code == 200 and r.json()["total"] == 1
    assert r.json()["items"][0]["member"]["name"] == "李党员"
    assert c.get("/v1/registrations", params={"within": COMMUNITY}, headers=h["other"]).status_code == 403
    assert c.get("/v1/registrations", params={"within": COMMUNITY}, headers=h["m1"]).status_code == 403
    assert c.get("/v1/registrations", params={"within": "4101"}, headers=h["cadmin"]).status_code == 422


def test_stats_per_grid_with_roles_filled_and_missing(world):
    c, h = world["c"], world["h"]
    reg = register(world).json()
    c.post(f"/v1/registrations/{reg['id']}/confirm", headers=h["cadmin"])
    register(world, user="dadmin", member_id=world["m2"], role="fuwu", **IN_B)
    units = c.get("/v1/registrations/stats", params={"level": "grid", "within": COMMUNITY}, headers=h["cadmin"]).json()[
        "units"
    ]
    by = {u["code"]: u for u in units}
    assert by[GRID_A]["registered"] == 1 and by[GRID_A]["residents"] == 1 and by[GRID_A]["rate"] == 1.0
    assert by[GRID_A]["roles_filled"] == ["平安创建示范员"] and len(by[GRID_A]["roles_missing"]) == 5
    assert by[GRID_B]["registered"] == 0 and by[GRID_B]["pending"] == 1 and by[GRID_B]["rate"] == 0.0
    community = c.get(
        "/v1/registrations/stats", params={"level": "community", "within": COMMUNITY}, headers=h["cadmin"]
    ).json()["units"]
    assert community == [
        {**community[0], "code": COMMUNITY, "residents": 2, "registered": 1, "pending": 1, "rate": 0.5}
    ]
    r = c.get("/v1/registrations/stats", params={"level": "district", "within": COMMUNITY}, headers=h["cadmin"])
    assert r.status_code == 422 and r.json()["field"] == "level"


def test_residents_per_grid_are_counted_again_only_after_a_residence_write(world):
    """The residents per grid behind the statistics (a point-in-polygon pass over every
    residence) are kept across registration writes and counted again after a residence
    write, always as the database counts them."""
    from layers.registrations import grid_residents

    db, c, h = world["db"], world["c"], world["h"]
    caches = c.app.state.caches
    direct = text("""SELECT g.id, count(*) FROM grids g
                       JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL
                       JOIN residences r ON r.ended_at IS NULL AND ST_Intersects(gv.geom, r.geom)
                      WHERE g.retired_at IS NULL GROUP BY g.id""")
    reg = register(world).json()
    first = grid_residents(db, caches)
    assert dict(zip(*first)) == dict(db.execute(direct).all()) and sum(first[1]) == 1
    assert c.post(f"/v1/registrations/{reg['id']}/confirm", headers=h["cadmin"]).status_code == 200
    assert grid_residents(db, caches) is first  # a registration write: kept
    register(world, user="dadmin", member_id=world["m2"], role="fuwu", **IN_B)  # a new residence
    second = grid_residents(db, caches)
    assert second is not first and dict(zip(*second)) == dict(db.execute(direct).all()) and sum(second[1]) == 2


def test_a_residence_without_registration_is_superseded(world):
    db = world["db"]
    db.execute(
        text("""INSERT INTO residences (member_id, geom, source_crs, source_x, source_y)
                VALUES (:m, ST_SetSRID(ST_MakePoint(113.61, 34.71), 4326), 'wgs84', 113.61, 34.71)"""),
        {"m": world["m1"]},
    )
    r = register(world)
    assert r.status_code == 201
    current = db.execute(
        text("SELECT count(*) FROM residences WHERE member_id = :m AND ended_at IS NULL"), {"m": world["m1"]}
    ).scalar()
    assert current == 1


def test_roles_are_listed_for_anyone_in_their_configured_order(world):
    r = world["c"].get("/v1/registrations/roles")
    assert r.status_code == 200
    roles = r.json()["roles"]
    expected = (
        world["db"].execute(text("SELECT code, name FROM service_roles WHERE active ORDER BY position, code")).all()
    )
    assert [(x["code"], x["name"]) for x in roles] == [tuple(e) for e in expected] and len(roles) >= 6
    # the list is what a registration accepts, by code and by name
    assert register(world, role=roles[-1]["name"]).json()["role"]["code"] == roles[-1]["code"]


def test_a_member_reads_their_own_registrations_and_nobody_else_can(world):
    c, h = world["c"], world["h"]
    empty = c.get("/v1/registrations/mine", headers=h["m1"])
    assert empty.status_code == 200 and empty.json() == {"active": None, "items": []}
    first = register(world).json()
    assert (
        c.post(
            f"/v1/registrations/{first['id']}/reject", json={"reason": "地址不在本网格"}, headers=h["cadmin"]
        ).status_code
        == 200
    )
    second = register(world, **IN_B).json()
    mine = c.get("/v1/registrations/mine", headers=h["m1"]).json()
    assert [i["id"] for i in mine["items"]] == [second["id"], first["id"]]
    assert mine["active"]["id"] == second["id"] and mine["active"]["status"] == "pending"
    assert mine["items"][1]["status"] == "rejected" and mine["items"][1]["reason"] == "地址不在本网格"
    assert mine["active"]["member"]["name"] == "李党员"
    assert c.get("/v1/registrations/mine", headers=h["m2"]).json() == {"active": None, "items": []}
    for staff in ("cadmin", "gw_a", "disp"):
        assert c.get("/v1/registrations/mine", headers=h[staff]).status_code == 403, staff
    assert c.get("/v1/registrations/mine").status_code == 401

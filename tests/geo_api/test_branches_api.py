"""Keeping grid workers and branches current (PUT /v1/grids/{code}/worker, GET/POST/PATCH
/v1/branches) on the Jinshui demo: who may, what is refused and why, that nothing is half
written, and that the map, the locate answers and the grid records follow at once."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from layers.crs import from_wgs84
from tests.conftest import token_for
from tests.factories.tiles import decode, make_client, path, tile_at

ADMIN = token_for("admin")


def one(db, sql: str, **params):
    return db.execute(text(sql), params).first()


def me(client, username: str) -> dict:
    return client.get("/v1/auth/me", headers=token_for(username)).json()


def branchless_grid(db):
    """A current grid no active branch covers, with its community and an inside point."""
    return one(
        db,
        """
        SELECT g.code, g.name, c.code AS community, c.name AS community_name,
               ST_X(ST_PointOnSurface(gv.geom)) AS lon, ST_Y(ST_PointOnSurface(gv.geom)) AS lat
          FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL
          JOIN admin_areas c ON c.id = g.community_id
         WHERE g.retired_at IS NULL AND NOT EXISTS (
               SELECT 1 FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id
                WHERE bg.grid_id = g.id AND b.active)
         ORDER BY g.code LIMIT 1""",
    )


def problem(r, status: int, field: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["field"] == field and body["detail"]
    return body["detail"]


# --- grid workers ------------------------------------------------------------------


def test_an_admin_puts_a_grid_worker_in_charge_and_locate_says_so(client, demo_db):
    grid = branchless_grid(demo_db)
    r = client.put(f"/v1/grids/{grid.code}/worker", headers=ADMIN, json={"name": " 赵新 ", "phone": "139 0000 1234"})
    assert r.status_code == 200, r.text
    props = r.json()["properties"]
    assert (props["grid_worker"], props["grid_worker_phone"]) == ("赵新", "13900001234")
    assert one(demo_db, "SELECT worker_name, worker_phone FROM grids WHERE code = :c", c=grid.code) == (
        "赵新",
        "13900001234",
    )
    located = client.get("/v1/locate", params={"lon": grid.lon, "lat": grid.lat}).json()
    assert located["grid"]["code"] == grid.code
    assert located["grid_worker"] == {"name": "赵新", "phone": "13900001234"}
    # a landline with its area code; then nobody
    r = client.put(f"/v1/grids/{grid.code}/worker", headers=ADMIN, json={"name": "钱明", "phone": "0371-66881234"})
    assert r.json()["properties"]["grid_worker_phone"] == "0371-66881234"
    r = client.put(f"/v1/grids/{grid.code}/worker", headers=ADMIN, json={"name": None, "phone": None})
    assert r.json()["properties"]["grid_worker"] is None
    assert client.get("/v1/locate", params={"lon": grid.lon, "lat": grid.lat}).json()["grid_worker"] is None


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": "赵新", "phone": "12345"}, "worker_phone"),
        ({"name": "赵新", "phone": "2390000123"}, "worker_phone"),
        ({"name": "赵新"}, "worker_phone"),
        ({"name": "  ", "phone": "13900001234"}, "worker_name"),
        ({"phone": "13900001234"}, "worker_name"),
        ({"name": "名" * 65, "phone": "13900001234"}, "worker_name"),
    ],
)
def test_a_grid_worker_without_a_usable_name_or_phone_is_refused(client, demo_db, body, field):
    grid = branchless_grid(demo_db)
    before = one(demo_db, "SELECT worker_name, worker_phone FROM grids WHERE code = :c", c=grid.code)
    problem(client.put(f"/v1/grids/{grid.code}/worker", headers=ADMIN, json=body), 422, field)
    assert one(demo_db, "SELECT worker_name, worker_phone FROM grids WHERE code = :c", c=grid.code) == before


def test_only_admins_of_an_area_holding_the_grid_keep_its_worker(client, demo_db):
    street = me(client, "street_admin")["area_code"]
    inside = one(demo_db, "SELECT code FROM grids WHERE code LIKE :p ORDER BY code LIMIT 1", p=street[:9] + "%")[0]
    outside = one(demo_db, "SELECT code FROM grids WHERE code NOT LIKE :p ORDER BY code LIMIT 1", p=street[:9] + "%")[0]
    body = {"name": "孙立", "phone": "13700001111"}
    assert client.put(f"/v1/grids/{inside}/worker", headers=token_for("street_admin"), json=body).status_code == 200
    problem(client.put(f"/v1/grids/{outside}/worker", headers=token_for("street_admin"), json=body), 403, "code")
    for user in ("member", "dispatcher", "gridworker"):
        assert client.put(f"/v1/grids/{inside}/worker", headers=token_for(user), json=body).status_code == 403, user
    assert client.put(f"/v1/grids/{inside}/worker", json=body).status_code == 401
    problem(client.put("/v1/grids/410105999999999/worker", headers=ADMIN, json=body), 404, "code")
    assert client.put("/v1/grids/4101/worker", headers=ADMIN, json=body).status_code == 422


# --- branches ----------------------------------------------------------------------


def new_branch(grid, **extra) -> dict:
    return {
        "name": f"{grid.name}党支部",
        "kind": "grid",
        "community": grid.community,
        "grids": [grid.code],
        "site": {"lon": grid.lon, "lat": grid.lat},
        "secretary_name": "周红",
        "secretary_phone": "13600002222",
        **extra,
    }


def test_an_admin_sets_up_a_grid_branch_and_the_grid_has_one(client, demo_db):
    grid = branchless_grid(demo_db)
    gx, gy = from_wgs84(grid.lon, grid.lat, "gcj02")  # the site as read off Amap
    r = client.post("/v1/branches", headers=ADMIN, json=new_branch(grid, site={"lon": gx, "lat": gy, "crs": "gcj02"}))
    assert r.status_code == 201, r.text
    branch = r.json()
    assert branch["code"].startswith(f"G{grid.code}") and branch["kind"] == "grid" and branch["active"]
    assert (branch["community"], branch["grids"]) == (grid.community, [grid.code])
    assert branch["site"]["lon"] == pytest.approx(grid.lon, abs=1e-6)
    assert branch["site"]["lat"] == pytest.approx(grid.lat, abs=1e-6)
    assert (branch["secretary_name"], branch["secretary_phone"]) == ("周红", "13600002222")
    record = client.get(f"/v1/grids/{grid.code}").json()["properties"]
    assert record["has_branch"] and record["branches"] == [
        {"code": branch["code"], "name": f"{grid.name}党支部", "kind": "grid"}
    ]
    assert client.get(f"/v1/branches/{branch['code']}", headers=ADMIN).json() == branch
    # a second grid branch for the same grid: refused, naming the first
    detail = problem(client.post("/v1/branches", headers=ADMIN, json=new_branch(grid, name="另一个支部")), 409, "grids")
    assert branch["code"] in detail


def test_a_branch_that_cannot_be_set_up_writes_nothing(client, demo_db):
    grid = branchless_grid(demo_db)
    other = one(
        demo_db,
        "SELECT code FROM grids WHERE community_id <> (SELECT id FROM admin_areas WHERE code = :c) "
        "ORDER BY code LIMIT 1",
        c=grid.community,
    )[0]
    far = one(
        demo_db,
        "SELECT ST_X(ST_PointOnSurface(geom)), ST_Y(ST_PointOnSurface(geom)) FROM admin_areas "
        "WHERE level = 'community' AND code <> :c ORDER BY code LIMIT 1",
        c=grid.community,
    )
    count = "SELECT (SELECT count(*) FROM branches), (SELECT count(*) FROM branch_grids)"
    before = one(demo_db, count)
    for body, status, field in (
        (new_branch(grid, grids=[grid.code, other]), 422, "grids"),
        (new_branch(grid, grids=[grid.code, "410105999999999"]), 422, "grids"),
        (new_branch(grid, grids=[grid.code, grid.code]), 422, "grids"),
        (new_branch(grid, grids=[]), 422, "grids"),
        (new_branch(grid, site={"lon": far[0], "lat": far[1]}), 422, "site"),
        (new_branch(grid, site={"lon": 200, "lat": 34.8}), 422, "site.lon"),
        (new_branch(grid, community="410105000000"), 422, "community"),
        (new_branch(grid, kind="work_unit"), 422, "kind"),
        (new_branch(grid, name=" "), 422, "name"),
        (new_branch(grid, secretary_phone="110"), 422, "secretary_phone"),
    ):
        r = client.post("/v1/branches", headers=ADMIN, json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["field"] == field, (body, r.json())
        assert "np." not in r.json()["detail"]
    assert one(demo_db, count) == before


def test_a_branch_is_renamed_moved_dissolved_and_restored(client, demo_db):
    grid = branchless_grid(demo_db)
    code = client.post("/v1/branches", headers=ADMIN, json=new_branch(grid)).json()["code"]
    # another grid of the community, with a grid branch of its own
    sibling, its_branch = one(
        demo_db,
        """
        SELECT g.code, b.code FROM grids g JOIN admin_areas c ON c.id = g.community_id
          JOIN branch_grids bg ON bg.grid_id = g.id JOIN branches b ON b.id = bg.branch_id
         WHERE c.code = :c AND g.code <> :g AND g.retired_at IS NULL AND b.active AND b.kind = 'grid'
         ORDER BY g.code LIMIT 1""",
        c=grid.community,
        g=grid.code,
    )
    r = client.patch(f"/v1/branches/{code}", headers=ADMIN, json={"name": "新名字党支部", "site": None})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "新名字党支部" and r.json()["site"] is None
    assert r.json()["secretary_name"] == "周红"  # left out: kept
    # taking the sibling too: refused while its own branch is active, then done
    detail = problem(
        client.patch(f"/v1/branches/{code}", headers=ADMIN, json={"name": "半途而废", "grids": [grid.code, sibling]}),
        409,
        "grids",
    )
    assert its_branch in detail
    kept = client.get(f"/v1/branches/{code}", headers=ADMIN).json()
    assert (kept["name"], kept["grids"]) == ("新名字党支部", [grid.code])  # nothing of it written
    assert client.patch(f"/v1/branches/{its_branch}", headers=ADMIN, json={"active": False}).status_code == 200
    r = client.patch(f"/v1/branches/{code}", headers=ADMIN, json={"grids": [sibling, grid.code]})
    assert r.status_code == 200 and r.json()["grids"] == sorted([grid.code, sibling])
    record = client.get(f"/v1/grids/{sibling}").json()["properties"]
    assert record["has_branch"] and [b["code"] for b in record["branches"]] == [code]
    r = client.patch(
        f"/v1/branches/{code}", headers=ADMIN, json={"secretary_name": "吴刚", "secretary_phone": "13500003333"}
    )
    assert (r.json()["secretary_name"], r.json()["secretary_phone"]) == ("吴刚", "13500003333")
    # dissolved: the grid has no branch again; restored: it has
    assert client.patch(f"/v1/branches/{code}", headers=ADMIN, json={"active": False}).json()["active"] is False
    assert client.get(f"/v1/grids/{grid.code}").json()["properties"]["has_branch"] is False
    taken = client.post("/v1/branches", headers=ADMIN, json=new_branch(grid, name="接替党支部"))
    assert taken.status_code == 201 and taken.json()["code"] == f"G{grid.code}-2"
    # restoring it now would give the grid two grid branches
    problem(client.patch(f"/v1/branches/{code}", headers=ADMIN, json={"active": True}), 409, "grids")
    client.patch(f"/v1/branches/{taken.json()['code']}", headers=ADMIN, json={"active": False})
    assert client.patch(f"/v1/branches/{code}", headers=ADMIN, json={"active": True}).json()["active"] is True
    assert client.get(f"/v1/grids/{grid.code}").json()["properties"]["has_branch"] is True


def test_only_admins_of_the_branchs_community_keep_it(client, demo_db):
    street = me(client, "street_admin")["area_code"]
    inside = one(
        demo_db,
        """SELECT b.code FROM branches b JOIN admin_areas c ON c.id = b.community_id
                              WHERE c.code LIKE :p ORDER BY b.code LIMIT 1""",
        p=street[:9] + "%",
    )[0]
    outside = one(
        demo_db,
        """SELECT b.code FROM branches b JOIN admin_areas c ON c.id = b.community_id
                               WHERE c.code NOT LIKE :p ORDER BY b.code LIMIT 1""",
        p=street[:9] + "%",
    )[0]
    work_unit = one(demo_db, "SELECT code FROM branches WHERE kind = 'work_unit' ORDER BY code LIMIT 1")[0]
    street_admin = token_for("street_admin")
    assert client.get(f"/v1/branches/{inside}", headers=street_admin).status_code == 200
    assert client.patch(f"/v1/branches/{inside}", headers=street_admin, json={"name": "改名党支部"}).status_code == 200
    problem(client.get(f"/v1/branches/{outside}", headers=street_admin), 403, "code")
    problem(client.patch(f"/v1/branches/{outside}", headers=street_admin, json={"name": "x"}), 403, "code")
    problem(client.get(f"/v1/branches/{work_unit}", headers=street_admin), 403, "code")
    assert client.get(f"/v1/branches/{work_unit}", headers=ADMIN).status_code == 200
    problem(client.patch(f"/v1/branches/{work_unit}", headers=ADMIN, json={"name": "x"}), 422, "code")
    for user in ("member", "dispatcher", "gridworker"):
        assert client.get(f"/v1/branches/{inside}", headers=token_for(user)).status_code == 403, user
    assert client.get(f"/v1/branches/{inside}").status_code == 401
    problem(client.get("/v1/branches/NOPE", headers=ADMIN), 404, "code")


def test_the_map_shows_a_new_branch_at_once(demo_engine):
    """Committed for real (tiles are drawn on connections of their own), then undone."""
    with demo_engine.connect() as conn:
        grid = branchless_grid(conn)
    tile = tile_at(grid.lon, grid.lat, 15)

    def drawn(c) -> dict:
        r = c.get(path("grids,branches", tile))
        layers = decode(r.content)
        props = next(f["properties"] for f in layers["grids"]["features"] if f["properties"]["code"] == grid.code)
        sites = [f["properties"] for f in layers.get("branches", {}).get("features", [])]
        return {"has_branch": props["has_branch"], "branch": props.get("branch"), "sites": sites}

    with make_client(demo_engine) as c:
        before = drawn(c)
        assert before["has_branch"] is False
        r = c.post("/v1/branches", headers=ADMIN, json=new_branch(grid, name="地图上的新党支部"))
        assert r.status_code == 201, r.text
        code = r.json()["code"]
        try:
            after = drawn(c)
            assert after["has_branch"] is True and after["branch"] == "地图上的新党支部"
            assert any(s["code"] == code and s["name"] == "地图上的新党支部" for s in after["sites"])
            c.patch(f"/v1/branches/{code}", headers=ADMIN, json={"active": False})
            assert drawn(c)["has_branch"] is False
        finally:
            with demo_engine.begin() as conn:
                conn.execute(text("DELETE FROM branches WHERE code = :c"), {"c": code})
    with make_client(demo_engine) as c:
        assert drawn(c) == before


# --- the upkeep log ----------------------------------------------------------------


def test_every_change_is_logged_with_who_and_what_it_was(client, demo_db):
    grid = branchless_grid(demo_db)
    old_worker = one(demo_db, "SELECT worker_name, worker_phone FROM grids WHERE code = :c", c=grid.code)
    since = one(demo_db, "SELECT coalesce(max(id), 0) FROM upkeep_log")[0]  # other tests' entries stay
    client.put(f"/v1/grids/{grid.code}/worker", headers=ADMIN, json={"name": "赵新", "phone": "13900001234"})
    code = client.post("/v1/branches", headers=ADMIN, json=new_branch(grid)).json()["code"]
    client.patch(f"/v1/branches/{code}", headers=ADMIN, json={"name": "改名党支部"})
    client.patch(f"/v1/branches/{code}", headers=ADMIN, json={"active": False})
    client.patch(f"/v1/branches/{code}", headers=ADMIN, json={"active": True})
    # a refused change leaves no entry
    client.patch(f"/v1/branches/{code}", headers=ADMIN, json={"secretary_phone": "110", "secretary_name": "x"})

    r = client.get("/v1/upkeep", headers=ADMIN, params={"within": grid.community})
    assert r.status_code == 200, r.text
    body = r.json()
    mine = [e for e in body["items"] if e["id"] > since]
    assert [(e["subject"], e["action"]) for e in mine] == [
        ("branch", "restore"),
        ("branch", "dissolve"),
        ("branch", "update"),
        ("branch", "create"),
        ("grid", "worker"),
    ]
    assert all(e["actor"] == "admin" for e in mine)
    restore, dissolve, update, create, worker = mine
    assert worker["before"] == {"name": old_worker[0], "phone": old_worker[1]}
    assert worker["after"] == {"name": "赵新", "phone": "13900001234"}
    assert create["before"] is None and create["after"]["name"] == f"{grid.name}党支部"
    assert (update["before"]["name"], update["after"]["name"]) == (f"{grid.name}党支部", "改名党支部")
    assert (dissolve["before"]["active"], dissolve["after"]["active"]) == (True, False)
    assert restore["after"]["active"] is True and restore["after"]["grids"] == [grid.code]
    # a grid's own entries, paged; the log of another street is not a street admin's
    own = client.get("/v1/upkeep", headers=ADMIN, params={"within": grid.code}).json()
    assert [e["action"] for e in own["items"]][:1] == ["worker"] and own["total"] >= 1
    assert (
        client.get("/v1/upkeep", headers=ADMIN, params={"within": grid.community, "limit": 2}).json()["items"]
        == body["items"][:2]
    )
    street = me(client, "street_admin")["area_code"]
    elsewhere = one(
        demo_db,
        "SELECT code FROM admin_areas WHERE level = 'community' AND code NOT LIKE :p ORDER BY code LIMIT 1",
        p=street[:9] + "%",
    )[0]
    problem(client.get("/v1/upkeep", headers=token_for("street_admin"), params={"within": elsewhere}), 403, "within")
    theirs = client.get("/v1/upkeep", headers=token_for("street_admin")).json()
    assert theirs["within"] == street
    assert all(e["code"].startswith(street[:9]) or e["code"][1:].startswith(street[:9]) for e in theirs["items"])
    assert any(e["id"] > since for e in theirs["items"]) == grid.code.startswith(street[:9])
    for user in ("member", "dispatcher", "gridworker"):
        assert client.get("/v1/upkeep", headers=token_for(user)).status_code == 403, user
    problem(client.get("/v1/upkeep", headers=ADMIN, params={"within": "41"}), 422, "within")


def test_the_upkeep_log_is_append_only(demo_db):
    from sqlalchemy.exc import DBAPIError

    demo_db.execute(
        text(
            "INSERT INTO upkeep_log (actor, subject, code, area, action, after) "
            "VALUES ('t', 'grid', '410105001001001', '410105001001001', 'worker', '{}')"
        )
    )
    for sql in ("UPDATE upkeep_log SET actor = 'someone else'", "DELETE FROM upkeep_log", "TRUNCATE upkeep_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            with demo_db.begin_nested():
                demo_db.execute(text(sql))

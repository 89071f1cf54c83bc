"""Accounts (issue 17 item 1): every caller kind × every target kind × inside/outside the
caller's area, the account log (written with each change, append-only in the database),
disabled accounts' tokens, the password policy, and nothing half written."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from layers.accounts import CREATES, KINDS
from tests.conftest import bearer, token_for
from tests.factories import add_user

DISTRICT = "410105000000"
AREAS = {  # where → (street, community, grid)
    "in": ("410105001000", "410105001001", "410105001001001"),
    "out": ("410105002000", "410105002001", "410105002001002"),
}
PASSWORD = "Probe-account-2026"

#: caller kind → (username, area it covers: "" everything in the district)
CALLERS = {
    "district_admin": ("admin", ""),
    "street_admin": ("street_admin", AREAS["in"][0]),
    "community_admin": ("t_cadmin", AREAS["in"][1]),
    "grid_worker": ("gridworker", AREAS["in"][2]),
    "dispatcher": ("dispatcher", ""),
    "department_staff": ("t_dstaff", ""),
    "member": ("member", None),
}
PREFIX = {12: lambda c: c[:6] if c[6:] == "000000" else c[:9] if c[9:] == "000" else c}


def _covers(area: str | None, code: str | None) -> bool:
    if area is None:
        return False
    if area == "":
        return True
    if code is None:  # a district-wide account: the district's admins only
        return False
    return code.startswith(PREFIX.get(len(area), str)(area))


def _members(db) -> dict[str, int]:
    """A member without an account, registered (active) in each side's grid."""
    found = {}
    for where, (_, _, grid) in AREAS.items():
        found[where] = db.execute(
            text(
                "SELECT r.member_id FROM registrations r JOIN grids g ON g.id = r.grid_id "
                "WHERE g.code = :g AND r.status IN ('pending', 'confirmed') "
                "AND NOT EXISTS (SELECT 1 FROM users u WHERE u.member_id = r.member_id) ORDER BY r.member_id LIMIT 1"
            ),
            {"g": grid},
        ).scalar()
        assert found[where] is not None
    return found


def _department(db) -> str:
    return db.execute(text("SELECT code FROM departments ORDER BY code LIMIT 1")).scalar()


def _setup(db) -> dict:
    add_user(db, "t_cadmin", "admin", area_code=AREAS["in"][1])
    department = _department(db)
    db.execute(
        text(
            "INSERT INTO users (username, password_hash, role, department_id) "
            "SELECT 't_dstaff', u.password_hash, 'department_staff', d.id FROM users u, departments d "
            "WHERE u.username = 'admin' AND d.code = :d"
        ),
        {"d": department},
    )
    db.flush()
    return {"members": _members(db), "department": department}


def _target(ctx, kind: str, where: str) -> tuple[dict, str | None]:
    """(the binding of a new account of ``kind`` on side ``where``, the area it belongs to)."""
    street, community, grid = AREAS[where]
    if kind == "district_admin":
        return {"role": "admin", "area_code": DISTRICT}, DISTRICT
    if kind == "street_admin":
        return {"role": "admin", "area_code": street}, street
    if kind == "community_admin":
        return {"role": "admin", "area_code": community}, community
    if kind == "grid_worker":
        return {"role": "grid_worker", "area_code": grid}, grid
    if kind == "dispatcher":
        return {"role": "dispatcher"}, None
    if kind == "department_staff":
        return {"role": "department_staff", "department": ctx["department"]}, None
    return {"role": "member", "member_id": ctx["members"][where]}, grid


def _expected(caller: str, kind: str, home: str | None) -> bool:
    return kind in CREATES.get(caller, ()) and _covers(CALLERS[caller][1], home)


def _log_count(db) -> int:
    return db.execute(text("SELECT count(*) FROM account_log")).scalar()


def _in_savepoint(db, call):
    conn = db.get_bind()
    savepoint = conn.begin_nested()
    try:
        return call()
    finally:
        db.rollback()
        savepoint.rollback()
        db.expire_all()


def test_who_creates_which_account_where(client, demo_db):
    ctx = _setup(demo_db)
    demo_db.commit()
    problems, allowed = [], 0
    for caller, (username, _) in CALLERS.items():
        for kind in KINDS:
            for where in ("in", "out"):
                binding, home = _target(ctx, kind, where)
                body = {"username": f"t_new_{kind}", "password": PASSWORD, **binding}
                expected = _expected(caller, kind, home)

                def call():
                    before = _log_count(demo_db)
                    r = client.post("/v1/accounts", json=body, headers=token_for(username))
                    demo_db.rollback()  # what the request left uncommitted
                    after = _log_count(demo_db)
                    created = demo_db.execute(
                        text("SELECT role, area_code, member_id FROM users WHERE username = :u"),
                        {"u": body["username"]},
                    ).first()
                    return r, after - before, created

                r, logged, created = _in_savepoint(demo_db, call)
                label = f"{caller} creates {kind} [{where}]"
                if expected:
                    allowed += 1
                    if r.status_code != 201 or logged != 1 or created is None:
                        problems.append(f"{label}: {r.status_code} {r.text[:160]} logged {logged}")
                    elif "password_hash" in r.text or "$argon2" in r.text:
                        problems.append(f"{label}: answers the hash")
                elif r.status_code not in (403, 404) or logged or created is not None:
                    problems.append(f"{label}: {r.status_code} {r.text[:160]} logged {logged}")
    # the district admin: 6 kinds on either side; the street admin: 3 kinds inside; the community admin: 2
    assert allowed == 12 + 3 + 2
    assert not problems, "\n".join(problems)


def _accounts(db, ctx) -> dict[tuple[str, str], str]:
    """An existing account of every kind on either side: (kind, where) → username."""
    found = {}
    for kind in KINDS:
        for where in ("in", "out"):
            binding, _ = _target(ctx, kind, where)
            username = f"t_old_{kind}_{where}"
            department = binding.get("department")
            db.execute(
                text(
                    "INSERT INTO users (username, password_hash, role, area_code, member_id, department_id) "
                    "SELECT :u, u.password_hash, :r, :a, :m, (SELECT id FROM departments WHERE code = :d) "
                    "FROM users u WHERE u.username = 'admin'"
                ),
                {
                    "u": username,
                    "r": binding["role"],
                    "a": binding.get("area_code"),
                    "m": binding.get("member_id"),
                    "d": department,
                },
            )
            found[(kind, where)] = username
    db.flush()
    return found


def test_who_disables_enables_and_resets_which_account_where(client, demo_db):
    ctx = _setup(demo_db)
    targets = _accounts(demo_db, ctx)
    demo_db.commit()
    problems = []
    for caller, (username, _) in CALLERS.items():
        for (kind, where), target in targets.items():
            _, home = _target(ctx, kind, where)
            expected = _expected(caller, kind, home)
            for action in ("disable", "enable", "reset-password"):

                def call():
                    if action == "enable":
                        demo_db.execute(text("UPDATE users SET active = false WHERE username = :u"), {"u": target})
                        demo_db.commit()  # into the savepoint: a refused request must leave it
                    before = demo_db.execute(
                        text("SELECT password_hash, active FROM users WHERE username = :u"), {"u": target}
                    ).one()
                    logs = _log_count(demo_db)
                    r = client.post(f"/v1/accounts/{target}/{action}", headers=token_for(username))
                    demo_db.rollback()
                    after = demo_db.execute(
                        text("SELECT password_hash, active FROM users WHERE username = :u"), {"u": target}
                    ).one()
                    return r, _log_count(demo_db) - logs, tuple(before) != tuple(after), after

                r, logged, changed, after = _in_savepoint(demo_db, call)
                label = f"{caller} {action} {kind} [{where}]"
                if expected:
                    ok = r.status_code == 200 and logged == 1 and changed
                    ok = ok and after.active == (action != "disable")
                    if action == "reset-password":
                        # a member's reset is a new activation code (test_activation.py)
                        shown = r.json()["activation_code" if kind == "member" else "password"]
                        ok = ok and len(shown) >= 10 and "$argon2" not in r.text
                    if not ok:
                        problems.append(f"{label}: {r.status_code} {r.text[:160]} logged {logged} changed {changed}")
                elif r.status_code not in (403, 404) or logged or changed:
                    problems.append(f"{label}: {r.status_code} {r.text[:160]} logged {logged} changed {changed}")
            # reading: every account in the caller's area is visible to its admins
            r = client.get(f"/v1/accounts/{target}", headers=token_for(username))
            demo_db.rollback()  # end the session's transaction, as the request's end would
            visible = caller.endswith("_admin") and _covers(CALLERS[caller][1], home)
            if (r.status_code == 200) != visible or (not visible and r.status_code not in (403, 404)):
                problems.append(f"{caller} reads {kind} [{where}]: {r.status_code}")
    assert not problems, "\n".join(problems)


def test_lists_hold_the_area_only_and_never_hashes(client, demo_db):
    ctx = _setup(demo_db)
    targets = _accounts(demo_db, ctx)
    demo_db.commit()
    r = client.get("/v1/accounts", params={"limit": 1000}, headers=token_for("street_admin"))
    assert r.status_code == 200, r.text
    page = r.json()
    names = {a["username"] for a in page["items"]}
    assert names >= {targets[(k, "in")] for k in ("street_admin", "community_admin", "grid_worker", "member")}
    assert not names & {targets[(k, "out")] for k in KINDS}
    assert not names & {targets[("dispatcher", "in")], targets[("department_staff", "in")]}
    assert page["creatable"] == ["community_admin", "grid_worker", "member"]
    assert "$argon2" not in r.text and "password_hash" not in r.text
    manageable = {a["username"]: a["manageable"] for a in page["items"]}
    assert manageable["street_admin"] is False and manageable[targets[("grid_worker", "in")]] is True
    r = client.get("/v1/accounts", params={"role": "department_staff", "limit": 1000}, headers=token_for("admin"))
    assert {a["username"] for a in r.json()["items"]} >= {"t_dstaff", targets[("department_staff", "in")]}
    assert {a["role"] for a in r.json()["items"]} == {"department_staff"}
    # the test's department staff, and the demo's own department account
    assert all(a["department"] == ctx["department"] for a in r.json()["items"] if a["username"] != "department")
    r = client.get("/v1/accounts", params={"within": AREAS["out"][0]}, headers=token_for("street_admin"))
    assert r.status_code == 403 and r.json()["field"] == "within"
    r = client.get("/v1/accounts", params={"active": "false"}, headers=token_for("admin"))
    assert r.status_code == 200 and r.json()["total"] == 0


def test_the_log_is_written_with_each_change_and_append_only(client, demo_db):
    r = client.post(
        "/v1/accounts",
        headers=token_for("street_admin"),
        json={"username": "t_logged", "role": "grid_worker", "area_code": AREAS["in"][2], "display_name": "张网格"},
    )
    assert r.status_code == 201, r.text
    generated = r.json()["password"]
    assert len(generated) >= 16
    for action in ("disable", "disable", "enable", "reset-password"):  # a second disable changes nothing
        assert client.post(f"/v1/accounts/t_logged/{action}", headers=token_for("street_admin")).status_code == 200
    rows = demo_db.execute(
        text("SELECT actor, area, action, before, after, at FROM account_log WHERE username = 't_logged' ORDER BY id")
    ).all()
    assert [r.action for r in rows] == ["create", "disable", "enable", "reset_password"]
    assert {r.actor for r in rows} == {"street_admin"} and {r.area for r in rows} == {AREAS["in"][2]}
    assert rows[0].before is None and rows[0].after["display_name"] == "张网格" and rows[0].after["active"] is True
    assert (rows[1].before, rows[1].after) == ({"active": True}, {"active": False})
    assert "argon2" not in str(rows[3].after)
    from tests.conftest import TEST_CLOCK

    assert {r.at for r in rows} == {TEST_CLOCK.now()}  # gridbranch_now(), the service's clock
    for statement in ("UPDATE account_log SET actor = 'x'", "DELETE FROM account_log", "TRUNCATE account_log"):
        conn = demo_db.get_bind()
        savepoint = conn.begin_nested()
        with pytest.raises(DBAPIError, match="append-only"):
            demo_db.execute(text(statement))
        savepoint.rollback()
    assert demo_db.execute(text("SELECT count(*) FROM account_log WHERE username = 't_logged'")).scalar() == 4


def test_a_disabled_accounts_tokens_stop_at_once(client, demo_db):
    r = client.post(
        "/v1/accounts",
        headers=token_for("admin"),
        json={"username": "t_disabled", "role": "dispatcher", "password": PASSWORD},
    )
    assert r.status_code == 201, r.text
    headers = bearer(client, "t_disabled", PASSWORD)
    assert client.get("/v1/auth/me", headers=headers).json()["role"] == "dispatcher"
    assert client.post("/v1/accounts/t_disabled/disable", headers=token_for("admin")).json()["active"] is False
    r = client.get("/v1/auth/me", headers=headers)
    assert r.status_code == 401
    r = client.post("/v1/auth/token", data={"username": "t_disabled", "password": PASSWORD})
    assert r.status_code == 401
    assert client.post("/v1/accounts/t_disabled/enable", headers=token_for("admin")).status_code == 200
    assert client.get("/v1/auth/me", headers=headers).status_code == 401  # re-enabling revives no token
    assert client.get("/v1/auth/me", headers=bearer(client, "t_disabled", PASSWORD)).status_code == 200
    r = client.post("/v1/accounts/t_disabled/reset-password", headers=token_for("admin"))
    new = r.json()["password"]
    assert client.post("/v1/auth/token", data={"username": "t_disabled", "password": PASSWORD}).status_code == 401
    assert client.get("/v1/auth/me", headers=bearer(client, "t_disabled", new)).status_code == 200


def test_department_staff_are_bound_to_a_department_and_sign_in(client, demo_db):
    department = _department(demo_db)
    r = client.post(
        "/v1/accounts",
        headers=token_for("admin"),
        json={"username": "t_dept", "role": "department_staff", "department": department, "password": PASSWORD},
    )
    assert r.status_code == 201, r.text
    assert r.json()["account"]["department"] == department and r.json()["password"] is None
    me = client.get("/v1/auth/me", headers=bearer(client, "t_dept", PASSWORD))
    assert me.status_code == 200 and me.json()["role"] == "department_staff"
    # and it creates nothing
    r = client.post(
        "/v1/accounts",
        headers=token_for("t_dept"),
        json={"username": "t_dept2", "role": "member", "member_id": 1, "password": PASSWORD},
    )
    assert r.status_code == 403


@pytest.mark.parametrize(
    "password, why",
    [
        ("Short-1", "10"),
        ("alllowercaseletters", "3"),
        ("lower-and-digits-but-no-upper".replace("-", ""), "3"),
        ("T_Policy_Name1", "username"),
    ],
)
def test_the_password_policy_refuses_naming_the_field_and_writes_nothing(client, demo_db, password, why):
    before = _log_count(demo_db)
    username = "t_policy_name1" if why == "username" else "t_policy"
    r = client.post(
        "/v1/accounts",
        headers=token_for("admin"),
        json={"username": username, "role": "dispatcher", "password": password},
    )
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "password" and why in r.json()["detail"]
    assert _log_count(demo_db) == before
    assert demo_db.execute(text("SELECT count(*) FROM users WHERE username = :u"), {"u": username}).scalar() == 0
    # a reset to a weak password leaves the old one
    hashed = demo_db.execute(text("SELECT password_hash FROM users WHERE username = 'gridworker'")).scalar()
    r = client.post("/v1/accounts/gridworker/reset-password", headers=token_for("admin"), json={"password": "weak"})
    assert r.status_code == 422 and r.json()["field"] == "password"
    demo_db.expire_all()
    assert demo_db.execute(text("SELECT password_hash FROM users WHERE username = 'gridworker'")).scalar() == hashed
    assert _log_count(demo_db) == before


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"role": "grid_worker"}, 422, "area_code"),
        ({"role": "grid_worker", "area_code": "410105001000"}, 422, "area_code"),  # a street: not a grid worker's
        ({"role": "admin", "area_code": "410105001001999"}, 422, "area_code"),  # a grid: not an admin's
        ({"role": "grid_worker", "area_code": "410105001001999"}, 422, "area_code"),  # no such grid
        ({"role": "department_staff", "department": "NOPE"}, 422, "department"),
        ({"role": "department_staff"}, 422, "department"),
        ({"role": "dispatcher", "area_code": "410105001000"}, 422, "area_code"),
        ({"role": "member"}, 422, "member_id"),
        ({"role": "member", "member_id": 2**31 - 1}, 404, "member_id"),
        ({"role": "dispatcher", "username": "x"}, 422, "username"),
        ({"role": "dispatcher", "username": "admin"}, 409, "username"),
        ({"role": "dispatcher", "display_name": "=cmd()"}, 422, "display_name"),
        ({"role": "overlord"}, 422, "role"),
    ],
)
def test_bad_accounts_are_refused_naming_the_field(client, demo_db, body, status, field):
    before = _log_count(demo_db)
    users = demo_db.execute(text("SELECT count(*) FROM users")).scalar()
    r = client.post(
        "/v1/accounts", headers=token_for("admin"), json={"username": "t_bad", "password": PASSWORD, **body}
    )
    assert r.status_code == status, r.text
    assert r.json()["field"] == field or field in str(r.json().get("errors"))
    assert _log_count(demo_db) == before
    assert demo_db.execute(text("SELECT count(*) FROM users")).scalar() == users


def test_one_account_per_member(client, demo_db):
    member = _members(demo_db)["in"]
    body = {"role": "member", "member_id": member, "password": PASSWORD}
    assert (
        client.post("/v1/accounts", headers=token_for("street_admin"), json={"username": "t_m1", **body}).status_code
        == 201
    )
    r = client.post("/v1/accounts", headers=token_for("street_admin"), json={"username": "t_m2", **body})
    assert r.status_code == 409 and r.json()["field"] == "member_id"
    me = client.get("/v1/auth/me", headers=bearer(client, "t_m1", PASSWORD)).json()
    assert me["member_id"] == member


def test_the_cli_adds_lists_disables_enables_and_resets(demo_db, monkeypatch, capsys):
    from geo_api import cli

    monkeypatch.setenv("GRIDBRANCH_USER_PASSWORD", PASSWORD)
    assert cli.users_command(demo_db, ["add", "t_cli", "--role", "admin", "--area", DISTRICT]) == 0
    assert demo_db.execute(text("SELECT role, area_code FROM users WHERE username = 't_cli'")).one() == (
        "admin",
        DISTRICT,
    )
    assert cli.users_command(demo_db, ["list", "--role", "admin"]) == 0
    assert "t_cli" in capsys.readouterr().out
    assert cli.users_command(demo_db, ["disable", "t_cli"]) == 0
    assert demo_db.execute(text("SELECT active FROM users WHERE username = 't_cli'")).scalar() is False
    assert cli.users_command(demo_db, ["enable", "t_cli"]) == 0
    monkeypatch.delenv("GRIDBRANCH_USER_PASSWORD")
    assert cli.users_command(demo_db, ["reset-password", "t_cli", "--generate"]) == 0
    assert "password:" in capsys.readouterr().out
    actions = demo_db.execute(text("SELECT actor, action FROM account_log WHERE username = 't_cli' ORDER BY id")).all()
    assert [a.action for a in actions] == ["create", "disable", "enable", "reset_password"]
    assert {a.actor for a in actions} == {"cli"}
    monkeypatch.setenv("GRIDBRANCH_USER_PASSWORD", "weak")
    with pytest.raises(Exception, match="password"):
        cli.users_command(demo_db, ["add", "t_cli2", "--role", "dispatcher"])


def test_the_first_admins_password_follows_the_policy(monkeypatch):
    from geo_api import cli
    from layers.accounts import PasswordPolicy
    from layers.errors import InvalidInput

    monkeypatch.setenv("GRIDBRANCH_INIT_ADMIN_PASSWORD", "shortpass1")
    with pytest.raises(InvalidInput) as refused:
        cli._admin_password("admin", PasswordPolicy())
    assert refused.value.field == "password"
    monkeypatch.setenv("GRIDBRANCH_INIT_ADMIN_PASSWORD", "Long-enough-2026")
    assert cli._admin_password("admin", PasswordPolicy()) == "Long-enough-2026"


def test_a_change_whose_log_row_fails_leaves_nothing(demo_db):
    """The account and its log row are one transaction: when the log insert fails, the
    account is not there either."""
    from layers import accounts

    conn = demo_db.get_bind()
    savepoint = conn.begin_nested()
    try:
        demo_db.execute(
            text(
                "CREATE FUNCTION pg_temp.refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'log refused'; END $$"
            )
        )
        demo_db.execute(
            text("CREATE TRIGGER refuse BEFORE INSERT ON account_log FOR EACH ROW EXECUTE FUNCTION pg_temp.refuse()")
        )
        demo_db.commit()
        with pytest.raises(DBAPIError, match="log refused"):
            accounts.create_account(demo_db, actor="admin", username="t_half", password_hash="x", role="dispatcher")
        demo_db.rollback()
        assert demo_db.execute(text("SELECT count(*) FROM users WHERE username = 't_half'")).scalar() == 0
        hashed = demo_db.execute(text("SELECT password_hash FROM users WHERE username = 'gridworker'")).scalar()
        with pytest.raises(DBAPIError, match="log refused"):
            accounts.reset_password(demo_db, actor="admin", username="gridworker", password_hash="y")
        demo_db.rollback()
        assert demo_db.execute(text("SELECT password_hash FROM users WHERE username = 'gridworker'")).scalar() == hashed
    finally:
        demo_db.rollback()
        savepoint.rollback()

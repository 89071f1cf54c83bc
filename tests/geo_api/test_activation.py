"""Members sign themselves in (issue 17 item 3): a community admin issues one-time
activation codes for the community's members (JSON or a printable CSV, only hashes
kept); a member activates with number, phone and code and sets a password; codes are
single use and expire by the service's clock; a wrong number, phone or code gets one
answer; an admin's reset of a member is a new code."""

from __future__ import annotations

from sqlalchemy import text

from layers import activation
from tests.conftest import token_for
from tests.factories import add_user

C_IN, C_OUT = "410105001001", "410105002001"
PASSWORD = "Member-pass-2026"


def _plant(db) -> list[dict]:
    """Two members of C_IN without an account, given member numbers (the demo has none)."""
    add_user(db, "t_cadmin", "admin", area_code=C_IN)
    ids = activation.members_without_account(db, C_IN)[:2]
    planted = []
    for i, member_id in enumerate(ids):
        number = ("T-ACT-001", "12/34")[i]
        phone = db.execute(
            text("UPDATE members SET number = :n WHERE id = :m RETURNING phone"), {"n": number, "m": member_id}
        ).scalar()
        planted.append({"id": member_id, "number": number, "phone": phone})
    db.commit()
    return planted


def _activate(client, member, code, **kw):
    return client.post(
        "/v1/auth/activate",
        json={"number": member["number"], "phone": member["phone"], "code": code, "password": PASSWORD, **kw},
    )


def test_codes_activate_members_once_and_expire(client, demo_db, clock):
    one, two = _plant(demo_db)
    admin = token_for("t_cadmin")
    r = client.post("/v1/activation-codes", headers=admin, json={})
    assert r.status_code == 200, r.text
    issued = {c["member_id"]: c for c in r.json()["codes"]}
    assert r.json()["within"] == C_IN and {one["id"], two["id"]} <= set(issued)
    code = issued[one["id"]]["code"]
    assert len(code) == 14 and code.count("-") == 2 and issued[one["id"]]["number"] == one["number"]
    hashes = (
        demo_db.execute(text("SELECT code_hash FROM activation_codes WHERE member_id = :m"), {"m": one["id"]})
        .scalars()
        .all()
    )
    assert hashes == [activation.code_digest(one["id"], code)] and code not in str(hashes)

    # the same answer for a wrong number, phone or code (and no account made)
    wrong = [
        client.post(
            "/v1/auth/activate", json={"number": "T-ACT-999", "phone": one["phone"], "code": code, "password": PASSWORD}
        ),
        _activate(client, {**one, "phone": "13000000000"}, code),
        _activate(client, one, "AAAA-BBBB-CCCC"),
        _activate(client, one, issued[two["id"]]["code"]),  # another member's code
    ]
    assert {w.status_code for w in wrong} == {401}
    assert len({w.text for w in wrong}) == 1 and wrong[0].json()["detail_zh"]
    assert demo_db.execute(text("SELECT count(*) FROM users WHERE member_id = :m"), {"m": one["id"]}).scalar() == 0

    # the phone as typed: spaces, +86; the code in lower case without dashes
    phone = "+86 " + one["phone"][:3] + " " + one["phone"][3:]
    r = _activate(client, {**one, "phone": phone}, code.replace("-", "").lower())
    assert r.status_code == 200, r.text
    me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).json()
    assert me["role"] == "member" and me["member_id"] == one["id"] and me["username"] == one["number"]
    assert client.post("/v1/auth/token", data={"username": one["number"], "password": PASSWORD}).status_code == 200
    assert _activate(client, one, code).status_code == 401  # single use
    log = demo_db.execute(text("SELECT action, actor FROM account_log WHERE username = :u"), {"u": one["number"]}).all()
    assert [tuple(r) for r in log] == [("activate", one["number"])]

    # a member number that is no username: the member picks one; the code stays good meanwhile
    r = _activate(client, two, issued[two["id"]]["code"])
    assert r.status_code == 422 and r.json()["field"] == "username"
    weak = _activate(client, two, issued[two["id"]]["code"], username="t_member_two", password="weak")
    assert weak.status_code == 422 and weak.json()["field"] == "password"
    # expiry, by the service's clock
    clock.advance(days=client.app.state.settings.auth.activation_days)
    assert _activate(client, two, issued[two["id"]]["code"], username="t_member_two").status_code == 401
    clock.advance(days=-1)
    assert _activate(client, two, issued[two["id"]]["code"], username="t_member_two").status_code == 200


def test_an_admin_reset_of_a_member_is_a_new_code_that_voids_the_last(client, demo_db):
    one, _ = _plant(demo_db)
    first = client.post(
        "/v1/activation-codes", headers=token_for("t_cadmin"), json={"member_ids": [one["id"]], "days": 3}
    ).json()["codes"][0]["code"]
    assert _activate(client, one, first).status_code == 200
    signed = client.post("/v1/auth/token", data={"username": one["number"], "password": PASSWORD})
    old = {"Authorization": f"Bearer {signed.json()['access_token']}"}
    r = client.post(f"/v1/accounts/{one['number']}/reset-password", headers=token_for("t_cadmin"))
    assert r.status_code == 200 and r.json()["password"] is None
    code = r.json()["activation_code"]
    assert client.get("/v1/auth/me", headers=old).status_code == 401  # its tokens end
    assert client.post("/v1/auth/token", data={"username": one["number"], "password": PASSWORD}).status_code == 401
    given = client.post(
        f"/v1/accounts/{one['number']}/reset-password",
        headers=token_for("t_cadmin"),
        json={"password": "Given-pass-2026"},
    )
    assert given.status_code == 422 and given.json()["field"] == "password"
    again = client.post(f"/v1/accounts/{one['number']}/reset-password", headers=token_for("t_cadmin")).json()
    assert _activate(client, one, code).status_code == 401  # voided by the newer one
    r = _activate(client, one, again["activation_code"], password="Another-pass-2026")
    assert r.status_code == 200
    me = client.get("/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"}).json()
    assert me["username"] == one["number"]
    actions = (
        demo_db.execute(text("SELECT action FROM account_log WHERE username = :u ORDER BY id"), {"u": one["number"]})
        .scalars()
        .all()
    )
    assert actions == ["activate", "reset_password", "reset_password", "activate"]


def test_codes_only_for_the_callers_own_community(client, demo_db):
    one, _ = _plant(demo_db)
    outside = activation.members_without_account(demo_db, C_OUT)[0]
    cadmin = token_for("t_cadmin")
    r = client.post("/v1/activation-codes", headers=cadmin, json={"within": C_OUT})
    assert r.status_code == 403 and r.json()["field"] == "within"
    r = client.post("/v1/activation-codes", headers=cadmin, json={"member_ids": [outside]})
    assert r.status_code == 404 and r.json()["field"] == "member_id"
    r = client.post("/v1/activation-codes", headers=token_for("street_admin"), json={})
    assert r.status_code == 422 and r.json()["field"] == "within"  # a street at once: no
    for who in ("gridworker", "dispatcher", "member"):
        assert client.post("/v1/activation-codes", headers=token_for(who), json={}).status_code == 403
    assert demo_db.execute(text("SELECT count(*) FROM activation_codes")).scalar() == 0
    # the street's admin for one of its communities, as a printable CSV
    r = client.post(
        "/v1/activation-codes", headers=token_for("street_admin"), params={"format": "csv"}, json={"within": C_IN}
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.content.decode("utf-8-sig").splitlines()
    assert lines[0] == "党员编号,姓名,激活码,有效期至" and any(line.startswith(one["number"] + ",") for line in lines)
    assert len(lines) - 1 == demo_db.execute(text("SELECT count(*) FROM activation_codes")).scalar()

"""Sign-in and session security (issue 17 item 4, issue 22 build 2): token lifetime and
idle timeout by the service's clock, revocation (sign-out, password change, disable, role
change), the session cookie kept across reloads, the account lockout and the address
throttle, the same answer for unknown users and wrong passwords, the forced change after
an admin's reset. Everything on the demo database with the injected clock, no sleeps."""

from __future__ import annotations

import jwt
import pytest
from sqlalchemy import text

from geo_api import security
from geo_api.signin import COOKIE
from layers import users
from tests.conftest import TEST_PASSWORD, TEST_SECRET, bearer, token_for
from tests.factories import add_user

NEW_PASSWORD = "Changed-pass-2026"


def _token(client, username: str, password: str = TEST_PASSWORD):
    return client.post("/v1/auth/token", data={"username": username, "password": password})


def _auth(r) -> dict[str, str]:
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _me(client, headers) -> int:
    return client.get("/v1/auth/me", headers=headers).status_code


def test_tokens_live_the_idle_timeout_renewed_by_the_cookie_up_to_the_session_lifetime(client, clock):
    """An access token lives GRIDBRANCH_TOKEN_IDLE_MINUTES by the service's clock; the
    session cookie (httpOnly, SameSite=Strict, the auth routes only) renews it while it is
    used, up to GRIDBRANCH_TOKEN_MINUTES after sign-in; a session not renewed within the
    idle timeout is over, and the answer says why."""
    auth = client.app.state.settings.auth
    idle, lifetime = auth.token_idle_minutes, auth.token_minutes
    r = _token(client, "dispatcher")
    body = r.json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == idle * 60 == body["expires_in"] and claims["jti"]
    assert claims["iat"] == claims["auth_time"] == int(clock.now().timestamp())
    cookie = r.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Path=/v1/auth" in cookie and "Secure" not in cookie  # plain http here; Secure behind https
    assert r.headers["cache-control"] == "no-store"
    behind = client.post(
        "/v1/auth/token",
        data={"username": "dispatcher", "password": TEST_PASSWORD},
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/gb"},
    )
    assert "Secure" in behind.headers["set-cookie"] and "Path=/gb/v1/auth" in behind.headers["set-cookie"]
    client.cookies.clear()
    r = _token(client, "dispatcher")
    body = r.json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    headers = _auth(r)

    clock.advance(minutes=idle - 1)
    assert _me(client, headers) == 200
    renewed = client.post("/v1/auth/refresh")
    assert renewed.status_code == 200 and renewed.headers["cache-control"] == "no-store", renewed.text
    again = jwt.decode(renewed.json()["access_token"], options={"verify_signature": False})
    assert again["jti"] == claims["jti"] and again["auth_time"] == claims["auth_time"]
    clock.advance(minutes=1)
    r = client.get("/v1/auth/me", headers=headers)  # the first token: idle, though renewed since
    assert r.status_code == 401 and r.json()["reason"] == "idle" and r.json()["detail_zh"]
    headers = _auth(renewed)
    assert _me(client, headers) == 200
    assert client.post("/v1/auth/refresh").status_code == 200

    # renewed every idle - 1 minutes up to the lifetime, and no further
    while (clock.now().timestamp() - claims["auth_time"]) / 60 + idle - 1 < lifetime:
        clock.advance(minutes=idle - 1)
        r = client.post("/v1/auth/refresh")
        assert r.status_code == 200, (clock.now(), r.text)
    headers = _auth(r)
    clock.advance(minutes=idle - 1)
    r = client.get("/v1/auth/me", headers=headers)
    assert r.status_code == 401 and r.json()["reason"] == "expired"
    r = client.post("/v1/auth/refresh")
    assert r.status_code == 401 and r.json()["reason"] == "expired"

    # a session left alone past the idle timeout cannot be renewed
    _token(client, "dispatcher")
    clock.advance(minutes=idle)
    r = client.post("/v1/auth/refresh")
    assert r.status_code == 401 and r.json()["reason"] == "idle"
    client.cookies.clear()
    assert client.post("/v1/auth/refresh").status_code == 401


def test_forged_lifetimes_missing_claims_and_future_tokens_are_refused(client, clock):
    now = int(clock.now().timestamp())
    base = {"sub": "dispatcher", "jti": "x", "gen": 0, "auth_time": now, "iat": now}

    def me(**claims):
        token = jwt.encode({**base, **claims}, TEST_SECRET, algorithm="HS256")
        return client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"})

    idle = client.app.state.settings.auth.token_idle_minutes
    assert me(exp=now + 365 * 86400).status_code == 200
    clock.advance(minutes=idle)
    assert me(exp=now + 365 * 86400).json()["reason"] == "idle"  # capped at the idle timeout
    assert me(iat=now + idle * 60, exp=now + 365 * 86400).status_code == 200
    clock.advance(minutes=client.app.state.settings.auth.token_minutes)
    assert me(iat=int(clock.now().timestamp()), exp=now + 365 * 86400).json()["reason"] == "expired"
    later = int(clock.now().timestamp())
    assert me(iat=later + 3600, auth_time=later, exp=later + 7200).status_code == 401  # issued in the future
    for missing in ("jti", "gen", "auth_time", "iat"):
        claims = {**base, "iat": later, "auth_time": later, "exp": later + 60}
        del claims[missing]
        token = jwt.encode(claims, TEST_SECRET, algorithm="HS256")
        assert client.get("/v1/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401, missing


def test_sign_out_password_change_disable_and_role_change_revoke_every_token(client, demo_db):
    add_user(demo_db, "t_rev", "grid_worker", area_code="410105001001001", password=TEST_PASSWORD)
    demo_db.commit()
    phone, desk = _auth(_token(client, "t_rev")), bearer(client, "t_rev")
    old = token_for("t_rev")
    assert _me(client, phone) == _me(client, desk) == _me(client, old) == 200

    # sign-out (with the token) ends every session of the account, the cookie's too
    assert client.post("/v1/auth/logout", headers=phone).status_code == 204
    for headers in (phone, desk, old):
        r = client.get("/v1/auth/me", headers=headers)
        assert r.status_code == 401 and r.json()["reason"] == "revoked"
    assert client.post("/v1/auth/refresh").status_code == 401
    log = demo_db.execute(text("SELECT action, actor FROM account_log WHERE username = 't_rev'")).all()
    assert ("sign_out", "t_rev") in [tuple(r) for r in log]

    # sign-out with the cookie alone (the token already gone)
    _token(client, "t_rev")
    headers = bearer(client, "t_rev")
    assert client.post("/v1/auth/logout").status_code == 204
    assert _me(client, headers) == 401

    # a password change: every token ends, the answer is a new session's
    headers = bearer(client, "t_rev")
    other = bearer(client, "t_rev")
    r = client.post(
        "/v1/auth/password", headers=headers, json={"current_password": TEST_PASSWORD, "new_password": NEW_PASSWORD}
    )
    assert r.status_code == 200, r.text
    assert _me(client, headers) == _me(client, other) == 401 and _me(client, _auth(r)) == 200
    assert _token(client, "t_rev").status_code == 401 and _token(client, "t_rev", NEW_PASSWORD).status_code == 200
    assert (
        "change_password"
        in demo_db.execute(text("SELECT array_agg(action) FROM account_log WHERE username = 't_rev'")).scalar()
    )

    # disabling ends them, re-enabling brings none of them back
    headers = bearer(client, "t_rev", NEW_PASSWORD)
    assert client.post("/v1/accounts/t_rev/disable", headers=token_for("admin")).status_code == 200
    assert _me(client, headers) == 401 and client.post("/v1/auth/refresh").status_code == 401
    assert client.post("/v1/accounts/t_rev/enable", headers=token_for("admin")).status_code == 200
    assert _me(client, headers) == 401

    # a role or binding change (the CLI's upsert, or any writer: the trigger bumps the epoch)
    headers = bearer(client, "t_rev", NEW_PASSWORD)
    demo_db.execute(text("UPDATE users SET area_code = '410105001001002' WHERE username = 't_rev'"))
    demo_db.commit()
    assert _me(client, headers) == 401
    # what sign-in itself writes (the guard, the log) revokes nothing
    headers = bearer(client, "t_rev", NEW_PASSWORD)
    assert _token(client, "t_rev", "wrong").status_code == 401
    assert _me(client, headers) == 200


def test_failures_in_a_row_lock_a_name_for_a_while_alike_for_unknown_users(client, demo_db, clock):
    auth = client.app.state.settings.auth
    auth.signin_lock_failures = 3  # the default 5, fewer Argon2 rounds
    add_user(demo_db, "t_lock", "dispatcher", password=TEST_PASSWORD)
    demo_db.commit()
    answers = {}
    for name in ("t_lock", "t_nobody"):
        for i in range(auth.signin_lock_failures):
            r = _token(client, name, f"wrong-{i}")
            assert r.status_code == 401, r.text
            answers.setdefault(name, []).append({k: v for k, v in r.json().items()})
        locked = _token(client, name, TEST_PASSWORD)  # even the right password, while locked
        assert locked.status_code == 429 and locked.json()["reason"] == "locked", locked.text
        assert 0 < int(locked.headers["retry-after"]) <= auth.signin_lock_minutes * 60
        answers[name].append(locked.json())
    # an unknown user is answered exactly as an account with a wrong password
    assert answers["t_lock"] == answers["t_nobody"]
    rows = demo_db.execute(text("SELECT actor, after FROM account_log WHERE username = 't_lock' AND action = 'lock'"))
    [(actor, after)] = rows.all()
    assert actor == "signin" and after["failures"] == auth.signin_lock_failures and after["address"] == "testclient"
    outcomes = demo_db.execute(
        text("SELECT outcome, count(*) FROM signin_log WHERE name IN ('t_lock', 't_nobody') GROUP BY outcome")
    ).all()
    assert dict(outcomes) == {"failed": 2 * auth.signin_lock_failures, "locked": 2}

    clock.advance(minutes=auth.signin_lock_minutes - 1)
    assert _token(client, "t_lock").status_code == 429
    clock.advance(minutes=1)
    assert _token(client, "t_lock").status_code == 200
    # a success starts the count afresh: four failures lock nothing
    for i in range(auth.signin_lock_failures - 1):
        assert _token(client, "t_lock", "wrong").status_code == 401
    assert _token(client, "t_lock").status_code == 200


def test_an_address_failing_too_often_is_slowed_down(client, demo_db, clock):
    auth = client.app.state.settings.auth
    auth.signin_address_failures = 4  # the default 20, fewer Argon2 rounds
    delay = auth.signin_address_delay_seconds
    for i in range(4):  # different names: no lock, only the address counts
        assert _token(client, f"t_spray{i}", "wrong").status_code == 401
    r = _token(client, "admin")
    assert r.status_code == 429 and r.json()["reason"] == "address_slowed" and r.json()["detail_zh"]
    assert int(r.headers["retry-after"]) == delay
    clock.advance(seconds=delay)
    assert _token(client, "admin").status_code == 200  # one attempt per delay
    assert _token(client, "admin").status_code == 429
    clock.advance(minutes=auth.signin_address_window_minutes)
    assert _token(client, "admin").status_code == 200 and _token(client, "admin").status_code == 200
    assert (
        demo_db.execute(
            text("SELECT count(*) FROM signin_log WHERE outcome = 'throttled' AND address = 'testclient'")
        ).scalar()
        == 2
    )


def test_the_retention_purge_forgets_old_sign_ins_and_idle_name_guards(client, demo_db, clock):
    """A spray of made-up names leaves no row for ever: after the retention the log rows
    and the counters of names nobody failed on since are gone; a lock in force, and a
    streak that is still recent, are kept."""
    auth = client.app.state.settings.auth
    auth.signin_lock_failures = 2
    assert _token(client, "t_spray_old", "wrong").status_code == 401
    clock.advance(days=300)
    assert _token(client, "t_spray_new", "wrong").status_code == 401
    for _ in range(2):
        _token(client, "t_locked", "wrong")
    clock.advance(days=66)  # t_spray_old: 366 days ago; the others 66
    demo_db.begin_nested()  # the database reads the clock as a transaction begins

    def guards():
        rows = demo_db.execute(text("SELECT name, failures FROM signin_guard WHERE name LIKE 't_%' ORDER BY name"))
        return dict(rows.all())

    def logged():
        rows = demo_db.execute(text("SELECT DISTINCT name FROM signin_log WHERE name LIKE 't_%' ORDER BY name"))
        return rows.scalars().all()

    assert guards() == {"t_locked": 0, "t_spray_new": 1, "t_spray_old": 1}
    assert users.purge_signins(demo_db, 365) == (1, 1)
    assert guards() == {"t_locked": 0, "t_spray_new": 1} and logged() == ["t_locked", "t_spray_new"]
    # a lock still in force survives any purge; a lapsed one with no failure since goes
    demo_db.execute(
        text("UPDATE signin_guard SET locked_until = gridbranch_now() + interval '1 minute' WHERE name = 't_locked'")
    )
    users.purge_signins(demo_db, 1)
    assert guards() == {"t_locked": 0} and logged() == []
    clock.advance(minutes=2)
    with demo_db.begin_nested():  # the database reads the clock as a transaction begins
        assert users.purge_signins(demo_db, 1) == (0, 1) and guards() == {}


def test_an_unknown_user_costs_one_argon2_verification_as_a_wrong_password(client, monkeypatch):
    """The same work whatever the name (a spy on the hasher counts it; no timings)."""
    calls = []
    kind = type(security._hasher)
    verify = kind.verify
    dummy = security._dummy_hash()

    def counted(self, hashed, password):
        calls.append(hashed == dummy)
        return verify(self, hashed, password)

    monkeypatch.setattr(kind, "verify", counted)
    wrong, unknown = _token(client, "admin", "wrong"), _token(client, "t_no_such_user", "wrong")
    assert wrong.status_code == unknown.status_code == 401 and wrong.json() == unknown.json()
    assert calls == [False, True]


def test_an_admin_reset_forces_a_password_change_first(client, demo_db):
    add_user(demo_db, "t_forced", "grid_worker", area_code="410105001001001", password=TEST_PASSWORD)
    demo_db.commit()
    r = client.post("/v1/accounts/t_forced/reset-password", headers=token_for("admin"))
    given = r.json()["password"]
    r = _token(client, "t_forced", given)
    assert r.json()["must_change_password"] is True
    headers = _auth(r)
    assert client.get("/v1/auth/me", headers=headers).json()["must_change_password"] is True
    for path in ("/v1/registrations", "/tiles/members,grids/15/26929/13140.mvt"):
        r = client.get(path, headers=headers)
        assert r.status_code == 403 and r.json()["reason"] == "must_change_password", path
    bad = client.post("/v1/auth/password", headers=headers, json={"current_password": given, "new_password": "short"})
    assert bad.status_code == 422 and bad.json()["field"] == "new_password"
    same = client.post("/v1/auth/password", headers=headers, json={"current_password": given, "new_password": given})
    assert same.status_code == 422
    r = client.post(
        "/v1/auth/password", headers=headers, json={"current_password": given, "new_password": NEW_PASSWORD}
    )
    assert r.status_code == 200 and r.json()["must_change_password"] is False
    assert client.get("/v1/registrations", headers=_auth(r)).status_code == 200


@pytest.mark.parametrize("username", ["a" * 300, "nul\x00name"])
def test_unusable_usernames_are_a_clear_422(client, username):
    r = _token(client, username, "x")
    assert r.status_code == 422 and r.json()["field"] == "username"

"""Signing in: the guards around every password or activation-code check, and opening,
renewing and ending sessions (the routes of ``geo_api.routers.auth``).

Guards (settings in ``AuthSettings``): an address that failed
``signin_address_failures`` times within ``signin_address_window_minutes`` gets one
attempt per ``signin_address_delay_seconds`` (429 with ``Retry-After``); a name — a
username as typed, or ``activate:`` and a member number — failing
``signin_lock_failures`` times in a row is locked for ``signin_lock_minutes`` (429), an
existing account's lock written to ``account_log``. Every attempt is a row of
``signin_log``. A name is locked alike whether an account has it or not, and an unknown
user costs one Argon2 verification as a wrong password does (``verify_password``), so
neither the answers nor their timing tell which usernames exist.

A session is a row of ``auth_sessions`` and an httpOnly, SameSite=Strict cookie holding
its refresh secret; the access token (``geo_api.security``) lives in the page's memory
and lasts the idle timeout, renewed through the cookie while the page is used.
"""

from __future__ import annotations

import math
from datetime import timedelta
from urllib.parse import urlsplit

from fastapi import Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from geo_api.security import issue_token, new_secret, new_session_id, secret_digest
from layers import accounts, users
from layers.errors import TooManyRequests
from tiles.tilejson import public_base_url

COOKIE = "gridbranch_session"
#: the actor of the account_log rows sign-in itself writes (locks)
SIGNIN_ACTOR = "signin"


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(
        description="seconds this access token lives: the idle timeout, or less at the end "
        "of the session; renew it with POST /v1/auth/refresh"
    )
    idle_minutes: int = Field(description="a session not renewed for this long ends")
    session_expires_at: str = Field(description="when the session ends whatever happens (ISO 8601)")
    must_change_password: bool = Field(
        description="an admin reset the password: the account must change it "
        "(POST /v1/auth/password) before it may do anything else"
    )


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def _auth(request: Request):
    return request.app.state.settings.auth


def check_address(request: Request, session: Session, name: str) -> None:
    """Refuse (429) an attempt from an address that is slowed down, logging it."""
    auth = _auth(request)
    address = client_address(request)
    wait = users.address_wait(
        session,
        address,
        failures=auth.signin_address_failures,
        window=timedelta(minutes=auth.signin_address_window_minutes),
        delay=timedelta(seconds=auth.signin_address_delay_seconds),
    )
    if wait > 0:
        users.log_attempt(session, name, address, "throttled")
        session.commit()
        seconds = max(1, math.ceil(wait))
        raise TooManyRequests(
            f"too many failed sign-ins from this address: try again in {seconds} s",
            field="password",
            retry_after=seconds,
            reason="address_slowed",
            detail_zh=f"此地址登录失败次数过多，请 {seconds} 秒后再试",
        )


def refuse_locked(request: Request, session: Session, name: str, until) -> None:
    users.log_attempt(session, name, client_address(request), "locked")
    session.commit()
    seconds = max(1, math.ceil((until - request.app.state.clock.now()).total_seconds()))
    minutes = math.ceil(seconds / 60)
    raise TooManyRequests(
        f"too many failed attempts: locked for {seconds} s more",
        field="username",
        retry_after=seconds,
        reason="locked",
        detail_zh=f"失败次数过多，已暂时锁定，请 {minutes} 分钟后再试",
    )


def record_failure(request: Request, session: Session, name: str, account: str | None) -> None:
    """Count a failed attempt on ``name`` (``account``: the username it is, if any) and
    commit; the one that locks the name is logged in ``account_log`` for an account."""
    auth = _auth(request)
    address = client_address(request)
    until = users.name_failed(
        session, name, lock_after=auth.signin_lock_failures, lock_for=timedelta(minutes=auth.signin_lock_minutes)
    )
    users.log_attempt(session, name, address, "failed")
    if until is not None and account is not None:
        accounts.log_action(
            session,
            actor=SIGNIN_ACTOR,
            username=account,
            action="lock",
            after={"locked_until": until.isoformat(), "failures": auth.signin_lock_failures, "address": address},
        )
    session.commit()


def record_success(request: Request, session: Session, name: str) -> None:
    users.name_succeeded(session, name)
    users.log_attempt(session, name, client_address(request), "ok")


def _cookie_place(request: Request) -> tuple[str, bool]:
    """(the cookie's path, whether it must be Secure): the auth routes under whatever
    prefix a reverse proxy gives (X-Forwarded-Prefix), Secure over HTTPS."""
    base = urlsplit(
        public_base_url(request.headers, request.url.scheme, request.url.netloc, request.scope.get("root_path", ""))
    )
    return base.path.rstrip("/") + "/v1/auth", base.scheme == "https"


def token_for_session(request: Request, username: str, row: dict) -> Token:
    auth = _auth(request)
    now = request.app.state.clock.now()
    token = issue_token(
        request.app.state.auth_secret,
        username,
        epoch=row["epoch"],
        session_id=row["id"],
        started=row["created_at"],
        session_end=row["expires_at"],
        idle_minutes=auth.token_idle_minutes,
        now=now,
    )
    expires = min(now + timedelta(minutes=auth.token_idle_minutes), row["expires_at"])
    return Token(
        access_token=token,
        expires_in=max(0, int((expires - now).total_seconds())),
        idle_minutes=auth.token_idle_minutes,
        session_expires_at=row["expires_at"].isoformat(),
        must_change_password=bool(row.get("must_change_password")),
    )


def open_session(request: Request, response: Response, session: Session, username: str, must_change: bool) -> Token:
    """Start a session of ``username``, commit, set its cookie; its first access token."""
    secret, digest = new_secret()
    row = users.start_session(
        session,
        session_id=new_session_id(),
        username=username,
        refresh_hash=digest,
        lifetime=timedelta(minutes=_auth(request).token_minutes),
    )
    session.commit()
    path, secure = _cookie_place(request)
    max_age = int((row["expires_at"] - request.app.state.clock.now()).total_seconds())
    response.headers["Cache-Control"] = "no-store"  # a token in the answer (RFC 6749 5.1)
    response.set_cookie(
        COOKIE, secret, max_age=max(0, max_age), path=path, secure=secure, httponly=True, samesite="strict"
    )
    return token_for_session(request, username, {**row, "must_change_password": must_change})


def forget_cookie(request: Request, response: Response) -> None:
    path, secure = _cookie_place(request)
    response.delete_cookie(COOKIE, path=path, secure=secure, httponly=True, samesite="strict")


def cookie_digest(request: Request) -> str | None:
    value = request.cookies.get(COOKIE)
    return secret_digest(value) if value else None

"""Password hashing (Argon2id), signed access tokens (JWT, HS256) and refresh secrets.

An access token names its account (``sub``), its session (``jti``), the account's token
epoch it was issued under (``gen``: any change of the account's password, role, binding
or state, and every sign-out, bumps the epoch — migration 0015 — so that comparing it
with the account read every request makes anyway revokes all its tokens at once), when
the session began (``auth_time``) and ended at the latest (``exp``). It lives at most
the idle timeout: the web map renews it through the session's refresh cookie while it
is used (``POST /v1/auth/refresh``), and a session not renewed for that long is over.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from layers.errors import Unauthorized

_hasher = PasswordHasher()
ALGORITHM = "HS256"
_dummy: list[str] = []


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def _dummy_hash() -> str:
    """A hash of a password nobody has, made with the same parameters as every other:
    verifying against it costs what a real verification does."""
    if not _dummy:
        _dummy.append(_hasher.hash(secrets.token_urlsafe(24)))
    return _dummy[0]


def verify_password(password: str, hashed: str | None) -> bool:
    """Whether ``password`` matches ``hashed``. Without a usable hash (an unknown user, a
    password voided by a reset) a dummy hash is verified instead, so that the answer
    takes as long as for a wrong password: the timing tells nobody which usernames exist."""
    if not hashed or not hashed.startswith("$argon2"):
        try:
            _hasher.verify(_dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            pass
        return False
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


#: What an account whose password was voided (a member's reset: a new activation code)
#: holds instead of a hash; no password verifies against it.
VOID_PASSWORD = "!void"


def new_secret() -> tuple[str, str]:
    """A random refresh secret (the session cookie) and its SHA-256, which alone is kept:
    256 random bits need no slow hash."""
    value = secrets.token_urlsafe(32)
    return value, secret_digest(value)


def secret_digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def new_session_id() -> str:
    return secrets.token_urlsafe(16)


@dataclass(frozen=True)
class Claims:
    """What a valid access token says."""

    username: str
    session_id: str
    epoch: int


def issue_token(
    secret: str,
    username: str,
    *,
    epoch: int,
    session_id: str,
    started: datetime,
    session_end: datetime,
    idle_minutes: int,
    now: datetime,
) -> str:
    """An access token for session ``session_id`` of ``username`` (the account at token
    epoch ``epoch``), issued ``now`` by the service's clock: valid for the idle timeout,
    and never past the session's end."""
    expires = min(now + timedelta(minutes=idle_minutes), session_end)
    payload = {
        "sub": username,
        "jti": session_id,
        "gen": epoch,
        "auth_time": int(started.timestamp()),
        "iat": int(now.timestamp()),
        "exp": int(expires.timestamp()),
    }
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


#: Tolerated difference between the clock that issued a token and the one reading it.
LEEWAY = timedelta(seconds=30)

#: Why a token is refused, as the web map tells its user (``reason`` of the 401).
REASONS_ZH = {
    "invalid": "登录凭据无效，请重新登录",
    "expired": "登录已到期，请重新登录",
    "idle": "长时间未操作，已自动退出，请重新登录",
    "revoked": "已退出登录、修改了密码或账号已变更，请重新登录",
    "disabled": "账号不存在或已停用",
}


def refused(detail: str, reason: str) -> Unauthorized:
    return Unauthorized(detail, field="token", reason=reason, detail_zh=REASONS_ZH[reason])


def read_token(secret: str, token: str, *, now: datetime, max_minutes: int, idle_minutes: int) -> Claims:
    """The claims of a valid token; :class:`Unauthorized` (with its ``reason``) otherwise.

    Expiry is judged by ``now`` (the service's clock, not PyJWT's own). Whatever its
    ``exp`` says, a token lives at most ``idle_minutes`` after it was issued and its
    session at most ``max_minutes`` after it began: a token signed with a longer life
    (an old configuration, a leaked secret's forgery) ends when the configured ones do."""
    try:
        payload = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={
                "require": ["sub", "exp", "iat", "jti", "gen", "auth_time"],
                "verify_exp": False,
                "verify_iat": False,
            },
        )
    except jwt.PyJWTError:
        raise refused("invalid token", "invalid") from None
    try:
        issued = datetime.fromtimestamp(float(payload["iat"]), UTC)
        expires = datetime.fromtimestamp(float(payload["exp"]), UTC)
        started = datetime.fromtimestamp(float(payload["auth_time"]), UTC)
        epoch = int(payload["gen"])
    except (TypeError, ValueError, OverflowError, OSError):
        raise refused("invalid token", "invalid") from None
    if issued > now + LEEWAY or started > issued + LEEWAY:
        raise refused("token issued in the future", "invalid")
    if now - started >= timedelta(minutes=max_minutes):
        raise refused("token expired: the session's lifetime is over", "expired")
    if now >= expires or now - issued >= timedelta(minutes=idle_minutes):
        raise refused("token expired: the session was idle too long", "idle")
    return Claims(username=str(payload["sub"]), session_id=str(payload["jti"]), epoch=epoch)

"""Password hashing (Argon2id) and signed access tokens (JWT, HS256)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from layers.errors import Unauthorized

_hasher = PasswordHasher()
ALGORITHM = "HS256"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, hashed: str) -> bool:
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def issue_token(secret: str, username: str, minutes: int, *, now: datetime) -> str:
    """A token for ``username`` valid for ``minutes`` from ``now`` (the service's clock)."""
    payload = {"sub": username, "iat": int(now.timestamp()), "exp": int((now + timedelta(minutes=minutes)).timestamp())}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


#: Tolerated difference between the clock that issued a token and the one reading it.
LEEWAY = timedelta(seconds=30)


def read_token(secret: str, token: str, *, now: datetime, max_minutes: int) -> str:
    """The username a valid token was issued to; :class:`Unauthorized` otherwise.

    Expiry is judged by ``now`` (the service's clock, not PyJWT's own), and a token lives
    at most ``max_minutes`` after it was issued whatever its ``exp`` says: a token signed
    with a longer life (an old configuration, a leaked secret's forgery) ends when the
    configured lifetime does."""
    try:
        payload = jwt.decode(token, secret, algorithms=[ALGORITHM],
                             options={"require": ["sub", "exp", "iat"], "verify_exp": False, "verify_iat": False})
    except jwt.PyJWTError:
        raise Unauthorized("invalid token")
    try:
        issued = datetime.fromtimestamp(float(payload["iat"]), timezone.utc)
        expires = datetime.fromtimestamp(float(payload["exp"]), timezone.utc)
    except (TypeError, ValueError, OverflowError, OSError):
        raise Unauthorized("invalid token")
    if issued > now + LEEWAY:
        raise Unauthorized("token issued in the future")
    if now >= expires or now - issued >= timedelta(minutes=max_minutes):
        raise Unauthorized("token expired")
    return str(payload["sub"])

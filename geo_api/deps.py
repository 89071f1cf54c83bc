"""Typed dependencies: the session, the caller, and who may call what.

Every route declares its access with exactly one of :data:`Public` or
:func:`require_roles` (a test walks the routes to hold us to it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from starlette.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from geo_api.security import read_token
from layers import users as user_queries
from layers.codes import area_prefix
from layers.errors import Forbidden, Unauthorized

oauth2 = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session for the request. Async so that it costs no thread hand-offs: creating
    a Session does no I/O; closing it returns the connection to the pool (a rollback
    round trip of well under a millisecond on the event loop)."""
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]


@dataclass(frozen=True)
class Caller:
    """Who is calling: an account with a role scoped to an area, or anonymous."""

    username: str | None = None
    role: str | None = None
    area_code: str | None = None
    member_id: int | None = None

    @property
    def anonymous(self) -> bool:
        return self.username is None

    def covers(self, code: str | None) -> bool:
        """Whether this caller's area contains the area or grid ``code``.
        Codes nest by prefix once trailing zero groups of the 12-digit code are cut."""
        if self.role == "dispatcher":
            return True
        if not self.area_code or not code:
            return False
        return code.startswith(area_prefix(self.area_code))


ANONYMOUS = Caller()


async def get_caller(request: Request, session: SessionDep, token: Annotated[str | None, Depends(oauth2)]) -> Caller:
    # async, so that anonymous calls cost no thread hand-off; the account lookup runs
    # in the thread pool
    if not token:
        return ANONYMOUS
    username = read_token(request.app.state.auth_secret, token, now=request.app.state.clock.now(),
                          max_minutes=request.app.state.settings.auth.token_minutes)
    user = await run_in_threadpool(user_queries.active_user, session, username)
    if user is None:
        raise Unauthorized("unknown or disabled account")
    return Caller(username=user.username, role=user.role, area_code=user.area_code, member_id=user.member_id)


class Access:
    """A route's declared access: anonymous allowed (no roles) or one of ``roles``."""

    def __init__(self, *roles: str):
        self.roles = frozenset(roles)

    async def __call__(self, caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if not self.roles:
            return caller
        if caller.anonymous:
            raise Unauthorized("this endpoint needs a signed-in account")
        if caller.role not in self.roles:
            raise Forbidden(f"role {caller.role!r} may not call this endpoint; allowed: {', '.join(sorted(self.roles))}")
        return caller


def require_roles(*roles: str):
    return Depends(Access(*roles))


Public = Annotated[Caller, Depends(Access())]
CurrentUser = Annotated[Caller, Depends(Access("admin", "dispatcher", "grid_worker", "member"))]

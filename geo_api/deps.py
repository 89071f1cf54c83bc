"""Typed dependencies: the session, the caller, who may call what, and on what.

Every route declares its access with exactly one of :data:`Public` or
:func:`require_roles` (a test walks the routes to hold us to it).

Every argument of a non-public route that names a member, a registration, an event, a
grid, a branch, an area or an account is checked against the caller's scope here and
only here: the ``Scoped*`` dependencies for path and query arguments, :func:`scoped_member`,
:func:`scoped_event` and :func:`area_in_scope` for the same in a body. Each loads the
object's area code (lookups in ``layers``) and asks :meth:`Caller.covers`. What a route
learns only as it works (the grid a residence falls in) it checks with
:meth:`Caller.require_covers`; who sees an object in full, with :meth:`Caller.staff_covering`
— never by comparing codes itself. A route
declares them after its access, so that a caller without the role hears 401/403 first
(tests/geo_api/test_scope_matrix.py walks every route, role and inside/outside argument).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from geo_api.security import read_token, refused
from layers import accounts as account_queries
from layers import branches as branch_queries
from layers import events as event_queries
from layers import imports as import_queries
from layers import registrations as registration_queries
from layers import users as user_queries
from layers.caches import Caches
from layers.codes import area_prefix, check_code, level_of
from layers.errors import Forbidden, NotFound, Unauthorized

oauth2 = OAuth2PasswordBearer(tokenUrl="/v1/auth/token", auto_error=False)


def bound_session(app) -> Session | None:
    """The one session a test bound the app to (``app.state.bound_session``: its
    uncommitted data, rolled back after the test), or None — always in production. Every
    reader of the app's sessions asks here, the routes (:func:`get_session`) as well as
    the fast paths and the report writers, so that all of them see the same data."""
    return getattr(app.state, "bound_session", None)


@contextmanager
def app_session(app) -> Iterator[Session]:
    """A session of the app's sessionmaker, closed after; or the bound one
    (:func:`bound_session`), left open — the test owns it."""
    bound = bound_session(app)
    if bound is not None:
        yield bound
        return
    session = app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session for the request (:func:`app_session`). Async so that it costs no thread
    hand-offs: creating a Session does no I/O; closing it returns the connection to the
    pool (a rollback round trip of well under a millisecond on the event loop)."""
    with app_session(request.app) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


#: the roles that see the objects of their area in full (dispatchers: of every area)
STAFF = ("dispatcher", "admin", "grid_worker")
#: the same without dispatchers: who sees members themselves
ADMINS_AND_WORKERS = ("admin", "grid_worker")


def caches_of(app) -> Caches:
    """The app's caches (:class:`layers.caches.Caches`, made with the app): what the
    routes (:data:`CachesDep`) and the fast paths hand to the queries that keep values."""
    return app.state.caches


async def get_caches(request: Request) -> Caches:
    return caches_of(request.app)


CachesDep = Annotated[Caches, Depends(get_caches)]


@dataclass(frozen=True)
class Caller:
    """Who is calling: an account with a role scoped to an area (department staff: to a
    department, by id), or anonymous."""

    username: str | None = None
    role: str | None = None
    area_code: str | None = None
    member_id: int | None = None
    department_id: int | None = None
    #: an admin reset the password: nothing but changing it (and signing out) until then
    must_change_password: bool = False
    #: the session (the token's ``jti``)
    session_id: str | None = None

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

    def covers_home(self, code: str | None) -> bool:
        """Whether this caller's area contains an object's home area ``code``; an object
        of no known area (a work-unit branch, a member known by no grid) only for
        :attr:`district_wide` callers."""
        return self.covers(code) if code else self.district_wide

    def require_covers(self, code: str, field: str | None, *, what: str = "") -> str:
        """``code`` if this caller's area contains it (:meth:`covers`); otherwise 403
        naming ``field`` and the code (``what``: "grid", "member"… before it). The one
        refusal of an out-of-area code, so that its English (and with it its Chinese,
        layers.messages_zh) is the same wherever a route checks one."""
        if not self.covers(code):
            raise Forbidden(f"{what + ' ' if what else ''}{code} is outside your area {self.area_code}", field=field)
        return code

    def staff_covering(self, code: str | None, roles: tuple[str, ...] | None = None) -> bool:
        """Whether this caller is staff (``roles``, default :data:`STAFF`) whose area
        contains ``code``: who sees an object of that area in full (personal parts,
        unsuppressed figures) rather than as the public does."""
        return self.role in (STAFF if roles is None else roles) and self.covers(code)

    @property
    def kind(self) -> str | None:
        """district_admin, street_admin, community_admin, grid_worker, dispatcher,
        department_staff or member (layers.accounts.KINDS); None when anonymous."""
        return account_queries.kind_of(self.role, self.area_code) if self.role else None

    @property
    def district_wide(self) -> bool:
        """An admin of a whole district, or a dispatcher: they cover what lies in no
        smaller area (a work-unit branch, a member known by no grid or community)."""
        return self.role == "dispatcher" or (
            self.role == "admin" and bool(self.area_code) and level_of(self.area_code) == "district"
        )


ANONYMOUS = Caller()


async def get_caller(request: Request, session: SessionDep, token: Annotated[str | None, Depends(oauth2)]) -> Caller:
    # async, so that anonymous calls cost no thread hand-off; the account lookup runs
    # in the thread pool
    if not token:
        return ANONYMOUS
    auth = request.app.state.settings.auth
    claims = read_token(
        request.app.state.auth_secret,
        token,
        now=request.app.state.clock.now(),
        max_minutes=auth.token_minutes,
        idle_minutes=auth.token_idle_minutes,
    )
    # the one account read a signed-in request makes (it was made before tokens were
    # revocable: a disabled account stops at once); comparing the token's epoch with the
    # account's is what revokes every token of the account at once (bench/auth.py)
    user = await run_in_threadpool(user_queries.caller_account, session, claims.username)
    if user is None:
        raise refused("unknown or disabled account", "disabled")
    if user.token_epoch != claims.epoch:
        raise refused("token revoked: signed out, password changed or account changed", "revoked")
    return Caller(
        username=user.username,
        role=user.role,
        area_code=user.area_code,
        member_id=user.member_id,
        department_id=user.department_id,
        must_change_password=user.must_change_password,
        session_id=claims.session_id,
    )


class Access:
    """A route's declared access: anonymous allowed (no roles) or one of ``roles``. An
    account whose password an admin reset may call only the routes declared
    ``password_pending`` (who am I, change the password, sign out) until it changed it."""

    def __init__(self, *roles: str, password_pending: bool = False):
        self.roles = frozenset(roles)
        self.password_pending = password_pending

    async def __call__(self, caller: Annotated[Caller, Depends(get_caller)]) -> Caller:
        if caller.must_change_password and not self.password_pending:
            raise Forbidden(
                "change your password first (POST /v1/auth/password): an admin reset it",
                field="password",
                reason="must_change_password",
                detail_zh="管理员已重置密码，请先修改密码",
            )
        if not self.roles:
            return caller
        if caller.anonymous:
            raise Unauthorized("this endpoint needs a signed-in account")
        if caller.role not in self.roles:
            raise Forbidden(
                f"role {caller.role!r} may not call this endpoint; allowed: {', '.join(sorted(self.roles))}"
            )
        return caller


def require_roles(*roles: str):
    return Depends(Access(*roles))


Public = Annotated[Caller, Depends(Access())]
CurrentUser = Annotated[Caller, Depends(Access(*account_queries.ROLES))]
#: signed in, also with a password still to change (geo_api.routers.auth)
SignedIn = Annotated[Caller, Depends(Access(*account_queries.ROLES, password_pending=True))]


# -- Scope: the one place where arguments are checked against the caller's area ---------

Caller_ = Annotated[Caller, Depends(get_caller)]


def area_in_scope(caller: Caller, code: str | None, field: str) -> str | None:
    """An area or grid code argument inside the caller's area (403 naming ``field``
    otherwise); without one, the caller's own area — dispatchers: None, everything; an
    account of no area must name one."""
    if code is None:
        if caller.role == "dispatcher":
            return None
        if not caller.area_code:
            raise Forbidden(f"an account without an area must name {field}", field=field)
        return caller.area_code
    check_code(code, field)
    return caller.require_covers(code, field)


def scoped_area(
    name: str = "within", description: str = "area or grid code; default your area (dispatchers: everything)"
):
    """A dependency for the query argument ``name`` naming an area or grid: its value
    through :func:`area_in_scope`."""

    def dependency(caller: Caller_, code=None) -> str | None:
        return area_in_scope(caller, code, name)

    # a real object, not a string (this module's annotations are postponed): FastAPI
    # could not resolve the closure's name and description from a string
    dependency.__annotations__["code"] = Annotated[str | None, Query(alias=name, description=description)]
    dependency.__name__ = f"scoped_{name}"
    return Depends(dependency)


def scoped_area_path(name: str):
    """A dependency for the path argument ``name`` naming an area (12 digits)."""

    def dependency(caller: Caller_, code) -> str:
        return area_in_scope(caller, code, name)

    dependency.__annotations__["code"] = Annotated[str, Path(alias=name, pattern=r"^[0-9]{12}$")]
    dependency.__name__ = f"scoped_{name}"
    return Depends(dependency)


ScopedWithin = Annotated[str | None, scoped_area()]


def scoped_event_area(description: str):
    """The ``within`` query argument of the event lists and figures: as :func:`scoped_area`;
    department staff, who see their own department's events across the district, name
    none (403 naming ``within``) and get None."""

    def dependency(caller: Caller_, code=None) -> str | None:
        if caller.role == "department_staff":
            if code is not None:
                raise Forbidden(
                    "department staff see their department's events across the district: leave out within",
                    field="within",
                )
            return None
        return area_in_scope(caller, code, "within")

    dependency.__annotations__["code"] = Annotated[str | None, Query(alias="within", description=description)]
    return Depends(dependency)


#: The ``within`` query argument of the event lists and figures (:func:`scoped_event_area`).
ScopedEventWithin = Annotated[
    str | None,
    scoped_event_area(
        description="area or grid code; default your area (dispatchers: all; department staff: none, "
        "their department's events across the district)"
    ),
]


def scoped_member(
    session: Session, caller: Caller, member_id: int, *, lock: bool = False, field: str = "member_id"
) -> int:
    """Member ``member_id`` if the caller may act on them: a member only on themselves;
    others when their area covers the member's (:func:`layers.registrations.member_area`;
    a member of no known area: district admins and dispatchers). An unknown member and
    one outside the area get the same 404, so that ids cannot be probed for members
    elsewhere. With ``lock`` the member's row stays locked until the transaction ends
    (the first lock of any write on a member: :func:`layers.registrations.lock_member`)."""
    if caller.role == "member":
        if member_id != caller.member_id:
            raise Forbidden("a member acts only for themselves", field=field)
        if lock:
            registration_queries.lock_member(session, member_id)
        return member_id
    hidden = NotFound(f"no member with id {member_id} in your area", field=field)
    try:
        area = registration_queries.member_area(session, member_id, lock=lock)
    except NotFound:
        raise hidden from None
    if not caller.covers_home(area):
        raise hidden
    return member_id


def scoped_event(session: Session, caller: Caller, event_id: int, *, field: str = "event_id") -> int:
    """Event ``event_id`` if the caller may see it: staff whose area covers its grid
    (dispatchers: every event), the member who reported it, the staff of a department it
    was ever dispatched to (layers.events: now or before); 403 otherwise, 404 unknown."""
    grid, reporter, departments = event_queries.event_area(session, event_id)
    if caller.role == "member":
        entitled = reporter is not None and reporter == caller.username
    elif caller.role == "department_staff":
        entitled = caller.department_id in departments
    else:
        entitled = caller.staff_covering(grid)
    if not entitled:
        raise Forbidden(f"event {event_id} is not yours to see", field=field)
    return event_id


def _event(session: SessionDep, caller: Caller_, event_id: Annotated[int, Path(ge=1)]) -> int:
    return scoped_event(session, caller, event_id)


def _registration(session: SessionDep, caller: Caller_, registration_id: Annotated[int, Path(ge=1)]) -> int:
    grid, member_id = registration_queries.registration_area(session, registration_id)
    own = caller.role == "member" and caller.member_id == member_id
    if not (own or caller.staff_covering(grid, ADMINS_AND_WORKERS)):
        raise Forbidden(f"registration {registration_id} is not yours to see", field="registration_id")
    return registration_id


def _grid(caller: Caller_, code: Annotated[str, Path(pattern=r"^[0-9]{15}$")]) -> str:
    return caller.require_covers(code, "code", what="grid")


def _branch(session: SessionDep, caller: Caller_, code: Annotated[str, Path(max_length=32)]) -> str:
    community = branch_queries.branch_area(session, code)
    if not caller.covers_home(community):
        raise Forbidden(
            f"branch {code} is outside your area {caller.area_code}"
            + ("" if community else " (a branch of no community: district admins only)"),
            field="code",
        )
    return code


def _account(
    session: SessionDep, caller: Caller_, username: Annotated[str, Path(max_length=account_queries.USERNAME_MAX)]
) -> str:
    """An account the caller may see: one whose home area (layers.accounts.account)
    lies in the caller's; a district-wide one (dispatchers, department staff, members of
    no known area) for district-wide callers. Others are answered as no account at all
    (404), so that usernames elsewhere cannot be probed."""
    try:
        home = account_queries.account(session, username)["home"]
    except NotFound:
        visible = False
    else:
        visible = caller.covers_home(home)
    if not visible:
        raise NotFound(f"no account {username!r} in your area", field="username")
    return username


def _import(session: SessionDep, caller: Caller_, import_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]) -> str:
    """An import (数据导入) of the caller's own: imports are seen and committed only by the
    account that uploaded them (its file may hold personal data of its area); any other
    is answered as no import at all (404)."""
    row = import_queries.import_row(session, import_id)
    if row is None or row["username"] != caller.username:
        raise NotFound(f"no import {import_id} of yours", field="import_id", detail_zh="没有这次导入（或不是您上传的）")
    return import_id


#: Path arguments, checked against the caller's scope.
ScopedEvent = Annotated[int, Depends(_event)]
ScopedRegistration = Annotated[int, Depends(_registration)]
ScopedGrid = Annotated[str, Depends(_grid)]
ScopedBranch = Annotated[str, Depends(_branch)]
ScopedAccount = Annotated[str, Depends(_account)]
ScopedImport = Annotated[str, Depends(_import)]


def _member_query(
    session: SessionDep,
    caller: Caller_,
    member_id: Annotated[int | None, Query(ge=1, description="a member's id")] = None,
) -> int | None:
    return None if member_id is None else scoped_member(session, caller, member_id)


#: An optional ``member_id`` query argument, a member the caller may act on.
ScopedMemberQuery = Annotated[int | None, Depends(_member_query)]

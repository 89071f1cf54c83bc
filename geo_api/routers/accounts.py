"""Accounts (账号管理): admins create, list, disable and re-enable the accounts of the
kinds below their own inside their area, and reset their passwords (layers.accounts);
they hand members activation codes (layers.activation)."""

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from geo_api.accounts import password_for
from geo_api.audit import Audited
from geo_api.deps import Caller, ScopedAccount, ScopedWithin, SessionDep, area_in_scope, require_roles, scoped_member
from geo_api.params import Body, Limit, Offset
from geo_api.responses import CSV, media, problems
from geo_api.routers.coverage import _csv
from geo_api.security import VOID_PASSWORD
from layers import accounts, activation, textfields
from layers.codes import level_of
from layers.errors import InvalidInput

router = APIRouter(prefix="/v1/accounts", tags=["accounts"], responses=problems(400, 403, 404, 409))
Admins = Annotated[Caller, require_roles("admin")]
Role = Literal["admin", "dispatcher", "grid_worker", "department_staff", "member"]
Password = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        description="checked against the password policy "
        "(GRIDBRANCH_PASSWORD_MIN_LENGTH, _MIN_CLASSES; not the username)",
    ),
]


class AccountCreate(Body):
    """A new account. What it is bound to follows its role: admins and grid workers an
    area (an admin's level is its area's: district, street or community; a grid worker's
    a grid or a community), department staff a department, members a member record."""

    username: str = Field(max_length=accounts.USERNAME_MAX, description="3–64 letters, digits, '.', '_', '-'")
    role: Role
    area_code: str | None = Field(
        None, max_length=15, description="admins, grid workers: 12-digit area or 15-digit grid code"
    )
    department: str | None = Field(None, max_length=32, description="department staff: the department's code")
    member_id: int | None = Field(None, ge=1, le=2**31 - 1, description="members: the member record's id")
    display_name: str | None = Field(None, json_schema_extra={"maxLength": textfields.NAME_MAX})
    password: Password | None = Field(
        None, description="the initial password; left out, one is generated and answered once"
    )


class PasswordReset(Body):
    """A password reset: the new password, or none for a generated one answered once."""

    password: Password | None = None


class AccountPublic(BaseModel):
    """An account as answered: never its password hash."""

    username: str
    role: str
    kind: str = Field(
        description="district_admin, street_admin, community_admin, grid_worker, dispatcher, department_staff or member"
    )
    area_code: str | None
    department: str | None
    member_id: int | None
    display_name: str | None
    active: bool
    home: str | None = Field(
        description="the area the account belongs to (members: their member's); none: district-wide"
    )
    manageable: bool = Field(description="whether the caller may disable, enable and reset it")


class AccountCreated(BaseModel):
    account: AccountPublic
    password: str | None = Field(
        description="the generated password, answered this once (null when given, and "
        "for a member's reset: see activation_code)"
    )
    activation_code: str | None = Field(
        None,
        description="a member's reset: the new activation code (激活码) the "
        "member activates the account with, answered this once",
    )
    activation_expires_at: datetime | None = None


class AccountPage(BaseModel):
    within: str
    total: int
    items: list[AccountPublic]
    creatable: list[str] = Field(description="the kinds of account the caller may create")


def _audited(audit, items: list[dict]) -> None:
    """A member account's display name is its member's name: answering it is a read of
    personal data like the others (geo_api.audit)."""
    members = [a["member_id"] for a in items if a["member_id"] is not None and a.get("display_name")]
    if members:
        audit.record(("name",), members=members)


def _public(caller: Caller, account: dict) -> AccountPublic:
    return AccountPublic(
        **{k: account[k] for k in AccountPublic.model_fields if k != "manageable"},
        manageable=accounts.may_manage(caller.kind, account["kind"]),
    )


def _policy(request: Request):
    return request.app.state.settings.auth.password_policy()


@router.post(
    "",
    status_code=201,
    response_model=AccountCreated,
    summary="Create an account of a kind below the caller's, inside the caller's area",
)
def create_account(request: Request, session: SessionDep, caller: Admins, body: AccountCreate) -> AccountCreated:
    if body.role in ("admin", "grid_worker") and body.area_code is not None:
        area_in_scope(caller, body.area_code, "area_code")
    kind, _ = accounts.check_binding(session, body.role, body.area_code, body.department, body.member_id)
    accounts.check_may_manage(caller.kind, kind)
    if body.member_id is not None:
        scoped_member(session, caller, body.member_id, lock=True)
    shown, hashed = password_for(_policy(request), body.username, body.password)
    account = accounts.create_account(
        session,
        actor=caller.username,
        username=body.username,
        password_hash=hashed,
        role=body.role,
        area_code=body.area_code,
        department=body.department,
        member_id=body.member_id,
        display_name=body.display_name,
    )
    session.commit()
    return AccountCreated(account=_public(caller, account), password=shown)


@router.get("", response_model=AccountPage, summary="The accounts of an area (admins of the area)")
def list_accounts(
    session: SessionDep,
    caller: Admins,
    area: ScopedWithin,
    role: Annotated[Role | None, Query()] = None,
    active: bool | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
    *,
    audit: Audited,
) -> AccountPage:
    items, total = accounts.accounts_within(session, area, role=role, active=active, limit=limit, offset=offset)
    _audited(audit, items)
    return AccountPage(
        within=area,
        total=total,
        items=[_public(caller, a) for a in items],
        creatable=[k for k in accounts.KINDS if accounts.may_manage(caller.kind, k)],
    )


@router.get("/{username}", response_model=AccountPublic, summary="One account of the caller's area")
def get_account(session: SessionDep, caller: Admins, username: ScopedAccount, audit: Audited) -> AccountPublic:
    account = accounts.account(session, username)
    _audited(audit, [account])
    return _public(caller, account)


def _manageable(session, caller: Caller, username: str) -> None:
    accounts.check_may_manage(caller.kind, accounts.account(session, username, lock=True)["kind"], "username")


@router.post(
    "/{username}/disable",
    response_model=AccountPublic,
    summary="Disable an account: it can no longer sign in, and its tokens stop working at once",
)
def disable_account(session: SessionDep, caller: Admins, username: ScopedAccount, audit: Audited) -> AccountPublic:
    _manageable(session, caller, username)
    account = accounts.set_account_active(session, actor=caller.username, username=username, active=False)
    session.commit()
    _audited(audit, [account])
    return _public(caller, account)


@router.post("/{username}/enable", response_model=AccountPublic, summary="Re-enable a disabled account")
def enable_account(session: SessionDep, caller: Admins, username: ScopedAccount, audit: Audited) -> AccountPublic:
    _manageable(session, caller, username)
    account = accounts.set_account_active(session, actor=caller.username, username=username, active=True)
    session.commit()
    _audited(audit, [account])
    return _public(caller, account)


@router.post(
    "/{username}/reset-password",
    response_model=AccountCreated,
    summary="Give an account a new password (generated and answered once unless given)",
)
def reset_password(
    request: Request, session: SessionDep, caller: Admins, username: ScopedAccount, body: PasswordReset | None = None
) -> AccountCreated:
    """The account must choose its own password at its next sign-in. A member's account
    gets a new activation code instead of a password: the member activates it again."""
    _manageable(session, caller, username)
    target = accounts.account(session, username)
    if target["role"] == "member":
        if body is not None and body.password is not None:
            raise InvalidInput(
                "password: a member's reset is a new activation code; give no password",
                field="password",
                detail_zh="党员账号重置后由本人用激活码设置密码，请勿指定密码",
            )
        [issued] = activation.issue_codes(
            session,
            actor=caller.username,
            member_ids=[target["member_id"]],
            days=request.app.state.settings.auth.activation_days,
        )
        account = accounts.reset_password(
            session,
            actor=caller.username,
            username=username,
            password_hash=VOID_PASSWORD,
            must_change=False,
            activation_code=True,
        )
        session.commit()
        return AccountCreated(
            account=_public(caller, account),
            password=None,
            activation_code=issued["code"],
            activation_expires_at=issued["expires_at"],
        )
    shown, hashed = password_for(_policy(request), username, body.password if body else None)
    account = accounts.reset_password(session, actor=caller.username, username=username, password_hash=hashed)
    session.commit()
    return AccountCreated(account=_public(caller, account), password=shown)


# -- activation codes -------------------------------------------------------------------

codes_router = APIRouter(prefix="/v1/activation-codes", tags=["accounts"], responses=problems(400, 403, 404))


class CodesRequest(Body):
    """Activation codes for the members of a community (or grid) who have no account yet,
    or for the members named (each inside the caller's area; one with an account
    activates it anew)."""

    within: str | None = Field(
        None,
        max_length=15,
        description="a community or grid code; default the caller's area (a community admin's community)",
    )
    member_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(
        None, max_length=activation.MAX_CODES, description="these members instead"
    )
    days: int | None = Field(
        None, ge=1, le=365, description="valid this many days (default GRIDBRANCH_ACTIVATION_DAYS)"
    )


class IssuedCode(BaseModel):
    member_id: int
    number: str | None
    name: str
    code: str = Field(description="answered this once: only its hash is kept")
    expires_at: datetime


class IssuedCodes(BaseModel):
    within: str | None
    issued_at: datetime
    codes: list[IssuedCode]


CODES_CSV_HEADER = ("党员编号", "姓名", "激活码", "有效期至")


@codes_router.post(
    "",
    response_model=IssuedCodes,
    responses=media(CSV, status=200),
    summary="Issue one-time activation codes (激活码) to members of the caller's area: JSON, or a "
    "printable CSV list (format=csv)",
)
def issue_codes(
    request: Request,
    session: SessionDep,
    caller: Admins,
    body: CodesRequest,
    audit: Audited,
    format: Annotated[Literal["json", "csv"], Query(description="json, or csv to print")] = "json",
):
    days = body.days or request.app.state.settings.auth.activation_days
    within = None
    if body.member_ids is None:
        within = area_in_scope(caller, body.within, "within")
        if level_of(within) not in ("community", "grid"):
            raise InvalidInput(
                "within: codes are issued for one community (or grid) at a time",
                field="within",
                detail_zh="激活码按社区（或网格）发放，请选择一个社区",
            )
        member_ids = activation.members_without_account(session, within)
    else:
        if body.within is not None:
            raise InvalidInput("within: give within or member_ids, not both", field="within")
        member_ids = sorted({scoped_member(session, caller, m, lock=True) for m in body.member_ids})
    if len(member_ids) > activation.MAX_CODES:
        raise InvalidInput(f"within: more than {activation.MAX_CODES} members at once", field="within")
    issued = activation.issue_codes(session, actor=caller.username, member_ids=member_ids, days=days)
    now = request.app.state.clock.now()
    session.commit()
    # the list names its members (and their member numbers): a read of personal data
    audit.record(("name",), members=member_ids, detail={"activation_codes": len(issued)})
    if format == "csv":
        rows = [CODES_CSV_HEADER] + [
            (c["number"] or "", c["name"], c["code"], c["expires_at"].isoformat()) for c in issued
        ]
        return _csv(activation.as_csv(rows), f"activation-codes-{within or 'members'}.csv")
    return IssuedCodes(within=within, issued_at=now, codes=[IssuedCode(**c) for c in issued])

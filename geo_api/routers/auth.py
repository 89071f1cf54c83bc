"""Signing in and out (geo_api.signin): the password flow, members' activation with a
code, renewing a session through its cookie, changing a password, signing out."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from geo_api import signin
from geo_api.deps import Access, Caller, Public, SessionDep, SignedIn
from geo_api.params import Body
from geo_api.responses import problems
from geo_api.routers.accounts import Password
from geo_api.security import REASONS_ZH, hash_password, verify_password
from geo_api.signin import Token
from layers import accounts, activation
from layers import users as user_queries
from layers.errors import Forbidden, GridbranchError, InvalidInput, Unauthorized
from layers.textfields import text_fault

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class Me(BaseModel):
    username: str
    role: str
    area_code: str | None
    member_id: int | None
    must_change_password: bool


class Activation(Body):
    """A member activates their account (激活): their member number and phone as the
    roster holds them, the code their community gave them, and the password they choose."""

    number: str = Field(min_length=1, max_length=32, description="the member number (党员编号)")
    phone: str = Field(min_length=1, max_length=32, description="the phone the roster holds for the member")
    code: str = Field(min_length=1, max_length=32, description="the activation code (激活码), dashes optional")
    password: Password
    username: str | None = Field(
        None, max_length=accounts.USERNAME_MAX, description="a username for a new account; default the member number"
    )


class PasswordChange(Body):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: Password


WRONG_ZH = "用户名或密码错误"


@router.post(
    "/token",
    response_model=Token,
    responses=problems(429),
    summary="OAuth2 password flow: exchange credentials for a JWT and a session cookie",
)
def token(
    request: Request,
    response: Response,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    session: SessionDep,
    caller: Public,
) -> Token:
    name = form.username
    if "\x00" in name:  # no account can have it, and PostgreSQL refuses it in a query
        raise InvalidInput("username: contains a NUL character", field="username")
    if len(name) > 200 or text_fault(name):
        raise InvalidInput("username: not a username", field="username")
    signin.check_address(request, session, name)
    locked = user_queries.name_lock(session, name)
    user = user_queries.active_user(session, name)
    # verified whatever the outcome (a dummy hash for an unknown user): the same time
    ok = verify_password(form.password, user.password_hash if user else None)
    if locked is not None:
        signin.refuse_locked(request, session, name, locked)
    if not ok:
        signin.record_failure(request, session, name, user.username if user else None)
        raise Unauthorized("wrong username or password", field="password", detail_zh=WRONG_ZH)
    signin.record_success(request, session, name)
    return signin.open_session(request, response, session, user.username, user.must_change_password)


@router.post(
    "/activate",
    response_model=Token,
    responses=problems(403, 409, 429),
    summary="A member activates their account with number, phone and activation code, and sets a password",
)
def activate(request: Request, response: Response, body: Activation, session: SessionDep, caller: Public) -> Token:
    number = body.number.strip()
    name = f"activate:{number}"
    signin.check_address(request, session, name)
    locked = user_queries.name_lock(session, name)
    member_id = activation.redeem(session, number=number, phone=body.phone, code=body.code)
    if locked is not None:
        session.rollback()  # the code, if right, stays unused
        signin.refuse_locked(request, session, name, locked)
    if member_id is None:
        signin.record_failure(request, session, name, None)
        raise Unauthorized(
            "member number, phone or activation code is wrong", field="code", detail_zh="党员编号、手机号或激活码不正确"
        )
    try:
        username = _activate_account(request, session, body, member_id, number)
    except GridbranchError:
        session.rollback()  # the code stays unused: the member tries again
        raise
    signin.record_success(request, session, name)
    return signin.open_session(request, response, session, username, False)


def _activate_account(request: Request, session, body: Activation, member_id: int, number: str) -> str:
    """Set the password of member ``member_id``'s account, created if it has none; its username."""
    existing = accounts.member_account(session, member_id)
    policy = request.app.state.settings.auth.password_policy()
    if existing is not None:
        if not existing.active:
            raise Forbidden(
                "this member's account is disabled", field="number", detail_zh="该党员账号已停用，请联系社区"
            )
        accounts.check_password(body.password, existing.username, policy)
        user_queries.set_password(session, existing.username, hash_password(body.password))
        accounts.log_action(
            session,
            actor=existing.username,
            username=existing.username,
            action="activate",
            after={"password": "set", "activation_code": "used"},
        )
        return existing.username
    username = body.username or number
    if not accounts.USERNAME.match(username):
        raise InvalidInput(
            "username: the member number cannot be a username (3–64 letters, digits, '.', '_', '-'): choose one",
            field="username",
            detail_zh="党员编号不能用作用户名，请另选用户名",
        )
    accounts.check_password(body.password, username, policy)
    accounts.create_account(
        session,
        actor=username,
        username=username,
        password_hash=hash_password(body.password),
        role="member",
        member_id=member_id,
        action="activate",
    )
    return username


@router.post(
    "/refresh",
    response_model=Token,
    summary="Renew the session of the httpOnly session cookie: a new access token (the idle timeout starts again)",
)
def refresh(request: Request, response: Response, session: SessionDep, caller: Public) -> Token:
    digest = signin.cookie_digest(request)
    if digest is None:
        raise Unauthorized("no session cookie", field="cookie", reason="invalid", detail_zh="未登录")
    auth = request.app.state.settings.auth
    row, why = user_queries.renew_session(session, digest, idle=timedelta(minutes=auth.token_idle_minutes))
    if row is None:
        session.commit()
        raise Unauthorized(f"the session is over ({why})", field="cookie", reason=why, detail_zh=REASONS_ZH[why])
    session.commit()
    response.headers["Cache-Control"] = "no-store"
    return signin.token_for_session(request, row["username"], row)


@router.post(
    "/password",
    response_model=Token,
    responses=problems(403, 429),
    summary="Change the signed-in account's password: every token and session of it ends, a new one begins",
)
def change_password(
    request: Request, response: Response, body: PasswordChange, session: SessionDep, caller: SignedIn
) -> Token:
    name = caller.username
    signin.check_address(request, session, name)
    locked = user_queries.name_lock(session, name)
    user = user_queries.active_user(session, name)
    ok = verify_password(body.current_password, user.password_hash if user else None)
    if locked is not None:
        signin.refuse_locked(request, session, name, locked)
    if not ok:
        signin.record_failure(request, session, name, name)
        raise Unauthorized("the current password is wrong", field="current_password", detail_zh="当前密码不正确")
    policy = request.app.state.settings.auth.password_policy()
    accounts.check_password(body.new_password, name, policy, "new_password")
    if body.new_password == body.current_password:
        raise InvalidInput(
            "new_password: must differ from the current one", field="new_password", detail_zh="新密码不能与当前密码相同"
        )
    user_queries.set_password(session, name, hash_password(body.new_password))
    accounts.log_action(session, actor=name, username=name, action="change_password", after={"password": "changed"})
    signin.record_success(request, session, name)
    return signin.open_session(request, response, session, name, False)


#: anyone: signing out needs a token or the session cookie, and a password still to
#: change does not stop it
AnyoneSigningOut = Annotated[Caller, Depends(Access(password_pending=True))]


@router.post(
    "/logout",
    status_code=204,
    response_class=Response,
    responses=problems(403),
    summary="Sign out: every token and session of the account (of the token, or of the session cookie) "
    "ends; the cookie is cleared",
)
def logout(request: Request, session: SessionDep, caller: AnyoneSigningOut) -> Response:
    username = caller.username
    digest = signin.cookie_digest(request)
    if username is None and digest is not None:
        username = user_queries.session_account(session, digest)
    if username is not None:
        user_queries.revoke_tokens(session, username)
        accounts.log_action(session, actor=username, username=username, action="sign_out", after={"tokens": "revoked"})
        session.commit()
    out = Response(status_code=204)
    signin.forget_cookie(request, out)
    return out


@router.get("/me", response_model=Me, summary="The signed-in account", responses=problems(403))
def me(caller: SignedIn):
    return Me(
        username=caller.username,
        role=caller.role,
        area_code=caller.area_code,
        member_id=caller.member_id,
        must_change_password=caller.must_change_password,
    )

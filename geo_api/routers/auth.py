from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel

from geo_api.deps import CurrentUser, Public, SessionDep
from geo_api.responses import problems
from geo_api.security import issue_token, verify_password
from layers import users as user_queries
from layers.errors import InvalidInput, Unauthorized

router = APIRouter(prefix="/v1/auth", tags=["auth"])


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"


class Me(BaseModel):
    username: str
    role: str
    area_code: str | None
    member_id: int | None


@router.post("/token", response_model=Token, summary="OAuth2 password flow: exchange credentials for a JWT",
             responses=problems(429))
def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()], session: SessionDep, caller: Public):
    if "\x00" in form.username:  # no account can have it, and PostgreSQL refuses it in a query
        raise InvalidInput("username: contains a NUL character", field="username")
    user = user_queries.active_user(session, form.username)
    if user is None or not verify_password(form.password, user.password_hash):
        raise Unauthorized("wrong username or password", field="password")
    minutes = request.app.state.settings.auth.token_minutes
    now = request.app.state.clock.now()
    return Token(access_token=issue_token(request.app.state.auth_secret, user.username, minutes, now=now))


@router.get("/me", response_model=Me, summary="The signed-in account", responses=problems(403))
def me(caller: CurrentUser):
    return Me(username=caller.username, role=caller.role, area_code=caller.area_code, member_id=caller.member_id)

"""Accounts for every role, and who may hand them out.

An account has one role: ``admin`` (of a district, street or community: the level of its
``area_code``), ``grid_worker`` (of a grid or a community), ``dispatcher`` (the command
centre, district-wide), ``department_staff`` (bound to one department) or ``member``
(bound to one member record). Admins create, disable and re-enable accounts of the kinds
below their own (:data:`CREATES`) inside their area; dispatchers, department staff, grid
workers and members create nothing. The area check is the caller's
(``geo_api.deps.Caller.covers``); this module knows the kinds and writes.

Every change writes an ``account_log`` row (who, when — ``gridbranch_now()`` —, what,
before and after) in the same transaction as the change; the table is append-only
(migration 0013). Passwords arrive hashed (``geo_api.security``); the password policy
is :func:`password_fault`, its limits in ``AuthSettings``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers import textfields, users
from layers.codes import AREA_CODE, GRID_CODE, area_prefix, level_of
from layers.errors import Conflict, Forbidden, InvalidInput, NotFound
from layers.registrations import MEMBER_AREA_COLUMNS

ROLES = ("admin", "dispatcher", "grid_worker", "department_staff", "member")

#: The kinds of account, highest first: an admin's kind is the level of its area.
KINDS = ("district_admin", "street_admin", "community_admin", "grid_worker", "dispatcher", "department_staff", "member")

#: Which kinds of account each kind creates, disables and re-enables (inside its area).
CREATES: dict[str, frozenset[str]] = {
    "district_admin": frozenset(
        {"street_admin", "community_admin", "grid_worker", "dispatcher", "department_staff", "member"}
    ),
    "street_admin": frozenset({"community_admin", "grid_worker", "member"}),
    "community_admin": frozenset({"grid_worker", "member"}),
}

#: The account log's actor for what the command line does (``gridbranch init``, ``users``).
CLI_ACTOR = "cli"

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$")
USERNAME_MAX = 64


@dataclass(frozen=True)
class PasswordPolicy:
    """What a password must be (``AuthSettings.password_policy()``)."""

    min_length: int = 10
    min_classes: int = 3


def password_fault(password: str, username: str, policy: PasswordPolicy) -> str | None:
    """Why ``password`` may not be ``username``'s under ``policy``, or None."""
    if len(password) < policy.min_length:
        return f"至少 {policy.min_length} 个字符 (at least {policy.min_length} characters)"
    classes = sum(
        (
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        )
    )
    if classes < policy.min_classes:
        return (
            f"须含小写字母、大写字母、数字、其他字符中的至少 {policy.min_classes} 类 "
            f"(at least {policy.min_classes} of lower case, upper case, digits, other characters)"
        )
    if password.casefold() == username.casefold():
        return "不得与用户名相同 (must not be the username)"
    if textfields.text_fault(password):
        return textfields.text_fault(password)
    return None


def check_password(password: str, username: str, policy: PasswordPolicy, field: str = "password") -> str:
    fault = password_fault(password, username, policy)
    if fault:
        raise InvalidInput(f"{field}: {fault}", field=field)
    return password


def kind_of(role: str, area_code: str | None) -> str:
    """The kind of an account of ``role`` in ``area_code`` (see :data:`KINDS`)."""
    if role == "admin":
        return f"{level_of(area_code)}_admin" if area_code else "district_admin"
    return role


def may_manage(kind: str, target_kind: str) -> bool:
    """Whether an account of ``kind`` creates, disables and re-enables accounts of ``target_kind``."""
    return target_kind in CREATES.get(kind, frozenset())


def check_may_manage(kind: str, target_kind: str, field: str = "role") -> None:
    if not may_manage(kind, target_kind):
        allowed = ", ".join(k for k in KINDS if k in CREATES.get(kind, ())) or "none"
        raise Forbidden(f"a {kind} may not manage {target_kind} accounts; it manages: {allowed}", field=field)


def check_binding(
    session: Session, role: str, area_code: str | None, department: str | None, member_id: int | None
) -> tuple[str, int | None]:
    """What an account of ``role`` is bound to, checked: (its kind, the department's id).
    Admins need an existing district, street or community; grid workers an existing
    current grid or a community; department staff an existing department; members a
    member (whose existence the caller's scope check establishes). Nothing else may be
    given. :class:`InvalidInput` naming the field otherwise."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", field="role")
    needs = {
        "admin": "area_code",
        "grid_worker": "area_code",
        "department_staff": "department",
        "member": "member_id",
    }.get(role)
    for field, value in (("area_code", area_code), ("department", department), ("member_id", member_id)):
        if field == needs and value is None:
            raise InvalidInput(f"a {role} account needs {field}", field=field)
        if field != needs and value is not None:
            raise InvalidInput(f"a {role} account takes no {field}", field=field)
    department_id = None
    if role in ("admin", "grid_worker"):
        if not (AREA_CODE.match(area_code) or GRID_CODE.match(area_code)):
            raise InvalidInput("area_code must be a 12-digit area code or a 15-digit grid code", field="area_code")
        level = level_of(area_code)
        allowed = ("district", "street", "community") if role == "admin" else ("community", "grid")
        if level not in allowed:
            raise InvalidInput(
                f"a {role} account is bound to a {' or '.join(allowed)}, not a {level}", field="area_code"
            )
        exists = session.execute(
            text("SELECT 1 FROM grids WHERE code = :c AND gridbranch_live(retired_at)")
            if level == "grid"
            else text("SELECT 1 FROM admin_areas WHERE code = :c AND level = :l"),
            {"c": area_code, "l": level},
        ).first()
        if exists is None:
            raise InvalidInput(f"no {level} with code {area_code}", field="area_code")
    elif role == "department_staff":
        department_id = session.execute(text("SELECT id FROM departments WHERE code = :c"), {"c": department}).scalar()
        if department_id is None:
            raise InvalidInput(f"no department with code {department!r}", field="department")
    return kind_of(role, area_code), department_id


# -- reading ----------------------------------------------------------------------------

#: An account's columns, with where it belongs (``home``): its area for admins and grid
#: workers, its member's area for members (layers.registrations.member_area), none for the
#: district-wide dispatchers and department staff (and members of no known area): those
#: belong to the district's admins.
_ACCOUNT_SQL = f"""
    SELECT u.username, u.role, u.area_code, u.member_id, d.code AS department, u.display_name, u.active,
           CASE WHEN u.role = 'member' THEN COALESCE(ma.registered, ma.resident, ma.work_community)
                WHEN u.role IN ('admin', 'grid_worker') THEN u.area_code END AS home
    FROM users u
    LEFT JOIN departments d ON d.id = u.department_id
    LEFT JOIN LATERAL (SELECT {MEMBER_AREA_COLUMNS} FROM members m WHERE m.id = u.member_id) ma ON true
"""


def _view(row) -> dict:
    account = dict(row._mapping)
    account["kind"] = kind_of(account["role"], account["area_code"])
    return account


def account(session: Session, username: str, *, lock: bool = False) -> dict:
    """Account ``username`` (never its password hash) with its ``kind`` and ``home``
    area; :class:`NotFound` naming ``username``. With ``lock`` its row stays locked
    until the transaction ends."""
    if lock:
        session.execute(text("SELECT 1 FROM users WHERE username = :u FOR UPDATE"), {"u": username})
    row = session.execute(text(_ACCOUNT_SQL + " WHERE u.username = :u"), {"u": username}).first()
    if row is None:
        raise NotFound(f"no account {username!r} in your area", field="username")
    return _view(row)


def member_account(session: Session, member_id: int):
    """The account of member ``member_id`` (its username and whether it is active), or None."""
    return session.execute(text("SELECT username, active FROM users WHERE member_id = :m"), {"m": member_id}).first()


def accounts_within(
    session: Session,
    within: str,
    *,
    role: str | None = None,
    active: bool | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict], int]:
    """The accounts belonging to area (or grid) ``within`` — those whose home lies in it,
    and for a district also the district-wide ones — by username: a page, and how many
    there are in all."""
    where = ["(home LIKE :p" + (" OR home IS NULL)" if level_of(within) == "district" else ")")]
    params: dict = {"p": area_prefix(within) + "%", "limit": limit, "offset": offset}
    if role is not None:
        where.append("role = :role")
        params["role"] = role
    if active is not None:
        where.append("active = :active")
        params["active"] = active
    query = f"SELECT * FROM ({_ACCOUNT_SQL}) a WHERE {' AND '.join(where)}"
    total = session.execute(text(f"SELECT count(*) FROM ({query}) q"), params).scalar()
    rows = session.execute(text(query + " ORDER BY username LIMIT :limit OFFSET :offset"), params).all()
    return [_view(r) for r in rows], total


def account_log(session: Session, username: str) -> list[dict]:
    """The log of account ``username``, oldest first."""
    rows = (
        session.execute(
            text(
                "SELECT id, at, actor, username, area, action, before, after FROM account_log "
                "WHERE username = :u ORDER BY at, id"
            ),
            {"u": username},
        )
        .mappings()
        .all()
    )
    return [{**r, "at": r["at"].isoformat()} for r in rows]


# -- writing (the caller commits) -------------------------------------------------------


def _public(account: dict) -> dict:
    return {k: account[k] for k in ("role", "area_code", "department", "member_id", "display_name", "active")}


def _log(session: Session, actor: str, account: dict, action: str, before: dict | None, after: dict) -> None:
    session.execute(
        text(
            "INSERT INTO account_log (actor, username, area, action, before, after) "
            "VALUES (:actor, :username, :area, :action, CAST(:before AS jsonb), CAST(:after AS jsonb))"
        ),
        {
            "actor": actor,
            "username": account["username"],
            "area": account["home"],
            "action": action,
            "before": None if before is None else json.dumps(before, ensure_ascii=False),
            "after": json.dumps(after, ensure_ascii=False),
        },
    )


def create_account(
    session: Session,
    *,
    actor: str,
    username: str,
    password_hash: str,
    role: str,
    area_code: str | None = None,
    department: str | None = None,
    member_id: int | None = None,
    display_name: str | None = None,
    action: str = "create",
) -> dict:
    """Create account ``username`` (checked by :func:`check_binding`; the caller has
    checked that ``actor`` may); logged as ``actor``'s ``action`` (``activate`` when a
    member activates their own). :class:`Conflict` naming the field when the username
    is taken or the member has an account already."""
    if not USERNAME.match(username):
        raise InvalidInput(
            "username: 3–64 letters, digits, '.', '_' or '-', starting with a letter or digit", field="username"
        )
    if display_name is not None:
        display_name = textfields.name(display_name, "display_name")
    _, department_id = check_binding(session, role, area_code, department, member_id)
    if (
        member_id is not None
        and session.execute(text("SELECT 1 FROM users WHERE member_id = :m"), {"m": member_id}).first()
    ):
        raise Conflict(f"member {member_id} has an account already", field="member_id")
    created = session.execute(
        text(
            "INSERT INTO users (username, password_hash, role, area_code, member_id, department_id, display_name, "
            "active) VALUES (:u, :h, :r, :a, :m, :d, :n, true) ON CONFLICT (username) DO NOTHING RETURNING id"
        ),
        {
            "u": username,
            "h": password_hash,
            "r": role,
            "a": area_code,
            "m": member_id,
            "d": department_id,
            "n": display_name,
        },
    ).first()
    if created is None:
        raise Conflict(f"username {username!r} is taken", field="username")
    view = account(session, username)
    _log(session, actor, view, action, None, _public(view))
    return view


def set_account_active(session: Session, *, actor: str, username: str, active: bool) -> dict:
    """Disable (``active`` False) or re-enable account ``username``; logged as
    ``actor``'s when it changes anything. A disabled account's tokens stop working at
    once (``geo_api.deps.get_caller`` reads only active accounts)."""
    before = account(session, username, lock=True)
    if before["active"] == active:
        return before
    session.execute(text("UPDATE users SET active = :a WHERE username = :u"), {"a": active, "u": username})
    after = account(session, username)
    _log(session, actor, after, "enable" if active else "disable", {"active": before["active"]}, {"active": active})
    return after


def reset_password(
    session: Session,
    *,
    actor: str,
    username: str,
    password_hash: str,
    must_change: bool = True,
    activation_code: bool = False,
) -> dict:
    """Give account ``username`` the password hashed as ``password_hash`` (a void one and
    ``activation_code`` when a member activates anew with a code); logged as ``actor``'s
    (never the hash). With ``must_change`` the account must choose its own password at
    its next sign-in before it may do anything else. Its tokens and sessions end (the
    token epoch of migration 0015)."""
    view = account(session, username, lock=True)
    users.set_password(session, username, password_hash, must_change=must_change)
    _log(
        session,
        actor,
        view,
        "reset_password",
        None,
        {"password": "reset", **({"activation_code": "issued"} if activation_code else {})},
    )
    return view


def log_action(
    session: Session, *, actor: str, username: str, action: str, after: dict, before: dict | None = None
) -> None:
    """A row of ``account_log`` about account ``username``: a password change, an
    activation, a lock, a sign-out (the caller commits)."""
    _log(session, actor, account(session, username), action, before, after)

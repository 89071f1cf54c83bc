"""Demo accounts: one per role, scoped to the loaded district (the Jinshui demo's, or any
other a deployment holds); passwords for new accounts, checked or generated."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from geo_api.security import hash_password
from layers import accounts, users
from layers.accounts import PasswordPolicy
from layers.errors import ConfigError
from layers.models import AdminArea, Department, Event, Grid, Registration


def demo_accounts(session: Session) -> list[dict]:
    """The demo accounts with their scopes, read from the loaded data: the district's
    code and name, its first street and grid, a confirmed member, and the department
    with the most events in hand (dispatched or in progress; the first by code when none
    has any; no department account when the district has no departments)."""
    row = session.execute(
        select(AdminArea.code, AdminArea.name).where(AdminArea.level == "district").order_by(AdminArea.code)
    ).first()
    if row is None:
        raise ConfigError("no district is loaded: the demo accounts are scoped to one")
    district, district_name = row
    street = session.scalar(select(AdminArea.code).where(AdminArea.level == "street").order_by(AdminArea.code))
    grid = session.scalar(select(Grid.code).order_by(Grid.code))
    member = session.scalar(
        select(Registration.member_id).where(Registration.status == "confirmed").order_by(Registration.member_id)
    )
    department = session.execute(
        select(Department.id, Department.name)
        .outerjoin(Event, (Event.department_id == Department.id) & Event.status.in_(("dispatched", "in_progress")))
        .group_by(Department.id)
        .order_by(func.count(Event.id).desc(), Department.code)
    ).first()
    staff = (
        [
            {
                "username": "department",
                "role": "department_staff",
                "area_code": None,
                "department_id": department.id,
                "display_name": department.name,
            }
        ]
        if department
        else []
    )
    return [
        {"username": "admin", "role": "admin", "area_code": district, "display_name": f"{district_name}委组织部"},
        {"username": "street_admin", "role": "admin", "area_code": street, "display_name": "街道党工委"},
        {"username": "dispatcher", "role": "dispatcher", "area_code": None, "display_name": "区指挥中心"},
        {"username": "gridworker", "role": "grid_worker", "area_code": grid, "display_name": "网格员"},
        {"username": "member", "role": "member", "area_code": None, "member_id": member, "display_name": "党员"},
        *staff,
    ]


def ensure_demo_accounts(session: Session, password: str) -> list[dict]:
    """Create or reset the demo accounts to ``password``; the caller commits."""
    hashed = hash_password(password)
    accounts = demo_accounts(session)
    for account in accounts:
        users.upsert_user(session, password_hash=hashed, **account)
    return accounts


def generate_password(policy: PasswordPolicy) -> str:
    """A random password that passes ``policy``: 16 characters or the policy's minimum,
    from letters and digits without look-alikes (read out or copied by people) and a
    few signs, one of each class."""
    import secrets

    alphabets = ("abcdefghijkmnpqrstuvwxyz", "ABCDEFGHJKLMNPQRSTUVWXYZ", "23456789", "-_.!@#%+")
    length = max(16, policy.min_length)
    while True:
        chars = [secrets.choice(a) for a in alphabets]
        chars += [secrets.choice("".join(alphabets)) for _ in range(length - len(chars))]
        secrets.SystemRandom().shuffle(chars)
        password = "".join(chars)
        if accounts.password_fault(password, "", policy) is None:
            return password


def password_for(
    policy: PasswordPolicy, username: str, given: str | None, field: str = "password"
) -> tuple[str | None, str]:
    """(the password to show once, its Argon2id hash): ``given`` checked against
    ``policy`` (shown nothing), or a generated one."""
    if given is None:
        generated = generate_password(policy)
        return generated, hash_password(generated)
    accounts.check_password(given, username, policy, field)
    return None, hash_password(given)

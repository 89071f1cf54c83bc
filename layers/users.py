"""Accounts: lookup and upsert. Passwords arrive hashed; hashing lives in geo_api.security."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from layers.models import User


def active_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username, User.active.is_(True)))


def upsert_user(
    session: Session,
    username: str,
    password_hash: str,
    role: str,
    area_code: str | None = None,
    member_id: int | None = None,
    display_name: str | None = None,
    department_id: int | None = None,
) -> None:
    """Create the account or reset its password, role and scope (department staff: their
    department's id)."""
    values = dict(
        username=username, password_hash=password_hash, role=role, area_code=area_code,
        member_id=member_id, department_id=department_id, display_name=display_name, active=True,
    )
    stmt = insert(User).values(**values)
    stmt = stmt.on_conflict_do_update(index_elements=[User.username], set_={k: v for k, v in values.items() if k != "username"})
    session.execute(stmt)

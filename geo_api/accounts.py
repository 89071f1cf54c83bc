"""Demo accounts: one per role, scoped to the Jinshui demo district."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from geo_api.security import hash_password
from layers import users
from layers.models import AdminArea, Grid, Registration

DISTRICT = "410105000000"


def demo_accounts(session: Session) -> list[dict]:
    """The five demo accounts with their scopes, read from the loaded demo data."""
    street = session.scalar(select(AdminArea.code).where(AdminArea.level == "street").order_by(AdminArea.code))
    grid = session.scalar(select(Grid.code).order_by(Grid.code))
    member = session.scalar(
        select(Registration.member_id).where(Registration.status == "confirmed").order_by(Registration.member_id)
    )
    return [
        {"username": "admin", "role": "admin", "area_code": DISTRICT, "display_name": "金水区委组织部"},
        {"username": "street_admin", "role": "admin", "area_code": street, "display_name": "街道党工委"},
        {"username": "dispatcher", "role": "dispatcher", "area_code": None, "display_name": "区指挥中心"},
        {"username": "gridworker", "role": "grid_worker", "area_code": grid, "display_name": "网格员"},
        {"username": "member", "role": "member", "area_code": None, "member_id": member, "display_name": "党员"},
    ]


def ensure_demo_accounts(session: Session, password: str) -> list[dict]:
    """Create or reset the demo accounts to ``password``; the caller commits."""
    hashed = hash_password(password)
    accounts = demo_accounts(session)
    for account in accounts:
        users.upsert_user(session, password_hash=hashed, **account)
    return accounts

"""Integrity the database enforces itself: a registration's or event's grid version
belongs to its grid, and a member has at most one current residence.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_unique_constraint("uq_grid_versions_id_grid", "grid_versions", ["id", "grid_id"])
    for table in ("registrations", "events"):
        op.create_foreign_key(
            f"fk_{table}_grid_version_of_grid",
            table,
            "grid_versions",
            ["grid_version_id", "grid_id"],
            ["id", "grid_id"],
        )
    op.create_index(
        "uq_residences_current_member",
        "residences",
        ["member_id"],
        unique=True,
        postgresql_where=sa.text("ended_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("uq_residences_current_member", "residences")
    for table in ("registrations", "events"):
        op.drop_constraint(f"fk_{table}_grid_version_of_grid", table)
    op.drop_constraint("uq_grid_versions_id_grid", "grid_versions")

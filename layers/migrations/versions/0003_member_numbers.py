"""Members carry the organisation department's member number (党员编号), the key that
imports match on.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("members", sa.Column("number", sa.String(32)))
    op.create_unique_constraint("uq_members_number", "members", ["number"])


def downgrade() -> None:
    op.drop_constraint("uq_members_number", "members")
    op.drop_column("members", "number")

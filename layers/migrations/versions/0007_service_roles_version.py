"""Service roles bump the ``members`` data version: the active role list decides which
roles a grid or area misses (grids tiles, the coverage analysis, registration
statistics), and those caches key on that version (migration 0002 bumps it on writes to
``members``, ``residences`` and ``registrations`` only).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TRIGGER bump_members_on_service_roles AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
        "ON service_roles FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version('members')"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS bump_members_on_service_roles ON service_roles")

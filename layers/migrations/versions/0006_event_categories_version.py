"""Event categories bump the ``events`` data version: a category's name, time limit or
warning share shows in the events tiles, whose cache keys on that version (migration
0002 bumps it on writes to ``events`` only).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TRIGGER bump_events_on_event_categories AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
        "ON event_categories FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version('events')"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS bump_events_on_event_categories ON event_categories")

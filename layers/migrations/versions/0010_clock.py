"""One clock for the database: ``gridbranch_now()`` answers the transaction's
``gridbranch.now`` setting when it is set (an engine bound to a clock other than the wall
clock sets it: layers.clock) and ``now()`` otherwise; the columns that default to the
present default to it, so what a write records follows the same clock as the service.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

#: The columns that record when a row was written.
COLUMNS = (
    ("grids", "created_at"),
    ("grid_versions", "valid_from"),
    ("branches", "created_at"),
    ("branch_grids", "since"),
    ("residences", "recorded_at"),
    ("registrations", "created_at"),
    ("members", "created_at"),
    ("events", "reported_at"),
    ("event_log", "at"),
    ("upkeep_log", "at"),
)


def upgrade() -> None:
    # STABLE like now(): one value per statement; NULLIF because a custom setting once
    # set in a session reads '' after its transaction ends
    op.execute(
        """
        CREATE FUNCTION gridbranch_now() RETURNS timestamptz
        LANGUAGE sql STABLE PARALLEL SAFE AS
        $$ SELECT COALESCE(NULLIF(current_setting('gridbranch.now', true), '')::timestamptz, now()) $$
        """
    )
    for table, column in COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT gridbranch_now()")


def downgrade() -> None:
    for table, column in COLUMNS:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET DEFAULT now()")
    op.execute("DROP FUNCTION gridbranch_now()")

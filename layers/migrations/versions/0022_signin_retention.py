"""Sign-in records kept for the audit's retention, not for ever: ``signin_guard`` gains
the instant of a name's last failure, so that the retention purge (``gridbranch audit
purge``) can forget guard rows of names nobody has failed on for that long — a spray of
made-up usernames would otherwise leave one row per name — along with ``signin_log``
rows older than it.

Revision ID: 0022
Revises: 0016
Create Date: 2026-12-04
"""

from alembic import op

revision = "0022"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE signin_guard ADD COLUMN last_failed_at timestamptz")
    # rows counting failures from before this column: as if they failed now, so that a
    # purge right after the upgrade keeps their streaks
    op.execute(
        "UPDATE signin_guard SET last_failed_at = gridbranch_now() WHERE failures > 0 OR locked_until IS NOT NULL"
    )
    op.execute("CREATE INDEX ix_signin_log_at ON signin_log (at)")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_signin_log_at")
    op.execute("ALTER TABLE signin_guard DROP COLUMN IF EXISTS last_failed_at")

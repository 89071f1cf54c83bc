"""The upkeep log: who changed a grid's worker or a branch, when, and from what to what
(layers.branches). Append-only, as the event log is: a row once written is never updated
or deleted.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE upkeep_log (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT now(),
            actor text NOT NULL,
            subject text NOT NULL CHECK (subject IN ('grid', 'branch')),
            code text NOT NULL,
            area text NOT NULL,
            action text NOT NULL CHECK (action IN ('worker', 'create', 'update', 'dissolve', 'restore')),
            before jsonb,
            after jsonb NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX ix_upkeep_log_area ON upkeep_log (area text_pattern_ops, at DESC)")
    op.execute(
        """
        CREATE FUNCTION upkeep_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'upkeep_log is append-only: % refused', TG_OP;
        END $$
        """
    )
    op.execute(
        "CREATE TRIGGER upkeep_log_append_only BEFORE UPDATE OR DELETE ON upkeep_log "
        "FOR EACH ROW EXECUTE FUNCTION upkeep_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER upkeep_log_no_truncate BEFORE TRUNCATE ON upkeep_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION upkeep_log_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS upkeep_log")
    op.execute("DROP FUNCTION IF EXISTS upkeep_log_append_only()")

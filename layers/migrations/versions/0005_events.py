"""Events: the coordinates as sent, rejection/deferral reasons, the assisting member, the
warning and handling times, the routing overrides (category × street → department), the
working calendar (holidays and make-up working days, 调休), each category's warning share,
the lifecycle's timestamp rules as CHECKs, and the indexes the event queries use
(nearest-neighbour on geography, the log by event and time).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TERMINAL = "('closed', 'rejected', 'duplicate')"
OPEN = "('reported', 'registered', 'dispatched', 'in_progress', 'handled', 'returned', 'deferred')"

CHECKS = {
    "ck_events_dispatched_after_report": "dispatched_at IS NULL OR dispatched_at >= reported_at",
    "ck_events_closed_after_report": "closed_at IS NULL OR closed_at >= reported_at",
    "ck_events_closed_after_dispatch": "closed_at IS NULL OR dispatched_at IS NULL OR closed_at >= dispatched_at",
    "ck_events_handled_after_report": "handled_at IS NULL OR handled_at >= reported_at",
    "ck_events_due": "(dispatched_at IS NULL) = (due_at IS NULL) AND (due_at IS NULL OR due_at >= dispatched_at)",
    "ck_events_warn": "warn_at IS NULL OR (dispatched_at IS NOT NULL AND warn_at BETWEEN dispatched_at AND due_at)",
    "ck_events_closed_status": f"(closed_at IS NOT NULL) = (status IN {TERMINAL})",
    "ck_events_duplicate": "(status = 'duplicate') = (duplicate_of IS NOT NULL) AND duplicate_of IS DISTINCT FROM id",
    "ck_events_version": "version >= 1",
    "ck_events_return_count": "return_count >= 0",
    "ck_events_photos": "jsonb_typeof(photos) = 'array'",
}


def upgrade() -> None:
    op.add_column("events", sa.Column("source_x", sa.Float))
    op.add_column("events", sa.Column("source_y", sa.Float))
    op.add_column("events", sa.Column("reporter_contact", sa.Text))
    op.add_column("events", sa.Column("reason", sa.Text))
    op.add_column("events", sa.Column("member_id", sa.Integer, sa.ForeignKey("members.id", name="fk_events_member")))
    op.add_column("events", sa.Column("warn_at", sa.DateTime(timezone=True)))
    op.add_column("events", sa.Column("handled_at", sa.DateTime(timezone=True)))
    for name, sql in CHECKS.items():
        op.create_check_constraint(name, "events", sql)

    op.add_column("event_categories", sa.Column("warn_share", sa.Numeric(4, 3)))
    op.create_check_constraint(
        "ck_event_categories_warn_share",
        "event_categories",
        "warn_share IS NULL OR (warn_share > 0 AND warn_share < 1)",
    )

    op.create_table(
        "event_routes",
        sa.Column(
            "category_code", sa.String(32), sa.ForeignKey("event_categories.code", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "street_code", sa.String(12), sa.ForeignKey("admin_areas.code", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("department_id", sa.Integer, sa.ForeignKey("departments.id"), nullable=False),
    )

    op.create_table(
        "work_calendar_days",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("working", sa.Boolean, nullable=False),
        sa.Column("note", sa.Text),
    )

    op.drop_index("ix_event_log_event_id", "event_log")
    op.create_index("ix_event_log_event_at", "event_log", ["event_id", "at"])
    op.create_index("ix_events_reported_at", "events", ["reported_at"])
    op.create_index("ix_events_member", "events", ["member_id"], postgresql_where=sa.text("member_id IS NOT NULL"))
    op.execute(f"CREATE INDEX ix_events_geog_open ON events USING gist ((geom::geography)) WHERE status IN {OPEN}")
    op.execute(
        "CREATE INDEX ix_residences_geog_current ON residences USING gist ((geom::geography)) WHERE ended_at IS NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_residences_geog_current", "residences")
    op.drop_index("ix_events_geog_open", "events")
    op.drop_index("ix_events_member", "events")
    op.drop_index("ix_events_reported_at", "events")
    op.drop_index("ix_event_log_event_at", "event_log")
    op.create_index("ix_event_log_event_id", "event_log", ["event_id"])
    op.drop_table("work_calendar_days")
    op.drop_table("event_routes")
    op.drop_constraint("ck_event_categories_warn_share", "event_categories")
    op.drop_column("event_categories", "warn_share")
    for name in CHECKS:
        op.drop_constraint(name, "events")
    for column in ("handled_at", "warn_at", "member_id", "reason", "reporter_contact", "source_y", "source_x"):
        op.drop_column("events", column)

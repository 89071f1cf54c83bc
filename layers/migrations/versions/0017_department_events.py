"""Departments handle their own events: every entry of an event's track names the
department the event was with when it was written (``event_log.department_id``: for a
dispatch, the department it was dispatched to; for a start, handle or return, the
department then holding it), and a handling entry keeps the photos of its feedback
(``event_log.photos``, URLs as in reports).

Which events a department's staff see (every event dispatched to it, now or before),
its own send-backs (退回, not rework) and the evaluation per department are read from
these columns (layers.events, layers.events_eval).

Existing tracks are filled in from the events: the entries from an event's first
dispatch on name its current department (the department a dispatch's note names, where
it names one). The log stays append-only: its trigger is disabled for this one update.

Revision ID: 0017
Revises: 0013
Create Date: 2026-12-03
"""

from alembic import op

revision = "0017"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE event_log ADD COLUMN department_id integer REFERENCES departments (id)")
    op.execute("ALTER TABLE event_log ADD COLUMN photos jsonb")
    op.execute("ALTER TABLE event_log DISABLE TRIGGER event_log_append_only")
    op.execute(
        """
        UPDATE event_log l
        SET department_id = COALESCE(
            (SELECT d.id FROM departments d WHERE l.action = 'dispatch' AND l.note = '派遣至' || d.name),
            e.department_id)
        FROM events e
        WHERE e.id = l.event_id AND e.department_id IS NOT NULL
          AND l.at >= (SELECT min(f.at) FROM event_log f WHERE f.event_id = e.id AND f.action = 'dispatch')
        """
    )
    op.execute("ALTER TABLE event_log ENABLE TRIGGER event_log_append_only")
    # a department's events: those with a dispatch to it in their track
    op.execute("CREATE INDEX ix_event_log_department_dispatch ON event_log (department_id, event_id) "
               "WHERE action = 'dispatch'")


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_event_log_department_dispatch")
    op.execute("ALTER TABLE event_log DROP COLUMN photos")
    op.execute("ALTER TABLE event_log DROP COLUMN department_id")

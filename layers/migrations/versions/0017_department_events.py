"""Departments handle their own events: every entry of an event's track names the
department the event was with when it was written (``event_log.department_id``: for a
dispatch, the department it was dispatched to; for a start, handle or return, the
department then holding it), and a handling entry keeps the photos of its feedback
(``event_log.photos``, URLs as in reports).

Which events a department's staff see (every event dispatched to it, now or before),
its own send-backs (退回, not rework) and the evaluation per department are read from
these columns (layers.events, layers.events_eval).

Existing tracks are filled in: each entry from an event's first dispatch on names the
department of the last dispatch before it — the one the dispatch's note names (派遣至…),
else the event's current department. The log stays append-only: its trigger is disabled
for this one update.

Revision ID: 0017
Revises: 0020
Create Date: 2026-12-03
"""

from alembic import op

revision = "0017"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE event_log ADD COLUMN department_id integer REFERENCES departments (id)")
    op.execute("ALTER TABLE event_log ADD COLUMN photos jsonb")
    op.execute("ALTER TABLE event_log DISABLE TRIGGER event_log_append_only")
    # each entry: the department of the last dispatch at or before it — the one its note
    # names (派遣至…), else the event's current one
    op.execute(
        """
        UPDATE event_log l SET department_id = x.department_id
        FROM (
            SELECT l.id, (SELECT COALESCE(nd.id, e.department_id)
                          FROM event_log p LEFT JOIN departments nd ON p.note = '派遣至' || nd.name
                          WHERE p.event_id = l.event_id AND p.action = 'dispatch' AND (p.at, p.id) <= (l.at, l.id)
                          ORDER BY p.at DESC, p.id DESC LIMIT 1) AS department_id
            FROM event_log l JOIN events e ON e.id = l.event_id
        ) x
        WHERE x.id = l.id AND x.department_id IS NOT NULL
        """
    )
    op.execute("ALTER TABLE event_log ENABLE TRIGGER event_log_append_only")
    # a department's events: those with a dispatch to it in their track
    op.execute(
        "CREATE INDEX ix_event_log_department_dispatch ON event_log (department_id, event_id) WHERE action = 'dispatch'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_event_log_department_dispatch")
    op.execute("ALTER TABLE event_log DROP COLUMN photos")
    op.execute("ALTER TABLE event_log DROP COLUMN department_id")

"""Routing probes: which events' member suggestions each account looked at, and when
(layers.events.count_routing_probe). Suggestions name members near a point the caller
chooses; counting the distinct events an account asks about per hour bounds how many
points it can probe. Kept in the database so that the bound holds across worker
processes and restarts; rows older than an hour are deleted as the account asks again.

The one-active-registration-per-member constraint this issue also asks for exists
already (``uq_registrations_active_member``, migration 0001).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE routing_probes (
            username text NOT NULL,
            event_id integer NOT NULL REFERENCES events (id) ON DELETE CASCADE,
            at timestamptz NOT NULL DEFAULT gridbranch_now(),
            PRIMARY KEY (username, event_id)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS routing_probes")

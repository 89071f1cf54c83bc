"""Drop the residences' geography index: it served member suggestions by the distance
of each residence to an event, which since the probe's fixes (issue 18) go by the band of the member's grid
(layers.events.routing._SUGGEST_SQL); no query reads it any more, and every residence a roster
import or a registration writes paid for it (a GiST entry on a geography computed per
row).

Revision ID: 0020
Revises: 0013
Create Date: 2026-12-03
"""

from alembic import op

revision = "0020"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_residences_geog_current")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX ix_residences_geog_current ON residences USING gist ((geom::geography)) WHERE ended_at IS NULL"
    )

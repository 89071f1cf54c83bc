"""A data version of its own for residences: members' residences change seldom (a move,
a correction), their registrations often (submitted, confirmed, rejected), and the
residents per grid and area — a point-in-polygon pass over every current residence — need
recounting only for the former. Writes to ``residences`` keep bumping ``members`` too
(migration 0002), so everything keyed on ``members`` stays as it was.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("INSERT INTO data_versions (layer, version) VALUES ('residences', nextval('data_version_seq'))")
    op.execute(
        "CREATE TRIGGER bump_residences_on_residences AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
        "ON residences FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version('residences')"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS bump_residences_on_residences ON residences")
    op.execute("DELETE FROM data_versions WHERE layer = 'residences'")

"""Per-layer data versions, bumped in the same transaction as every write, so caches
(the in-memory locate index, tiles) know exactly when a layer changed. Versions are
drawn from a sequence, which rollbacks do not rewind: a version number, once seen,
always means the same content.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# layer → tables whose writes change it
LAYERS = {
    "areas": ["admin_areas"],
    "grids": ["grids", "grid_versions", "branches", "branch_grids"],
    "branches": ["branches", "branch_grids"],
    "members": ["members", "residences", "registrations"],
    "events": ["events"],
}


def upgrade() -> None:
    op.execute("CREATE SEQUENCE data_version_seq")
    table = op.create_table(
        "data_versions",
        sa.Column("layer", sa.String(32), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )
    op.bulk_insert(table, [{"layer": layer} for layer in LAYERS])
    op.execute(
        """
        CREATE FUNCTION bump_data_version() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE data_versions SET version = nextval('data_version_seq'), changed_at = now() WHERE layer = TG_ARGV[0];
            RETURN NULL;
        END $$;
        """
    )
    for layer, tables in LAYERS.items():
        for t in tables:
            op.execute(
                f"CREATE TRIGGER bump_{layer}_on_{t} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {t} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version('{layer}')"
            )


def downgrade() -> None:
    for layer, tables in LAYERS.items():
        for t in tables:
            op.execute(f"DROP TRIGGER IF EXISTS bump_{layer}_on_{t} ON {t}")
    op.execute("DROP FUNCTION IF EXISTS bump_data_version()")
    op.drop_table("data_versions")
    op.execute("DROP SEQUENCE IF EXISTS data_version_seq")

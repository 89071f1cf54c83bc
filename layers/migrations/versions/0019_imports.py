"""Imports through the web map (数据导入): one row per uploaded file — who uploaded it,
what kind of data it holds and how to read it, the dry run's state, progress and report,
and the commit's result (layers.imports). The file itself lives on disk under the imports
directory (mode 0600) only until it is committed or expires; the row outlives it, so a
second commit answers what the first one did.

Revision ID: 0019
Revises: 0017
Create Date: 2026-12-03
"""

from alembic import op

revision = "0019"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE imports (
            id text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{32}$'),
            username text NOT NULL,
            area_code text NOT NULL,
            kind text NOT NULL CHECK (kind IN ('areas', 'grids', 'members', 'branches', 'departments',
                                               'categories', 'registrations')),
            options jsonb NOT NULL DEFAULT '{}',
            filename text NOT NULL,
            size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
            status text NOT NULL CHECK (status IN ('checking', 'ready', 'failed', 'committed', 'expired')),
            phase text,
            progress real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
            report jsonb,
            error jsonb,
            result jsonb,
            created_at timestamptz NOT NULL DEFAULT gridbranch_now(),
            expires_at timestamptz NOT NULL,
            committed_at timestamptz
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_imports_expires ON imports (expires_at) WHERE status IN ('checking', 'ready', 'failed')"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS imports")

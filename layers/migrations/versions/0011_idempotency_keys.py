"""Idempotency keys: the answer a write request gave, kept under the key its client sent
(``Idempotency-Key``), so that a retry gets the same answer and writes nothing
(layers.idempotency). Written in the same transaction as the write it answers.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE idempotency_keys (
            owner text NOT NULL,          -- the caller's account; '' for anonymous callers
            key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
            fingerprint text NOT NULL,    -- of the route and the request body (sha256, hex)
            status smallint,              -- the answer, NULL only inside the writing transaction
            media_type text,
            body bytea,
            created_at timestamptz NOT NULL DEFAULT gridbranch_now(),
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (owner, key)
        )
        """
    )
    op.execute("CREATE INDEX ix_idempotency_keys_expires_at ON idempotency_keys (expires_at)")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS idempotency_keys")

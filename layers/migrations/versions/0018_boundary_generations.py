"""Boundary generations (MapIt's): every committed grids import is a generation that
takes effect at an instant, now or later. Its new and redrawn grid versions start at
that instant (``grid_versions.generation_id``), the versions they replace and the grids
it retires end there.

What is in force is decided by the clock alone, with no write at the effective instant:

- ``gridbranch_in_force(valid_from, valid_to[, at])`` — a version is in force over
  [valid_from, valid_to) — and ``gridbranch_live(retired_at[, at])`` — a grid lives until
  it is retired — are the one definition of "current" the queries use (``at`` defaults to
  ``gridbranch_now()``); plain SQL, so the planner inlines them;
- ``layer_versions`` is what caches key on: the write counters of ``data_versions``, the
  ``grids`` layer's plus the number of generations in force. A generation's commit bumps
  the counter (a write) and its effective instant adds one more (the clock), so the
  ``grids`` version — and every ETag and index built from it — changes at that instant
  without a restart, strictly increasing while the clock goes forward. Writers keep
  bumping ``data_versions`` (migration 0002).

Revision ID: 0018
Revises: 0015
Create Date: 2026-12-03
"""

from alembic import op

revision = "0018"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE boundary_generations (
            id serial PRIMARY KEY,
            kind text NOT NULL DEFAULT 'grids' CHECK (kind IN ('grids')),
            effective_at timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT gridbranch_now(),
            source text,
            retire_missing boolean NOT NULL DEFAULT false,
            counts jsonb NOT NULL DEFAULT '{}'::jsonb
        )
        """
    )
    op.execute("CREATE INDEX ix_boundary_generations_effective ON boundary_generations (effective_at)")
    op.execute("ALTER TABLE grid_versions ADD COLUMN generation_id integer REFERENCES boundary_generations (id)")
    op.execute("CREATE INDEX ix_grid_versions_generation ON grid_versions (generation_id)")
    op.execute("ALTER TABLE grids ADD COLUMN retired_generation_id integer REFERENCES boundary_generations (id)")
    op.execute(
        """
        CREATE FUNCTION gridbranch_in_force(valid_from timestamptz, valid_to timestamptz,
                                            at timestamptz DEFAULT gridbranch_now())
        RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS
        $$ SELECT $1 <= $3 AND ($2 IS NULL OR $2 > $3) $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION gridbranch_live(retired_at timestamptz, at timestamptz DEFAULT gridbranch_now())
        RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS
        $$ SELECT $1 IS NULL OR $1 > $2 $$
        """
    )
    op.execute(
        """
        CREATE VIEW layer_versions AS
        SELECT d.layer,
               d.version + CASE WHEN d.layer = 'grids' THEN
                   (SELECT count(*) FROM boundary_generations b WHERE b.effective_at <= gridbranch_now())
                   ELSE 0 END AS version,
               d.changed_at
        FROM data_versions d
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW layer_versions")
    op.execute("DROP FUNCTION gridbranch_live(timestamptz, timestamptz)")
    op.execute("DROP FUNCTION gridbranch_in_force(timestamptz, timestamptz, timestamptz)")
    op.execute("ALTER TABLE grids DROP COLUMN retired_generation_id")
    op.execute("ALTER TABLE grid_versions DROP COLUMN generation_id")
    op.execute("DROP TABLE boundary_generations")

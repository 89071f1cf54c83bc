"""QGIS-ready views in a schema of their own (``gis``), and nothing personal in it.

A GIS engineer opening the database in QGIS finds ``grid_versions`` without a code or a
name and ``branches`` beside a secretary's phone. The views of ``gis`` join each geometry
to its codes and names, have typed geometry columns (QGIS and ``geometry_columns`` read
the type and SRID) and an integer ``id`` for QGIS's feature key. They carry no member, no
phone, no residence, no reporter, no description: a read-only role given SELECT on this
schema alone (``gridbranch db grant-reader``) reads boundaries, branches and events but
none of the personal data. An event's point is its own only where its category is a
public space, as for anonymous Open311 callers; other events give their grid.

"Current" is at the database clock (``gridbranch_now()``), as for the service.

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-04
"""

from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None

VIEWS = {
    "areas": """
        SELECT a.id, a.code, a.name, a.level, p.code AS parent_code, p.name AS parent_name,
               a.geom::geometry(MultiPolygon, 4326) AS geom
        FROM admin_areas a LEFT JOIN admin_areas p ON p.id = a.parent_id""",
    "grid_versions": """
        SELECT v.id, g.code, g.name, v.version, v.valid_from, v.valid_to, v.generation_id,
               c.code AS community_code, v.geom::geometry(MultiPolygon, 4326) AS geom
        FROM grid_versions v JOIN grids g ON g.id = v.grid_id JOIN admin_areas c ON c.id = g.community_id""",
    "grids": """
        SELECT g.id, g.code, g.name, c.code AS community_code, c.name AS community_name,
               s.code AS street_code, s.name AS street_name, v.version, v.valid_from,
               EXISTS (SELECT 1 FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id
                       WHERE bg.grid_id = g.id AND b.active) AS has_branch,
               v.geom::geometry(MultiPolygon, 4326) AS geom
        FROM grids g
        JOIN grid_versions v ON v.grid_id = g.id AND gridbranch_in_force(v.valid_from, v.valid_to)
        JOIN admin_areas c ON c.id = g.community_id
        LEFT JOIN admin_areas s ON s.id = c.parent_id
        WHERE gridbranch_live(g.retired_at)""",
    "branches": """
        SELECT b.id, b.code, b.name, b.kind, b.active, c.code AS community_code, c.name AS community_name,
               (SELECT count(*) FROM branch_grids bg WHERE bg.branch_id = b.id)::integer AS grids,
               b.site::geometry(Point, 4326) AS geom
        FROM branches b LEFT JOIN admin_areas c ON c.id = b.community_id""",
    "events": """
        SELECT e.id, e.category_code, k.name AS category_name, e.channel, e.status, e.reported_at,
               e.due_at, e.closed_at, g.code AS grid_code, d.name AS department_name,
               CASE WHEN k.public_space THEN e.geom END::geometry(Point, 4326) AS geom
        FROM events e
        JOIN event_categories k ON k.code = e.category_code
        LEFT JOIN grids g ON g.id = e.grid_id
        LEFT JOIN departments d ON d.id = COALESCE(e.department_id, k.department_id)""",
}


def upgrade() -> None:
    op.execute("CREATE SCHEMA gis")
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW gis.{name} AS {body}")
        op.execute(f"COMMENT ON VIEW gis.{name} IS 'gridbranch: no personal data (migration 0023)'")


def downgrade() -> None:
    op.execute("DROP SCHEMA gis CASCADE")

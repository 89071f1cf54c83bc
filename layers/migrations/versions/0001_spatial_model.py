"""The spatial model: areas, versioned grids, branches, members, residences,
registrations, departments, event categories, events and their append-only log, users.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

SRID = 4326
DEFAULT_ROLES = [
    ("fazhi", "法治建设宣传员"),
    ("minyi", "社情民意联络员"),
    ("wenming", "文明新风倡导员"),
    ("pingan", "平安创建示范员"),
    ("jiandu", "民主管理监督员"),
    ("fuwu", "党员服务协理员"),
]


def ts(name, nullable=True, default_now=False):
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.func.now() if default_now else None,
    )


def geom(kind, nullable=False, name="geom"):
    return sa.Column(name, Geometry(kind, srid=SRID, spatial_index=False), nullable=nullable)


def valid_geom(table, column="geom"):
    return sa.CheckConstraint(f"{column} IS NULL OR ST_IsValid({column})", name=f"ck_{table}_{column}_valid")


def one_of(table, column, values):
    listed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({listed})", name=f"ck_{table}_{column}")


def gist(table, column="geom"):
    op.create_index(f"ix_{table}_{column}", table, [column], postgresql_using="gist")


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis")

    op.create_table(
        "admin_areas",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(12), nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("admin_areas.id"), index=True),
        geom("MULTIPOLYGON"),
        sa.CheckConstraint("code ~ '^[0-9]{12}$'", name="ck_admin_areas_code"),
        one_of("admin_areas", "level", ["district", "street", "community"]),
        sa.CheckConstraint("(level = 'district') = (parent_id IS NULL)", name="ck_admin_areas_parent"),
        valid_geom("admin_areas"),
    )
    gist("admin_areas")

    op.create_table(
        "grids",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(15), nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("community_id", sa.Integer, sa.ForeignKey("admin_areas.id"), nullable=False, index=True),
        sa.Column("worker_name", sa.Text),
        sa.Column("worker_phone", sa.String(32)),
        ts("created_at", nullable=False, default_now=True),
        ts("retired_at"),
        sa.CheckConstraint("code ~ '^[0-9]{15}$'", name="ck_grids_code"),
    )

    op.create_table(
        "grid_versions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("grid_id", sa.Integer, sa.ForeignKey("grids.id"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        geom("MULTIPOLYGON"),
        ts("valid_from", nullable=False, default_now=True),
        ts("valid_to"),
        sa.UniqueConstraint("grid_id", "version", name="uq_grid_versions_grid_version"),
        sa.CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name="ck_grid_versions_period"),
        sa.CheckConstraint("version >= 1", name="ck_grid_versions_version"),
        valid_geom("grid_versions"),
    )
    gist("grid_versions")
    op.create_index(
        "uq_grid_versions_current",
        "grid_versions",
        ["grid_id"],
        unique=True,
        postgresql_where=sa.text("valid_to IS NULL"),
    )

    op.create_table(
        "branches",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("secretary_name", sa.Text),
        sa.Column("secretary_phone", sa.String(32)),
        geom("POINT", nullable=True, name="site"),
        sa.Column("community_id", sa.Integer, sa.ForeignKey("admin_areas.id"), index=True),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        ts("created_at", nullable=False, default_now=True),
        one_of("branches", "kind", ["grid", "community", "work_unit"]),
        valid_geom("branches", "site"),
    )
    gist("branches", "site")

    op.create_table(
        "branch_grids",
        sa.Column("branch_id", sa.Integer, sa.ForeignKey("branches.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("grid_id", sa.Integer, sa.ForeignKey("grids.id", ondelete="CASCADE"), primary_key=True, index=True),
        ts("since", nullable=False, default_now=True),
    )

    roles = op.create_table(
        "service_roles",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    )
    op.bulk_insert(roles, [{"code": c, "name": n, "position": i + 1} for i, (c, n) in enumerate(DEFAULT_ROLES)])

    op.create_table(
        "members",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("phone", sa.String(32)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("work_branch_id", sa.Integer, sa.ForeignKey("branches.id"), index=True),
        ts("created_at", nullable=False, default_now=True),
        one_of("members", "status", ["in_service", "floating", "retired", "community"]),
    )

    op.create_table(
        "residences",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("member_id", sa.Integer, sa.ForeignKey("members.id"), nullable=False, index=True),
        geom("POINT"),
        sa.Column("source_crs", sa.String(32), nullable=False),
        sa.Column("source_x", sa.Float, nullable=False),
        sa.Column("source_y", sa.Float, nullable=False),
        sa.Column("accuracy_m", sa.Float),
        ts("recorded_at", nullable=False, default_now=True),
        ts("ended_at"),
        sa.CheckConstraint("accuracy_m IS NULL OR accuracy_m >= 0", name="ck_residences_accuracy"),
        valid_geom("residences"),
    )
    gist("residences")

    op.create_table(
        "registrations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("member_id", sa.Integer, sa.ForeignKey("members.id"), nullable=False, index=True),
        sa.Column("residence_id", sa.Integer, sa.ForeignKey("residences.id"), nullable=False),
        sa.Column("grid_id", sa.Integer, sa.ForeignKey("grids.id"), nullable=False, index=True),
        sa.Column("grid_version_id", sa.Integer, sa.ForeignKey("grid_versions.id"), nullable=False),
        sa.Column("branch_id", sa.Integer, sa.ForeignKey("branches.id"), index=True),
        sa.Column("role_code", sa.String(32), sa.ForeignKey("service_roles.code")),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        ts("created_at", nullable=False, default_now=True),
        ts("decided_at"),
        sa.Column("decided_by", sa.Text),
        ts("ended_at"),
        one_of("registrations", "status", ["pending", "confirmed", "rejected", "ended"]),
        sa.CheckConstraint("status <> 'rejected' OR reason IS NOT NULL", name="ck_registrations_reason"),
    )
    op.create_index(
        "uq_registrations_active_member",
        "registrations",
        ["member_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('pending', 'confirmed')"),
    )

    op.create_table(
        "departments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("code", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
    )

    op.create_table(
        "event_categories",
        sa.Column("code", sa.String(32), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("department_id", sa.Integer, sa.ForeignKey("departments.id"), nullable=False),
        sa.Column("time_limit_hours", sa.Numeric(8, 2), nullable=False),
        sa.Column("role_code", sa.String(32), sa.ForeignKey("service_roles.code")),
        sa.CheckConstraint("time_limit_hours > 0", name="ck_event_categories_limit"),
    )

    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        geom("POINT"),
        sa.Column("source_crs", sa.String(32), nullable=False),
        sa.Column("category_code", sa.String(32), sa.ForeignKey("event_categories.code"), nullable=False, index=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("photos", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("reporter", sa.Text),
        sa.Column("grid_id", sa.Integer, sa.ForeignKey("grids.id"), index=True),
        sa.Column("grid_version_id", sa.Integer, sa.ForeignKey("grid_versions.id")),
        sa.Column("department_id", sa.Integer, sa.ForeignKey("departments.id"), index=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("assignee", sa.Text),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("return_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("duplicate_of", sa.Integer, sa.ForeignKey("events.id")),
        ts("reported_at", nullable=False, default_now=True),
        ts("dispatched_at"),
        ts("due_at"),
        ts("closed_at"),
        one_of("events", "channel", ["grid_worker", "member", "public", "hotline", "video"]),
        one_of(
            "events",
            "status",
            [
                "reported",
                "registered",
                "dispatched",
                "in_progress",
                "handled",
                "closed",
                "rejected",
                "duplicate",
                "deferred",
                "returned",
            ],
        ),
        valid_geom("events"),
    )
    gist("events")

    op.create_table(
        "event_log",
        sa.Column("id", sa.BigInteger, primary_key=True),
        sa.Column("event_id", sa.Integer, sa.ForeignKey("events.id"), nullable=False, index=True),
        ts("at", nullable=False, default_now=True),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text),
    )
    op.execute(
        """
        CREATE FUNCTION event_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'event_log is append-only: % refused', TG_OP;
        END $$;
        """
    )
    op.execute(
        "CREATE TRIGGER event_log_append_only BEFORE UPDATE OR DELETE ON event_log "
        "FOR EACH ROW EXECUTE FUNCTION event_log_append_only()"
    )
    op.execute(
        "CREATE TRIGGER event_log_no_truncate BEFORE TRUNCATE ON event_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION event_log_append_only()"
    )

    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("area_code", sa.String(15)),
        sa.Column("member_id", sa.Integer, sa.ForeignKey("members.id")),
        sa.Column("display_name", sa.Text),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        one_of("users", "role", ["admin", "dispatcher", "grid_worker", "member"]),
        sa.CheckConstraint("role <> 'member' OR member_id IS NOT NULL", name="ck_users_member"),
        sa.CheckConstraint("role <> 'admin' OR area_code IS NOT NULL", name="ck_users_admin_area"),
    )


def downgrade() -> None:
    for table in (
        "users",
        "event_log",
        "events",
        "event_categories",
        "departments",
        "registrations",
        "residences",
        "members",
        "service_roles",
        "branch_grids",
        "branches",
        "grid_versions",
        "grids",
        "admin_areas",
    ):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS event_log_append_only()")

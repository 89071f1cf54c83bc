"""The spatial model: SQLAlchemy 2 + GeoAlchemy2 mappings of the PostGIS tables.

Storage SRID is 4326 (WGS84 lon/lat) for every geometry. The schema itself is created
only by the Alembic migrations in ``layers/migrations``; these classes mirror it.
"""

from __future__ import annotations

from datetime import date, datetime

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

SRID = 4326

AREA_LEVELS = ("district", "street", "community")
BRANCH_KINDS = ("grid", "community", "work_unit")
MEMBER_STATUSES = ("in_service", "floating", "retired", "community")
REGISTRATION_STATUSES = ("pending", "confirmed", "rejected", "ended")
USER_ROLES = ("admin", "dispatcher", "grid_worker", "member")
EVENT_CHANNELS = ("grid_worker", "member", "public", "hotline", "video")
EVENT_STATUSES = (
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
)


def multipolygon(nullable: bool = False):
    return mapped_column(Geometry("MULTIPOLYGON", srid=SRID, spatial_index=False), nullable=nullable)


def point(nullable: bool = False):
    return mapped_column(Geometry("POINT", srid=SRID, spatial_index=False), nullable=nullable)


def created_at():
    # the service's clock (layers.clock), not PostgreSQL's own now(): migration 0010
    return mapped_column(DateTime(timezone=True), server_default=func.gridbranch_now(), nullable=False)


class Base(DeclarativeBase):
    pass


class AdminArea(Base):
    """District (区), street or town (街道/镇) or community (社区) with its 12-digit code."""

    __tablename__ = "admin_areas"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    name: Mapped[str] = mapped_column(Text)
    level: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("admin_areas.id"))
    geom = multipolygon()

    parent: Mapped[AdminArea | None] = relationship(remote_side=[id])


class Grid(Base):
    """A grid (网格): the stable identity; its boundary lives in versions."""

    __tablename__ = "grids"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(15), unique=True)
    name: Mapped[str] = mapped_column(Text)
    community_id: Mapped[int] = mapped_column(ForeignKey("admin_areas.id"))
    worker_name: Mapped[str | None] = mapped_column(Text)
    worker_phone: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = created_at()
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    community: Mapped[AdminArea] = relationship()


class GridVersion(Base):
    """One drawing of a grid's boundary, valid over [valid_from, valid_to)."""

    __tablename__ = "grid_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id"))
    version: Mapped[int] = mapped_column(Integer)
    geom = multipolygon()
    valid_from: Mapped[datetime] = created_at()
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Branch(Base):
    """A party branch (党支部)."""

    __tablename__ = "branches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))
    secretary_name: Mapped[str | None] = mapped_column(Text)
    secretary_phone: Mapped[str | None] = mapped_column(String(32))
    site = point(nullable=True)
    community_id: Mapped[int | None] = mapped_column(ForeignKey("admin_areas.id"))
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    created_at: Mapped[datetime] = created_at()


class BranchGrid(Base):
    """A branch covers a grid (many-to-many)."""

    __tablename__ = "branch_grids"

    branch_id: Mapped[int] = mapped_column(ForeignKey("branches.id", ondelete="CASCADE"), primary_key=True)
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id", ondelete="CASCADE"), primary_key=True)
    since: Mapped[datetime] = created_at()


class ServiceRole(Base):
    """A service role a member can claim (default: the six roles, 六员)."""

    __tablename__ = "service_roles"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    position: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")


class Member(Base):
    """A party member (党员). Personal data: see ``geo_api.deps`` for who may read it."""

    __tablename__ = "members"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str | None] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(Text)
    phone: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    work_branch_id: Mapped[int | None] = mapped_column(ForeignKey("branches.id"))
    created_at: Mapped[datetime] = created_at()


class Residence(Base):
    """Where a member lives: sensitive, kept apart from everything public."""

    __tablename__ = "residences"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    geom = point()
    source_crs: Mapped[str] = mapped_column(String(32))
    source_x: Mapped[float] = mapped_column(Float)
    source_y: Mapped[float] = mapped_column(Float)
    accuracy_m: Mapped[float | None] = mapped_column(Float)
    recorded_at: Mapped[datetime] = created_at()
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Registration(Base):
    """到居住地网格报到: member → residence grid → receiving branch, with a role."""

    __tablename__ = "registrations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    residence_id: Mapped[int] = mapped_column(ForeignKey("residences.id"))
    grid_id: Mapped[int] = mapped_column(ForeignKey("grids.id"))
    grid_version_id: Mapped[int] = mapped_column(ForeignKey("grid_versions.id"))
    branch_id: Mapped[int | None] = mapped_column(ForeignKey("branches.id"))
    role_code: Mapped[str | None] = mapped_column(ForeignKey("service_roles.code"))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(Text)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Department(Base):
    """A functional department (职能部门)."""

    __tablename__ = "departments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(Text, unique=True)


class EventCategory(Base):
    __tablename__ = "event_categories"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))
    time_limit_hours: Mapped[float] = mapped_column(Numeric(8, 2))
    role_code: Mapped[str | None] = mapped_column(ForeignKey("service_roles.code"))
    warn_share: Mapped[float | None] = mapped_column(Numeric(4, 3))


class EventRoute(Base):
    """Routing override: in this street, this category goes to this department."""

    __tablename__ = "event_routes"

    category_code: Mapped[str] = mapped_column(
        ForeignKey("event_categories.code", ondelete="CASCADE"), primary_key=True
    )
    street_code: Mapped[str] = mapped_column(ForeignKey("admin_areas.code", ondelete="CASCADE"), primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("departments.id"))


class WorkCalendarDay(Base):
    """A holiday (working = false) or a make-up working day (调休, working = true)."""

    __tablename__ = "work_calendar_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    working: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(Text)


class Event(Base):
    """A reported event; linked to the grid version it fell in when reported."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    geom = point()
    source_crs: Mapped[str] = mapped_column(String(32))
    category_code: Mapped[str] = mapped_column(ForeignKey("event_categories.code"))
    channel: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text)
    photos: Mapped[list] = mapped_column(JSONB, server_default="[]")
    reporter: Mapped[str | None] = mapped_column(Text)
    grid_id: Mapped[int | None] = mapped_column(ForeignKey("grids.id"))
    grid_version_id: Mapped[int | None] = mapped_column(ForeignKey("grid_versions.id"))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    status: Mapped[str] = mapped_column(String(16))
    assignee: Mapped[str | None] = mapped_column(Text)
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    return_count: Mapped[int] = mapped_column(Integer, server_default="0")
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("events.id"))
    reported_at: Mapped[datetime] = created_at()
    dispatched_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    source_x: Mapped[float | None] = mapped_column(Float)
    source_y: Mapped[float | None] = mapped_column(Float)
    reporter_contact: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    warn_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    handled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EventLog(Base):
    """Append-only track of an event (a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "event_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    at: Mapped[datetime] = created_at()
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    #: the department the event was with (dispatch: sent to); migration 0017
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    #: feedback photos (URLs) of a handling
    photos: Mapped[list | None] = mapped_column(JSONB)


class User(Base):
    """An account with one role scoped to an area code (department staff: to a
    department; members: to their member record)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    area_code: Mapped[str | None] = mapped_column(String(15))
    member_id: Mapped[int | None] = mapped_column(ForeignKey("members.id"))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("departments.id"))
    display_name: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, server_default="true")
    #: bumped by a trigger on any change of password, role, binding or state, and by a
    #: sign-out: tokens of an older epoch are refused (migration 0015)
    token_epoch: Mapped[int] = mapped_column(Integer, server_default="0")
    must_change_password: Mapped[bool] = mapped_column(Boolean, server_default="false")


class DataVersion(Base):
    """A layer's data version, bumped by triggers in the writing transaction."""

    __tablename__ = "data_versions"

    layer: Mapped[str] = mapped_column(String(32), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)

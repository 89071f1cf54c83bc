"""Member-to-grid registration (到居住地网格报到): residences, registrations, their
lifecycle (pending → confirmed | rejected; a move ends the active one), and statistics.

A member keeps their work-unit branch (组织关系所在支部, ``members.work_branch_id``) and
registers at the grid where they live, claiming one service role there. The database
holds at most one active (pending or confirmed) registration per member.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from layers.codes import area_prefix, level_of
from layers.errors import Conflict, Forbidden, InvalidInput, NotFound
from layers.locate import OUTSIDE, Describer, GridIndex
from layers.models import Registration, Residence, ServiceRole

if TYPE_CHECKING:
    from layers.caches import Caches

ACTIVE = ("pending", "confirmed")


@dataclass(frozen=True)
class ResidencePoint:
    """A residence as sent (CRS and coordinates) and in WGS84 (degrees)."""

    lon: float
    lat: float
    source_crs: str
    source_x: float
    source_y: float
    accuracy_m: float | None = None


def service_roles(session: Session) -> list[dict[str, str]]:
    """The active service roles a member can claim, in their configured order."""
    rows = session.execute(
        select(ServiceRole.code, ServiceRole.name)
        .where(ServiceRole.active.is_(True))
        .order_by(ServiceRole.position, ServiceRole.code)
    ).all()
    return [{"code": code, "name": name} for code, name in rows]


def role_code(session: Session, role: str) -> str:
    """The code of an active service role given by code or name; 422 naming ``role`` otherwise."""
    roles = service_roles(session)
    for r in roles:
        if role in (r["code"], r["name"]):
            return r["code"]
    listed = "、".join(r["name"] for r in roles)
    raise InvalidInput(f"unknown service role {role!r}; one of: {listed}", field="role")


def residence_grid(index: GridIndex, point: ResidencePoint, *, tolerance_m: float, edge_m: float) -> dict[str, Any]:
    """The grid a residence falls in (inside, on an edge, or in a gap within the
    tolerance); 422 naming the nearest grid when it is outside the service area."""
    located = index.locate(np.array([point.lon]), np.array([point.lat]), tolerance_m=tolerance_m, edge_m=edge_m)
    described = Describer(index).describe(located, 0, point.lon, point.lat, tolerance_m)
    if located.match[0] == OUTSIDE:
        raise InvalidInput(
            f"the residence is outside the service area: {described['message']}",
            field="lon",
            nearest_grid=described.get("nearest_grid"),
        )
    row = index.grids[int(located.grid[0])]
    return {
        **described,
        "grid_id": row["grid_id"],
        "grid_version_id": row["grid_version_id"],
        "branch_id": row["branch_id"],
    }


def lock_member(session: Session, member_id: int) -> bool:
    """Lock member ``member_id``'s row (``FOR UPDATE``) until the transaction ends;
    False when there is no such member.

    Every write on a member's registrations and residences takes this lock first, before
    any row it writes and so before the ``data_versions`` rows its triggers update: two
    writes on one member queue here and then run one after the other, each reading what
    the other committed; writes on different members share only the ``data_versions``
    rows, which every write takes in the same order (``members``, then ``residences``, by
    trigger name). No cycle of waits, hence no deadlock."""
    found = session.execute(text("SELECT 1 FROM members WHERE id = :m FOR UPDATE"), {"m": member_id}).first()
    return found is not None


#: The columns that place member ``m`` (a row of ``members m`` in the enclosing query):
#: the grid of their active registration, the grid their current residence lies in, the
#: community of their work-unit branch (see :func:`member_area`). Also used to place the
#: accounts of members (layers.accounts).
MEMBER_AREA_COLUMNS = """
        (SELECT g.code FROM registrations r JOIN grids g ON g.id = r.grid_id
          WHERE r.member_id = m.id AND r.status IN ('pending', 'confirmed')) AS registered,
        (SELECT g.code FROM residences res
           JOIN grid_versions gv ON gridbranch_in_force(gv.valid_from, gv.valid_to) AND ST_Intersects(gv.geom, res.geom)
           JOIN grids g ON g.id = gv.grid_id AND gridbranch_live(g.retired_at)
          WHERE res.member_id = m.id AND res.ended_at IS NULL
          ORDER BY g.code LIMIT 1) AS resident,
        (SELECT c.code FROM branches b JOIN admin_areas c ON c.id = b.community_id
          WHERE b.id = m.work_branch_id) AS work_community
"""
_MEMBER_AREA_SQL = text(f"SELECT {MEMBER_AREA_COLUMNS} FROM members m WHERE m.id = :m")


def member_area(session: Session, member_id: int, *, lock: bool = False) -> str | None:
    """The area (a grid or community code) member ``member_id`` belongs to, for deciding
    who may see and act on their data: the grid of their active registration; without
    one, the grid their current residence lies in (the lowest code on a shared edge);
    without one, the community of their work-unit branch; None when none of these is
    known (the district's admins only). :class:`NotFound` for an unknown member.

    With ``lock`` the member's row is locked first (:func:`lock_member`), so the area
    cannot change until the transaction ends."""
    if lock and not lock_member(session, member_id):
        raise NotFound(f"no member with id {member_id}", field="member_id")
    row = session.execute(_MEMBER_AREA_SQL, {"m": member_id}).first()
    if row is None:
        raise NotFound(f"no member with id {member_id}", field="member_id")
    return row.registered or row.resident or row.work_community


def registration_area(session: Session, registration_id: int) -> tuple[str, int]:
    """(grid code, member id) of registration ``registration_id``; :class:`NotFound`."""
    row = session.execute(
        text("SELECT g.code, r.member_id FROM registrations r JOIN grids g ON g.id = r.grid_id WHERE r.id = :id"),
        {"id": registration_id},
    ).first()
    if row is None:
        raise NotFound(f"no registration with id {registration_id}", field="id")
    return row.code, row.member_id


def active_registration(session: Session, member_id: int, *, lock: bool = False) -> Registration | None:
    stmt = select(Registration).where(Registration.member_id == member_id, Registration.status.in_(ACTIVE))
    if lock:
        stmt = stmt.with_for_update()
    return session.scalar(stmt)


def register_member(
    session: Session,
    *,
    member_id: int,
    point: ResidencePoint,
    role: str,
    index: GridIndex,
    tolerance_m: float,
    edge_m: float,
    move: bool = False,
    actor: str,
) -> int:
    """Store the residence and a pending registration at its grid; returns the
    registration id. With ``move`` an active registration is ended first (kept as
    history); without it, an active registration is a 409. The caller commits."""
    # the member's row first: concurrent writes on one member queue here (lock_member)
    if not lock_member(session, member_id):
        raise NotFound(f"no member with id {member_id}", field="member_id")
    code = role_code(session, role)
    located = residence_grid(index, point, tolerance_m=tolerance_m, edge_m=edge_m)
    with session.begin_nested():
        current = active_registration(session, member_id, lock=True)
        if current is not None:
            if not move:
                raise Conflict(
                    f"member {member_id} already has an active registration ({current.id}, {current.status}); "
                    "send move=true to end it and register the new residence",
                    field="member_id",
                    registration=current.id,
                )
            end_registration(session, current, actor=actor, reason="moved house")
        # a new residence supersedes any current one (e.g. recorded without a registration)
        session.execute(
            update(Residence)
            .where(Residence.member_id == member_id, Residence.ended_at.is_(None))
            .values(ended_at=func.gridbranch_now())
        )
        residence = Residence(
            member_id=member_id,
            geom=f"SRID=4326;POINT({point.lon!r} {point.lat!r})",
            source_crs=point.source_crs,
            source_x=point.source_x,
            source_y=point.source_y,
            accuracy_m=point.accuracy_m,
        )
        session.add(residence)
        session.flush()
        registration = Registration(
            member_id=member_id,
            residence_id=residence.id,
            grid_id=located["grid_id"],
            grid_version_id=located["grid_version_id"],
            branch_id=located["branch_id"],
            role_code=code,
            status="pending",
        )
        session.add(registration)
        try:
            session.flush()
        except IntegrityError:
            raise Conflict(f"member {member_id} registered concurrently; try again", field="member_id") from None
    return registration.id


def end_registration(session: Session, registration: Registration, *, actor: str, reason: str) -> None:
    """End an active registration and its residence (history is kept, nothing deleted)."""
    registration.status = "ended"
    registration.ended_at = func.gridbranch_now()
    registration.reason = reason
    registration.decided_by = actor
    session.execute(
        update(Residence).where(Residence.id == registration.residence_id).values(ended_at=func.gridbranch_now())
    )
    session.flush()


_DETAIL_SQL = text(
    """
    SELECT r.id, r.member_id, r.status, r.reason, r.created_at, r.decided_at, r.decided_by, r.ended_at,
           sr.code AS role_code, sr.name AS role_name,
           g.code AS grid_code, g.name AS grid_name, c.code AS community_code, c.name AS community_name,
           b.code AS branch_code, b.name AS branch_name,
           wb.code AS work_branch_code, wb.name AS work_branch_name,
           m.name AS member_name, m.phone AS member_phone,
           ST_X(res.geom) AS lon, ST_Y(res.geom) AS lat, res.source_crs, res.source_x, res.source_y, res.accuracy_m
    FROM registrations r
    JOIN members m ON m.id = r.member_id
    JOIN residences res ON res.id = r.residence_id
    JOIN grids g ON g.id = r.grid_id
    JOIN admin_areas c ON c.id = g.community_id
    LEFT JOIN service_roles sr ON sr.code = r.role_code
    LEFT JOIN branches b ON b.id = r.branch_id
    LEFT JOIN branches wb ON wb.id = m.work_branch_id
    """
)


def registration_view(row, *, personal: bool) -> dict[str, Any]:
    """The public shape of a registration; ``personal`` adds the member's name, phone
    and residence (only for the member themselves and entitled admins)."""
    out = {
        "id": row.id,
        "member_id": row.member_id,
        "status": row.status,
        "reason": row.reason,
        "role": {"code": row.role_code, "name": row.role_name} if row.role_code else None,
        "grid": {"code": row.grid_code, "name": row.grid_name},
        "community": {"code": row.community_code, "name": row.community_name},
        "branch": {"code": row.branch_code, "name": row.branch_name} if row.branch_code else None,
        "work_branch": {"code": row.work_branch_code, "name": row.work_branch_name} if row.work_branch_code else None,
        "created_at": row.created_at.isoformat(),
        "decided_at": row.decided_at.isoformat() if row.decided_at else None,
        "decided_by": row.decided_by,
        "ended_at": row.ended_at.isoformat() if row.ended_at else None,
    }
    if personal:
        out["member"] = {"name": row.member_name, "phone": row.member_phone}
        out["residence"] = {
            "point": [round(row.lon, 7), round(row.lat, 7)],
            "source": {"crs": row.source_crs, "x": row.source_x, "y": row.source_y},
            "accuracy_m": row.accuracy_m,
        }
    return out


def member_registrations(session: Session, member_id: int) -> list:
    """Every registration of a member, newest first (rows for :func:`registration_view`)."""
    return session.execute(
        text(_DETAIL_SQL.text + " WHERE r.member_id = :m ORDER BY r.created_at DESC, r.id DESC"), {"m": member_id}
    ).all()


def registration_row(session: Session, registration_id: int):
    row = session.execute(text(_DETAIL_SQL.text + " WHERE r.id = :id"), {"id": registration_id}).first()
    if row is None:
        raise NotFound(f"no registration with id {registration_id}", field="id")
    return row


def decide_registration(
    session: Session, registration_id: int, *, confirm: bool, actor: str, covers, reason: str | None = None
) -> None:
    """Confirm or reject a pending registration. ``covers(grid_code)`` says whether the
    acting admin's area contains the registration's grid (403 otherwise). Locks the
    member's row first, as every write on a member does (:func:`lock_member`)."""
    member_id = session.execute(select(Registration.member_id).where(Registration.id == registration_id)).scalar()
    if member_id is None:
        raise NotFound(f"no registration with id {registration_id}", field="id")
    lock_member(session, member_id)
    reg = session.scalar(select(Registration).where(Registration.id == registration_id).with_for_update())
    grid_code = session.execute(text("SELECT code FROM grids WHERE id = :g"), {"g": reg.grid_id}).scalar()
    if not covers(grid_code):
        raise Forbidden(f"registration {registration_id} is in grid {grid_code}, outside your area")
    if reg.status != "pending":
        raise Conflict(f"registration {registration_id} is {reg.status}, only a pending one can be decided", field="id")
    if not confirm and not (reason and reason.strip()):
        raise InvalidInput("a rejection needs a reason", field="reason")
    reg.status = "confirmed" if confirm else "rejected"
    reg.reason = None if confirm else reason.strip()
    reg.decided_at = func.gridbranch_now()
    reg.decided_by = actor
    if not confirm:
        session.execute(
            update(Residence).where(Residence.id == reg.residence_id).values(ended_at=func.gridbranch_now())
        )
    session.flush()


def registrations_within(session: Session, within: str, *, status: str | None, limit: int, offset: int):
    """Registrations whose grid lies inside area or grid ``within``, newest first."""
    where = " WHERE g.code LIKE :prefix"
    params: dict[str, Any] = {"prefix": area_prefix(within) + "%", "limit": limit, "offset": offset}
    if status is not None:
        where += " AND r.status = :status"
        params["status"] = status
    total = session.execute(
        text("SELECT count(*) FROM registrations r JOIN grids g ON g.id = r.grid_id" + where), params
    ).scalar()
    rows = session.execute(
        text(_DETAIL_SQL.text + where + " ORDER BY r.created_at DESC, r.id DESC LIMIT :limit OFFSET :offset"), params
    ).all()
    return rows, total


_STATS_SQL = text(
    """
    WITH cur AS MATERIALIZED (
        SELECT g.id, left(g.code, :width) AS unit, gv.geom FROM grids g
        JOIN grid_versions gv ON gv.grid_id = g.id AND gridbranch_in_force(gv.valid_from, gv.valid_to)
        WHERE g.code LIKE :prefix AND gridbranch_live(g.retired_at)
    ),
    residents AS (  -- per grid id, from grid_residents()
        SELECT * FROM unnest(CAST(:resident_grids AS integer[]), CAST(:resident_counts AS bigint[])) AS t(id, n)
    ),
    regs AS (
        SELECT reg.grid_id AS id,
               count(*) FILTER (WHERE reg.status = 'confirmed') AS registered,
               count(*) FILTER (WHERE reg.status = 'pending') AS pending
        FROM registrations reg WHERE reg.status IN ('confirmed', 'pending')
        GROUP BY reg.grid_id
    ),
    unit_roles AS (
        SELECT cur.unit, array_agg(DISTINCT reg.role_code) AS roles
        FROM (SELECT DISTINCT grid_id, role_code FROM registrations
               WHERE status = 'confirmed' AND role_code IS NOT NULL) reg
        JOIN cur ON cur.id = reg.grid_id
        GROUP BY 1
    ),
    units AS (
        SELECT cur.unit,
               COALESCE(sum(residents.n), 0) AS residents,
               COALESCE(sum(regs.registered), 0) AS registered,
               COALESCE(sum(regs.pending), 0) AS pending,
               count(*) AS grids
        FROM cur LEFT JOIN residents USING (id) LEFT JOIN regs USING (id)
        GROUP BY 1
    )
    SELECT units.*, COALESCE(unit_roles.roles, '{}') AS roles
    FROM units LEFT JOIN unit_roles USING (unit)
    ORDER BY unit
    """
)

_UNIT_WIDTH = {"district": 6, "street": 9, "community": 12, "grid": 15}

_RESIDENTS_SQL = text(
    """
    SELECT g.id, count(r.id) FROM grids g
      JOIN grid_versions gv ON gv.grid_id = g.id AND gridbranch_in_force(gv.valid_from, gv.valid_to)
      JOIN residences r ON r.ended_at IS NULL AND ST_Intersects(gv.geom, r.geom)
     WHERE gridbranch_live(g.retired_at)
     GROUP BY g.id
    """
)


def grid_residents(session: Session, caches: Caches) -> tuple[list[int], list[int]]:
    """(grid ids, residents): members whose current residence falls in each current grid
    (on a shared edge or in an overlap, in each such grid; one current residence per
    member, uq_residences_current_member), grids without residents left out. A
    point-in-polygon pass over every residence, so kept per database and (grids,
    residences) data versions (``caches.grid_residents``): registrations, written far
    more often, leave it as it is."""

    def count(s: Session) -> tuple[list[int], list[int]]:
        rows = s.execute(_RESIDENTS_SQL).all()
        return [r[0] for r in rows], [r[1] for r in rows]

    return caches.grid_residents.get(session, count)


def registration_stats(session: Session, caches: Caches, *, level: str, within: str) -> list[dict[str, Any]]:
    """Per unit of ``level`` inside ``within``: residents (members whose current residence
    falls in its grids), registered (confirmed), pending, rate = registered / residents,
    and which of the configured roles are filled and missing among confirmed members."""
    if level not in _UNIT_WIDTH:
        raise InvalidInput(f"unknown level {level!r}; one of {', '.join(_UNIT_WIDTH)}", field="level")
    prefix = area_prefix(within)
    if _UNIT_WIDTH[level] < len(prefix):
        raise InvalidInput(f"level {level} is above the area {within} ({level_of(within)})", field="level")
    ids, counts = grid_residents(session, caches)
    rows = session.execute(
        _STATS_SQL,
        {"prefix": prefix + "%", "width": _UNIT_WIDTH[level], "resident_grids": ids, "resident_counts": counts},
    ).all()
    roles = [(r["code"], r["name"]) for r in service_roles(session)]
    names = _unit_names(session, level, [r.unit for r in rows])
    out = []
    for r in rows:
        filled = set(r.roles or [])
        code = _unit_code(level, r.unit)
        out.append(
            {
                "level": level,
                "code": code,
                "name": names.get(code),
                "grids": r.grids,
                "residents": int(r.residents),
                "registered": int(r.registered),
                "pending": int(r.pending),
                "rate": round(int(r.registered) / int(r.residents), 4) if r.residents else None,
                "roles_filled": [n for c, n in roles if c in filled],
                "roles_missing": [n for c, n in roles if c not in filled],
            }
        )
    return out


def _unit_code(level: str, unit: str) -> str:
    return unit if level == "grid" else unit.ljust(12, "0")


def _unit_names(session: Session, level: str, units: list[str]) -> dict[str, str]:
    codes = [_unit_code(level, u) for u in units]
    table = "grids" if level == "grid" else "admin_areas"
    rows = session.execute(text(f"SELECT code, name FROM {table} WHERE code = ANY(:codes)"), {"codes": codes}).all()
    return dict(rows)


def unregistered_members(session: Session, branch_code: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """In-service members of work-unit branch ``branch_code`` with no active registration."""
    branch = session.execute(
        text("SELECT id, code, name, kind FROM branches WHERE code = :c"), {"c": branch_code}
    ).first()
    if branch is None:
        raise NotFound(f"no branch with code {branch_code}", field="code")
    rows = session.execute(
        text(
            """SELECT m.id, m.number, m.name, m.phone FROM members m
               WHERE m.work_branch_id = :b AND m.status = 'in_service'
                 AND NOT EXISTS (SELECT 1 FROM registrations r WHERE r.member_id = m.id AND r.status IN ('pending', 'confirmed'))
               ORDER BY m.id"""
        ),
        {"b": branch.id},
    ).all()
    return (
        {"code": branch.code, "name": branch.name, "kind": branch.kind},
        [{"id": r.id, "number": r.number, "name": r.name, "phone": r.phone} for r in rows],
    )


_MOVED_SQL = text(
    """
    WITH at AS (SELECT COALESCE(CAST(:at AS timestamptz), gridbranch_now()) AS t)
    SELECT r.id, r.member_id, m.number AS member_number, m.name AS member_name, r.status, r.role_code,
           g.code AS grid_code, g.name AS grid_name, gv.version AS grid_version,
           now_in.code AS now_grid_code, now_in.name AS now_grid_name
    FROM registrations r CROSS JOIN at
    JOIN members m ON m.id = r.member_id
    JOIN residences res ON res.id = r.residence_id
    JOIN grids g ON g.id = r.grid_id
    JOIN grid_versions gv ON gv.id = r.grid_version_id
    LEFT JOIN LATERAL (
        SELECT g2.code, g2.name FROM grid_versions v2 JOIN grids g2 ON g2.id = v2.grid_id
         WHERE gridbranch_in_force(v2.valid_from, v2.valid_to, at.t) AND gridbranch_live(g2.retired_at, at.t)
           AND ST_Intersects(v2.geom, res.geom)
         ORDER BY g2.code LIMIT 1) now_in ON true
    WHERE r.status IN ('pending', 'confirmed') AND g.code LIKE :prefix
      AND NOT EXISTS (
        SELECT 1 FROM grid_versions v WHERE v.grid_id = r.grid_id AND gridbranch_live(g.retired_at, at.t)
           AND gridbranch_in_force(v.valid_from, v.valid_to, at.t) AND ST_Intersects(v.geom, res.geom))
    ORDER BY g.code, r.id
    """
)


def moved_registrations(session: Session, within: str, *, at=None) -> list[dict[str, Any]]:
    """Active registrations (pending, confirmed) at grids inside area or grid ``within``
    whose residence lies outside their grid in the layer in force at ``at`` (default
    now): redrawn away, or the grid retired. Each with the grid (and version) it was made
    at and the grid now holding the residence (the lowest code on a shared edge; None in
    a gap). Nothing is moved: re-registering is the member's, or an admin's, act."""
    rows = session.execute(_MOVED_SQL, {"prefix": area_prefix(within) + "%", "at": at}).all()
    return [
        {
            "id": r.id,
            "member_id": r.member_id,
            "member_number": r.member_number,
            "member_name": r.member_name,
            "status": r.status,
            "role": r.role_code,
            "grid": {"code": r.grid_code, "name": r.grid_name, "version": r.grid_version},
            "now_in": {"code": r.now_grid_code, "name": r.now_grid_name} if r.now_grid_code else None,
        }
        for r in rows
    ]

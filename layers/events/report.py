"""Reporting events (采集上报): who may report through which channel, what a report may
hold, the catalogue it is filed in (categories and their departments), and the
prepared statement the group report writer (:mod:`layers.events_batch`) runs."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.errors import Forbidden, InvalidInput, NotFound

CHANNEL_ROLES = {
    "public": None,  # anyone, anonymous included
    "member": frozenset({"member", "dispatcher", "admin"}),
    "grid_worker": frozenset({"grid_worker", "dispatcher", "admin"}),
    "hotline": frozenset({"dispatcher", "admin"}),
    "video": frozenset({"dispatcher", "admin"}),
}
CHANNEL_NAMES = {"grid_worker": "网格员", "member": "党员", "public": "群众", "hotline": "热线", "video": "视频巡查"}


def check_channel(channel: str, role: str | None) -> None:
    """403 unless the caller may report on ``channel`` (:data:`CHANNEL_ROLES`; the rules: :mod:`layers.events.lifecycle`)."""
    if channel not in CHANNEL_ROLES:
        raise InvalidInput(f"unknown channel {channel!r}; one of {', '.join(CHANNEL_ROLES)}", field="channel")
    roles = CHANNEL_ROLES[channel]
    if roles is None or role in roles:
        return
    if role is None:
        raise Forbidden(f"anonymous reports come through the public channel, not {channel!r}", field="channel")
    raise Forbidden(f"a {role} may not report through the {channel!r} channel", field="channel")


def check_report_size(
    description: str, photos: list[str] | tuple[str, ...], *, max_description: int, max_photos: int, max_photo_url: int
) -> None:
    """422 naming the field when the description is empty or too long, or when there are
    too many photos or a photo is not an http(s) URL of reasonable length."""
    if not description or not description.strip():
        raise InvalidInput("the description is empty", field="description")
    if len(description) > max_description:
        raise InvalidInput(
            f"the description has {len(description)} characters; at most {max_description}",
            field="description",
            max_length=max_description,
        )
    check_photos(photos, max_photos=max_photos, max_photo_url=max_photo_url)


def check_photos(photos: list[str] | tuple[str, ...], *, max_photos: int, max_photo_url: int) -> None:
    """422 naming the field when there are too many photos or one is not an http(s) URL
    of reasonable length (a report's, or a handling's feedback)."""
    if len(photos) > max_photos:
        raise InvalidInput(f"{len(photos)} photos; at most {max_photos}", field="photos", max_items=max_photos)
    for i, url in enumerate(photos):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > max_photo_url:
            raise InvalidInput(
                f"photo {i} must be an http(s) URL of at most {max_photo_url} characters", field=f"photos.{i}"
            )


def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` parameters → ``$n`` (in order of first use) for a server-side PREPARE."""
    names: list[str] = []

    def number(m: re.Match) -> str:
        if m.group(1) not in names:
            names.append(m.group(1))
        return f"${names.index(m.group(1)) + 1}"

    return re.sub(r"(?<![:\w]):([a-z_][a-z0-9_]*)", number, sql), tuple(names)


def execute_prepared(session: Session, name: str, sql: str, names: tuple[str, ...], params: dict[str, Any]):
    """Run ``sql`` as a server-side prepared statement of this connection (prepared on
    first use; PREPARE outlives transactions), sparing the planner on every report;
    returns the result."""
    conn = session.connection()
    info = conn.connection.info
    if name not in info:
        conn.exec_driver_sql(f"PREPARE {name} AS {sql}")
        info[name] = True
    placeholders = ", ".join("%s" for _ in names)
    return conn.exec_driver_sql(f"EXECUTE {name}({placeholders})", tuple(params[n] for n in names))


def stored_report(row: Any, category_code: str) -> dict[str, Any]:
    """The answer's fields for a report just stored, from a row of the group report
    statement (:mod:`layers.events_batch`)."""
    return {
        "id": row.id,
        "status": "reported",
        "version": row.version,
        "reported_at": row.reported_at,
        "category": {"code": category_code, "name": row.category_name},
        "time_limit_hours": float(row.time_limit_hours),
        "department": {"code": row.department_code, "name": row.department_name},
        "routing_override": bool(row.overridden),
        "role_code": row.role_code,
        "possible_duplicates": row.duplicates,
    }


def category_codes(session: Session) -> list[str]:
    return list(session.execute(text("SELECT code FROM event_categories ORDER BY code")).scalars())


def categories(session: Session) -> list[dict[str, Any]]:
    """Every category with its department, time limit (working hours), warning share
    (None: the configured default) and the service role that fits it."""
    rows = session.execute(
        text(
            """SELECT c.code, c.name, c.time_limit_hours, c.warn_share, d.code AS department_code,
                      d.name AS department_name, sr.code AS role_code, sr.name AS role_name
               FROM event_categories c JOIN departments d ON d.id = c.department_id
               LEFT JOIN service_roles sr ON sr.code = c.role_code ORDER BY c.code"""
        )
    ).all()
    return [
        {
            "code": r.code,
            "name": r.name,
            "time_limit_hours": float(r.time_limit_hours),
            "warn_share": float(r.warn_share) if r.warn_share is not None else None,
            "department": {"code": r.department_code, "name": r.department_name},
            "role": {"code": r.role_code, "name": r.role_name} if r.role_code else None,
        }
        for r in rows
    ]


def department_code(session: Session, department_id: int) -> str:
    """The code of department ``department_id`` (:class:`NotFound` when there is none)."""
    code = session.execute(text("SELECT code FROM departments WHERE id = :d"), {"d": department_id}).scalar()
    if code is None:
        raise NotFound(f"no department with id {department_id}", field="department")
    return code


def department_id(session: Session, department: str, field: str = "department") -> int:
    """The id of a department given by code or name; 422 naming ``field`` otherwise."""
    dept = session.execute(text("SELECT id FROM departments WHERE code = :d OR name = :d"), {"d": department}).scalar()
    if dept is None:
        raise InvalidInput(f"unknown department {department!r}", field=field)
    return dept

"""Read-only database accounts for GIS clients (QGIS, GDAL, psql): the ``gis`` schema's
views (migration 0023) and nothing else — no personal data.

The grants go to one group role, ``gridbranch_gis_read``, which each reader is a member
of: a view a later migration re-creates keeps its grant through the default privileges
set here, and revoking a reader is one REVOKE. Roles belong to the cluster, grants to
the database: granting again in another database of the same cluster is what makes a
reader of that one.
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import Connection

from layers.errors import Conflict, InvalidInput

GROUP = "gridbranch_gis_read"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _checked_name(name: str) -> str:
    if not _NAME.match(name) or name.startswith("pg_") or name == GROUP:
        raise InvalidInput(
            f"a reader's name is 1–63 lower-case letters, digits or _, not starting with a digit or pg_: {name!r}",
            field="name",
            detail_zh="只读账号名须为 1–63 位小写字母、数字或下划线，不能以数字或 pg_ 开头",
        )
    return name


def _literal(conn: Connection, value: str) -> str:
    """``value`` as an SQL string literal: a role's password cannot be a bind parameter
    (it is DDL), and with standard_conforming_strings a quote doubled is all escaping."""
    if conn.execute(text("SHOW standard_conforming_strings")).scalar() != "on":
        raise Conflict("the server has standard_conforming_strings off: refusing to write a password literal")
    if "\x00" in value:
        raise InvalidInput("a password cannot contain a NUL character", field="password")
    return "'" + value.replace("'", "''") + "'"


def _raw(conn: Connection, sql: str) -> None:
    """``sql`` through the driver's own cursor without parameters, in the connection's
    transaction: neither SQLAlchemy (``:name``) nor the driver (``%s``) reads a password
    literal's characters as placeholders."""
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def _role_exists(conn: Connection, name: str) -> bool:
    return bool(conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).scalar())


def _is_reader(conn: Connection, name: str) -> bool:
    """A role made by :func:`grant_reader`: a member of the group with no power of its
    own (any other role — the service's own, say — is never taken over)."""
    return bool(
        conn.execute(
            text(
                """SELECT pg_has_role(r.oid, g.oid, 'MEMBER') AND NOT r.rolsuper AND NOT r.rolcreaterole
                          AND NOT r.rolcreatedb
                   FROM pg_roles r, pg_roles g WHERE r.rolname = :n AND g.rolname = :g"""
            ),
            {"n": name, "g": GROUP},
        ).scalar()
    )


def grant_reader(conn: Connection, name: str, password: str) -> bool:
    """Make ``name`` a login role that reads the ``gis`` views of this database and
    nothing else (created, or its password set again); True when it was created. The
    caller commits."""
    name = _checked_name(name)
    if not _role_exists(conn, GROUP):
        conn.execute(text(f"CREATE ROLE {GROUP} NOLOGIN"))
    conn.execute(text(f"GRANT USAGE ON SCHEMA gis TO {GROUP}"))
    conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA gis TO {GROUP}"))
    conn.execute(text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA gis GRANT SELECT ON TABLES TO {GROUP}"))
    created = not _role_exists(conn, name)
    if created:
        _raw(conn, f"CREATE ROLE {name} LOGIN PASSWORD {_literal(conn, password)} IN ROLE {GROUP}")
    else:
        if not _is_reader(conn, name):
            raise Conflict(
                f"the role {name} exists and is not a gridbranch reader: choose another name",
                field="name",
                detail_zh=f"数据库角色 {name} 已存在且不是只读账号，请换一个名称",
            )
        _raw(conn, f"ALTER ROLE {name} LOGIN PASSWORD {_literal(conn, password)}")
    # a reader sees the views only: set its search path so that QGIS lists them first
    conn.execute(text(f"ALTER ROLE {name} SET search_path = gis, public"))
    return created


def revoke_reader(conn: Connection, name: str) -> bool:
    """End the reader ``name`` (its role dropped); False when there is none. The caller
    commits."""
    name = _checked_name(name)
    if not _role_exists(conn, name):
        return False
    if not _is_reader(conn, name):
        raise Conflict(
            f"the role {name} is not a gridbranch reader",
            field="name",
            detail_zh=f"数据库角色 {name} 不是只读账号",
        )
    conn.execute(text(f"DROP ROLE {name}"))
    return True

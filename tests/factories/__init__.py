"""Shared worlds and helpers of the tests, so that no test module imports another.

Here: small, hand-made layers for tests whose expected answers are known exactly (areas,
grids, members, accounts). Beside it: :mod:`tests.factories.events` (the events world,
hand-made events, the evaluation world, the events world over HTTP),
:mod:`tests.factories.api` (walking every route), :mod:`tests.factories.h3` (the tests'
own H3 counts) and :mod:`tests.factories.tiles` (tile paths, decoding tiles). Fixtures
built on them live in the conftest of the package that uses them."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.orm import Session


def rect(x0: float, y0: float, x1: float, y1: float) -> str:
    return f"SRID=4326;MULTIPOLYGON((({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0})))"


def add_area(session: Session, code: str, name: str, level: str, geom: str, parent: str | None = None) -> int:
    return session.execute(
        text(
            """INSERT INTO admin_areas (code, name, level, parent_id, geom)
               VALUES (:code, :name, :level, (SELECT id FROM admin_areas WHERE code = :parent), ST_GeomFromEWKT(:g))
               RETURNING id"""
        ),
        {"code": code, "name": name, "level": level, "parent": parent, "g": geom},
    ).scalar()


def add_grid(session: Session, code: str, name: str, geom: str, worker: str | None = "张网格") -> int:
    grid_id = session.execute(
        text(
            """INSERT INTO grids (code, name, community_id, worker_name, worker_phone)
               VALUES (:code, :name, (SELECT id FROM admin_areas WHERE code = :community), :worker, '13800000000')
               RETURNING id"""
        ),
        {"code": code, "name": name, "community": code[:12], "worker": worker},
    ).scalar()
    session.execute(
        text("INSERT INTO grid_versions (grid_id, version, geom) VALUES (:g, 1, ST_GeomFromEWKT(:geom))"),
        {"g": grid_id, "geom": geom},
    )
    return grid_id


def add_branch(session: Session, code: str, name: str, grid_ids: list[int], kind: str = "grid") -> int:
    branch_id = session.execute(
        text("INSERT INTO branches (code, name, kind) VALUES (:c, :n, :k) RETURNING id"),
        {"c": code, "n": name, "k": kind},
    ).scalar()
    for g in grid_ids:
        session.execute(text("INSERT INTO branch_grids (branch_id, grid_id) VALUES (:b, :g)"), {"b": branch_id, "g": g})
    return branch_id


COMMUNITY = "410105001001"
GRID_A, GRID_B, GRID_C = COMMUNITY + "001", COMMUNITY + "002", COMMUNITY + "003"


def small_layout(session: Session, x: float = 113.60, y: float = 34.70) -> dict[str, int]:
    """A 0.1° square district = street = community at (x, y), with three grids:

    A = [x, x+.05] × [y, y+.1]; B = [x+.05, x+.1] × [y, y+.05] shares A's edge x+.05;
    C = [x+.0502, x+.1] × [y+.05, y+.1] leaves a 0.0002° (≈18 m) gap strip beside A.
    A has a branch; B and C have none.
    """
    square = rect(x, y, x + 0.1, y + 0.1)
    add_area(session, "410105000000", "测试区", "district", square)
    add_area(session, "410105001000", "测试街道", "street", square, "410105000000")
    add_area(session, COMMUNITY, "测试社区", "community", square, "410105001000")
    ids = {
        "A": add_grid(session, GRID_A, "测试社区第1网格", rect(x, y, x + 0.05, y + 0.1)),
        "B": add_grid(session, GRID_B, "测试社区第2网格", rect(x + 0.05, y, x + 0.1, y + 0.05)),
        "C": add_grid(session, GRID_C, "测试社区第3网格", rect(x + 0.0502, y + 0.05, x + 0.1, y + 0.1), worker=None),
    }
    add_branch(session, "B001", "测试社区第1网格党支部", [ids["A"]])
    session.flush()
    return ids


_HASH_CACHE: dict[str, str] = {}


def add_user(
    session: Session,
    username: str,
    role: str,
    area_code: str | None = None,
    member_id: int | None = None,
    password: str = "test-demo-password",
    department: str | None = None,
) -> None:
    """An account; department staff name their department by code."""
    from geo_api.security import hash_password
    from layers.users import upsert_user

    if password not in _HASH_CACHE:
        _HASH_CACHE[password] = hash_password(password)
    department_id = None
    if department is not None:
        department_id = session.execute(
            text("SELECT id FROM departments WHERE code = :c"), {"c": department}
        ).scalar_one()
    upsert_user(
        session,
        username,
        _HASH_CACHE[password],
        role,
        area_code=area_code,
        member_id=member_id,
        department_id=department_id,
    )
    session.flush()


def add_member(
    session: Session,
    name: str,
    number: str | None = None,
    phone: str = "13900000000",
    status: str = "in_service",
    work_branch: int | None = None,
) -> int:
    return session.execute(
        text(
            "INSERT INTO members (number, name, phone, status, work_branch_id) VALUES (:n, :name, :p, :s, :b) RETURNING id"
        ),
        {"n": number, "name": name, "p": phone, "s": status, "b": work_branch},
    ).scalar()

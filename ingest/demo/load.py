"""Write the Jinshui demo district into PostGIS and verify it there.

* :func:`load_demo` writes a :class:`~ingest.demo.model.DemoDistrict` through the
  given SQLAlchemy ``Connection`` inside the caller's transaction (the caller commits or
  rolls back): polygons through ``INSERT … SELECT FROM unnest(…)`` with ``ST_Multi``,
  everything else through psycopg2 ``COPY``; geometries travel as EWKB with SRID 4326.
* :func:`check_invariants` verifies the loaded data in SQL/PostGIS and returns a list of
  problems (empty when everything holds).
* :func:`is_loaded` tells whether the district (410105000000) is there.

Run ``python -m ingest.demo.load`` to build, load, check and print counts; it is a dry
run (rolled back) unless ``--commit`` is given.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import datetime

import numpy as np
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Connection

from ingest.calendar import load_national_calendar
from ingest.demo.model import DISTRICT_CODE, GRIDS_DRAWN, DemoDistrict
from ingest.demo.names import PUBLIC_SPACE_CATEGORIES
from layers.errors import Conflict

SRID = 4326
#: Areas below this (m², on the spheroid) are float noise, not gaps or overlaps.
NOISE_M2 = 1.0
#: A found defect matches its manifest entry if the areas agree within this share.
AREA_MATCH = 0.02

EXPECTED = {
    "streets": (14, 14),
    "communities": (92, 92),
    "grids": (480, 520),
    "departments": (41, 41),
    "branches_grid_or_community": (400, 440),
    "branches_work_unit": (50, 70),
    "members_in_service": (15_000, 15_000),
    "members_floating": (1_300, 1_300),
    "events": (2_900, 3_100),
}

COUNT_SQL = {
    "admin_areas": "SELECT count(*) FROM admin_areas",
    "streets": "SELECT count(*) FROM admin_areas WHERE level = 'street'",
    "communities": "SELECT count(*) FROM admin_areas WHERE level = 'community'",
    "grids": "SELECT count(*) FROM grids",
    "grid_versions": "SELECT count(*) FROM grid_versions",
    "departments": "SELECT count(*) FROM departments",
    "event_categories": "SELECT count(*) FROM event_categories",
    "branches": "SELECT count(*) FROM branches",
    "branches_grid": "SELECT count(*) FROM branches WHERE kind = 'grid'",
    "branches_community": "SELECT count(*) FROM branches WHERE kind = 'community'",
    "branches_work_unit": "SELECT count(*) FROM branches WHERE kind = 'work_unit'",
    "branch_grids": "SELECT count(*) FROM branch_grids",
    "members": "SELECT count(*) FROM members",
    "members_in_service": "SELECT count(*) FROM members WHERE status = 'in_service'",
    "members_floating": "SELECT count(*) FROM members WHERE status = 'floating'",
    "residences": "SELECT count(*) FROM residences",
    "registrations": "SELECT count(*) FROM registrations",
    "registrations_confirmed": "SELECT count(*) FROM registrations WHERE status = 'confirmed'",
    "registrations_pending": "SELECT count(*) FROM registrations WHERE status = 'pending'",
    "events": "SELECT count(*) FROM events",
    "event_log": "SELECT count(*) FROM event_log",
}


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def is_loaded(conn: Connection) -> bool:
    """True if the demo district (admin area 410105000000) exists."""
    return bool(
        conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM admin_areas WHERE code = :code)"), {"code": DISTRICT_CODE}
        ).scalar()
    )


def _ewkb(geoms: Sequence) -> list[str]:
    """Hex EWKB with SRID 4326 (exact doubles, no text rounding)."""
    arr = shapely.set_srid(np.asarray(geoms, dtype=object), SRID)
    return shapely.to_wkb(arr, hex=True, include_srid=True).tolist()


def _reserve_ids(conn: Connection, table: str, n: int) -> list[int]:
    """``n`` fresh ids from the table's own sequence (so later inserts never collide)."""
    if n == 0:
        return []
    rows = (
        conn.execute(
            text(f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) FROM generate_series(1, :n)"), {"n": n}
        )
        .scalars()
        .all()
    )
    return sorted(rows)


def _cell(value) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    s = str(value)
    if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
        s = s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return s


def _copy(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """COPY ``rows`` into ``table`` on the connection's own DBAPI connection (and hence
    inside its transaction)."""
    buf = io.StringIO()
    n = 0
    for row in rows:
        buf.write("\t".join(_cell(v) for v in row))
        buf.write("\n")
        n += 1
    buf.seek(0)
    raw = conn.connection.driver_connection
    assert raw is not None  # a checked-out connection has its driver's
    cur = raw.cursor()
    try:
        cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN", buf)
    finally:
        cur.close()
    return n


def load_demo(conn: Connection, district: DemoDistrict) -> dict[str, int]:
    """Write ``district`` through ``conn`` in the caller's transaction; returns row counts
    per table as found in the database afterwards. Raises :class:`Conflict` if a district
    with the same code is already there. The caller commits (or rolls back)."""
    if is_loaded(conn):
        raise Conflict(f"district {DISTRICT_CODE} is already loaded")
    d = district

    # ---- admin areas (district, streets, communities) -------------------------------
    areas = [d.district, *d.streets, *d.communities]
    area_ids = _reserve_ids(conn, "admin_areas", len(areas))
    area_id = {a.code: i for a, i in zip(areas, area_ids)}
    conn.execute(
        text(
            "INSERT INTO admin_areas (id, code, name, level, parent_id, geom) "
            "SELECT id, code, name, level, parent_id, ST_Multi(ST_GeomFromEWKB(decode(g, 'hex'))) "
            "FROM unnest(CAST(:ids AS integer[]), CAST(:codes AS text[]), CAST(:names AS text[]), "
            "CAST(:levels AS text[]), CAST(:parents AS integer[]), CAST(:geoms AS text[])) "
            "AS t(id, code, name, level, parent_id, g)"
        ),
        {
            "ids": area_ids,
            "codes": [a.code for a in areas],
            "names": [a.name for a in areas],
            "levels": [a.level for a in areas],
            "parents": [area_id[a.parent_code] if a.parent_code else None for a in areas],
            "geoms": _ewkb([a.geom for a in areas]),
        },
    )

    # ---- grids and their first versions ---------------------------------------------
    grid_ids = _reserve_ids(conn, "grids", len(d.grids))
    grid_id = {g.code: i for g, i in zip(d.grids, grid_ids)}
    _copy(
        conn,
        "grids",
        ("id", "code", "name", "community_id", "worker_name", "worker_phone", "created_at"),
        (
            (i, g.code, g.name, area_id[g.community_code], g.worker_name, g.worker_phone, GRIDS_DRAWN)
            for g, i in zip(d.grids, grid_ids)
        ),
    )
    version_ids = _reserve_ids(conn, "grid_versions", len(d.grids))
    version_id = {g.code: i for g, i in zip(d.grids, version_ids)}
    conn.execute(
        text(
            "INSERT INTO grid_versions (id, grid_id, version, geom, valid_from) "
            "SELECT id, grid_id, 1, ST_Multi(ST_GeomFromEWKB(decode(g, 'hex'))), :since "
            "FROM unnest(CAST(:ids AS integer[]), CAST(:grids AS integer[]), CAST(:geoms AS text[])) "
            "AS t(id, grid_id, g)"
        ),
        {
            "ids": version_ids,
            "grids": [grid_id[g.code] for g in d.grids],
            "geoms": _ewkb([g.geom for g in d.grids]),
            "since": GRIDS_DRAWN,
        },
    )

    # ---- departments, categories ------------------------------------------------------
    dept_ids = _reserve_ids(conn, "departments", len(d.departments))
    dept_id = {x.code: i for x, i in zip(d.departments, dept_ids)}
    _copy(conn, "departments", ("id", "code", "name"), ((i, x.code, x.name) for x, i in zip(d.departments, dept_ids)))
    _copy(
        conn,
        "event_categories",
        ("code", "name", "department_id", "time_limit_hours", "role_code"),
        ((c.code, c.name, dept_id[c.department_code], f"{c.time_limit_hours:.2f}", c.role_code) for c in d.categories),
    )
    # reports of these happen in the street, not at someone's door: Open311 shows where
    conn.execute(
        text("UPDATE event_categories SET public_space = true WHERE code = ANY(:c)"),
        {"c": list(PUBLIC_SPACE_CATEGORIES)},
    )

    # ---- branches ---------------------------------------------------------------------
    branch_ids = _reserve_ids(conn, "branches", len(d.branches))
    branch_id = {b.code: i for b, i in zip(d.branches, branch_ids)}
    sites = _ewkb([b.site for b in d.branches])
    _copy(
        conn,
        "branches",
        (
            "id",
            "code",
            "name",
            "kind",
            "secretary_name",
            "secretary_phone",
            "site",
            "community_id",
            "active",
            "created_at",
        ),
        (
            (
                i,
                b.code,
                b.name,
                b.kind,
                b.secretary_name,
                b.secretary_phone,
                site,
                area_id[b.community_code] if b.community_code else None,
                True,
                b.created_at,
            )
            for b, i, site in zip(d.branches, branch_ids, sites)
        ),
    )
    _copy(
        conn,
        "branch_grids",
        ("branch_id", "grid_id", "since"),
        (
            (branch_id[b.code], grid_id[code], max(b.created_at, GRIDS_DRAWN))
            for b in d.branches
            for code in b.grid_codes
        ),
    )

    # ---- members, residences, registrations -------------------------------------------
    member_ids = _reserve_ids(conn, "members", len(d.members))
    _copy(
        conn,
        "members",
        ("id", "name", "phone", "status", "work_branch_id", "created_at"),
        (
            (i, m.name, m.phone, m.status, branch_id[m.work_branch_code] if m.work_branch_code else None, m.created_at)
            for m, i in zip(d.members, member_ids)
        ),
    )
    residence_ids = _reserve_ids(conn, "residences", len(d.residences))
    res_geoms = _ewkb(shapely.points([(r.lon, r.lat) for r in d.residences]))
    _copy(
        conn,
        "residences",
        (
            "id",
            "member_id",
            "geom",
            "source_crs",
            "source_x",
            "source_y",
            "accuracy_m",
            "recorded_at",
        ),
        (
            (i, member_ids[r.member_key], g, "wgs84", r.lon, r.lat, r.accuracy_m, r.recorded_at)
            for r, i, g in zip(d.residences, residence_ids, res_geoms)
        ),
    )
    residence_of = {r.member_key: i for r, i in zip(d.residences, residence_ids)}
    reg_ids = _reserve_ids(conn, "registrations", len(d.registrations))
    _copy(
        conn,
        "registrations",
        (
            "id",
            "member_id",
            "residence_id",
            "grid_id",
            "grid_version_id",
            "branch_id",
            "role_code",
            "status",
            "reason",
            "created_at",
            "decided_at",
            "decided_by",
        ),
        (
            (
                i,
                member_ids[r.member_key],
                residence_of[r.member_key],
                grid_id[r.grid_code],
                version_id[r.grid_code],
                branch_id[r.branch_code] if r.branch_code else None,
                r.role_code,
                r.status,
                None,
                r.created_at,
                r.decided_at,
                r.decided_by,
            )
            for r, i in zip(d.registrations, reg_ids)
        ),
    )

    # ---- events and their log ---------------------------------------------------------
    event_ids = _reserve_ids(conn, "events", len(d.events))
    ev_geoms = _ewkb(shapely.points([(e.lon, e.lat) for e in d.events]))
    _copy(
        conn,
        "events",
        (
            "id",
            "geom",
            "source_crs",
            "category_code",
            "channel",
            "description",
            "photos",
            "reporter",
            "grid_id",
            "grid_version_id",
            "department_id",
            "status",
            "assignee",
            "version",
            "return_count",
            "duplicate_of",
            "reported_at",
            "dispatched_at",
            "due_at",
            "closed_at",
        ),
        (
            (
                i,
                g,
                "wgs84",
                e.category_code,
                e.channel,
                e.description,
                "[]",
                e.reporter,
                grid_id[e.grid_code] if e.grid_code else None,
                version_id[e.grid_code] if e.grid_code else None,
                dept_id[e.department_code] if e.department_code else None,
                e.status,
                e.assignee,
                e.version,
                e.return_count,
                event_ids[e.duplicate_of] if e.duplicate_of is not None else None,
                e.reported_at,
                e.dispatched_at,
                e.due_at,
                e.closed_at,
            )
            for e, i, g in zip(d.events, event_ids, ev_geoms)
        ),
    )
    log_ids = _reserve_ids(conn, "event_log", len(d.event_log))
    _copy(
        conn,
        "event_log",
        ("id", "event_id", "at", "actor", "action", "from_status", "to_status", "note", "department_id"),
        (
            (
                i,
                event_ids[x.event_key],
                x.at,
                x.actor,
                x.action,
                x.from_status,
                x.to_status,
                x.note,
                dept_id[x.department_code] if x.department_code else None,
            )
            for x, i in zip(d.event_log, log_ids)
        ),
    )

    # the State Council's holidays and make-up days: new dispatches count their time
    # limits on the district's real working calendar
    load_national_calendar(conn)

    conn.execute(
        text(
            "ANALYZE admin_areas, grids, grid_versions, departments, event_categories, branches, branch_grids, "
            "members, residences, registrations, events, event_log"
        )
    )
    return table_counts(conn)


def table_counts(conn: Connection) -> dict[str, int]:
    """Row counts per table (and per kind/status) as in :data:`COUNT_SQL`."""
    sql = "SELECT " + ", ".join(f"({q}) AS {name}" for name, q in COUNT_SQL.items())
    row = conn.execute(text(sql)).mappings().one()
    return {name: int(row[name]) for name in COUNT_SQL}


def format_counts(counts: dict[str, int]) -> str:
    """A readable multi-line summary of :func:`load_demo`'s counts."""
    c = counts
    lines = [
        "Jinshui demo district (金水区, 410105000000):",
        f"  areas        1 district, {c['streets']} streets/towns, {c['communities']} communities",
        f"  grids        {c['grids']} grids ({c['grid_versions']} boundary versions)",
        f"  branches     {c['branches']} ({c['branches_grid']} grid, {c['branches_community']} community, "
        f"{c['branches_work_unit']} work-unit), covering {c['branch_grids']} grids",
        f"  members      {c['members']} ({c['members_in_service']} in service, {c['members_floating']} floating),"
        f" {c['residences']} residences",
        f"  registrations {c['registrations']} ({c['registrations_confirmed']} confirmed, "
        f"{c['registrations_pending']} pending)",
        f"  departments  {c['departments']}, event categories {c['event_categories']}",
        f"  events       {c['events']} with {c['event_log']} log entries",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------

_CURRENT_GRIDS = """
    SELECT g.id, g.code, g.community_id, v.id AS version_id, v.geom
    FROM grids g JOIN grid_versions v ON v.grid_id = g.id AND v.valid_to IS NULL
"""


def _rows(conn: Connection, sql: str, **params) -> list:
    return list(conn.execute(text(sql), params))


def check_invariants(conn: Connection, district: DemoDistrict) -> list[str]:
    """Verify the loaded demo in SQL/PostGIS; returns the problems found (empty = fine).

    Checks counts, code rules, children within parents, exact tilings (streets of the
    district, communities of their street, grids of their community except exactly the
    manifest defects), residences and events inside the district, registrations and
    events in the grids containing them, branch coverage, event timestamps and logs.
    Areas are measured on the spheroid (geography); below :data:`NOISE_M2` is noise.
    """
    problems: list[str] = []
    tol = NOISE_M2

    # ---- counts -----------------------------------------------------------------------
    counts = table_counts(conn)
    expected = district.counts()
    for name, value in counts.items():
        if name in expected and expected[name] != value:
            problems.append(f"count {name}: {value} in the database, {expected[name]} generated")
    counts["branches_grid_or_community"] = counts["branches_grid"] + counts["branches_community"]
    for name, (lo, hi) in EXPECTED.items():
        if not lo <= counts[name] <= hi:
            problems.append(f"count {name} = {counts[name]}, expected {lo}..{hi}")

    # ---- codes ------------------------------------------------------------------------
    for code, level, pcode, plevel in _rows(
        conn,
        """
        SELECT c.code, c.level, p.code, p.level FROM admin_areas c LEFT JOIN admin_areas p ON p.id = c.parent_id
        WHERE NOT CASE c.level
            WHEN 'district' THEN c.parent_id IS NULL AND c.code ~ '^[0-9]{6}000000$'
            WHEN 'street' THEN p.level = 'district' AND left(c.code, 6) = left(p.code, 6)
                AND substr(c.code, 7, 3) BETWEEN '001' AND '199' AND right(c.code, 3) = '000'
            WHEN 'community' THEN p.level = 'street' AND left(c.code, 9) = left(p.code, 9)
                AND right(c.code, 3) BETWEEN '001' AND '199'
            ELSE false END
    """,
    ):
        problems.append(f"code {code} ({level}) does not fit its parent {pcode} ({plevel})")
    for (code,) in _rows(
        conn,
        """
        SELECT g.code FROM grids g JOIN admin_areas c ON c.id = g.community_id
        WHERE c.level <> 'community' OR left(g.code, 12) <> c.code OR right(g.code, 3) = '000'
    """,
    ):
        problems.append(f"grid code {code} does not extend its community's code")
    dup = conn.execute(
        text(
            "SELECT (SELECT count(*) - count(DISTINCT code) FROM admin_areas) + "
            "(SELECT count(*) - count(DISTINCT code) FROM grids) + (SELECT count(*) - count(DISTINCT code) FROM branches)"
        )
    ).scalar()
    if dup:
        problems.append(f"{dup} duplicate codes")

    # ---- children within parents ------------------------------------------------------
    for code, area in _rows(
        conn,
        """
        SELECT c.code, ST_Area(ST_Difference(c.geom, p.geom)::geography)
        FROM admin_areas c JOIN admin_areas p ON p.id = c.parent_id
        WHERE ST_Area(ST_Difference(c.geom, p.geom)::geography) > :tol
    """,
        tol=tol,
    ):
        problems.append(f"area {code} sticks out of its parent by {area:.1f} m²")
    for code, area in _rows(
        conn,
        f"""
        WITH g AS ({_CURRENT_GRIDS})
        SELECT g.code, ST_Area(ST_Difference(g.geom, c.geom)::geography)
        FROM g JOIN admin_areas c ON c.id = g.community_id
        WHERE ST_Area(ST_Difference(g.geom, c.geom)::geography) > :tol
    """,
        tol=tol,
    ):
        problems.append(f"grid {code} sticks out of its community by {area:.1f} m²")

    # ---- tilings of the area levels ---------------------------------------------------
    for code, gap in _rows(
        conn,
        """
        SELECT p.code, ST_Area(ST_Difference(p.geom, ST_Union(c.geom))::geography) AS gap
        FROM admin_areas p JOIN admin_areas c ON c.parent_id = p.id
        GROUP BY p.id, p.code, p.geom
        HAVING ST_Area(ST_Difference(p.geom, ST_Union(c.geom))::geography) > :tol
    """,
        tol=tol,
    ):
        problems.append(f"the children of {code} leave {gap:.1f} m² uncovered")
    for a, b, area in _rows(
        conn,
        """
        SELECT a.code, b.code, ST_Area(ST_Intersection(a.geom, b.geom)::geography)
        FROM admin_areas a JOIN admin_areas b
          ON b.parent_id = a.parent_id AND a.id < b.id AND a.geom && b.geom
        WHERE ST_Intersects(a.geom, b.geom) AND ST_Area(ST_Intersection(a.geom, b.geom)::geography) > :tol
    """,
        tol=tol,
    ):
        problems.append(f"areas {a} and {b} overlap by {area:.1f} m²")

    # ---- grid tiling: exactly the manifest defects ------------------------------------
    found: list[dict] = []
    for a, b, ca, cb, area, wkb in _rows(
        conn,
        f"""
        WITH g AS ({_CURRENT_GRIDS}),
        x AS (
            SELECT a.code AS a, b.code AS b, a.community_id AS ca, b.community_id AS cb,
                   ST_Intersection(a.geom, b.geom) AS geom
            FROM g a JOIN g b ON a.id < b.id AND a.geom && b.geom
            WHERE ST_Intersects(a.geom, b.geom)
        )
        SELECT x.a, x.b, c1.code, c2.code, ST_Area(x.geom::geography), ST_AsBinary(x.geom)
        FROM x JOIN admin_areas c1 ON c1.id = x.ca JOIN admin_areas c2 ON c2.id = x.cb
        WHERE ST_Area(x.geom::geography) > :tol
    """,
        tol=tol,
    ):
        found.append(
            {
                "form": "overlap",
                "grid_codes": {a, b},
                "community_code": ca if ca == cb else None,
                "area_m2": float(area),
                "geom": shapely.from_wkb(bytes(wkb)),
            }
        )
    for ccode, area, wkb in _rows(
        conn,
        f"""
        WITH g AS ({_CURRENT_GRIDS}),
        d AS (
            SELECT c.code, (ST_Dump(ST_Difference(c.geom, ST_Union(g.geom)))).geom AS geom
            FROM admin_areas c JOIN g ON g.community_id = c.id
            GROUP BY c.id, c.code, c.geom
        )
        SELECT code, ST_Area(geom::geography), ST_AsBinary(geom) FROM d
        WHERE ST_Area(geom::geography) > :tol
    """,
        tol=tol,
    ):
        found.append(
            {
                "form": "gap",
                "grid_codes": None,
                "community_code": ccode,
                "area_m2": float(area),
                "geom": shapely.from_wkb(bytes(wkb)),
            }
        )
    for (ccode,) in _rows(
        conn,
        """
        SELECT c.code FROM admin_areas c WHERE c.level = 'community'
        AND NOT EXISTS (SELECT 1 FROM grids g WHERE g.community_id = c.id)
    """,
    ):
        problems.append(f"community {ccode} has no grids")
    problems.extend(_match_defects(found, district.defects))

    # ---- residences and registrations ---------------------------------------------------
    outside = conn.execute(
        text("""
        SELECT count(*) FROM residences r, admin_areas d
        WHERE d.code = :code AND NOT ST_Contains(d.geom, r.geom)
    """),
        {"code": DISTRICT_CODE},
    ).scalar()
    if outside:
        problems.append(f"{outside} residences are not strictly inside the district")
    bad = conn.execute(
        text("""
        SELECT count(*) FROM registrations r
        JOIN residences s ON s.id = r.residence_id
        JOIN grid_versions v ON v.id = r.grid_version_id
        WHERE r.status IN ('confirmed', 'pending') AND (
            s.member_id <> r.member_id OR v.grid_id <> r.grid_id OR v.valid_to IS NOT NULL
            OR NOT ST_Covers(v.geom, s.geom))
    """)
    ).scalar()
    if bad:
        problems.append(f"{bad} active registrations whose grid does not contain the residence")
    bad = conn.execute(
        text("""
        SELECT count(*) FROM registrations r
        WHERE (r.branch_id IS NULL AND EXISTS (SELECT 1 FROM branch_grids bg WHERE bg.grid_id = r.grid_id))
           OR (r.branch_id IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM branch_grids bg WHERE bg.grid_id = r.grid_id AND bg.branch_id = r.branch_id))
    """)
    ).scalar()
    if bad:
        problems.append(f"{bad} registrations whose branch does not cover their grid")
    bad = conn.execute(
        text("""
        SELECT count(*) FROM members m WHERE (m.status = 'in_service') <> (m.work_branch_id IS NOT NULL)
        OR EXISTS (SELECT 1 FROM branches b WHERE b.id = m.work_branch_id AND b.kind <> 'work_unit')
    """)
    ).scalar()
    if bad:
        problems.append(f"{bad} members with a wrong work-unit branch")

    # ---- branches ---------------------------------------------------------------------
    bad = _rows(
        conn,
        """
        SELECT b.code FROM branches b
        WHERE (b.kind = 'work_unit') = EXISTS (SELECT 1 FROM branch_grids bg WHERE bg.branch_id = b.id)
           OR (b.kind <> 'work_unit' AND NOT EXISTS (
                SELECT 1 FROM branch_grids bg JOIN grid_versions v ON v.grid_id = bg.grid_id AND v.valid_to IS NULL
                WHERE bg.branch_id = b.id AND ST_Covers(v.geom, b.site)))
           OR NOT EXISTS (SELECT 1 FROM admin_areas d WHERE d.code = :code AND ST_Contains(d.geom, b.site))
    """,
        code=DISTRICT_CODE,
    )
    if bad:
        problems.append(f"{len(bad)} branches with wrong coverage or site, e.g. {bad[0][0]}")
    branchless = {
        c
        for (c,) in _rows(
            conn,
            """
        SELECT g.code FROM grids g WHERE NOT EXISTS (SELECT 1 FROM branch_grids bg WHERE bg.grid_id = g.id)
    """,
        )
    }
    differ = sorted(branchless ^ set(district.branchless_grids))
    if differ:
        problems.append(f"grids without a branch differ from the manifest: {differ[:5]}")

    # ---- events -----------------------------------------------------------------------
    bad = conn.execute(
        text(f"""
        WITH g AS ({_CURRENT_GRIDS})
        SELECT count(*) FROM events e
        LEFT JOIN grid_versions v ON v.id = e.grid_version_id
        WHERE NOT EXISTS (SELECT 1 FROM admin_areas d WHERE d.code = :code AND ST_Contains(d.geom, e.geom))
           OR (e.grid_id IS NULL) <> (e.grid_version_id IS NULL)
           OR (e.grid_id IS NOT NULL AND (v.grid_id <> e.grid_id OR NOT ST_Covers(v.geom, e.geom)
               OR v.valid_from > e.reported_at OR (v.valid_to IS NOT NULL AND v.valid_to <= e.reported_at)))
           OR (e.grid_id IS NULL AND EXISTS (SELECT 1 FROM g WHERE ST_Covers(g.geom, e.geom)))
    """),
        {"code": DISTRICT_CODE},
    ).scalar()
    if bad:
        problems.append(f"{bad} events outside the district or not in the grid (version) containing them")
    bad = conn.execute(
        text("""
        SELECT count(*) FROM events e JOIN event_categories c ON c.code = e.category_code
        WHERE e.dispatched_at < e.reported_at OR e.closed_at < e.reported_at OR e.closed_at < e.dispatched_at
           OR (e.dispatched_at IS NULL) <> (e.due_at IS NULL)
           OR e.due_at <> e.dispatched_at + c.time_limit_hours * interval '1 hour'
           OR (e.department_id IS NOT NULL AND e.department_id <> c.department_id)
           OR (e.closed_at IS NULL) <> (e.status NOT IN ('closed', 'rejected', 'duplicate'))
           OR (e.status = 'duplicate') <> (e.duplicate_of IS NOT NULL)
           OR e.duplicate_of >= e.id
    """)
    ).scalar()
    if bad:
        problems.append(f"{bad} events with inconsistent timestamps, department or duplicate link")
    bad = conn.execute(
        text("""
        WITH l AS (
            SELECT l.event_id, l.at, l.from_status, l.to_status,
                   lag(l.to_status) OVER w AS prev_to, lag(l.at) OVER w AS prev_at,
                   row_number() OVER w AS rn
            FROM event_log l WINDOW w AS (PARTITION BY l.event_id ORDER BY l.at, l.id)
        )
        SELECT count(*) FROM l
        WHERE (rn = 1 AND (from_status IS NOT NULL OR to_status <> 'reported'))
           OR (rn > 1 AND (from_status IS DISTINCT FROM prev_to OR at < prev_at))
    """)
    ).scalar()
    if bad:
        problems.append(f"{bad} event log entries out of sequence")
    bad = conn.execute(
        text("""
        SELECT count(*) FROM events e
        LEFT JOIN LATERAL (
            SELECT l.to_status, l.at FROM event_log l WHERE l.event_id = e.id ORDER BY l.at DESC, l.id DESC LIMIT 1
        ) last ON true
        WHERE last.to_status IS DISTINCT FROM e.status
           OR e.version <> (SELECT count(*) FROM event_log l WHERE l.event_id = e.id)
           OR e.reported_at <> (SELECT min(l.at) FROM event_log l WHERE l.event_id = e.id)
    """)
    ).scalar()
    if bad:
        problems.append(f"{bad} events whose status, version or report time disagrees with their log")
    return problems


def _match_defects(found: list[dict], defects: list[dict]) -> list[str]:
    """Pair each gap/overlap found in the database with a manifest defect; report the
    unmatched on either side and area mismatches."""
    problems = []
    matched: set[int] = set()
    for f in found:
        hit = None
        for k, d in enumerate(defects):
            if d["form"] != f["form"] or d["community_code"] != f["community_code"]:
                continue
            if f["form"] == "overlap" and set(d["grid_codes"]) != f["grid_codes"]:
                continue
            if f["form"] == "gap" and not shapely.dwithin(f["geom"], shapely.from_wkt(d["wkt"]), 1e-6):
                continue
            hit = k
            break
        if hit is None:
            where = shapely.point_on_surface(f["geom"])
            between = f" between grids {sorted(f['grid_codes'])}" if f["grid_codes"] else ""
            problems.append(
                f"unexpected {f['form']} of {f['area_m2']:.1f} m² in community {f['community_code']} "
                f"at {where.x:.6f},{where.y:.6f}{between}"
            )
            continue
        f["defect"] = hit
        matched.add(hit)
    for k, d in enumerate(defects):
        if k not in matched:
            problems.append(f"manifest {d['kind']} in {d['community_code']} ({d['grid_codes']}) not found")
            continue
        area = sum(f["area_m2"] for f in found if f.get("defect") == k)
        if abs(area - d["area_m2"]) > AREA_MATCH * d["area_m2"] + NOISE_M2:
            problems.append(
                f"manifest {d['kind']} in {d['community_code']}: {area:.1f} m² found, {d['area_m2']} m² listed"
            )
    return problems


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """``python -m ingest.demo.load [--commit] [--seed N] [--manifest FILE]``."""
    import json

    from ingest.demo.generate import DEFAULT_SEED, build_demo
    from layers import db, migrate
    from layers.db import DatabaseSettings

    parser = argparse.ArgumentParser(description="Build, load and check the Jinshui demo district.")
    parser.add_argument("--commit", action="store_true", help="commit (default: a dry run, rolled back)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--manifest", help="write the manifest (defects, branchless grids, counts) here as JSON")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    district = build_demo(args.seed)
    t1 = time.perf_counter()
    if args.manifest:
        with open(args.manifest, "w", encoding="utf-8") as fh:
            json.dump(district.manifest(), fh, ensure_ascii=False, indent=2)
    engine = db.make_engine(db.database_url(DatabaseSettings()), 2)
    migrate.upgrade(engine)
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            counts = load_demo(conn, district)
            t2 = time.perf_counter()
            problems = check_invariants(conn, district)
            t3 = time.perf_counter()
            if problems or not args.commit:
                trans.rollback()
            else:
                trans.commit()
        except BaseException:
            trans.rollback()
            raise
    engine.dispose()
    print(format_counts(counts))
    print(f"built in {t1 - t0:.1f} s, loaded in {t2 - t1:.1f} s, checked in {t3 - t2:.1f} s")
    if problems:
        print("PROBLEMS (rolled back):\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("invariants hold; " + ("committed." if args.commit else "dry run, rolled back (--commit to keep)."))
    return 0


if __name__ == "__main__":
    sys.exit(main())

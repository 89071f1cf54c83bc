"""Boundaries as an import sees them: the district, the areas and the grids with their
current versions, read by code; and the set-based writes that add, rename, reparent and
redraw them. Geometries travel as hex EWKB, SRID 4326 (exact doubles, no text
rounding); every write runs in the caller's transaction and is one statement per kind of
change, so a change set that is empty is not run at all and leaves the data versions
(migration 0002) alone.

A redrawn grid keeps its history (DESIGN, "Boundaries are versioned"): its current
version is closed at ``gridbranch_now()`` and the new drawing becomes version n + 1 from
the same instant; registrations and events keep the version they point at.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection


@dataclass
class StoredArea:
    code: str
    name: str
    level: str
    parent: str | None
    wkb: bytes


@dataclass
class StoredGrid:
    code: str
    name: str
    community: str
    version: int | None
    wkb: bytes | None
    retired: bool


def districts(conn: Connection) -> list[tuple[str, str]]:
    """(code, name) of every district-level area, by code."""
    return [tuple(r) for r in conn.execute(text(
        "SELECT code, name FROM admin_areas WHERE level = 'district' ORDER BY code"))]


def areas_by_code(conn: Connection, prefix: str) -> dict[str, StoredArea]:
    """Every area whose code starts with ``prefix``, geometry as WKB (SRID 4326)."""
    rows = conn.execute(text(
        """SELECT a.code, a.name, a.level, p.code, ST_AsBinary(a.geom)
           FROM admin_areas a LEFT JOIN admin_areas p ON p.id = a.parent_id
           WHERE a.code LIKE :prefix ORDER BY a.code"""), {"prefix": prefix + "%"})
    return {r[0]: StoredArea(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows}


def grids_by_code(conn: Connection, prefix: str) -> dict[str, StoredGrid]:
    """Every grid whose code starts with ``prefix`` (retired ones too), with its current
    version's number and geometry as WKB (SRID 4326)."""
    rows = conn.execute(text(
        """SELECT g.code, g.name, c.code, v.version, ST_AsBinary(v.geom), g.retired_at IS NOT NULL
           FROM grids g JOIN admin_areas c ON c.id = g.community_id
           LEFT JOIN grid_versions v ON v.grid_id = g.id AND v.valid_to IS NULL
           WHERE g.code LIKE :prefix ORDER BY g.code"""), {"prefix": prefix + "%"})
    return {r[0]: StoredGrid(r[0], r[1], r[2], r[3], bytes(r[4]) if r[4] is not None else None, bool(r[5]))
            for r in rows}


_GEOM = "ST_Multi(ST_GeomFromEWKB(decode(t.g, 'hex')))"


def insert_areas(conn: Connection, codes: Sequence[str], names: Sequence[str], levels: Sequence[str],
                 parents: Sequence[str | None], ewkb: Sequence[str]) -> int:
    """Add areas; ``parents`` are codes of areas already stored or added in this call
    (added district first, then streets, then communities, so every parent is there
    before its children). Returns the number added."""
    total = 0
    for level in ("district", "street", "community"):
        idx = [i for i, lv in enumerate(levels) if lv == level]
        if not idx:
            continue
        total += conn.execute(text(
            f"""INSERT INTO admin_areas (code, name, level, parent_id, geom)
                SELECT t.code, t.name, t.level, p.id, {_GEOM}
                FROM unnest(CAST(:codes AS text[]), CAST(:names AS text[]), CAST(:levels AS text[]),
                            CAST(:parents AS text[]), CAST(:geoms AS text[])) AS t(code, name, level, parent, g)
                LEFT JOIN admin_areas p ON p.code = t.parent"""),
            {"codes": [codes[i] for i in idx], "names": [names[i] for i in idx], "levels": [level] * len(idx),
             "parents": [parents[i] for i in idx], "geoms": [ewkb[i] for i in idx]}).rowcount
    return total


def update_areas(conn: Connection, codes: Sequence[str], names: Sequence[str], parents: Sequence[str | None],
                 ewkb: Sequence[str | None]) -> int:
    """Set the name, parent and (where given, else kept) geometry of stored areas."""
    if not codes:
        return 0
    return conn.execute(text(
        """UPDATE admin_areas a SET name = t.name, parent_id = p.id,
                  geom = COALESCE(ST_Multi(ST_GeomFromEWKB(decode(t.g, 'hex'))), a.geom)
           FROM unnest(CAST(:codes AS text[]), CAST(:names AS text[]), CAST(:parents AS text[]),
                       CAST(:geoms AS text[])) AS t(code, name, parent, g)
           LEFT JOIN admin_areas p ON p.code = t.parent
           WHERE a.code = t.code"""),
        {"codes": list(codes), "names": list(names), "parents": list(parents), "geoms": list(ewkb)}).rowcount


def insert_grids(conn: Connection, codes: Sequence[str], names: Sequence[str], communities: Sequence[str],
                 ewkb: Sequence[str]) -> int:
    """Add grids, each with its first boundary version (valid from ``gridbranch_now()``)."""
    if not codes:
        return 0
    params = {"codes": list(codes), "names": list(names), "communities": list(communities), "geoms": list(ewkb)}
    conn.execute(text(
        """INSERT INTO grids (code, name, community_id)
           SELECT t.code, t.name, c.id
           FROM unnest(CAST(:codes AS text[]), CAST(:names AS text[]), CAST(:communities AS text[]))
                AS t(code, name, community) JOIN admin_areas c ON c.code = t.community"""), params)
    return conn.execute(text(
        f"""INSERT INTO grid_versions (grid_id, version, geom)
            SELECT g.id, 1, {_GEOM}
            FROM unnest(CAST(:codes AS text[]), CAST(:geoms AS text[])) AS t(code, g) JOIN grids g ON g.code = t.code"""),
        params).rowcount


def update_grids(conn: Connection, codes: Sequence[str], names: Sequence[str], communities: Sequence[str]) -> int:
    """Set the name and community of stored grids."""
    if not codes:
        return 0
    return conn.execute(text(
        """UPDATE grids g SET name = t.name, community_id = c.id
           FROM unnest(CAST(:codes AS text[]), CAST(:names AS text[]), CAST(:communities AS text[]))
                AS t(code, name, community) JOIN admin_areas c ON c.code = t.community
           WHERE g.code = t.code"""),
        {"codes": list(codes), "names": list(names), "communities": list(communities)}).rowcount


def redraw_grids(conn: Connection, codes: Sequence[str], ewkb: Sequence[str]) -> int:
    """Close each grid's current version at ``gridbranch_now()`` and add the new drawing
    as the next version from the same instant."""
    if not codes:
        return 0
    params = {"codes": list(codes), "geoms": list(ewkb)}
    conn.execute(text(
        """UPDATE grid_versions v SET valid_to = gridbranch_now()
           FROM grids g WHERE g.id = v.grid_id AND v.valid_to IS NULL AND g.code = ANY(CAST(:codes AS text[]))"""),
        params)
    return conn.execute(text(
        f"""INSERT INTO grid_versions (grid_id, version, geom, valid_from)
            SELECT g.id, (SELECT max(version) FROM grid_versions o WHERE o.grid_id = g.id) + 1, {_GEOM},
                   gridbranch_now()
            FROM unnest(CAST(:codes AS text[]), CAST(:geoms AS text[])) AS t(code, g) JOIN grids g ON g.code = t.code"""),
        params).rowcount

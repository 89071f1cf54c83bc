"""Boundaries as an import sees them: the district, the areas and the grids with their
current versions, read by code; and the set-based writes that add, rename, reparent and
redraw them. Geometries travel as hex EWKB, SRID 4326 (exact doubles, no text
rounding); every write runs in the caller's transaction and is one statement per kind of
change, so a change set that is empty is not run at all and leaves the data versions
(migration 0002) alone.

A redrawn grid keeps its history (DESIGN, "Boundaries are versioned"): its latest
version is closed at the instant its generation takes effect (migration 0018; the
present unless the import says a later day) and the new drawing becomes version n + 1
from the same instant; registrations and events keep the version they point at. A grid
retired by a generation keeps its versions, the last closed at the same instant.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.engine import Connection

from layers.errors import InvalidInput

#: The deployment's days (``--effective 2027-01-01``, ``?at=2027-01-01``) begin at midnight
#: China Standard Time.
LOCAL_TZ = ZoneInfo("Asia/Shanghai")


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
    return [
        tuple(r)
        for r in conn.execute(text("SELECT code, name FROM admin_areas WHERE level = 'district' ORDER BY code"))
    ]


def areas_by_code(conn: Connection, prefix: str) -> dict[str, StoredArea]:
    """Every area whose code starts with ``prefix``, geometry as WKB (SRID 4326)."""
    rows = conn.execute(
        text(
            """SELECT a.code, a.name, a.level, p.code, ST_AsBinary(a.geom)
           FROM admin_areas a LEFT JOIN admin_areas p ON p.id = a.parent_id
           WHERE a.code LIKE :prefix ORDER BY a.code"""
        ),
        {"prefix": prefix + "%"},
    )
    return {r[0]: StoredArea(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows}


def grids_by_code(conn: Connection, prefix: str) -> dict[str, StoredGrid]:
    """Every grid whose code starts with ``prefix`` (retired ones too), with its current
    version's number and geometry as WKB (SRID 4326)."""
    rows = conn.execute(
        text(
            """SELECT g.code, g.name, c.code, v.version, ST_AsBinary(v.geom), g.retired_at IS NOT NULL
           FROM grids g JOIN admin_areas c ON c.id = g.community_id
           LEFT JOIN grid_versions v ON v.grid_id = g.id AND v.valid_to IS NULL
           WHERE g.code LIKE :prefix ORDER BY g.code"""
        ),
        {"prefix": prefix + "%"},
    )
    return {
        r[0]: StoredGrid(r[0], r[1], r[2], r[3], bytes(r[4]) if r[4] is not None else None, bool(r[5])) for r in rows
    }


_GEOM = "ST_Multi(ST_GeomFromEWKB(decode(t.g, 'hex')))"
#: The instant a generation's changes take effect: the one given, else the present.
_EFFECTIVE = "COALESCE(CAST(:effective AS timestamptz), gridbranch_now())"


def insert_areas(
    conn: Connection,
    codes: Sequence[str],
    names: Sequence[str],
    levels: Sequence[str],
    parents: Sequence[str | None],
    ewkb: Sequence[str],
) -> int:
    """Add areas; ``parents`` are codes of areas already stored or added in this call
    (added district first, then streets, then communities, so every parent is there
    before its children). Returns the number added."""
    total = 0
    for level in ("district", "street", "community"):
        idx = [i for i, lv in enumerate(levels) if lv == level]
        if not idx:
            continue
        total += conn.execute(
            text(
                f"""INSERT INTO admin_areas (code, name, level, parent_id, geom)
                SELECT t.code, t.name, t.level, p.id, {_GEOM}
                FROM unnest(CAST(:codes AS text[]), CAST(:names AS text[]), CAST(:levels AS text[]),
                            CAST(:parents AS text[]), CAST(:geoms AS text[])) AS t(code, name, level, parent, g)
                LEFT JOIN admin_areas p ON p.code = t.parent"""
            ),
            {
                "codes": [codes[i] for i in idx],
                "names": [names[i] for i in idx],
                "levels": [level] * len(idx),
                "parents": [parents[i] for i in idx],
                "geoms": [ewkb[i] for i in idx],
            },
        ).rowcount
    return total


def update_areas(
    conn: Connection,
    codes: Sequence[str],
    names: Sequence[str],
    parents: Sequence[str | None],
    ewkb: Sequence[str | None],
) -> int:
    """Set the name, parent and (where given, else kept) geometry of stored areas."""
    if not codes:
        return 0
    return conn.execute(
        text(
            """UPDATE admin_areas a SET name = t.name, parent_id = p.id,
                  geom = COALESCE(ST_Multi(ST_GeomFromEWKB(decode(t.g, 'hex'))), a.geom)
           FROM unnest(CAST(:codes AS text[]), CAST(:names AS text[]), CAST(:parents AS text[]),
                       CAST(:geoms AS text[])) AS t(code, name, parent, g)
           LEFT JOIN admin_areas p ON p.code = t.parent
           WHERE a.code = t.code"""
        ),
        {"codes": list(codes), "names": list(names), "parents": list(parents), "geoms": list(ewkb)},
    ).rowcount


def insert_grids(
    conn: Connection,
    codes: Sequence[str],
    names: Sequence[str],
    communities: Sequence[str],
    ewkb: Sequence[str],
    *,
    generation: int | None = None,
    effective: datetime | None = None,
) -> int:
    """Add grids, each with its first boundary version, in force from ``effective``
    (default ``gridbranch_now()``) and belonging to ``generation``."""
    if not codes:
        return 0
    params = {
        "codes": list(codes),
        "names": list(names),
        "communities": list(communities),
        "geoms": list(ewkb),
        "generation": generation,
        "effective": effective,
    }
    conn.execute(
        text(
            """INSERT INTO grids (code, name, community_id)
           SELECT t.code, t.name, c.id
           FROM unnest(CAST(:codes AS text[]), CAST(:names AS text[]), CAST(:communities AS text[]))
                AS t(code, name, community) JOIN admin_areas c ON c.code = t.community"""
        ),
        params,
    )
    return conn.execute(
        text(
            f"""INSERT INTO grid_versions (grid_id, version, geom, valid_from, generation_id)
            SELECT g.id, 1, {_GEOM}, {_EFFECTIVE}, CAST(:generation AS integer)
            FROM unnest(CAST(:codes AS text[]), CAST(:geoms AS text[])) AS t(code, g) JOIN grids g ON g.code = t.code"""
        ),
        params,
    ).rowcount


def update_grids(conn: Connection, codes: Sequence[str], names: Sequence[str], communities: Sequence[str]) -> int:
    """Set the name and community of stored grids."""
    if not codes:
        return 0
    return conn.execute(
        text(
            """UPDATE grids g SET name = t.name, community_id = c.id
           FROM unnest(CAST(:codes AS text[]), CAST(:names AS text[]), CAST(:communities AS text[]))
                AS t(code, name, community) JOIN admin_areas c ON c.code = t.community
           WHERE g.code = t.code"""
        ),
        {"codes": list(codes), "names": list(names), "communities": list(communities)},
    ).rowcount


def redraw_grids(
    conn: Connection,
    codes: Sequence[str],
    ewkb: Sequence[str],
    *,
    generation: int | None = None,
    effective: datetime | None = None,
) -> int:
    """Close each grid's latest version at ``effective`` (default ``gridbranch_now()``)
    and add the new drawing as the next version from the same instant."""
    if not codes:
        return 0
    params = {"codes": list(codes), "geoms": list(ewkb), "generation": generation, "effective": effective}
    conn.execute(
        text(
            f"""UPDATE grid_versions v SET valid_to = {_EFFECTIVE}
           FROM grids g WHERE g.id = v.grid_id AND v.valid_to IS NULL AND g.code = ANY(CAST(:codes AS text[]))"""
        ),
        params,
    )
    return conn.execute(
        text(
            f"""INSERT INTO grid_versions (grid_id, version, geom, valid_from, generation_id)
            SELECT g.id, (SELECT max(version) FROM grid_versions o WHERE o.grid_id = g.id) + 1, {_GEOM},
                   {_EFFECTIVE}, CAST(:generation AS integer)
            FROM unnest(CAST(:codes AS text[]), CAST(:geoms AS text[])) AS t(code, g) JOIN grids g ON g.code = t.code"""
        ),
        params,
    ).rowcount


def retire_grids(conn: Connection, codes: Sequence[str], *, generation: int, effective: datetime) -> int:
    """Retire grids at ``effective``: their latest version closes there and the grid no
    longer lives from then on (``gridbranch_live``); the history stays."""
    if not codes:
        return 0
    params = {"codes": list(codes), "generation": generation, "effective": effective}
    conn.execute(
        text(
            """UPDATE grid_versions v SET valid_to = CAST(:effective AS timestamptz)
           FROM grids g WHERE g.id = v.grid_id AND v.valid_to IS NULL AND g.code = ANY(CAST(:codes AS text[]))"""
        ),
        params,
    )
    return conn.execute(
        text(
            """UPDATE grids SET retired_at = CAST(:effective AS timestamptz), retired_generation_id = :generation
           WHERE code = ANY(CAST(:codes AS text[])) AND retired_at IS NULL"""
        ),
        params,
    ).rowcount


# ---- generations -------------------------------------------------------------------------------


@dataclass
class Generation:
    id: int
    kind: str
    effective_at: datetime
    created_at: datetime
    source: str | None
    retire_missing: bool
    counts: dict
    in_force: bool


def last_start(conn: Connection) -> datetime | None:
    """The latest instant a generation or any grid version starts at: a new generation
    must take effect after it (generations follow each other in time)."""
    return conn.execute(
        text(
            """SELECT GREATEST((SELECT max(effective_at) FROM boundary_generations),
                           (SELECT max(valid_from) FROM grid_versions))"""
        )
    ).scalar()


def create_generation(
    conn: Connection, *, effective: datetime | None, source: str | None, retire_missing: bool, counts: dict
) -> tuple[int, datetime]:
    """A new generation taking effect at ``effective`` (default ``gridbranch_now()``):
    (its id, the instant it takes effect)."""
    row = conn.execute(
        text(
            f"""INSERT INTO boundary_generations (kind, effective_at, source, retire_missing, counts)
            VALUES ('grids', {_EFFECTIVE}, :source, :retire, CAST(:counts AS jsonb))
            RETURNING id, effective_at"""
        ),
        {
            "effective": effective,
            "source": source,
            "retire": retire_missing,
            "counts": json.dumps(counts, ensure_ascii=False),
        },
    ).one()
    return row[0], row[1]


def generations(conn: Connection) -> list[Generation]:
    """Every generation, oldest first, with whether it is in force by the clock (it took
    effect and is the latest that did)."""
    rows = conn.execute(
        text(
            """SELECT id, kind, effective_at, created_at, source, retire_missing, counts,
                  effective_at <= gridbranch_now() AS started
           FROM boundary_generations ORDER BY effective_at, id"""
        )
    ).all()
    current = next((r.id for r in reversed(rows) if r.started), None)
    return [
        Generation(r.id, r.kind, r.effective_at, r.created_at, r.source, r.retire_missing, r.counts, r.id == current)
        for r in rows
    ]


def day(at: datetime) -> str:
    """An instant as the deployment reads it (China Standard Time)."""
    local = at.astimezone(LOCAL_TZ)
    return local.strftime("%Y-%m-%d") if local.time() == time(0) else local.strftime("%Y-%m-%d %H:%M:%S%z")


def parse_instant(value: str, field: str = "effective") -> datetime:
    """``2027-01-01`` (the start of that day in China Standard Time) or an ISO 8601
    instant with its offset; :class:`InvalidInput` naming ``field``."""
    value = value.strip()
    try:
        if len(value) == 10:
            at = datetime.combine(date.fromisoformat(value), time(0), LOCAL_TZ)
        else:
            at = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{field} must be a day (2027-01-01) or an instant with its offset (2027-01-01T08:00+08:00), not {value!r}",
            field=field,
            detail_zh=f"{field} 应为日期（如 2027-01-01）或带时区的时刻",
        ) from None
    if at.tzinfo is None:
        raise InvalidInput(
            f"{field}: say the offset of {value!r} (e.g. +08:00)",
            field=field,
            detail_zh=f"{field} 须注明时区（如 +08:00）",
        )
    if not (2000 <= at.year <= 2100):
        raise InvalidInput(
            f"{field} must lie in the years 2000–2100, not {value!r}",
            field=field,
            detail_zh=f"{field} 须在 2000–2100 年之间",
        )
    return at

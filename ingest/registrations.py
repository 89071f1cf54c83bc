"""Bulk registration from a CSV: ``member_id, name, phone, lon, lat, crs, role``.

``member_id`` is the organisation department's member number (党员编号, stored as
``members.number``). Every row is validated and located; the report classes rows as
``located`` (inside a grid or on an edge), ``nearest`` (in a gap, within the
tolerance), ``unmatched`` (outside the service area) or ``invalid``. A dry run writes
nothing. A commit loads the good rows through COPY into a staging table and writes
members, residences and confirmed registrations set-based in ONE transaction; a member
already registered at the same place with the same role is left unchanged, so a second
run of the same file changes nothing. Every row not taken is reported with its reason.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ingest.points import points_from_rows, rows_from_csv
from layers.locate import NEAREST, OUTSIDE, Describer, GridIndex
from layers.errors import InvalidInput
from layers.registrations import role_code

COLUMNS = ("member_id", "name", "phone", "lon", "lat", "crs", "role")
PHONE = re.compile(r"^\+?[0-9][0-9 -]{4,19}$")


@dataclass
class RowOutcome:
    row: int  # 1-based data row number (the header is row 0)
    member_number: str | None
    status: str  # located, nearest, unmatched, invalid
    reason: str | None = None
    grid: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImportPlan:
    outcomes: list[RowOutcome]
    good: list[dict[str, Any]]  # rows ready to write

    def counts(self) -> dict[str, int]:
        c = Counter(o.status for o in self.outcomes)
        return {k: c.get(k, 0) for k in ("located", "nearest", "unmatched", "invalid")}

    @property
    def rejects(self) -> list[RowOutcome]:
        return [o for o in self.outcomes if o.status in ("unmatched", "invalid")]


def plan_import(session: Session, data: bytes | str, index: GridIndex, *, tolerance_m: float, edge_m: float,
                default_crs: str = "wgs84") -> ImportPlan:
    """Validate and locate every row; nothing is written."""
    rows = rows_from_csv(data, required=COLUMNS[:5])
    batch = points_from_rows(rows, default_crs=default_crs, id_key="member_id")
    roles: dict[str, str | None] = {}
    outcomes: list[RowOutcome] = []
    seen: dict[str, int] = {}
    good_idx = batch.good
    located = index.locate(batch.lon[good_idx], batch.lat[good_idx], tolerance_m=tolerance_m, edge_m=edge_m)
    where = {int(i): j for j, i in enumerate(good_idx)}
    describer = Describer(index)
    good: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        number = (row.get("member_id") or "").strip() or None
        out = RowOutcome(row=i + 1, member_number=number, status="invalid", values=row)
        outcomes.append(out)
        nul = sorted(k for k, v in row.items() if k and isinstance(v, str) and "\x00" in v)
        if nul:  # no text column can store it
            out.reason = f"a NUL character in {', '.join(nul)}"
            continue
        problems = []
        if number is None:
            problems.append("member_id is missing")
        elif number in seen:
            problems.append(f"member_id {number} appears again (first on row {seen[number]})")
        else:
            seen[number] = i + 1
        name = (row.get("name") or "").strip()
        if not name:
            problems.append("name is missing")
        phone = (row.get("phone") or "").strip() or None
        if phone is not None and not PHONE.match(phone):
            problems.append(f"phone {phone!r} is not a phone number")
        role = (row.get("role") or "").strip()
        if role not in roles:
            try:
                roles[role] = role_code(session, role) if role else None
            except InvalidInput as exc:
                roles[role] = None
                problems.append(exc.detail)
        elif role and roles[role] is None:
            problems.append(f"unknown service role {role!r}")
        if not role:
            problems.append("role is missing")
        if i in batch.errors:
            problems.append(batch.errors[i]["detail"])
        if problems:
            out.reason = "; ".join(problems)
            continue
        j = where[i]
        m = int(located.match[j])
        if m == OUTSIDE:
            out.status = "unmatched"
            out.reason = describer.describe(located, j, float(batch.lon[i]), float(batch.lat[i]), tolerance_m)["message"]
            continue
        g = index.grids[int(located.grid[j])]
        out.status = "nearest" if m == NEAREST else "located"
        out.grid = g["code"]
        good.append(
            {
                "number": number, "name": name, "phone": phone, "role_code": roles[role],
                "lon": float(batch.lon[i]), "lat": float(batch.lat[i]),
                "source_crs": batch.crs[i] or default_crs, "source_x": float(batch.x[i]), "source_y": float(batch.y[i]),
                "grid_id": g["grid_id"], "grid_version_id": g["grid_version_id"], "branch_id": g["branch_id"],
            }
        )
    return ImportPlan(outcomes, good)


_STAGE = """
CREATE TEMP TABLE import_registrations (
    number text, name text, phone text, role_code text, lon float8, lat float8,
    source_crs text, source_x float8, source_y float8, grid_id int, grid_version_id int, branch_id int
) ON COMMIT DROP
"""


def commit_import(conn: Connection, plan: ImportPlan, *, actor: str) -> dict[str, int]:
    """Write the plan's good rows in the caller's transaction. Returns counts of members
    created and updated, registrations created (of which moves) and rows unchanged."""
    conn.execute(text(_STAGE))
    buf = io.StringIO()
    writer = csv.writer(buf)
    keys = ("number", "name", "phone", "role_code", "lon", "lat", "source_crs", "source_x", "source_y",
            "grid_id", "grid_version_id", "branch_id")
    for r in plan.good:
        writer.writerow(["" if r[k] is None else (repr(r[k]) if isinstance(r[k], float) else r[k]) for k in keys])
    buf.seek(0)
    cursor = conn.connection.driver_connection.cursor()
    cursor.copy_expert(f"COPY import_registrations ({', '.join(keys)}) FROM STDIN WITH (FORMAT csv)", buf)

    # Which rows change anything? (statements that would touch no row are not run, so
    # a second import of the same file leaves even the data versions alone)
    conn.execute(text(
        """CREATE TEMP TABLE import_diff ON COMMIT DROP AS
           SELECT s.*, m.id AS member_id,
                  (m.id IS NULL) AS new_member,
                  (m.id IS NOT NULL AND (m.name IS DISTINCT FROM s.name OR m.phone IS DISTINCT FROM s.phone)) AS changed_member,
                  r.id AS active_id,
                  (r.id IS NOT NULL AND r.grid_id = s.grid_id AND r.role_code = s.role_code
                   AND ST_Equals(res.geom, ST_SetSRID(ST_MakePoint(s.lon, s.lat), 4326))) AS unchanged
           FROM import_registrations s
           LEFT JOIN members m ON m.number = s.number
           LEFT JOIN registrations r ON r.member_id = m.id AND r.status IN ('pending', 'confirmed')
           LEFT JOIN residences res ON res.id = r.residence_id"""
    ))
    c = conn.execute(text(
        """SELECT count(*) FILTER (WHERE new_member), count(*) FILTER (WHERE changed_member),
                  count(*) FILTER (WHERE NOT unchanged OR unchanged IS NULL),
                  count(*) FILTER (WHERE active_id IS NOT NULL AND NOT unchanged),
                  count(*) FILTER (WHERE unchanged)
           FROM import_diff"""
    )).one()
    counts = {"members_created": c[0], "members_updated": c[1], "registrations_created": c[2],
              "moves": c[3], "unchanged": c[4]}
    if counts["members_created"]:
        conn.execute(text(
            """INSERT INTO members (number, name, phone, status)
               SELECT number, name, phone, 'in_service' FROM import_diff WHERE new_member"""
        ))
    if counts["members_updated"]:
        conn.execute(text(
            """UPDATE members m SET name = d.name, phone = d.phone
               FROM import_diff d WHERE d.changed_member AND m.id = d.member_id"""
        ))
    if counts["moves"]:
        conn.execute(text(
            """WITH ended AS (
                   UPDATE registrations r SET status = 'ended', ended_at = gridbranch_now(), reason = 'moved (import)', decided_by = :actor
                   FROM import_diff d WHERE r.id = d.active_id AND NOT d.unchanged
                   RETURNING r.residence_id)
               UPDATE residences SET ended_at = gridbranch_now() WHERE id IN (SELECT residence_id FROM ended)"""
        ), {"actor": actor})
    if counts["registrations_created"]:
        # a new residence supersedes any current one (e.g. recorded without a registration)
        conn.execute(text(
            """UPDATE residences r SET ended_at = gridbranch_now() FROM import_diff d JOIN members m ON m.number = d.number
               WHERE (NOT d.unchanged OR d.unchanged IS NULL) AND r.member_id = m.id AND r.ended_at IS NULL"""
        ))
        conn.execute(text(
            """WITH todo AS (
                   SELECT d.*, m.id AS mid FROM import_diff d JOIN members m ON m.number = d.number
                   WHERE NOT d.unchanged OR d.unchanged IS NULL),
               res AS (
                   INSERT INTO residences (member_id, geom, source_crs, source_x, source_y)
                   SELECT mid, ST_SetSRID(ST_MakePoint(lon, lat), 4326), source_crs, source_x, source_y FROM todo
                   RETURNING id, member_id)
               INSERT INTO registrations (member_id, residence_id, grid_id, grid_version_id, branch_id, role_code,
                                          status, decided_at, decided_by)
               SELECT t.mid, res.id, t.grid_id, t.grid_version_id, t.branch_id, t.role_code, 'confirmed', gridbranch_now(), :actor
               FROM todo t JOIN res ON res.member_id = t.mid"""
        ), {"actor": actor})
    conn.execute(text("DROP TABLE import_diff, import_registrations"))
    return counts


def write_rejects(path: Path, plan: ImportPlan) -> int:
    """A CSV of every row not taken: its row number, status, reason and original values."""
    rejects = plan.rejects
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "status", "reason", *COLUMNS])
        for o in rejects:
            writer.writerow([o.row, o.status, o.reason, *[o.values.get(c, "") for c in COLUMNS]])
    return len(rejects)


def format_report(plan: ImportPlan) -> str:
    counts = plan.counts()
    lines = [
        f"rows: {len(plan.outcomes)}",
        f"  located (inside a grid or on an edge): {counts['located']}",
        f"  nearest (in a gap, within tolerance):   {counts['nearest']}",
        f"  unmatched (outside the service area):   {counts['unmatched']}",
        f"  invalid:                                {counts['invalid']}",
    ]
    for o in plan.rejects:
        lines.append(f"  row {o.row} ({o.member_number or '-'}): {o.status}: {o.reason}")
    return "\n".join(lines)

"""Bulk registration from a CSV: ``member_id, name, phone, lon, lat, crs, role``.

``member_id`` is the organisation department's member number (党员编号, stored as
``members.number``). Every row is validated and located; the report classes rows as
``located`` (inside a grid or on an edge), ``nearest`` (in a gap, within the
tolerance), ``unmatched`` (outside the service area) or ``invalid``. A dry run writes
nothing. A commit loads the good rows through COPY into a staging table and writes
members, residences and confirmed registrations set-based in ONE transaction; a member
already registered at the same place with the same role is left unchanged, so a second
run of the same file changes nothing. Every row not taken is reported with its reason.

Every physical row of the file is accounted for: imported, or rejected with its row
number (the header is row 0, so row *n* is line *n* + 1 of the file). The text rules are
the API's (:mod:`layers.textfields`): names, phones and member numbers in the same
formats and lengths, no control characters or lone surrogates, and no cell that a
spreadsheet would run as a formula (``= + - @``, tab, CR at its start; plain numbers
such as ``-12.5`` excepted) — such rows are refused, not neutralised. No field may hold
a line break, so a quote left open (which makes the CSV reader run a field on into the
following rows) rejects every row it swallowed instead of importing merged text. In the
rejects file, cells that look like formulas are written with a leading ``'`` so that
opening it in a spreadsheet runs nothing.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ingest import tables
from layers import textfields
from layers.crs import parse_crs
from layers.errors import InvalidInput
from layers.locate import NEAREST, OUTSIDE, Describer, GridIndex
from layers.points import points_from_rows
from layers.registrations import role_code

COLUMNS = ("member_id", "name", "phone", "lon", "lat", "crs", "role")
REQUIRED = COLUMNS[:5]
#: Longest role and CRS cell taken (role codes and names and ``source_crs`` are no longer).
CODE_MAX = 32


@dataclass
class RowOutcome:
    row: int  # the row number in the file: the header is row 0 (line 1 of the file)
    member_number: str | None
    status: str  # located, nearest, unmatched, invalid
    reason: str | None = None
    grid: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImportPlan:
    outcomes: list[RowOutcome]
    good: list[dict[str, Any]]  # rows ready to write
    file_error: str | None = None  # the file could not be read at all (then no outcomes)

    def counts(self) -> dict[str, int]:
        c = Counter(o.status for o in self.outcomes)
        return {k: c.get(k, 0) for k in ("located", "nearest", "unmatched", "invalid")}

    @property
    def rejects(self) -> list[RowOutcome]:
        return [o for o in self.outcomes if o.status in ("unmatched", "invalid")]


def _records(data: str) -> tuple[list[str], list[tables.Record]]:
    header, records = tables.csv_records(tables.physical_lines(data), ",".join(COLUMNS))
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InvalidInput(
            f"the CSV header must name the columns {', '.join(REQUIRED)}; missing {', '.join(missing)} "
            f"(header: {header})",
            field="file",
        )
    return header, records


def plan_import(
    session: Session,
    data: bytes | str,
    index: GridIndex,
    *,
    tolerance_m: float,
    edge_m: float,
    default_crs: str = "wgs84",
    encoding: str = "utf-8",
) -> ImportPlan:
    """Validate and locate every row; nothing is written. A file that cannot be read at
    all (not text in ``encoding``, no header, required columns missing) gives a plan with
    ``file_error`` and no rows."""
    try:
        content = tables.decode(data, encoding)
        header, records = _records(content)
    except InvalidInput as exc:
        return ImportPlan([], [], file_error=exc.detail)
    lines = tables.physical_lines(content)
    width = len(header)
    outcomes: list[RowOutcome] = []
    rows: list[dict[str, str]] = []  # the records to check, in order
    checked: list[RowOutcome] = []
    for record in records:
        if record.fields is None:
            for row, values, reason in tables.swallowed(record, lines, header):
                number = (values.get("member_id") or "").strip() or None
                outcomes.append(RowOutcome(row, number, "invalid", reason, values=values))
            continue
        values = {h: v.strip() for h, v in zip(header, record.fields)}
        out = RowOutcome(record.first, values.get("member_id") or None, "invalid", values=values)
        outcomes.append(out)
        if len(record.fields) != width:
            out.reason = (
                f"the row has {len(record.fields)} fields, the header {width} (a value with an unquoted comma?)"
            )
            continue
        rows.append(values)
        checked.append(out)

    batch = points_from_rows(rows, default_crs=default_crs, id_key="member_id")
    good_idx = batch.good
    located = index.locate(batch.lon[good_idx], batch.lat[good_idx], tolerance_m=tolerance_m, edge_m=edge_m)
    where = {int(i): j for j, i in enumerate(good_idx)}
    describer = Describer(index)
    roles: dict[str, str | None] = {}
    seen: dict[str, int] = {}
    good: list[dict[str, Any]] = []
    for i, (cells, out) in enumerate(zip(rows, checked)):
        faults = _cell_problems(cells)
        bad = {p[0] for p in faults}
        problems = [p[1] for p in faults]
        number = cells.get("member_id") or None
        if "member_id" not in bad:
            try:
                number = textfields.member_number(number, "member_id") if number else None
            except InvalidInput as exc:
                problems.append(exc.detail)
                number = None
                bad.add("member_id")
            if number is None and "member_id" not in bad:
                problems.append("member_id is missing")
            elif number in seen:
                problems.append(f"member_id {number} appears again (first on row {seen[number]})")
            elif number is not None:
                seen[number] = out.row
        name = cells.get("name") or ""
        if "name" not in bad:
            if not name:
                problems.append("name is missing")
            else:
                try:
                    name = textfields.name(name, "name")
                except InvalidInput as exc:
                    problems.append(exc.detail)
        phone = cells.get("phone") or None
        if "phone" not in bad and phone is not None:
            try:
                phone = textfields.phone(phone, "phone")
            except InvalidInput as exc:
                problems.append(exc.detail)
        role = cells.get("role") or ""
        if "role" not in bad:
            if not role:
                problems.append("role is missing")
            elif role not in roles:
                try:
                    roles[role] = role_code(session, role)
                except InvalidInput as exc:
                    roles[role] = None
                    problems.append(exc.detail)
            elif roles[role] is None:
                problems.append(f"unknown service role {role!r}")
        if i in batch.errors and not bad & {"lon", "lat", "crs"}:
            problems.append(batch.errors[i]["detail"])
        if problems:
            out.reason = "; ".join(problems)
            continue
        j = where[i]
        m = int(located.match[j])
        if m == OUTSIDE:
            out.status = "unmatched"
            out.reason = describer.describe(located, j, float(batch.lon[i]), float(batch.lat[i]), tolerance_m)[
                "message"
            ]
            continue
        g = index.grids[int(located.grid[j])]
        out.status = "nearest" if m == NEAREST else "located"
        out.grid = g["code"]
        good.append(
            {
                "number": number,
                "name": name,
                "phone": phone,
                "role_code": roles[role],
                "lon": float(batch.lon[i]),
                "lat": float(batch.lat[i]),
                "source_crs": parse_crs(batch.crs[i] or default_crs).name,
                "source_x": float(batch.x[i]),
                "source_y": float(batch.y[i]),
                "grid_id": g["grid_id"],
                "grid_version_id": g["grid_version_id"],
                "branch_id": g["branch_id"],
            }
        )
    outcomes.sort(key=lambda o: o.row)
    return ImportPlan(outcomes, good)


def _cell_problems(row: dict[str, str]) -> list[tuple[str, str]]:
    """(column, reason) for each of our cells that is no text at all, too long to be what
    it names, or formula-like (the number columns may start with a sign). Member numbers,
    names and phones are then checked by their own rules (formulas included), worded as
    the API words them."""
    out = []
    for column in COLUMNS:
        value = row.get(column) or ""
        problem = textfields.text_problem(value)
        if problem:
            out.append((column, f"{column} contains {problem}"))
        elif column in ("role", "crs") and len(value) > CODE_MAX:
            out.append((column, f"{column} has {len(value)} characters; at most {CODE_MAX}"))
        elif (
            column in ("role", "crs", "lon", "lat")
            and textfields.looks_like_formula(value)
            and not (column in ("lon", "lat") and tables.NUMBER.match(value))
        ):
            out.append((column, f"{column} {textfields.formula_problem(value)}"))
    return out


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
    keys = (
        "number",
        "name",
        "phone",
        "role_code",
        "lon",
        "lat",
        "source_crs",
        "source_x",
        "source_y",
        "grid_id",
        "grid_version_id",
        "branch_id",
    )
    tables.copy_rows(conn, "import_registrations", keys, ([r[k] for k in keys] for r in plan.good))

    # The members the file names are locked first, in id order, as every API write on a
    # member starts (layers.registrations): the diff below cannot race an API write, and
    # the data_versions rows are taken after the member rows, never before.
    conn.execute(
        text(
            "SELECT m.id FROM members m JOIN import_registrations s ON m.number = s.number "
            "ORDER BY m.id FOR UPDATE OF m"
        )
    )

    # Which rows change anything? (statements that would touch no row are not run, so
    # a second import of the same file leaves even the data versions alone)
    conn.execute(
        text(
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
        )
    )
    c = conn.execute(
        text(
            """SELECT count(*) FILTER (WHERE new_member), count(*) FILTER (WHERE changed_member),
                  count(*) FILTER (WHERE NOT unchanged OR unchanged IS NULL),
                  count(*) FILTER (WHERE active_id IS NOT NULL AND NOT unchanged),
                  count(*) FILTER (WHERE unchanged)
           FROM import_diff"""
        )
    ).one()
    counts = {
        "members_created": c[0],
        "members_updated": c[1],
        "registrations_created": c[2],
        "moves": c[3],
        "unchanged": c[4],
    }
    if counts["members_created"]:
        conn.execute(
            text(
                """INSERT INTO members (number, name, phone, status)
               SELECT number, name, phone, 'in_service' FROM import_diff WHERE new_member"""
            )
        )
    if counts["members_updated"]:
        conn.execute(
            text(
                """UPDATE members m SET name = d.name, phone = d.phone
               FROM import_diff d WHERE d.changed_member AND m.id = d.member_id"""
            )
        )
    if counts["moves"]:
        conn.execute(
            text(
                """WITH ended AS (
                   UPDATE registrations r SET status = 'ended', ended_at = gridbranch_now(), reason = 'moved (import)', decided_by = :actor
                   FROM import_diff d WHERE r.id = d.active_id AND NOT d.unchanged
                   RETURNING r.residence_id)
               UPDATE residences SET ended_at = gridbranch_now() WHERE id IN (SELECT residence_id FROM ended)"""
            ),
            {"actor": actor},
        )
    if counts["registrations_created"]:
        # a new residence supersedes any current one (e.g. recorded without a registration)
        conn.execute(
            text(
                """UPDATE residences r SET ended_at = gridbranch_now() FROM import_diff d JOIN members m ON m.number = d.number
               WHERE (NOT d.unchanged OR d.unchanged IS NULL) AND r.member_id = m.id AND r.ended_at IS NULL"""
            )
        )
        conn.execute(
            text(
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
            ),
            {"actor": actor},
        )
    conn.execute(text("DROP TABLE import_diff, import_registrations"))
    return counts


def write_rejects(path: Path, plan: ImportPlan) -> int:
    """A CSV of every row not taken: its row number (header 0) and line in the file,
    status, reason and original values; for a file that could not be read, one line
    saying why. Returns the number of rejected rows."""
    rejects = plan.rejects
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "line", "status", "reason", *COLUMNS])
        if plan.file_error is not None:
            writer.writerow(["", "", "unreadable", tables.rejects_cell(plan.file_error), *[""] * len(COLUMNS)])
        for o in rejects:
            writer.writerow(
                [
                    o.row,
                    o.row + 1,
                    o.status,
                    tables.rejects_cell(o.reason),
                    *[tables.rejects_cell(o.values.get(c, "")) for c in COLUMNS],
                ]
            )
    return len(rejects)


def format_report(plan: ImportPlan) -> str:
    if plan.file_error is not None:
        return f"the file cannot be read: {plan.file_error}"
    counts = plan.counts()
    lines = [
        f"rows: {len(plan.outcomes)}",
        f"  located (inside a grid or on an edge): {counts['located']}",
        f"  nearest (in a gap, within tolerance):   {counts['nearest']}",
        f"  unmatched (outside the service area):   {counts['unmatched']}",
        f"  invalid:                                {counts['invalid']}",
    ]
    for o in plan.rejects:
        number = o.member_number if o.member_number and not textfields.text_problem(o.member_number) else "-"
        lines.append(f"  row {o.row} ({number[:40]}): {o.status}: {o.reason}")
    return "\n".join(lines)

"""Reading tables (CSV, XLSX) for the row imports, and reporting what was taken: the
machinery the registrations import (``ingest.registrations``) and the roster imports
(``ingest.roster``) share.

Every physical row of a file is accounted for: imported, or rejected with its row
number (the header is row 0, so row *n* is line *n* + 1 of a CSV, or row *n* + 1 of a
sheet whose header is on its first row). CSV text is UTF-8 (with or without BOM) or the
encoding named; without one, a file that is not valid UTF-8 is read as GB18030 (the
superset of GBK that Chinese Excel saves "CSV" in). No CSV field may hold a line break,
so a quote left open (which makes a CSV reader run a field on into the following rows)
rejects every row it swallowed instead of importing merged text. XLSX is read by
openpyxl, which tells a formula cell from a value: a formula is refused (its row
rejected), never its cached result taken. In a rejects file, cells that look like
formulas are written with a leading ``'`` so that opening it in a spreadsheet runs
nothing.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from layers import textfields
from layers.errors import InvalidInput
from layers.gcpause import no_gc

_LINES = re.compile(r"[^\n]*\n|[^\n]+$")
_CR_LINES = re.compile(r"[^\r]*\r|[^\r]+$")  # a file whose lines end in CR alone (old Mac Excel)
#: A plain number (a coordinate may start with a sign and still be no formula).
NUMBER = re.compile(r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_INTEGRAL = re.compile(r"^([0-9]+)\.0*$")


# ---- CSV ----------------------------------------------------------------------------------


def decode(data: bytes | str, encoding: str | None) -> str:
    """CSV bytes as text: ``encoding`` (UTF-8 with or without BOM), or, when None,
    UTF-8 if the bytes are valid UTF-8, else GB18030."""
    if isinstance(data, str):
        return data
    if encoding is None:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            encoding = "gb18030"
    try:
        text = data.decode("utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"the file is not {encoding} text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as CSV UTF-8, or name its encoding (--encoding gb18030)",
            field="file",
        ) from None
    except LookupError:
        raise InvalidInput(f"unknown encoding {encoding!r}", field="encoding") from None
    return text.removeprefix("\ufeff")


def physical_lines(data: str) -> list[str]:
    """The file's lines with their ends: split at LF (CRLF included); a CR alone ends a
    line only in a file without any LF."""
    return (_LINES if "\n" in data else _CR_LINES).findall(data)


@dataclass
class Record:
    first: int  # row numbers (header 0) of its first and last physical row
    last: int
    fields: list[str] | None  # None: not readable as a row (see problem)
    problem: str | None = None


def csv_records(lines: list[str], header_hint: str) -> tuple[list[str], list[Record]]:
    """The header and the records of a CSV's lines, each with the physical rows it
    spans; a record that spans several rows (a quote left open) or breaks the quoting
    rules comes back without fields, with the reason. :class:`InvalidInput` naming
    ``file`` without a header (``header_hint`` says what one looks like)."""
    reader = csv.reader(iter(lines), strict=True)
    records: list[Record] = []
    append = records.append
    done = 0  # physical lines read so far
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            first, done = done, reader.line_num
            if str(exc) == "unexpected end of data":
                problem = f'a quote (") opened in row {first} is never closed'
            elif "new-line character" in str(exc):
                problem = "a line break (CR) inside a field, which no field may hold"
            else:
                problem = f"the CSV quoting is broken ({exc})"
            append(Record(first, done - 1, None, problem))
            continue
        first, done = done, reader.line_num
        if done - 1 > first or (
            fields and ("\n" in fields[-1] or "\r" in fields[-1] or any("\n" in f or "\r" in f for f in fields))
        ):
            append(Record(first, done - 1, None, None))
        elif fields:
            append(Record(first, first, fields))
    if not records or records[0].first != 0 or records[0].fields is None:
        raise InvalidInput(f"the file has no header row ({header_hint}) on its first line", field="file")
    return [h.strip() for h in records[0].fields], records[1:]


def swallowed(record: Record, lines: list[str], header: list[str]) -> list[tuple[int, dict[str, str], str]]:
    """One rejection per physical row of an unreadable record, with that row's own text."""
    span = f"row {record.first}" if record.first == record.last else f"rows {record.first}–{record.last}"
    if record.problem:
        reason = f"{span}: {record.problem}; nothing of {'it' if record.first == record.last else 'them'} is imported"
    else:
        reason = (
            f'{span} read as one row: a quoted field runs from row {record.first} into the next (a quote (") '
            "left open, or a line break inside quotes); no field may hold a line break, so nothing of these "
            "rows is imported (close or double the quote)"
        )
    out = []
    for row in range(record.first, record.last + 1):
        raw = lines[row].rstrip("\r\n") if row < len(lines) else ""
        out.append((row, dict(zip(header, raw.split(","))), reason))
    return out


# ---- any table: CSV or XLSX -----------------------------------------------------------------


class Row:
    """One row of a table: its number (header 0), its cells in the header's order
    (text), and why it cannot be read at all (then ``fields`` is what could be
    recovered)."""

    __slots__ = ("row", "fields", "problem")

    def __init__(self, row: int, fields: list[str], problem: str | None = None):
        self.row, self.fields, self.problem = row, fields, problem


@dataclass
class Table:
    name: str
    kind: str  # CSV or XLSX
    header: list[str]
    rows: list[Row]
    encoding: str | None = None


def cell_text(value: Any) -> str:
    """A cell as text: numbers without a decimal tail when integral (an Excel phone or
    member number is a number), dates in ISO form, None as ''."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return str(value).strip()


def read_table(
    path: str | Path,
    *,
    header_hint: str,
    encoding: str | None = None,
    sheet: str | None = None,
    data: bytes | None = None,
) -> Table:
    """Every row of a CSV or XLSX (one sheet: ``sheet``, or the only one);
    :class:`InvalidInput` naming ``file`` (or ``layer`` for the sheet) when the file as
    a whole cannot be read."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        return _read_xlsx(path, sheet, header_hint)
    if suffix not in (".csv", ".txt"):
        raise InvalidInput(
            f"{path.name}: unsupported file type {suffix or '(none)'}; a table is .csv or .xlsx", field="file"
        )
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}", field="file") from None
    content = decode(data, encoding)
    used = encoding or ("UTF-8" if _is_utf8(data) else "GB18030 (detected: not UTF-8)")
    with no_gc():  # hundreds of thousands of small objects, no cycles
        return _csv_table(path.name, content, header_hint, used)


def _csv_table(name: str, content: str, header_hint: str, used: str) -> Table:
    if '"' not in content and content.count("\r") == content.count("\r\n"):
        return _plain_csv_table(name, content.replace("\r\n", "\n") if "\r" in content else content, header_hint, used)
    lines = physical_lines(content)
    header, records = csv_records(lines, header_hint)
    width = len(header)
    rows: list[Row] = []
    append = rows.append
    for record in records:
        fields = record.fields
        if fields is None:
            for row, values, reason in swallowed(record, lines, header):
                append(Row(row, list(values.values()), reason))
            continue
        fields = [f.strip() for f in fields]
        append(Row(record.first, fields, _width_problem(fields, width)))
    return Table(name, "CSV", header, rows, used)


def _width_problem(fields: list[str], width: int) -> str | None:
    if len(fields) == width:
        return None
    return f"the row has {len(fields)} fields, the header {width} (a value with an unquoted comma?)"


def _plain_csv_table(name: str, content: str, header_hint: str, used: str) -> Table:
    """A CSV without any quote and with LF (or CRLF) line ends: split, which gives the
    same fields as the CSV reader, several times faster."""
    lines = content.split("\n")
    if not lines[0].strip(","):
        raise InvalidInput(f"the file has no header row ({header_hint}) on its first line", field="file")
    header = [h.strip() for h in lines[0].split(",")]
    width = len(header)
    rows: list[Row] = []
    append = rows.append
    for n in range(1, len(lines)):
        line = lines[n]
        if not line:
            continue
        fields = line.split(",")
        if " " in line or "\t" in line or "\u3000" in line or "\xa0" in line:
            fields = [f.strip() for f in fields]
        append(Row(n, fields, None if len(fields) == width else _width_problem(fields, width)))
    return Table(name, "CSV", header, rows, used)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _read_xlsx(path: Path, sheet: str | None, header_hint: str) -> Table:
    from ingest.files import Limits, _check_archive, open_xlsx_sheet

    name = path.name
    _check_archive(path, name, Limits())  # the zip-bomb checks of the boundary files
    wb, sheet = open_xlsx_sheet(path, name, sheet, "--sheet")
    try:
        header: list[str] | None = None
        top = 0
        rows: list[Row] = []
        for cells in wb[sheet].iter_rows():
            values = [c.value for c in cells]
            if all(v is None for v in values):
                continue
            if header is None:
                header = [cell_text(v) or f"column{k + 1}" for k, v in enumerate(values)]
                top = cells[0].row
                continue
            r = cells[0].row - top
            record: list[str] = []
            problem = None
            for k, c in enumerate(cells[: len(header)]):
                if c.data_type == "f":
                    problem = problem or (
                        f"column {header[k]!r} holds a formula ({c.value}); gridbranch reads "
                        "values only — paste the column as values"
                    )
                    record.append(str(c.value))
                else:
                    record.append(cell_text(c.value))
            record += [""] * (len(header) - len(record))
            if problem is None and any(v is not None for v in values[len(header) :]):
                problem = f"the row has cells beyond the header's {len(header)} columns"
            rows.append(Row(r, record, problem))
    finally:
        wb.close()
    if header is None:
        raise InvalidInput(f"{name}: the sheet {sheet} has no header row ({header_hint})", field="file")
    return Table(name, "XLSX", header, rows, "XLSX")


# ---- columns ------------------------------------------------------------------------------------


def parse_mapping(text_: str | None, keys: Iterable[str]) -> dict[str, str]:
    """``code=BM,name=MC`` → {"code": "BM", ...} for the given keys; :class:`InvalidInput`
    naming ``map`` for anything else."""
    keys = tuple(keys)
    out: dict[str, str] = {}
    if not text_:
        return out
    for part in text_.split(","):
        if not part.strip():
            continue
        key, sep, column = part.partition("=")
        key, column = key.strip().lower(), column.strip()
        if not sep or key not in keys or not column:
            raise InvalidInput(
                f"--map takes KEY=COLUMN pairs with KEY one of {', '.join(keys)}, got {part!r}", field="map"
            )
        out[key] = column
    return out


def resolve_columns(
    name: str,
    header: list[str],
    candidates: dict[str, tuple[str, ...]],
    required: Iterable[str],
    mapping: dict[str, str],
) -> dict[str, str]:
    """key → the header's column for it: the one ``mapping`` names, else the first of
    the key's candidate names present (case-insensitive); :class:`InvalidInput` naming
    ``map`` when a required key has none, or a mapped column is not in the header."""
    out: dict[str, str] = {}
    lower = {h.strip().lower(): h for h in header}
    for key, names in candidates.items():
        if key in mapping:
            if mapping[key] not in header:
                raise InvalidInput(
                    f"{name}: no column {mapping[key]!r} (--map {key}=…); its columns: {', '.join(header) or '(none)'}",
                    field="map",
                )
            out[key] = mapping[key]
            continue
        for candidate in (key, *names):
            if candidate.lower() in lower:
                out[key] = lower[candidate.lower()]
                break
    missing = [k for k in required if k not in out]
    if missing:
        raise InvalidInput(
            f"{name}: no column for {', '.join(missing)} (looked for "
            + "; ".join(f"{k}: {', '.join((k, *candidates[k]))}" for k in missing)
            + f"); say which with --map {missing[0]}=COLUMN; its columns: {', '.join(header) or '(none)'}",
            field="map",
        )
    return out


def code(value: str) -> str | None:
    """A code cell as text: a number written with a decimal tail (``410105001.0``) without it."""
    m = _INTEGRAL.match(value)
    return m.group(1) if m else (value or None)


# ---- the plan and its rejects -----------------------------------------------------------------


@dataclass
class Rejected:
    row: int
    key: str | None  # the row's member number or code, when readable
    reason: str
    cells: dict[str, str]


@dataclass
class TablePlan:
    """A dry run of a table import: the rows to write (``good``, dicts ready for the
    staging table), every other row rejected with its reason."""

    kind: str
    file: str
    header: list[str] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)
    total: int = 0
    good: list[Any] = field(default_factory=list)
    rejects: list[Rejected] = field(default_factory=list)
    file_error: str | None = None
    notes: list[str] = field(default_factory=list)

    def reject(self, row: Row, key: str | None, reason: str) -> None:
        self.rejects.append(Rejected(row.row, key, reason, dict(zip(self.header, row.fields))))


def rejects_cell(value: Any) -> Any:
    """A cell as written to a rejects file: one a spreadsheet would take for a formula
    gets a leading ``'`` (shown as text), plain numbers stay as they are."""
    if isinstance(value, str) and textfields.looks_like_formula(value) and not NUMBER.match(value):
        return "'" + value
    return value


def write_rejects(path: Path, plan: TablePlan) -> int:
    """A CSV of every row not taken: its row number (header 0) and line in the file,
    the reason and the row's own cells (the importer's input, nothing else); for a file
    that could not be read, one line saying why. Returns the number of rejected rows."""
    with open(path, "w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "line", "reason", *plan.header])
        if plan.file_error is not None:
            writer.writerow(["", "", rejects_cell(plan.file_error), *[""] * len(plan.header)])
        for r in sorted(plan.rejects, key=lambda r: r.row):
            writer.writerow(
                [r.row, r.row + 1, rejects_cell(r.reason), *[rejects_cell(r.cells.get(c, "")) for c in plan.header]]
            )
    return len(plan.rejects)


def format_report(plan: TablePlan, *, show: int = 200) -> str:
    """Counts and one line per rejected row (row number, member number or code, reason;
    no other personal data), the first ``show`` of them."""
    if plan.file_error is not None:
        return f"the file cannot be read: {plan.file_error}"
    lines = [
        f"{plan.kind} from {plan.file}: {plan.total} rows, {len(plan.good)} to import, {len(plan.rejects)} rejected"
    ]
    lines += ["  columns: " + ", ".join(f"{k}={v}" for k, v in plan.columns.items())]
    lines += [f"  note: {n}" for n in plan.notes]
    for r in sorted(plan.rejects, key=lambda r: r.row)[:show]:
        key = r.key if r.key and not textfields.text_problem(r.key) else "-"
        lines.append(f"  row {r.row} ({key[:40]}): rejected: {r.reason}")
    if len(plan.rejects) > show:
        lines.append(f"  … {len(plan.rejects) - show} more in the rejects file")
    return "\n".join(lines)


# ---- COPY ---------------------------------------------------------------------------------------


def copy_rows(conn: Connection, table: str, columns: tuple[str, ...], rows: Iterable[Iterable[Any]]) -> None:
    """Load rows (sequences in ``columns`` order; None for NULL) into ``table`` through
    COPY in the connection's transaction."""
    buf = io.StringIO()
    # the csv module writes None as an empty field (NULL to COPY) and a float as its
    # repr (exact): the rows go in as they are
    csv.writer(buf).writerows(rows)
    buf.seek(0)
    raw = conn.connection.driver_connection
    assert raw is not None  # a checked-out connection has its driver's
    cursor = raw.cursor()
    cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buf)

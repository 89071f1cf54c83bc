"""The personal-data audit: who received a member's name, phone or residence, or an event
reporter's contact, when, from which endpoint, and whose (table ``audit_log``, migration
0016; append-only, enforced by the database, the retention purge aside).

Rows are built by the service (``geo_api.audit``) as :class:`Entry` values and written
here in groups (:func:`write`), one statement per group. Reading (:func:`entries`), the
CSV export (:func:`entries_csv`) and the retention purge (:func:`purge`) are here too.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers import textfields

#: The kinds of personal data an answer may carry (``fields`` of a row).
FIELDS = ("name", "phone", "residence", "contact")


@dataclass
class Entry:
    """One answer that carried personal data. ``member_ids`` and ``event_ids`` name the
    records (members whose data it held; events whose reporter contact it held);
    ``detail`` says more where ids alone do not (a tile's address and layers)."""

    actor: str
    role: str
    area: str | None
    method: str
    endpoint: str  # the route's path template, e.g. /v1/registrations/{registration_id}
    path: str  # the path and query asked for
    status: int
    fields: tuple[str, ...]
    member_ids: list[int] = field(default_factory=list)
    event_ids: list[int] = field(default_factory=list)
    detail: dict[str, Any] | None = None
    at: datetime | None = None  # None: the database's clock when written
    #: when the ids are costly to learn in the request (a tile's), how to learn them at
    #: writing time: session → member ids
    resolve: Callable[[Session], list[int]] | None = field(default=None, compare=False, repr=False)


_INSERT_RECORDS = text(
    """
    INSERT INTO audit_records (digest, member_ids, event_ids)
    SELECT r.digest, r.member_ids, r.event_ids
      FROM jsonb_to_recordset(CAST(:sets AS jsonb)) AS r(digest text, member_ids bigint[], event_ids bigint[])
    ON CONFLICT (digest) DO NOTHING
    """
)
_INSERT = text(
    """
    INSERT INTO audit_log (at, actor, role, area, method, endpoint, path, status, fields, records, detail)
    SELECT COALESCE(e.at, gridbranch_now()), e.actor, e.role, e.area, e.method, e.endpoint, e.path, e.status,
           e.fields, e.records, e.detail
      FROM jsonb_to_recordset(CAST(:rows AS jsonb)) AS e(at timestamptz, actor text, role text, area text,
                                                        method text, endpoint text, path text, status integer,
                                                        fields text[], records text, detail jsonb)
    """
)


def records_digest(member_ids: list[int], event_ids: list[int]) -> str | None:
    """The name of a set of records (``audit_records.digest``): the same members and
    events, the same name; None for none."""
    if not member_ids and not event_ids:
        return None
    raw = ("m" + ",".join(map(str, member_ids)) + "e" + ",".join(map(str, event_ids))).encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def write(session: Session, entries: list[Entry]) -> int:
    """Append ``entries`` in two statements — the record sets not yet stored, then the
    rows naming them — in the session's transaction (the caller commits). Returns how
    many."""
    if not entries:
        return 0
    rows, sets = [], {}
    for e in entries:
        if e.resolve is not None:
            e.member_ids, e.resolve = list(e.resolve(session)), None
        members, events = sorted(set(e.member_ids)), sorted(set(e.event_ids))
        digest = records_digest(members, events)
        if digest is not None and digest not in sets:
            sets[digest] = {"digest": digest, "member_ids": members, "event_ids": events}
        rows.append(
            {
                "at": e.at.isoformat() if e.at is not None else None,
                "actor": e.actor,
                "role": e.role,
                "area": e.area,
                "method": e.method,
                "endpoint": e.endpoint,
                "path": e.path,
                "status": e.status,
                "fields": list(e.fields),
                "records": digest,
                "detail": e.detail,
            }
        )
    if sets:
        session.execute(_INSERT_RECORDS, {"sets": orjson.dumps(list(sets.values())).decode()})
    session.execute(_INSERT, {"rows": orjson.dumps(rows).decode()})
    return len(entries)


def entries(
    session: Session,
    *,
    actor: str | None = None,
    member_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    endpoint: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[dict[str, Any]], int]:
    """Audit rows newest first, filtered by account (``actor``), member (rows naming
    ``member_id``), time [start, end) and endpoint template. Returns (rows, total)."""
    where, params = [], {"limit": limit, "offset": offset}
    if actor is not None:
        where.append("a.actor = :actor")
        params["actor"] = actor
    if member_id is not None:
        where.append(
            "a.records IN (SELECT digest FROM audit_records WHERE member_ids @> ARRAY[CAST(:member AS bigint)])"
        )
        params["member"] = member_id
    if start is not None:
        where.append("a.at >= :start")
        params["start"] = start
    if end is not None:
        where.append("a.at < :end")
        params["end"] = end
    if endpoint is not None:
        where.append("a.endpoint = :endpoint")
        params["endpoint"] = endpoint
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    total = session.execute(text("SELECT count(*) FROM audit_log a" + clause), params).scalar()
    rows = session.execute(
        text(
            "SELECT a.id, a.at, a.actor, a.role, a.area, a.method, a.endpoint, a.path, a.status, a.fields, a.detail, "
            "COALESCE(r.member_ids, '{}') AS member_ids, COALESCE(r.event_ids, '{}') AS event_ids "
            "FROM audit_log a LEFT JOIN audit_records r ON r.digest = a.records"
            + clause
            + " ORDER BY a.at DESC, a.id DESC LIMIT :limit OFFSET :offset"
        ),
        params,
    ).all()
    return [
        {
            "id": r.id,
            "at": r.at.isoformat(),
            "actor": r.actor,
            "role": r.role,
            "area": r.area,
            "method": r.method,
            "endpoint": r.endpoint,
            "path": r.path,
            "status": r.status,
            "fields": list(r.fields),
            "member_ids": list(r.member_ids),
            "event_ids": list(r.event_ids),
            "detail": r.detail,
        }
        for r in rows
    ], total


CSV_COLUMNS = (
    "id",
    "at",
    "actor",
    "role",
    "area",
    "method",
    "endpoint",
    "path",
    "status",
    "fields",
    "member_ids",
    "event_ids",
    "detail",
)


def _cell(value: Any) -> Any:
    """A CSV cell: lists joined by ``;``, the detail as JSON, and text a spreadsheet would
    run as a formula (a path is the caller's text) shown as text with a leading ``'``."""
    if isinstance(value, list):
        value = ";".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = orjson.dumps(value).decode()
    elif value is None:
        return ""
    if isinstance(value, str) and textfields.looks_like_formula(value):
        return "'" + value
    return value


def entries_csv(rows: list[dict[str, Any]]) -> str:
    """Audit rows as CSV (a header row, then one row per entry)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([_cell(r[c]) for c in CSV_COLUMNS])
    return buf.getvalue()


def purge(session: Session, keep_days: float) -> int:
    """Delete the rows older than ``keep_days`` before the clock (``gridbranch_now()``;
    at least one day is kept: the database refuses less) and return how many. The
    caller commits."""
    return session.execute(
        text("SELECT audit_purge(make_interval(secs => :s))"), {"s": float(keep_days) * 86400}
    ).scalar()

"""The imports uploaded through the web map (migration 0019): one row per file with its
dry run's state, progress and report, and the commit's result.

An import is ``checking`` while its dry run runs (``phase`` and ``progress`` say how far
it got), then ``ready`` (its report says what a commit would write) or ``failed`` (the
file cannot be read: ``error`` is the problem detail), ``committed`` once written
(``result``), or ``expired`` when its time ran out first. Expiry is by the service's
clock (``gridbranch_now()``); rows are never deleted, so that a commit sent again finds
what the first one did. The file is the caller's business (``geo_api.imports``): it is
kept only while the row is ``checking``, ``ready`` or ``failed``.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

KINDS = ("areas", "grids", "members", "branches", "departments", "categories", "registrations")
#: Kinds whose files (and reports: rejected rows' reasons may quote a cell) hold personal
#: data: their report is dropped once the import is committed or expires.
PERSONAL = ("members", "branches", "registrations")
#: States in which the uploaded file is still kept.
OPEN = ("checking", "ready", "failed")

_COLUMNS = (
    "id, username, area_code, kind, options, filename, size_bytes, status, phase, progress, report, error, "
    "result, created_at, expires_at, committed_at"
)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def create_import(
    session: Session,
    *,
    id: str,
    username: str,
    area_code: str,
    kind: str,
    options: dict,
    filename: str,
    size_bytes: int,
    ttl_s: float,
) -> dict[str, Any]:
    """A new import, ``checking``, expiring ``ttl_s`` seconds from now (the clock)."""
    row = (
        session.execute(
            text(
                f"""INSERT INTO imports (id, username, area_code, kind, options, filename, size_bytes, status, phase,
                                 expires_at)
            VALUES (:id, :u, :a, :k, CAST(:o AS jsonb), :f, :s, 'checking', 'queued',
                    gridbranch_now() + make_interval(secs => :ttl))
            RETURNING {_COLUMNS}"""
            ),
            {
                "id": id,
                "u": username,
                "a": area_code,
                "k": kind,
                "o": _json(options),
                "f": filename,
                "s": size_bytes,
                "ttl": ttl_s,
            },
        )
        .mappings()
        .one()
    )
    return dict(row)


def import_row(session: Session, id: str, *, lock: bool = False) -> dict[str, Any] | None:
    """The import ``id`` (None when there is none); ``lock`` holds its row until the
    transaction ends (a commit and its repetition run one after the other)."""
    row = (
        session.execute(
            text(f"SELECT {_COLUMNS} FROM imports WHERE id = :id" + (" FOR UPDATE" if lock else "")), {"id": id}
        )
        .mappings()
        .first()
    )
    return dict(row) if row is not None else None


def set_progress(session: Session, id: str, phase: str, progress: float) -> None:
    """How far the dry run of a ``checking`` import got."""
    session.execute(
        text("UPDATE imports SET phase = :p, progress = :g WHERE id = :id AND status = 'checking'"),
        {"id": id, "p": phase, "g": max(0.0, min(1.0, progress))},
    )


def finish_check(session: Session, id: str, *, report: dict | None = None, error: dict | None = None) -> bool:
    """The dry run's end: ``ready`` with its report, or ``failed`` with the problem. False
    when the import is no longer ``checking`` (it expired meanwhile)."""
    done = session.execute(
        text(
            """UPDATE imports SET status = :s, phase = NULL, progress = 1, report = CAST(:r AS jsonb),
                  error = CAST(:e AS jsonb)
           WHERE id = :id AND status = 'checking'"""
        ),
        {"id": id, "s": "failed" if error is not None else "ready", "r": _json(report), "e": _json(error)},
    )
    return done.rowcount == 1


def mark_committed(session: Session, id: str, result: dict) -> None:
    """Committed, with what was written (the report of a :data:`PERSONAL` kind dropped)."""
    session.execute(
        text(
            """UPDATE imports SET status = 'committed', committed_at = gridbranch_now(), result = CAST(:r AS jsonb),
                  report = CASE WHEN kind = ANY(:personal) THEN NULL ELSE report END
           WHERE id = :id"""
        ),
        {"id": id, "r": _json(result), "personal": list(PERSONAL)},
    )


def expire_imports(session: Session) -> list[str]:
    """Mark every open import whose time has run out ``expired`` (dropping the reports
    of :data:`PERSONAL` kinds); their ids (the caller deletes their files)."""
    return list(
        session.execute(
            text(
                """UPDATE imports SET status = 'expired', phase = NULL,
                  report = CASE WHEN kind = ANY(:personal) THEN NULL ELSE report END
           WHERE status IN ('checking', 'ready', 'failed') AND expires_at <= gridbranch_now()
           RETURNING id"""
            ),
            {"personal": list(PERSONAL)},
        ).scalars()
    )


def import_states(session: Session, ids: list[str]) -> dict[str, str]:
    """The state of each of ``ids`` that is an import (an id without a row is absent)."""
    rows = session.execute(text("SELECT id, status FROM imports WHERE id = ANY(:ids)"), {"ids": ids}).all()
    return {id: status for id, status in rows}


def restart_check(session: Session, id: str, *, kind: str | None = None, options: dict | None = None) -> bool:
    """Back to ``checking`` with its file kept — the data changed since its dry run, or
    the admin asks for it again, with another ``kind`` or ``options`` if given. False
    when the import is neither ``ready`` nor ``failed``."""
    done = session.execute(
        text(
            """UPDATE imports SET status = 'checking', phase = 'queued', progress = 0, report = NULL, error = NULL,
                  kind = coalesce(:k, kind), options = coalesce(CAST(:o AS jsonb), options)
           WHERE id = :id AND status IN ('ready', 'failed')"""
        ),
        {"id": id, "k": kind, "o": _json(options)},
    )
    return done.rowcount == 1

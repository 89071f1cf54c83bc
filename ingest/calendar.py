"""The national working calendar (法定节假日 and 调休 make-up working days) as published by
the State Council, from ``ingest/data/cn_calendar.json``, loaded into the
``work_calendar_days`` table the events' time limits are counted on (layers.events)."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection

CALENDAR_FILE = Path(__file__).resolve().parent / "data" / "cn_calendar.json"


def national_days() -> list[tuple[date, bool, str]]:
    """(day, working, note) for every day that departs from the Monday-to-Friday rule."""
    raw = json.loads(CALENDAR_FILE.read_text(encoding="utf-8"))
    return [(date.fromisoformat(d), bool(w), str(n)) for d, w, n in raw["days"]]


def load_national_calendar(conn: Connection) -> int:
    """Add the national calendar's days to ``work_calendar_days``, keeping any day a
    district has set itself; returns how many were added. The caller commits."""
    days = national_days()
    result = conn.execute(
        text(
            """INSERT INTO work_calendar_days (day, working, note)
               SELECT * FROM unnest(CAST(:days AS date[]), CAST(:working AS boolean[]), CAST(:notes AS text[]))
               ON CONFLICT (day) DO NOTHING"""
        ),
        {"days": [d for d, _, _ in days], "working": [w for _, w, _ in days], "notes": [n for _, _, n in days]},
    )
    return result.rowcount

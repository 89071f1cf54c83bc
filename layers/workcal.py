"""Working-hour arithmetic on a working calendar (pure: no database, no clock).

A :class:`WorkCalendar` is the daily working periods in local wall-clock time (for
example 08:30–12:00 and 13:30–17:30 in Asia/Shanghai), the weekend days (ISO weekdays,
6 = Saturday, 7 = Sunday), the public holidays and the make-up working days (调休: a
weekend day worked in exchange for a holiday). A day is a working day when it is a
make-up working day, or when it is neither a holiday nor a weekend day.

Time limits of events are counted in working hours: :func:`add_working_hours` gives the
instant when ``hours`` working hours after ``start`` have passed, and
:func:`working_hours_between` the working hours between two instants. Both take and
return timezone-aware datetimes; the answer's time zone is the calendar's. Lengths are
computed on absolute (UTC) time, so a daylight-saving change would be counted exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

#: A calendar with no working day in this many days is refused (it would never end).
HORIZON_DAYS = 3660

_PERIOD = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_periods(spec: str) -> tuple[tuple[time, time], ...]:
    """``"08:30-12:00,13:30-17:30"`` → sorted, non-overlapping (start, end) pairs.
    ``24:00`` is not allowed (periods stay within one day); ValueError otherwise."""
    periods = []
    for part in spec.split(","):
        if not part.strip():
            continue
        m = _PERIOD.match(part)
        if not m:
            raise ValueError(f"working period {part.strip()!r} is not HH:MM-HH:MM")
        h0, m0, h1, m1 = (int(g) for g in m.groups())
        if not (0 <= h0 < 24 and 0 <= h1 < 24 and m0 < 60 and m1 < 60):
            raise ValueError(f"working period {part.strip()!r} is not a time of day")
        start, end = time(h0, m0), time(h1, m1)
        if end <= start:
            raise ValueError(f"working period {part.strip()!r} ends before it starts")
        periods.append((start, end))
    periods.sort()
    if not periods:
        raise ValueError("at least one working period is needed")
    for (_, end), (start, _) in zip(periods, periods[1:]):
        if start < end:
            raise ValueError(f"working periods overlap: {spec!r}")
    return tuple(periods)


@dataclass(frozen=True)
class WorkCalendar:
    """Working periods (local time), weekend, holidays and make-up working days."""

    periods: tuple[tuple[time, time], ...] = ((time(8, 30), time(12, 0)), (time(13, 30), time(17, 30)))
    weekend: frozenset[int] = frozenset({6, 7})
    holidays: frozenset[date] = frozenset()
    workdays: frozenset[date] = frozenset()
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))

    def __post_init__(self) -> None:
        both = self.holidays & self.workdays
        if both:
            raise ValueError(f"days both holiday and working day: {sorted(both)}")
        if not self.periods:
            raise ValueError("at least one working period is needed")
        if not self.weekend <= set(range(1, 8)):
            raise ValueError(f"weekend days are ISO weekdays 1..7, got {sorted(self.weekend)}")

    @classmethod
    def build(cls, periods: str, weekend, holidays=(), workdays=(), tz: str = "Asia/Shanghai") -> WorkCalendar:
        return cls(
            parse_periods(periods),
            frozenset(int(d) for d in weekend),
            frozenset(holidays),
            frozenset(workdays),
            ZoneInfo(tz),
        )

    @property
    def hours_per_day(self) -> float:
        return sum((_seconds(e) - _seconds(s)) for s, e in self.periods) / 3600

    def is_working_day(self, day: date) -> bool:
        if day in self.workdays:
            return True
        return day not in self.holidays and day.isoweekday() not in self.weekend

    def day_periods(self, day: date) -> list[tuple[datetime, datetime]]:
        """The working periods of ``day`` as aware datetimes (empty on a day off)."""
        if not self.is_working_day(day):
            return []
        return [(datetime.combine(day, s, self.tz), datetime.combine(day, e, self.tz)) for s, e in self.periods]


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")
    return value


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def add_working_hours(start: datetime, hours: float, calendar: WorkCalendar) -> datetime:
    """The instant at which ``hours`` working hours have passed since ``start``.

    Work starting outside working time begins at the next working period; a limit that
    ends exactly at the end of a period ends there (not at the start of the next one).
    ``hours`` = 0 gives ``start`` back. Returned in the calendar's time zone."""
    _aware(start, "start")
    if hours < 0:
        raise ValueError(f"hours must not be negative, got {hours}")
    if hours == 0:
        return start.astimezone(calendar.tz)
    remaining = timedelta(hours=hours)
    cursor = _utc(start)
    day = start.astimezone(calendar.tz).date()
    for _ in range(HORIZON_DAYS):
        for p0, p1 in calendar.day_periods(day):
            a, b = max(_utc(p0), cursor), _utc(p1)
            if b <= a:
                continue
            if remaining <= b - a:
                return (a + remaining).astimezone(calendar.tz)
            remaining -= b - a
        day += timedelta(days=1)
    raise ValueError(f"no working time within {HORIZON_DAYS} days of {start.isoformat()}")


def working_hours_between(a: datetime, b: datetime, calendar: WorkCalendar) -> float:
    """Working hours from ``a`` to ``b`` (negative when ``b`` is before ``a``)."""
    _aware(a, "a")
    _aware(b, "b")
    if b < a:
        return -working_hours_between(b, a, calendar)
    ua, ub = _utc(a), _utc(b)
    day = a.astimezone(calendar.tz).date()
    last = b.astimezone(calendar.tz).date()
    total = timedelta()
    while day <= last:
        for p0, p1 in calendar.day_periods(day):
            lo, hi = max(_utc(p0), ua), min(_utc(p1), ub)
            if hi > lo:
                total += hi - lo
        day += timedelta(days=1)
    return total.total_seconds() / 3600

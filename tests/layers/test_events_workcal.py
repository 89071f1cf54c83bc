"""Working-hour arithmetic, with answers computed by hand.

Calendar: 08:30–12:00 and 13:30–17:30 (7.5 h a day) in Asia/Shanghai, Saturday and
Sunday off. 2026-11-27 is a Friday; 2026-10-01 a Thursday.
"""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from layers.events import load_calendar
from layers.workcal import WorkCalendar, add_working_hours, parse_periods, working_hours_between

SH = ZoneInfo("Asia/Shanghai")
CAL = WorkCalendar.build("08:30-12:00,13:30-17:30", (6, 7))
# A National Day week as a test configuration: Thu 1 – Wed 7 October off, Saturday 10 October worked (调休).
HOLIDAYS = [date(2026, 10, d) for d in range(1, 8)]
NATIONAL_DAY = WorkCalendar.build("08:30-12:00,13:30-17:30", (6, 7), HOLIDAYS, [date(2026, 10, 10)])


def at(y, mo, d, h, mi=0):
    return datetime(y, mo, d, h, mi, tzinfo=SH)


def test_across_a_weekend():
    # Fri 16:00–17:30 = 1.5 h; Mon 3.5 + 4 = 7.5 h (9 h so far); Tue 08:30 + 3 h = 11:30.
    due = add_working_hours(at(2026, 11, 27, 16), 12, CAL)
    assert due == at(2026, 12, 1, 11, 30)
    assert working_hours_between(at(2026, 11, 27, 16), due, CAL) == 12
    # The whole weekend counts nothing.
    assert working_hours_between(at(2026, 11, 27, 17, 30), at(2026, 11, 30, 8, 30), CAL) == 0


def test_start_outside_working_time():
    # Saturday 10:00 + 1 h → Monday 09:30; lunch 12:30 + 1 h → 14:30; before work 07:00 + 0.5 h → 09:00.
    assert add_working_hours(at(2026, 11, 28, 10), 1, CAL) == at(2026, 11, 30, 9, 30)
    assert add_working_hours(at(2026, 11, 30, 12, 30), 1, CAL) == at(2026, 11, 30, 14, 30)
    assert add_working_hours(at(2026, 11, 30, 7), 0.5, CAL) == at(2026, 11, 30, 9)
    # A limit that ends exactly at a period's end ends there, not after lunch.
    assert add_working_hours(at(2026, 11, 30, 8, 30), 3.5, CAL) == at(2026, 11, 30, 12)
    assert add_working_hours(at(2026, 11, 30, 8, 30), 7.5, CAL) == at(2026, 11, 30, 17, 30)
    assert add_working_hours(at(2026, 11, 28, 10), 0, CAL) == at(2026, 11, 28, 10)


def test_across_a_holiday_with_a_make_up_working_day():
    # Wed 30 Sep 15:30–17:30 = 2 h; 1–7 Oct off; Thu 8 = 7.5 (9.5); Fri 9 = 7.5 (17);
    # Sat 10 is worked: 08:30 + 3 h = 11:30.
    start = at(2026, 9, 30, 15, 30)
    assert add_working_hours(start, 20, NATIONAL_DAY) == at(2026, 10, 10, 11, 30)
    assert working_hours_between(start, at(2026, 10, 10, 11, 30), NATIONAL_DAY) == 20
    assert working_hours_between(at(2026, 10, 1, 0), at(2026, 10, 8, 0), NATIONAL_DAY) == 0
    # Without the make-up day the limit runs to Monday 12 October 11:30.
    no_make_up = WorkCalendar.build("08:30-12:00,13:30-17:30", (6, 7), HOLIDAYS)
    assert add_working_hours(start, 20, no_make_up) == at(2026, 10, 12, 11, 30)
    # Without the holidays at all: Thu 1 = 7.5 (9.5), Fri 2 = 7.5 (17), Mon 5 08:30 + 3 = 11:30.
    assert add_working_hours(start, 20, CAL) == at(2026, 10, 5, 11, 30)


def test_other_time_zones_and_negative_spans():
    start_utc = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)  # 16:00 in Shanghai
    assert add_working_hours(start_utc, 12, CAL) == at(2026, 12, 1, 11, 30)
    assert working_hours_between(at(2026, 12, 1, 11, 30), start_utc, CAL) == -12
    with pytest.raises(ValueError):
        add_working_hours(datetime(2026, 11, 27, 16), 1, CAL)
    with pytest.raises(ValueError):
        add_working_hours(start_utc, -1, CAL)


def test_add_and_between_agree():
    start = at(2026, 9, 25, 7, 13)
    for k in range(1, 120):
        hours = k * 0.75
        end = add_working_hours(start, hours, NATIONAL_DAY)
        assert working_hours_between(start, end, NATIONAL_DAY) == pytest.approx(hours)
        assert working_hours_between(start, end - timedelta(minutes=1), NATIONAL_DAY) < hours


def test_bad_calendars_are_refused():
    for spec in ("8-12", "12:00-08:30", "08:00-12:00,11:00-13:00", "", "25:00-26:00"):
        with pytest.raises(ValueError):
            parse_periods(spec)
    with pytest.raises(ValueError):
        WorkCalendar.build("08:30-12:00", (6, 7), [date(2026, 10, 10)], [date(2026, 10, 10)])
    with pytest.raises(ValueError):
        add_working_hours(at(2026, 1, 1, 9), 1, WorkCalendar.build("08:30-12:00", (1, 2, 3, 4, 5, 6, 7)))


def test_calendar_table_overrides_the_configured_days(empty_db):
    empty_db.execute(
        text(
            "INSERT INTO work_calendar_days (day, working, note) VALUES "
            "('2026-10-02', true, '改为工作日'), ('2026-11-30', false, '临时休息')"
        )
    )
    cal = load_calendar(empty_db, periods="08:30-12:00,13:30-17:30", weekend=(6, 7), holidays=HOLIDAYS)
    assert not cal.is_working_day(date(2026, 10, 1))
    assert cal.is_working_day(date(2026, 10, 2))  # the table wins over the configured holiday
    assert not cal.is_working_day(date(2026, 11, 30))  # a Monday off
    assert not cal.is_working_day(date(2026, 11, 28)) and cal.is_working_day(date(2026, 12, 1))

"""Parsing of request parameters and bodies beyond what FastAPI's types express alone."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Annotated

from annotated_types import Interval
from fastapi import Query
from pydantic import BaseModel, field_validator

from layers.errors import InvalidInput
from layers.textfields import text_fault

#: Paging of the list endpoints: a page of at most 1,000 items, starting at an offset
#: PostgreSQL's OFFSET (a bigint) can take.
Limit = Annotated[int, Query(ge=1, le=1000, description="items per page")]
Offset = Annotated[int, Query(ge=0, le=2**63 - 1, description="items to skip")]

#: The days the service answers for: the working calendar's years. Beyond them a day is
#: refused as a 422 naming the parameter — a period's arithmetic (the day after ``to``,
#: the 30 days before it) would otherwise leave Python's calendar (years 1–9999).
FIRST_DAY, LAST_DAY = date(2000, 1, 1), date(2100, 12, 31)
Day = Annotated[date, Interval(ge=FIRST_DAY, le=LAST_DAY)]


def _storable(value):
    if isinstance(value, str):
        fault = text_fault(value)
        if fault:
            raise ValueError(fault)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _storable(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            _storable(key)
            _storable(item)
    return value


def period(start: date | None, end: date | None, tz: tzinfo) -> tuple[datetime | None, datetime | None]:
    """The days ``start`` to ``end`` (both included; either may be open: None) as the
    instants [from, to) in ``tz``; 422 naming ``to`` when it is before ``from``."""
    if start is not None and end is not None and end < start:
        raise InvalidInput("to is before from", field="to")
    return (
        datetime.combine(start, time(0), tz) if start else None,
        datetime.combine(end + timedelta(days=1), time(0), tz) if end else None,
    )


class Body(BaseModel):
    """Base of the JSON request bodies: no string in them may hold a NUL character
    (PostgreSQL refuses to store one) or a lone surrogate (``"\\ud800"``, which JSON
    lets through and UTF-8 cannot encode): refused as a 422 naming the field
    (:func:`layers.text.text_fault`). Query and path parameters are checked for NUL
    before any route runs (:func:`geo_api.errors.nul_in_request`); their percent-decoding
    cannot produce a surrogate."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_unstorable_text(cls, value):
        return _storable(value)


def parse_bbox(raw: str | None, field: str = "bbox") -> tuple[float, float, float, float] | None:
    """``minlon,minlat,maxlon,maxlat`` in WGS84 degrees, or None when absent."""
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) != 4:
        raise InvalidInput(
            f"{field} needs 4 comma-separated numbers minlon,minlat,maxlon,maxlat; got {len(parts)}", field=field
        )
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InvalidInput(f"{field} must contain only numbers, got {raw!r}", field=field) from None
    if not all(math.isfinite(v) for v in values):
        raise InvalidInput(f"{field} must contain finite numbers, got {raw!r}", field=field)
    minx, miny, maxx, maxy = values
    if not (-180 <= minx <= 180 and -180 <= maxx <= 180):
        raise InvalidInput(f"{field} longitudes must be within ±180, got {raw!r}", field=field)
    if not (-90 <= miny <= 90 and -90 <= maxy <= 90):
        raise InvalidInput(f"{field} latitudes must be within ±90, got {raw!r}", field=field)
    if minx > maxx or miny > maxy:
        raise InvalidInput(
            f"{field} minimum exceeds maximum in {raw!r} (order is minlon,minlat,maxlon,maxlat)", field=field
        )
    return minx, miny, maxx, maxy

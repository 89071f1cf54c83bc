"""Events as the routes of :mod:`geo_api.routers.events` answer them: the deployment's
working calendar, who sees an event's personal parts, the audit of the views answered,
and the checks of a list's filters and of the calendar's keepers — so that the routes
only declare their arguments and hand over."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from sqlalchemy.orm import Session

from geo_api.audit import Auditor
from geo_api.deps import Caller
from layers import events as ev
from layers.codes import level_of
from layers.errors import Forbidden, InvalidInput
from layers.workcal import WorkCalendar


def calendar_of(request: Request, session: Session) -> WorkCalendar:
    """The working calendar time limits are counted on: the configured one
    (GRIDBRANCH_EVENTS_*) with the days kept in the database over it."""
    return request.app.state.settings.events.calendar(session)


def personal(caller: Caller, row: Any) -> bool:
    """Whether the caller sees who reported the event and the assisting member: the
    reporter themselves, staff covering its grid; never department staff."""
    if caller.role == "member":
        return row.reporter is not None and row.reporter == caller.username
    return caller.staff_covering(row.grid_code)


def view_of(row: Any, caller: Caller) -> dict[str, Any]:
    """Event ``row`` as ``caller`` sees it: its personal parts if :func:`personal`, the
    actions their role may take."""
    return ev.event_view(row, personal=personal(caller, row), role=caller.role, department_id=caller.department_id)


def audited(audit: Auditor, views: list[dict[str, Any]]) -> None:
    """Record the personal parts of event views answered: a reporter's contact, an
    assisting member's name."""
    contacts = [v["id"] for v in views if v.get("contact")]
    members = [v["member"]["id"] for v in views if v.get("member")]
    fields = (("contact",) if contacts else ()) + (("name",) if members else ())
    audit.record(fields, members=members, events=contacts)


def statuses(raw: str | None) -> list[str] | None:
    """The comma-separated ``status`` filter as a list (None: every status); 422 naming
    ``status`` for one that is not a state of the lifecycle."""
    given = [s.strip() for s in raw.split(",") if s.strip()] if raw else None
    for s in given or []:
        if s not in ev.OPEN + ev.TERMINAL:
            raise InvalidInput(f"unknown status {s!r}", field="status")
    return given


def require_calendar_keeper(caller: Caller) -> None:
    """403 unless the caller keeps the working calendar: the command centre, or an admin
    of the whole district (the routes admit dispatchers and admins only)."""
    if caller.role == "admin" and level_of(caller.area_code or "") != "district":
        raise Forbidden("the working calendar is kept by the command centre or the district's admins")

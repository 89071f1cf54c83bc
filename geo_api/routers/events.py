"""Events: report, route, move through the lifecycle, list with time-limit warnings,
evaluate; the working calendar and the routing overrides. Routes only: the report path
is :mod:`geo_api.event_reports` (shared with the fast path and Open311), the views and
checks :mod:`geo_api.event_views`, the access rules and queries ``layers.events``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import Field

from geo_api.audit import Audited
from geo_api.deps import (
    Caller,
    Public,
    ScopedEvent,
    ScopedEventWithin,
    SessionDep,
    require_roles,
    scoped_area_path,
    scoped_event,
    scoped_member,
)
from geo_api.event_reports import EventReport, checked_report, report_answer, report_batcher
from geo_api.event_reports import EventReportFastPath as EventReportFastPath  # the app's fast paths take it here
from geo_api.event_views import audited, calendar_of, require_calendar_keeper, statuses, view_of
from geo_api.idempotency import IdempotencyKey, Once, report_once
from geo_api.params import FIRST_DAY, LAST_DAY, Body, Day, Limit, Offset, period
from geo_api.responses import CSV, media, problems
from layers import events as ev
from layers import events_eval, textfields
from layers.errors import Forbidden

router = APIRouter(prefix="/v1/events", tags=["events"], responses=problems(400, 403, 404, 409))

#: who handles events: the centre, grid workers, and department staff (their department's)
Staff = Annotated[Caller, require_roles("dispatcher", "admin", "grid_worker", "department_staff")]
Readers = Annotated[Caller, require_roles("dispatcher", "admin", "grid_worker", "department_staff", "member")]
Centre = Annotated[Caller, require_roles("dispatcher", "admin")]
#: the evaluation: the centre's, and each department's own figures
Evaluated = Annotated[Caller, require_roles("dispatcher", "admin", "department_staff")]

Action = Literal["register", "dispatch", "start", "handle", "close", "reject", "defer", "return", "mark_duplicate"]


def _json(data, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


@router.post(
    "",
    status_code=201,
    summary="Report an event anywhere: located, stored and routed (anonymous: public channel)",
    responses=problems(429),
)
async def report(
    request: Request, body: EventReport, session: SessionDep, caller: Public, idempotency_key: IdempotencyKey = None
) -> Response:
    settings = request.app.state.settings
    pending = checked_report(body, caller, settings.events)
    # End the transaction the caller lookup may have opened: a request must not hold a
    # pooled connection while its report waits for a writer (which needs one).
    session.commit()
    if idempotency_key is not None:  # stored alone, with its key
        once = Once.of(request, caller, idempotency_key, body.model_dump(mode="json"))
        return await report_once(
            request,
            once,
            pending,
            lambda result: _json(
                report_answer(result, body.channel, body.lon, body.lat, settings.audit.public_grid_worker), 201
            ),
        )
    result = await report_batcher(request.app).submit(pending)
    # never member suggestions here, whoever reports: they are the routing endpoint's,
    # under its scope and probe limit (a report at a chosen point is a probe)
    return _json(report_answer(result, body.channel, body.lon, body.lat, settings.audit.public_grid_worker), 201)


@router.get("/categories", summary="Event categories with department, time limit (working hours) and fitting role")
def list_categories(session: SessionDep, caller: Public) -> dict:
    return {"categories": ev.categories(session)}


@router.get(
    "", summary="Events in an area, newest first; filter by status, category, department, warning/overdue, period"
)
def list_events(
    request: Request,
    session: SessionDep,
    caller: Staff,
    within: ScopedEventWithin,
    audit: Audited,
    status: Annotated[str | None, Query(description="comma-separated statuses")] = None,
    category: Annotated[str | None, Query(max_length=32)] = None,
    department: Annotated[str | None, Query(max_length=32, description="department code")] = None,
    time_state: Annotated[
        Literal["normal", "warning", "overdue"] | None,
        Query(description="warning: past the warning share of the limit (预警); overdue: past it (超期)"),
    ] = None,
    start: Annotated[Day | None, Query(alias="from", description="reported on or after this day")] = None,
    end: Annotated[Day | None, Query(alias="to", description="reported on or before this day")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    es = request.app.state.settings.events
    wanted = statuses(status)
    cal = calendar_of(request, session)
    rfrom, rto = period(start, end, cal.tz)
    rows, total = ev.events_within(
        session,
        prefix=ev.scope_prefix(within),
        statuses=wanted,
        category=category,
        time_state=time_state,
        reported_from=rfrom,
        reported_to=rto,
        department=department,
        warn_share=es.warn_share,
        limit=limit,
        offset=offset,
        dispatched_to=caller.department_id if caller.role == ev.DEPARTMENT else None,
    )
    items = [view_of(r, caller) for r in rows]
    audited(audit, items)
    return _json({"total": total, "limit": limit, "offset": offset, "items": items})


@router.get(
    "/evaluation",
    summary="Performance per department, street, community or grid over a period (绩效一网考); CSV with format=csv",
    description="Department staff: `level=department` only, and only their own department's figures "
    "with its rank among the rated departments (`ranked`).",
    responses=media(CSV),
)
def evaluation(
    request: Request,
    session: SessionDep,
    caller: Evaluated,
    within: ScopedEventWithin,
    level: Annotated[Literal["department", "street", "community", "grid"], Query()] = "street",
    start: Annotated[Day | None, Query(alias="from", description="first day (default: 30 days before `to`)")] = None,
    end: Annotated[Day | None, Query(alias="to", description="last day, inclusive (default: today)")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    es = request.app.state.settings.events
    if caller.role == ev.DEPARTMENT and level != "department":
        raise Forbidden("department staff see the figures per department (level=department)", field="level")
    cal = calendar_of(request, session)
    end = end or request.app.state.clock.now().astimezone(cal.tz).date()
    start = start or max(FIRST_DAY, end - timedelta(days=29))
    pfrom, pto = period(start, end, cal.tz)
    prefix = ev.scope_prefix(within)
    units = events_eval.evaluate(
        session, level=level, period_from=pfrom, period_to=pto, prefix=prefix, calendar=cal, min_sample=es.min_sample
    )
    ranked = None
    if caller.role == ev.DEPARTMENT:  # its own row and rank, nobody else's figures
        own = events_eval.own_unit(units, ev.department_code(session, caller.department_id))
        units, ranked = [own["unit"]] if own["unit"] else [], own["ranked"]
    if format == "csv":
        name = f"evaluation-{level}-{start.isoformat()}-{end.isoformat()}.csv"
        return Response(
            ("\ufeff" + events_eval.evaluation_csv(units)).encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    out = {
        "level": level,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "within": within,
        "min_sample": es.min_sample,
        "units": units,
    }
    if ranked is not None:
        out["ranked"] = ranked
    return _json(out)


class CalendarDay(Body):
    working: bool | None = Field(description="false: holiday; true: make-up working day (调休); null: drop the entry")
    note: textfields.Line(200) | None = None


@router.get("/calendar", summary="The working calendar: working hours, weekend, holidays and make-up working days")
def get_calendar(
    request: Request,
    session: SessionDep,
    caller: Centre,
    year: Annotated[int | None, Query(ge=FIRST_DAY.year, le=LAST_DAY.year)] = None,
) -> dict:
    s = request.app.state.settings.events
    return {
        "timezone": s.timezone,
        "work_periods": s.work_periods,
        "weekend": list(s.weekend),
        "configured_holidays": [d.isoformat() for d in s.holidays],
        "configured_workdays": [d.isoformat() for d in s.workdays],
        "days": ev.calendar_days(session, year),
    }


@router.put("/calendar/{day}", summary="Mark a day a holiday or a make-up working day (or drop the mark)")
def put_calendar_day(
    request: Request, session: SessionDep, caller: Centre, day: Annotated[Day, Path()], body: CalendarDay
) -> dict:
    require_calendar_keeper(caller)
    ev.set_calendar_day(session, day, body.working, body.note)
    session.commit()
    return get_calendar(request, session, caller, day.year)


class RouteBody(Body):
    department: textfields.Line(64) | None = Field(description="department code or name; null restores the category's")


@router.get("/routes", summary="Routing overrides: category × street → department")
def list_routes(session: SessionDep, caller: Centre) -> dict:
    prefix = ev.scope_prefix(caller.area_code) if caller.role == "admin" else ""
    return {"routes": ev.routes(session, prefix or "")}


@router.put("/routes/{category}/{street}", summary="Send a category to another department in one street")
def put_route(
    session: SessionDep,
    caller: Centre,
    category: Annotated[str, Path(max_length=32)],
    street: Annotated[str, scoped_area_path("street")],
    body: RouteBody,
) -> dict:
    ev.set_route(session, category, street, body.department)
    session.commit()
    return {"routes": ev.routes(session, street[:9])}


@router.get("/{event_id}", summary="One event with its due time and warning state")
def get_event(
    request: Request, session: SessionDep, caller: Readers, event_id: ScopedEvent, audit: Audited
) -> Response:
    row = ev.event_row(session, event_id, warn_share=request.app.state.settings.events.warn_share)
    view = view_of(row, caller)
    audited(audit, [view])
    return _json(view)


@router.get("/{event_id}/log", summary="The event's track (append-only)")
def get_event_log(session: SessionDep, caller: Readers, event_id: ScopedEvent) -> dict:
    return {"event_id": event_id, "log": ev.event_log(session, event_id, personal=caller.role != ev.DEPARTMENT)}


@router.get(
    "/{event_id}/routing",
    summary="Where the event goes, with nearby members of your area whose role fits (name, role, band)",
    description="Members are suggested by the distance from the event to the grid they are registered "
    "in (a band: 本网格, < 500 m, 500 m–1 km, 1–2 km, 2–5 km), never by their residence, and "
    "only members registered inside your area (dispatchers: anywhere). Each account may see "
    "the suggestions of at most `GRIDBRANCH_EVENTS_ROUTING_PROBES_PER_HOUR` distinct events "
    "an hour; past that, 429 with `Retry-After`.",
    responses=problems(429),
)
def get_routing(request: Request, session: SessionDep, caller: Centre, event_id: ScopedEvent, audit: Audited):
    es = request.app.state.settings.events
    out = ev.routing(session, event_id)
    ev.count_routing_probe(session, caller.username, event_id, per_hour=es.routing_probes_per_hour)
    out["suggestions"] = ev.suggest_members(
        session,
        event_id,
        out.pop("role_code"),
        radius_m=es.suggest_radius_m,
        limit=es.suggest_limit,
        max_open_tasks=es.max_open_tasks,
        within=None if caller.role == "dispatcher" else caller.area_code,
    )
    session.commit()
    if out["suggestions"]:  # members' names (never their residence: a band of their grid's distance)
        audit.record(("name",), members=[m["member_id"] for m in out["suggestions"]], detail={"event": event_id})
    return out


class TransitionBody(Body):
    action: Action
    version: int = Field(ge=1, description="the version you last saw (optimistic concurrency)")
    note: textfields.Text(2000) | None = None
    reason: textfields.Text(2000) | None = Field(None, description="reject, defer, return: why")
    duplicate_of: int | None = Field(None, ge=1, description="mark_duplicate: the original event")
    department: textfields.Line(64) | None = Field(
        None, description="dispatch: department code or name (default: routed)"
    )
    assignee: textfields.Line(200) | None = Field(None, description="dispatch/start: who handles it")
    member_id: int | None = Field(None, ge=1, description="dispatch: an assisting member from the suggestions")
    photos: list[textfields.Line()] = Field(
        default_factory=list, description="handle: photo URLs of the feedback (with the note)"
    )


@router.post("/{event_id}/transitions", summary="Move an event through its lifecycle (409 if illegal or stale)")
def transition(
    request: Request, session: SessionDep, caller: Staff, event_id: ScopedEvent, body: TransitionBody, audit: Audited
) -> Response:
    es = request.app.state.settings.events
    # the other things the body names, in the caller's scope like the event itself
    if body.member_id is not None:
        scoped_member(session, caller, body.member_id)
    if body.duplicate_of is not None:
        scoped_event(session, caller, body.duplicate_of, field="duplicate_of")
    ev.check_photos(body.photos, max_photos=es.max_photos, max_photo_url=es.max_photo_url)
    ev.transition_event(
        session,
        event_id,
        ev.Move(
            body.action,
            body.version,
            body.note,
            body.reason,
            body.duplicate_of,
            body.department,
            body.assignee,
            body.member_id,
            tuple(body.photos),
        ),
        actor=caller.username,
        role=caller.role,
        covers=caller.covers,
        calendar=calendar_of(request, session),
        warn_share=es.warn_share,
        max_open_tasks=es.max_open_tasks,
        actor_department=caller.department_id,
    )
    session.commit()
    row = ev.event_row(session, event_id, warn_share=es.warn_share)
    view = view_of(row, caller)
    audited(audit, [view])
    return _json(view)

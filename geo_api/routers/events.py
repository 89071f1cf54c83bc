"""Events: report, route, move through the lifecycle, list with time-limit warnings,
evaluate; the working calendar and the routing overrides. Access rules: ``layers.events``."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Literal

import anyio
import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from geo_api.deps import Caller, Public, SessionDep, require_roles
from ingest.points import to_wgs84_point
from layers import events as ev
from layers import events_eval
from layers.codes import check_code, level_of
from layers.errors import Forbidden, InvalidInput

router = APIRouter(prefix="/v1/events", tags=["events"])

Staff = Annotated[Caller, require_roles("dispatcher", "admin", "grid_worker")]
Readers = Annotated[Caller, require_roles("dispatcher", "admin", "grid_worker", "member")]
Centre = Annotated[Caller, require_roles("dispatcher", "admin")]

Channel = Literal["grid_worker", "member", "public", "hotline", "video"]
Action = Literal["register", "dispatch", "start", "handle", "close", "reject", "defer", "return", "mark_duplicate"]


def _json(data, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


def calendar_of(request: Request, session):
    s = request.app.state.settings.events
    return ev.load_calendar(session, periods=s.work_periods, weekend=s.weekend, holidays=s.holidays,
                            workdays=s.workdays, timezone=s.timezone)


class EventReport(BaseModel):
    """An event reported from anywhere (采集上报)."""

    lon: float = Field(description="longitude or easting (x) in `crs`")
    lat: float = Field(description="latitude or northing (y) in `crs`")
    crs: str = Field("wgs84", max_length=32, description="wgs84, gcj02, bd09, cgcs2000 or EPSG:nnnn")
    category: str = Field(max_length=32, description="event category code (see /v1/events/categories)")
    description: str = Field(description="what happened (limited in length, see GRIDBRANCH_EVENTS_MAX_DESCRIPTION)")
    channel: Channel = Field("public", description="source channel; anonymous callers report as public")
    photos: list[str] = Field(default_factory=list, description="photo URLs")
    contact: str | None = Field(None, max_length=200, description="how to reach the reporter (kept private)")


def _personal(caller: Caller, row) -> bool:
    if caller.role == "member":
        return row.reporter is not None and row.reporter == caller.username
    return caller.role in ("dispatcher", "admin", "grid_worker") and caller.covers(row.grid_code)


def _readable(caller: Caller, row, event_id: int) -> None:
    if not _personal(caller, row):
        raise Forbidden(f"event {event_id} is not yours to see")


@router.post("", status_code=201, summary="Report an event anywhere: located, stored and routed (anonymous: public channel)")
async def report(request: Request, body: EventReport, session: SessionDep, caller: Public) -> Response:
    # Reports run in a few threads at once (GRIDBRANCH_EVENTS_REPORT_THREADS): enough to
    # overlap their database round trips, few enough not to fight over the GIL in a burst.
    limiter = getattr(request.app.state, "event_report_limiter", None)
    if limiter is None:
        limiter = request.app.state.event_report_limiter = anyio.CapacityLimiter(
            request.app.state.settings.events.report_threads)
    return await anyio.to_thread.run_sync(_report, request, body, session, caller, limiter=limiter)


def _report(request: Request, body: EventReport, session, caller: Caller) -> Response:
    settings = request.app.state.settings
    es = settings.events
    ev.check_channel(body.channel, caller.role)
    ev.check_report_size(body.description, body.photos, max_description=es.max_description,
                         max_photos=es.max_photos, max_photo_url=es.max_photo_url)
    lon, lat, spec = to_wgs84_point(body.lon, body.lat, body.crs)
    stored, grid = ev.report_anywhere(
        session, request.app.state.grid_index,
        ev.Report(lon, lat, spec.name, body.lon, body.lat, body.category, body.channel, body.description,
                  tuple(body.photos), body.contact),
        tolerance_m=settings.locate.tolerance_m, edge_m=settings.locate.edge_m,
        reporter=caller.username, actor=caller.username or ev.CHANNEL_NAMES["public"],
        duplicate_radius_m=es.duplicate_radius_m, duplicate_window_hours=es.duplicate_window_hours,
    )
    session.commit()
    branches = grid["branches"] or []
    out = {
        "id": stored["id"],
        "status": stored["status"],
        "version": stored["version"],
        "category": stored["category"],
        "channel": body.channel,
        "point": [round(lon, 7), round(lat, 7)],
        "source": {"crs": spec.name, "x": body.lon, "y": body.lat},
        "match": grid["match"],
        "grid": {"code": grid["code"], "name": grid["name"], "version": grid["version"]},
        "community": {"code": grid["community_code"], "name": grid["community_name"]},
        "street": {"code": grid["street_code"], "name": grid["street_name"]},
        "routing": {
            "department": stored["department"],
            "rule": "street override" if stored["routing_override"] else "category",
            "branch": branches[0] if branches else None,
            "grid_worker": {"name": grid["worker_name"], "phone": grid["worker_phone"]} if grid["worker_name"] else None,
        },
        "time_limit_hours": stored["time_limit_hours"],
        "reported_at": stored["reported_at"],
        "due_at": None,
        "possible_duplicates": stored["possible_duplicates"],
    }
    if caller.role in ("dispatcher", "admin"):
        out["routing"]["suggestions"] = ev.suggest_members(
            session, stored["id"], stored["role_code"], radius_m=es.suggest_radius_m, limit=es.suggest_limit,
            max_open_tasks=es.max_open_tasks,
        )
    return _json(out, 201)


@router.get("/categories", summary="Event categories with department, time limit (working hours) and fitting role")
def list_categories(session: SessionDep, caller: Public) -> dict:
    return {"categories": ev.categories(session)}


def _period(start: date | None, end: date | None, tz) -> tuple[datetime, datetime]:
    if start is not None and end is not None and end < start:
        raise InvalidInput("to is before from", field="to")
    return (datetime.combine(start, time(0), tz) if start else None,
            datetime.combine(end + timedelta(days=1), time(0), tz) if end else None)


def _within(caller: Caller, within: str | None) -> str | None:
    """The area/grid prefix a list or evaluation covers (None: everything, dispatchers)."""
    if within is not None:
        within = check_code(within, "within")
    elif caller.role != "dispatcher":
        within = caller.area_code
    if within is None:
        return None
    if not caller.covers(within):
        raise Forbidden(f"{within} is outside your area {caller.area_code}", field="within")
    return ev.scope_prefix(within)


@router.get("", summary="Events in an area, newest first; filter by status, category, department, warning/overdue, period")
def list_events(
    request: Request,
    session: SessionDep,
    caller: Staff,
    within: Annotated[str | None, Query(description="area or grid code; default your area (dispatchers: all)")] = None,
    status: Annotated[str | None, Query(description="comma-separated statuses")] = None,
    category: Annotated[str | None, Query(max_length=32)] = None,
    department: Annotated[str | None, Query(max_length=32, description="department code")] = None,
    time_state: Annotated[Literal["normal", "warning", "overdue"] | None,
                          Query(description="warning: past the warning share of the limit (预警); overdue: past it (超期)")] = None,
    start: Annotated[date | None, Query(alias="from", description="reported on or after this day")] = None,
    end: Annotated[date | None, Query(alias="to", description="reported on or before this day")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> Response:
    es = request.app.state.settings.events
    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
    for s in statuses or []:
        if s not in ev.OPEN + ev.TERMINAL:
            raise InvalidInput(f"unknown status {s!r}", field="status")
    cal = calendar_of(request, session)
    rfrom, rto = _period(start, end, cal.tz)
    rows, total = ev.events_within(
        session, prefix=_within(caller, within), statuses=statuses, category=category, time_state=time_state,
        reported_from=rfrom, reported_to=rto, department=department, warn_share=es.warn_share,
        limit=limit, offset=offset,
    )
    items = [ev.event_view(r, personal=_personal(caller, r), role=caller.role) for r in rows]
    return _json({"total": total, "limit": limit, "offset": offset, "items": items})


@router.get("/evaluation", summary="Performance per department, street, community or grid over a period (绩效一网考); CSV with format=csv")
def evaluation(
    request: Request,
    session: SessionDep,
    caller: Centre,
    level: Annotated[Literal["department", "street", "community", "grid"], Query()] = "street",
    start: Annotated[date | None, Query(alias="from", description="first day (default: 30 days before `to`)")] = None,
    end: Annotated[date | None, Query(alias="to", description="last day, inclusive (default: today)")] = None,
    within: Annotated[str | None, Query(description="area code; default your area (dispatchers: all)")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    es = request.app.state.settings.events
    cal = calendar_of(request, session)
    end = end or datetime.now(cal.tz).date()
    start = start or end - timedelta(days=29)
    pfrom, pto = _period(start, end, cal.tz)
    prefix = _within(caller, within)
    units = events_eval.evaluate(session, level=level, period_from=pfrom, period_to=pto, prefix=prefix,
                                 calendar=cal, min_sample=es.min_sample)
    if format == "csv":
        name = f"evaluation-{level}-{start.isoformat()}-{end.isoformat()}.csv"
        return Response(("\ufeff" + events_eval.evaluation_csv(units)).encode("utf-8"),
                        media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return _json({"level": level, "from": start.isoformat(), "to": end.isoformat(), "within": within,
                  "min_sample": es.min_sample, "units": units})


class CalendarDay(BaseModel):
    working: bool | None = Field(description="false: holiday; true: make-up working day (调休); null: drop the entry")
    note: str | None = Field(None, max_length=200)


def _district_centre(caller: Caller) -> None:
    if caller.role == "admin" and level_of(caller.area_code or "") != "district":
        raise Forbidden("the working calendar is kept by the command centre or the district's admins")


@router.get("/calendar", summary="The working calendar: working hours, weekend, holidays and make-up working days")
def get_calendar(request: Request, session: SessionDep, caller: Centre,
                 year: Annotated[int | None, Query(ge=2000, le=2100)] = None) -> dict:
    s = request.app.state.settings.events
    return {"timezone": s.timezone, "work_periods": s.work_periods, "weekend": list(s.weekend),
            "configured_holidays": [d.isoformat() for d in s.holidays],
            "configured_workdays": [d.isoformat() for d in s.workdays],
            "days": ev.calendar_days(session, year)}


@router.put("/calendar/{day}", summary="Mark a day a holiday or a make-up working day (or drop the mark)")
def put_calendar_day(request: Request, session: SessionDep, caller: Centre, day: date, body: CalendarDay) -> dict:
    _district_centre(caller)
    ev.set_calendar_day(session, day, body.working, body.note)
    session.commit()
    return get_calendar(request, session, caller, day.year)


class RouteBody(BaseModel):
    department: str | None = Field(max_length=64, description="department code or name; null restores the category's")


@router.get("/routes", summary="Routing overrides: category × street → department")
def list_routes(session: SessionDep, caller: Centre) -> dict:
    prefix = ev.scope_prefix(caller.area_code) if caller.role == "admin" else ""
    return {"routes": ev.routes(session, prefix or "")}


@router.put("/routes/{category}/{street}", summary="Send a category to another department in one street")
def put_route(session: SessionDep, caller: Centre, category: Annotated[str, Path(max_length=32)],
              street: Annotated[str, Path(pattern=r"^[0-9]{12}$")], body: RouteBody) -> dict:
    if not caller.covers(street):
        raise Forbidden(f"street {street} is outside your area {caller.area_code}", field="street")
    ev.set_route(session, category, street, body.department)
    session.commit()
    return {"routes": ev.routes(session, street[:9])}


@router.get("/{event_id}", summary="One event with its due time and warning state")
def get_event(request: Request, session: SessionDep, caller: Readers, event_id: Annotated[int, Path(ge=1)]) -> Response:
    row = ev.event_row(session, event_id, warn_share=request.app.state.settings.events.warn_share)
    _readable(caller, row, event_id)
    return _json(ev.event_view(row, personal=True, role=caller.role))


@router.get("/{event_id}/log", summary="The event's track (append-only)")
def get_event_log(request: Request, session: SessionDep, caller: Readers, event_id: Annotated[int, Path(ge=1)]) -> dict:
    row = ev.event_row(session, event_id, warn_share=request.app.state.settings.events.warn_share)
    _readable(caller, row, event_id)
    return {"event_id": event_id, "log": ev.event_log(session, event_id)}


@router.get("/{event_id}/routing", summary="Where the event goes, with nearby members whose role fits (name, role, distance band)")
def get_routing(request: Request, session: SessionDep, caller: Centre, event_id: Annotated[int, Path(ge=1)]) -> dict:
    es = request.app.state.settings.events
    out = ev.routing(session, event_id)
    if not caller.covers(out["grid"]["code"] if out["grid"] else None):
        raise Forbidden(f"event {event_id} is outside your area")
    out["suggestions"] = ev.suggest_members(session, event_id, out.pop("role_code"), radius_m=es.suggest_radius_m,
                                            limit=es.suggest_limit, max_open_tasks=es.max_open_tasks)
    return out


class TransitionBody(BaseModel):
    action: Action
    version: int = Field(ge=1, description="the version you last saw (optimistic concurrency)")
    note: str | None = Field(None, max_length=2000)
    reason: str | None = Field(None, max_length=2000, description="reject, defer, return: why")
    duplicate_of: int | None = Field(None, ge=1, description="mark_duplicate: the original event")
    department: str | None = Field(None, max_length=64, description="dispatch: department code or name (default: routed)")
    assignee: str | None = Field(None, max_length=200, description="dispatch/start: who handles it")
    member_id: int | None = Field(None, ge=1, description="dispatch: an assisting member from the suggestions")


@router.post("/{event_id}/transitions", summary="Move an event through its lifecycle (409 if illegal or stale)")
def transition(request: Request, session: SessionDep, caller: Staff, event_id: Annotated[int, Path(ge=1)],
               body: TransitionBody) -> Response:
    es = request.app.state.settings.events
    ev.transition_event(
        session, event_id,
        ev.Move(body.action, body.version, body.note, body.reason, body.duplicate_of, body.department,
                body.assignee, body.member_id),
        actor=caller.username, role=caller.role, covers=caller.covers, calendar=calendar_of(request, session),
        warn_share=es.warn_share, max_open_tasks=es.max_open_tasks,
    )
    session.commit()
    row = ev.event_row(session, event_id, warn_share=es.warn_share)
    return _json(ev.event_view(row, personal=True, role=caller.role))

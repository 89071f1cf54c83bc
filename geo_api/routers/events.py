"""Events: report, route, move through the lifecycle, list with time-limit warnings,
evaluate; the working calendar and the routing overrides. Access rules: ``layers.events``."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import Field, ValidationError

from geo_api.asgi import Asked, FastPath, Reply
from geo_api.audit import Audited
from geo_api.deps import (
    ANONYMOUS,
    Caller,
    Public,
    ScopedEvent,
    SessionDep,
    app_session,
    require_roles,
    scoped_area_path,
    scoped_event,
    scoped_event_area,
    scoped_member,
)
from geo_api.idempotency import IdempotencyKey, Once, report_once
from geo_api.params import FIRST_DAY, LAST_DAY, Body, Day, Limit, Offset
from geo_api.responses import CSV, media, problems
from layers import events as ev
from layers import events_eval, textfields
from layers.codes import level_of
from layers.errors import Forbidden, InvalidInput
from layers.events_batch import Pending, ReportBatcher, Stored, store_reports

router = APIRouter(prefix="/v1/events", tags=["events"], responses=problems(400, 403, 404, 409))

#: who handles events: the centre, grid workers, and department staff (their department's)
Staff = Annotated[Caller, require_roles("dispatcher", "admin", "grid_worker", "department_staff")]
Readers = Annotated[Caller, require_roles("dispatcher", "admin", "grid_worker", "department_staff", "member")]
Centre = Annotated[Caller, require_roles("dispatcher", "admin")]
#: the evaluation: the centre's, and each department's own figures
Evaluated = Annotated[Caller, require_roles("dispatcher", "admin", "department_staff")]

Channel = Literal["grid_worker", "member", "public", "hotline", "video"]
Action = Literal["register", "dispatch", "start", "handle", "close", "reject", "defer", "return", "mark_duplicate"]


def _json(data, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


def calendar_of(request: Request, session):
    s = request.app.state.settings.events
    return ev.load_calendar(
        session,
        periods=s.work_periods,
        weekend=s.weekend,
        holidays=s.holidays,
        workdays=s.workdays,
        timezone=s.timezone,
    )


class EventReport(Body):
    """An event reported from anywhere (采集上报)."""

    lon: float = Field(description="longitude or easting (x) in `crs`")
    lat: float = Field(description="latitude or northing (y) in `crs`")
    crs: str = Field("wgs84", max_length=32, description="wgs84, gcj02, bd09, cgcs2000 or EPSG:nnnn")
    category: str = Field(max_length=32, description="event category code (see /v1/events/categories)")
    description: textfields.Text() = Field(
        description="what happened (limited in length, see GRIDBRANCH_EVENTS_MAX_DESCRIPTION)"
    )
    channel: Channel = Field("public", description="source channel; anonymous callers report as public")
    photos: list[textfields.Line()] = Field(default_factory=list, description="photo URLs")
    contact: textfields.Line(200) | None = Field(None, description="how to reach the reporter (kept private)")


def _personal(caller: Caller, row) -> bool:
    """Whether the caller sees who reported the event and the assisting member: the
    reporter themselves, staff covering its grid; never department staff."""
    if caller.role == "member":
        return row.reporter is not None and row.reporter == caller.username
    return caller.staff_covering(row.grid_code)


def _audited(audit, views: list[dict]) -> None:
    """Record the personal parts of event views answered: a reporter's contact, an
    assisting member's name."""
    contacts = [v["id"] for v in views if v.get("contact")]
    members = [v["member"]["id"] for v in views if v.get("member")]
    fields = (("contact",) if contacts else ()) + (("name",) if members else ())
    audit.record(fields, members=members, events=contacts)


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


def checked_report(body: EventReport, caller: Caller, es) -> Pending:
    """The report of ``body`` by ``caller``, checked for its channel and size (403/422
    naming the field): what the route and the fast path both hand to the batcher."""
    ev.check_channel(body.channel, caller.role)
    ev.check_report_size(
        body.description,
        body.photos,
        max_description=es.max_description,
        max_photos=es.max_photos,
        max_photo_url=es.max_photo_url,
    )
    return Pending(
        body.lon,
        body.lat,
        body.crs,
        body.category,
        body.channel,
        body.description,
        tuple(body.photos),
        body.contact,
        reporter=caller.username,
        actor=caller.username or ev.CHANNEL_NAMES["public"],
    )


# -- Reporting: group commit and the anonymous fast path ---------------------------------


def report_batcher(app) -> ReportBatcher:
    """The app's :class:`layers.events_batch.ReportBatcher`: reports of concurrent requests
    are stored in groups, one transaction each (GRIDBRANCH_EVENTS_REPORT_BATCH_MAX,
    GRIDBRANCH_EVENTS_REPORT_WRITERS)."""
    batcher = getattr(app.state, "event_report_batcher", None)
    if batcher is None:
        settings = app.state.settings
        es = settings.events

        def process(reports: list[Pending]):
            with app_session(app) as session:
                return store_reports(
                    session,
                    app.state.grid_index,
                    reports,
                    tolerance_m=settings.locate.tolerance_m,
                    edge_m=settings.locate.edge_m,
                    duplicate_radius_m=es.duplicate_radius_m,
                    duplicate_window_hours=es.duplicate_window_hours,
                )

        batcher = app.state.event_report_batcher = ReportBatcher(
            process, max_batch=es.report_batch_max, writers=es.report_writers
        )
    return batcher


def report_answer(result: Stored, channel: str, x: float, y: float, public_worker: bool = True) -> dict:
    """The answer to a stored report (without member suggestions; the grid worker unless
    GRIDBRANCH_AUDIT_PUBLIC_GRID_WORKER is off)."""
    stored, grid = result.stored, result.grid
    branches = grid["branches"] or []
    return {
        "id": stored["id"],
        "status": stored["status"],
        "version": stored["version"],
        "category": stored["category"],
        "channel": channel,
        "point": [round(result.lon, 7), round(result.lat, 7)],
        "source": {"crs": result.crs, "x": x, "y": y},
        "match": grid["match"],
        "grid": {"code": grid["code"], "name": grid["name"], "version": grid["version"]},
        "community": {"code": grid["community_code"], "name": grid["community_name"]},
        "street": {"code": grid["street_code"], "name": grid["street_name"]},
        "routing": {
            "department": stored["department"],
            "rule": "street override" if stored["routing_override"] else "category",
            "branch": branches[0] if branches else None,
            "grid_worker": (
                {"name": grid["worker_name"], "phone": grid["worker_phone"]}
                if grid["worker_name"] and public_worker
                else None
            ),
        },
        "time_limit_hours": stored["time_limit_hours"],
        "reported_at": stored["reported_at"],
        "due_at": None,
        "possible_duplicates": stored["possible_duplicates"],
    }


_MAX_BODY = 1 << 20
_JSON_TYPE = b"application/json"


class EventReportFastPath(FastPath):
    """Anonymous ``POST /v1/events`` ahead of FastAPI's routing, body validation and
    dependencies (one of the app's :class:`geo_api.asgi.FastPaths`).

    It takes only requests the route would take as they are — no ``Authorization`` or
    ``Idempotency-Key`` header (the route keeps the key with the report), a JSON body
    that :class:`EventReport` — the route's own model — validates — and answers them
    through the same :func:`checked_report`, :func:`report_batcher` and
    :func:`report_answer` as :func:`report`, hence the same bytes. Anything else, and any
    report refused before it was written (bad input, outside the service area, unknown
    category: nothing stored), is handed to the routed endpoint with the body replayed,
    so errors keep their one format. An unexpected failure after a report may have been
    stored is not retried: it becomes the app's 500. ``GRIDBRANCH_EVENTS_FAST_PATH=false``
    turns it off."""

    method = "POST"
    headers = frozenset({b"content-type", b"idempotency-key"})
    retry_on_failure = False  # the report may have been stored: never twice

    def match(self, path: str):
        return True if path == "/v1/events" else None

    def enabled(self, app) -> bool:
        settings = getattr(app.state, "settings", None)
        return settings is not None and settings.events.fast_path

    async def answer(self, app, match, asked: Asked) -> Reply | None:
        kind = asked.headers.get(b"content-type")
        if b"idempotency-key" in asked.headers or kind is None or kind.split(b";", 1)[0].strip().lower() != _JSON_TYPE:
            return None
        raw = await asked.body(_MAX_BODY)
        if raw is None:
            return None
        try:
            body = EventReport.model_validate_json(raw)
        except ValidationError:
            return None  # the route answers with its 422
        pending = checked_report(body, ANONYMOUS, app.state.settings.events)  # refused: the route answers
        result = await report_batcher(app).submit(pending)  # refused before writing: the route answers
        return Reply(
            201,
            orjson.dumps(
                report_answer(result, body.channel, body.lon, body.lat, app.state.settings.audit.public_grid_worker)
            ),
            content_type=_JSON_TYPE,
        )


@router.get("/categories", summary="Event categories with department, time limit (working hours) and fitting role")
def list_categories(session: SessionDep, caller: Public) -> dict:
    return {"categories": ev.categories(session)}


def _period(start: date | None, end: date | None, tz) -> tuple[datetime, datetime]:
    if start is not None and end is not None and end < start:
        raise InvalidInput("to is before from", field="to")
    return (
        datetime.combine(start, time(0), tz) if start else None,
        datetime.combine(end + timedelta(days=1), time(0), tz) if end else None,
    )


ScopedWithin = Annotated[
    str | None,
    scoped_event_area(
        description="area or grid code; default your area (dispatchers: all; department staff: none, "
        "their department's events across the district)"
    ),
]


@router.get(
    "", summary="Events in an area, newest first; filter by status, category, department, warning/overdue, period"
)
def list_events(
    request: Request,
    session: SessionDep,
    caller: Staff,
    within: ScopedWithin,
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
    statuses = [s.strip() for s in status.split(",") if s.strip()] if status else None
    for s in statuses or []:
        if s not in ev.OPEN + ev.TERMINAL:
            raise InvalidInput(f"unknown status {s!r}", field="status")
    cal = calendar_of(request, session)
    rfrom, rto = _period(start, end, cal.tz)
    rows, total = ev.events_within(
        session,
        prefix=ev.scope_prefix(within),
        statuses=statuses,
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
    items = [
        ev.event_view(r, personal=_personal(caller, r), role=caller.role, department_id=caller.department_id)
        for r in rows
    ]
    _audited(audit, items)
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
    within: ScopedWithin,
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
    pfrom, pto = _period(start, end, cal.tz)
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


def _district_centre(caller: Caller) -> None:
    if caller.role == "admin" and level_of(caller.area_code or "") != "district":
        raise Forbidden("the working calendar is kept by the command centre or the district's admins")


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
    _district_centre(caller)
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
    view = ev.event_view(row, personal=_personal(caller, row), role=caller.role, department_id=caller.department_id)
    _audited(audit, [view])
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
    view = ev.event_view(row, personal=_personal(caller, row), role=caller.role, department_id=caller.department_id)
    _audited(audit, [view])
    return _json(view)

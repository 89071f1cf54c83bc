"""Open311 GeoReport v2 (JSON): discovery, services, service requests — so existing
Open311 clients can report events and follow them. Errors come in the specification's
shape, ``[{"code": 400, "description": "..."}]``, with that HTTP status (invalid input
is 400 here, as the specification has it): the routes raise project errors and the
route class answers them (:class:`geo_api.errors.Open311Route`). ``api_key`` is accepted and ignored: posted
requests are anonymous public reports; the contact fields are kept private."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from geo_api.deps import CachesDep, Public, SessionDep
from geo_api.errors import Open311Route
from geo_api.event_reports import report_batcher
from geo_api.idempotency import IdempotencyKey, Once, report_once
from geo_api.responses import open311_errors, problems
from layers import events as ev
from layers import events_open311 as o311
from layers import textfields
from layers.errors import GridbranchError, InvalidInput, NotFound
from layers.events_batch import Pending

#: errors in Open311's shape: the route class (geo_api.errors.Open311Route)
router = APIRouter(
    prefix="/open311/v2", tags=["open311"], responses=open311_errors(400, 404, 409), route_class=Open311Route
)

Jurisdiction = Annotated[str | None, Query(max_length=32, description="optional; the district code")]


def _json(data, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json; charset=utf-8")


def _check_jurisdiction(session, jurisdiction_id: str | None) -> None:
    if jurisdiction_id and jurisdiction_id not in o311.jurisdictions(session):
        raise NotFound(f"unknown jurisdiction_id {jurisdiction_id!r}", field="jurisdiction_id")


@router.get("/discovery.json", summary="Open311 discovery")
def discovery(request: Request, caller: Public) -> Response:
    base = str(request.base_url).rstrip("/") + "/open311/v2"
    return _json(
        {
            "changeset": "2026-11-28T00:00:00+08:00",
            "contact": "区城市运行管理指挥中心（网格化服务管理）",
            "key_service": "api_key is optional and not required",
            "endpoints": [
                {
                    "specification": o311.SPEC,
                    "url": base,
                    "changeset": "2026-11-28T00:00:00+08:00",
                    "type": "production",
                    "formats": ["application/json"],
                }
            ],
        }
    )


@router.get("/services.json", summary="Open311 services: the event categories")
def services(session: SessionDep, caller: Public, jurisdiction_id: Jurisdiction = None) -> Response:
    _check_jurisdiction(session, jurisdiction_id)
    return _json(o311.services(session))


@router.get("/services/{service_code}.json", summary="Open311 service definition (no extra attributes)")
def service_definition(
    session: SessionDep,
    caller: Public,
    service_code: Annotated[str, Path(max_length=32)],
    jurisdiction_id: Jurisdiction = None,
) -> Response:
    _check_jurisdiction(session, jurisdiction_id)
    return _json(o311.service_definition(session, service_code))


def _when(raw: str | None, field: str, tz: ZoneInfo) -> datetime | None:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise InvalidInput(f"{field} must be a W3C/ISO 8601 date-time, got {raw!r}", field=field) from None
    return value if value.tzinfo else value.replace(tzinfo=tz)


def _entitled(caller):
    """Staff of an event's area see its request as stored; others (anonymous callers
    above all) without an unaccepted description, and outside public space at the
    grid's label point (layers.events_open311)."""
    return caller.staff_covering


@router.get("/requests.json", summary="Open311 service requests, filtered (default: the last 90 days)")
def list_requests(
    request: Request,
    session: SessionDep,
    caches: CachesDep,
    caller: Public,
    service_request_id: Annotated[str | None, Query(max_length=2000, description="comma-separated ids")] = None,
    service_code: Annotated[str | None, Query(max_length=500, description="comma-separated codes")] = None,
    start_date: Annotated[str | None, Query(max_length=40)] = None,
    end_date: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[str | None, Query(max_length=20, description="open or closed")] = None,
    jurisdiction_id: Jurisdiction = None,
) -> Response:
    tz = ZoneInfo(request.app.state.settings.events.timezone)
    _check_jurisdiction(session, jurisdiction_id)
    ids = None
    if service_request_id:
        try:
            ids = [int(x) for x in service_request_id.split(",") if x.strip()]
        except ValueError:
            raise InvalidInput(
                "service_request_id must be comma-separated numbers", field="service_request_id"
            ) from None
    if status not in (None, "", "open", "closed"):
        raise InvalidInput(f"status must be open or closed, got {status!r}", field="status")
    codes = [c.strip() for c in service_code.split(",") if c.strip()] if service_code else None
    return _json(
        o311.requests(
            session,
            caches,
            ids=ids,
            service_codes=codes,
            start=_when(start_date, "start_date", tz),
            end=_when(end_date, "end_date", tz),
            status=status or None,
            full=_entitled(caller),
        )
    )


@router.get("/requests/{service_request_id}.json", summary="One Open311 service request")
def get_request(
    session: SessionDep,
    caches: CachesDep,
    caller: Public,
    service_request_id: Annotated[str, Path(max_length=20)],
    jurisdiction_id: Jurisdiction = None,
) -> Response:
    _check_jurisdiction(session, jurisdiction_id)
    if not service_request_id.isdigit():
        raise NotFound(f"no service request {service_request_id}", field="service_request_id")
    return _json([o311.request(session, caches, int(service_request_id), _entitled(caller))])


_FIELDS = (
    "service_code",
    "lat",
    "long",
    "description",
    "media_url",
    "first_name",
    "last_name",
    "email",
    "phone",
    "jurisdiction_id",
    "api_key",
    "address_string",
    "device_id",
    "account_id",
)


async def _read_form(request: Request) -> dict:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        raw = await request.body()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:  # orjson refuses lone surrogates (\ud800): read them, the text rules name the field
                data = json.loads(raw)
            except (ValueError, RecursionError):  # RecursionError: nested deeper than orjson's limit
                raise InvalidInput(f"the body is not valid JSON: {exc}", field="body") from None
        if not isinstance(data, dict):
            raise InvalidInput("the body must be a JSON object", field="body")
        return {k: data.get(k) for k in _FIELDS}
    form = await request.form()
    return {k: form.get(k) for k in _FIELDS}


def _text(value, field: str | None = None, *, multiline: bool = False) -> str | None:
    """A form field as text (None when blank); with ``field``, checked by the API's text
    rules (:mod:`layers.textfields`: one line, or several with ``multiline``)."""
    if value is None:
        return None
    value = str(value).strip()
    if value and field is not None:
        (textfields.text if multiline else textfields.line)(value, field)
    return value or None


@router.post(
    "/requests.json", summary="Open311: create a service request (an anonymous public report)", responses=problems(429)
)
async def create_request(
    request: Request, session: SessionDep, caller: Public, idempotency_key: IdempotencyKey = None
) -> Response:
    settings = request.app.state.settings
    data = await _read_form(request)

    def check() -> Pending:
        es = settings.events
        _check_jurisdiction(session, _text(data["jurisdiction_id"]))
        code = _text(data["service_code"])
        if code is None:
            raise InvalidInput("service_code is required", field="service_code")
        if data["lat"] in (None, "") or data["long"] in (None, ""):
            raise InvalidInput("lat and long are required: requests are located by their coordinates", field="lat")
        try:
            lat, lon = float(data["lat"]), float(data["long"])
        except (TypeError, ValueError):
            raise InvalidInput("lat and long must be numbers (WGS84 degrees)", field="lat") from None
        if not (abs(lat) <= 90 and abs(lon) <= 180):
            raise InvalidInput(f"({lat}, {lon}) is not a valid latitude, longitude", field="lat")
        description = _text(data["description"], "description", multiline=True) or ""
        photos = [str(data["media_url"])] if _text(data["media_url"], "media_url") else []
        ev.check_report_size(
            description,
            photos,
            max_description=es.max_description,
            max_photos=es.max_photos,
            max_photo_url=es.max_photo_url,
        )
        contact = (
            " ".join(x for x in (_text(data[k], k) for k in ("last_name", "first_name", "phone", "email")) if x) or None
        )
        session.commit()  # the jurisdiction check's transaction: no pooled connection held while queued
        return Pending(
            lon,
            lat,
            "wgs84",
            code,
            "public",
            description,
            tuple(photos),
            contact[:200] if contact else None,
            reporter=None,
            actor="open311",
        )

    def answer(result) -> Response:
        stored = result.stored
        return _json(
            [
                {
                    "service_request_id": str(stored["id"]),
                    "service_notice": o311.service_notice(stored["time_limit_hours"]),
                    "account_id": None,
                }
            ]
        )

    async def work() -> Response:
        pending = await run_in_threadpool(check)
        if idempotency_key is not None:  # stored alone, with its key (geo_api.idempotency)
            return await report_once(request, Once.of(request, caller, idempotency_key, data), pending, answer)
        # stored like every report: in a group with the reports arriving meanwhile
        return answer(await report_batcher(request.app).submit(pending))

    try:
        return await work()
    except GridbranchError:
        session.rollback()  # nothing of a refused request stays in the session (errors: Open311Route)
        raise

"""Reporting events (采集上报) over HTTP: the report body, its checks, the group writer
and the answer — shared by ``POST /v1/events`` (:mod:`geo_api.routers.events`), its
anonymous fast path (:class:`EventReportFastPath`, here) and Open311's ``POST
requests.json`` (:mod:`geo_api.routers.open311`), so that all three store and answer a
report alike."""

from __future__ import annotations

from typing import Annotated, Literal

import orjson
from pydantic import Field, StringConstraints, ValidationError

from geo_api.asgi import Asked, FastPath, Reply
from geo_api.deps import ANONYMOUS, Caller, app_session
from geo_api.params import Body
from layers import events as ev
from layers.events_batch import Pending, ReportBatcher, Stored, store_reports
from layers.textfields import LINE_RULES, TEXT_RULES

Channel = Literal["grid_worker", "member", "public", "hotline", "video"]

#: The report's text fields: textfields.Text(), Line() and Line(200), spelled out for
#: the type checker (layers.textfields.LINE_RULES).
Description = Annotated[str, StringConstraints(max_length=None), TEXT_RULES]
PhotoURL = Annotated[str, StringConstraints(max_length=None), LINE_RULES]
Contact = Annotated[str, StringConstraints(max_length=200), LINE_RULES]


class EventReport(Body):
    """An event reported from anywhere (采集上报)."""

    lon: float = Field(description="longitude or easting (x) in `crs`")
    lat: float = Field(description="latitude or northing (y) in `crs`")
    crs: str = Field("wgs84", max_length=32, description="wgs84, gcj02, bd09, cgcs2000 or EPSG:nnnn")
    category: str = Field(max_length=32, description="event category code (see /v1/events/categories)")
    description: Description = Field(
        description="what happened (limited in length, see GRIDBRANCH_EVENTS_MAX_DESCRIPTION)"
    )
    channel: Channel = Field("public", description="source channel; anonymous callers report as public")
    photos: list[PhotoURL] = Field(default_factory=list, description="photo URLs")
    contact: Contact | None = Field(None, description="how to reach the reporter (kept private)")


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
    :func:`report_answer` as the route (:func:`geo_api.routers.events.report`), hence the
    same bytes. Anything else, and any
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

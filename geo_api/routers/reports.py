"""Reports people print (月度报告): an area's month as a print-ready HTML page or a PDF,
for the admins of the area and dispatchers. Aggregates only (layers.report)."""

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from geo_api import report
from geo_api.deps import CachesDep, Caller, SessionDep, require_roles, scoped_area
from geo_api.responses import problems
from layers import coverage as cov
from layers.errors import InvalidInput

router = APIRouter(prefix="/v1/reports", tags=["reports"], responses=problems(403, 404))

Readers = Annotated[Caller, require_roles("admin", "dispatcher")]


@router.get(
    "/monthly",
    summary="An area's monthly report: coverage, registrations, events and their evaluation, rankings, a map",
    responses={200: {"content": {"text/html": {}, "application/pdf": {}}}},
)
async def monthly(
    request: Request,
    session: SessionDep,
    caches: CachesDep,
    caller: Readers,
    within: Annotated[str | None, scoped_area("within", "district, street or community; default your area")],
    month: Annotated[str, Query(max_length=7, description="YYYY-MM")],
    format: Annotated[Literal["html", "pdf"], Query()] = "pdf",
) -> Response:
    def make() -> Response:
        code = (
            within
            or caller.area_code
            or cov.root_code(session, caches, request.app.state.settings.coverage.thresholds())
        )
        if code is None:
            raise InvalidInput("within is required: there is more than one district (or none)", field="within")
        r = report.build(session, caches, request.app.state.settings, code, month, request.app.state.clock.now())
        if format == "html":
            return Response(report.html(r), media_type="text/html; charset=utf-8")
        return Response(
            report.pdf(r),
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{report.filename(r, "pdf")}"'},
        )

    return await run_in_threadpool(make)

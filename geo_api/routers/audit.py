"""The personal-data audit (审计): who received members' and reporters' personal data,
when, from which endpoint — for the district's admins. The rows: :mod:`layers.audit`."""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from geo_api.deps import Caller, ScopedMemberQuery, SessionDep, require_roles
from geo_api.params import Day, Limit, Offset, period
from geo_api.responses import CSV, media, problems
from layers import accounts as account_queries
from layers import audit as audit_log
from layers.errors import Forbidden

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=problems(400, 403, 404))


@router.get(
    "",
    summary="Who received personal data, when, from which endpoint (district admins); CSV with format=csv",
    responses=media(CSV),
)
def audit(
    request: Request,
    session: SessionDep,
    caller: Annotated[Caller, require_roles("admin")],
    member_id: ScopedMemberQuery,
    account: Annotated[
        str | None, Query(max_length=account_queries.USERNAME_MAX, description="the account that received the data")
    ] = None,
    endpoint: Annotated[str | None, Query(max_length=200, description="a route, e.g. /v1/registrations")] = None,
    start: Annotated[Day | None, Query(alias="from", description="on or after this day")] = None,
    end: Annotated[Day | None, Query(alias="to", description="on or before this day")] = None,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    if not (caller.district_wide and caller.role == "admin"):
        raise Forbidden("the audit of personal data is the district admins' to read")
    tz = ZoneInfo(request.app.state.settings.events.timezone)
    pfrom, pto = period(start, end, tz)
    rows, total = audit_log.entries(
        session, actor=account, member_id=member_id, start=pfrom, end=pto, endpoint=endpoint, limit=limit, offset=offset
    )
    if format == "csv":
        return Response(
            ("\ufeff" + audit_log.entries_csv(rows)).encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
        )
    return Response(
        orjson.dumps({"total": total, "limit": limit, "offset": offset, "items": rows}), media_type="application/json"
    )

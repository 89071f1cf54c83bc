from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import text

from geo_api.deps import Public, SessionDep
from geo_api.telemetry import CONTENT_TYPE_LATEST, exposition, metrics_allowed
from layers.errors import Forbidden

router = APIRouter(tags=["service"])


@router.get("/healthz", summary="Service and database health: ok, or a 503; versions for signed-in admins")
def healthz(session: SessionDep, caller: Public) -> dict:
    # the versions tell an attacker which known flaws to try: admins only
    if caller.role != "admin":
        session.execute(text("SELECT 1"))
        return {"status": "ok"}
    row = session.execute(text("SELECT current_setting('server_version'), postgis_lib_version()")).one()
    return {"status": "ok", "database": {"postgresql": row[0], "postgis": row[1]}}


@router.get("/livez", summary="Liveness for a supervisor: the process answers (no database asked)")
async def livez(caller: Public) -> dict:
    return {"status": "live"}


@router.get("/readyz", summary="Readiness for a balancer: the database answers, else a 503 with Retry-After")
def readyz(session: SessionDep, caller: Public) -> dict:
    session.execute(text("SELECT 1"))  # out of reach: the one 503 of geo_api.errors
    return {"status": "ready"}


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, caller: Public) -> Response:
    """Prometheus' text format, for the addresses of ``GRIDBRANCH_METRICS_ALLOW`` only
    (signed in or not: who may read it is a matter of where the scraper runs)."""
    host = request.client.host if request.client else None
    if not metrics_allowed(host, request.app.state.settings):
        raise Forbidden(
            "metrics are readable only from the addresses of GRIDBRANCH_METRICS_ALLOW",
            detail_zh="监控指标仅允许从 GRIDBRANCH_METRICS_ALLOW 所列地址读取",
        )
    return Response(exposition(request.app.state), media_type=CONTENT_TYPE_LATEST)

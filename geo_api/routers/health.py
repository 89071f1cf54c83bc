from fastapi import APIRouter
from sqlalchemy import text

from geo_api.deps import Public, SessionDep

router = APIRouter(tags=["service"])


@router.get("/healthz", summary="Service and database health")
def healthz(session: SessionDep, caller: Public) -> dict:
    row = session.execute(text("SELECT current_setting('server_version'), postgis_lib_version()")).one()
    return {"status": "ok", "database": {"postgresql": row[0], "postgis": row[1]}}

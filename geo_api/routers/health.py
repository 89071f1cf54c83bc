from fastapi import APIRouter
from sqlalchemy import text

from geo_api.deps import Public, SessionDep

router = APIRouter(tags=["service"])


@router.get("/healthz", summary="Service and database health: ok, or a 503; versions for signed-in admins")
def healthz(session: SessionDep, caller: Public) -> dict:
    # the versions tell an attacker which known flaws to try: admins only
    if caller.role != "admin":
        session.execute(text("SELECT 1"))
        return {"status": "ok"}
    row = session.execute(text("SELECT current_setting('server_version'), postgis_lib_version()")).one()
    return {"status": "ok", "database": {"postgresql": row[0], "postgis": row[1]}}

from typing import Annotated

from fastapi import APIRouter, Path

from geo_api.deps import Caller, SessionDep, require_roles
from layers import registrations as regs
from layers.errors import Forbidden

router = APIRouter(prefix="/v1/branches", tags=["branches"])


@router.get("/{code}/unregistered", summary="In-service members of a work-unit branch not registered at any residence grid")
def unregistered(session: SessionDep, caller: Annotated[Caller, require_roles("admin")],
                 code: Annotated[str, Path(max_length=32)]) -> dict:
    if caller.area_code is None or len(caller.area_code) != 12 or caller.area_code[6:] != "000000":
        raise Forbidden("only district-level admins see work-unit branch rosters")
    branch, members = regs.unregistered_members(session, code)
    return {"branch": branch, "total": len(members), "members": members}

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field

from geo_api.deps import Caller, Public, SessionDep, require_roles
from geo_api.params import Body, Limit, Offset
from geo_api.responses import problems
from ingest.points import to_wgs84_point
from layers import registrations as regs
from layers.codes import check_code
from layers.errors import Forbidden, InvalidInput

router = APIRouter(prefix="/v1/registrations", tags=["registrations"], responses=problems(400, 403, 404, 409))

MemberOrAdmin = Annotated[Caller, require_roles("member", "admin")]
Deciders = Annotated[Caller, require_roles("admin", "grid_worker")]
Admins = Annotated[Caller, require_roles("admin")]
Members = Annotated[Caller, require_roles("member")]


class RegistrationCreate(Body):
    """Register at the grid of one's residence (到居住地网格报到)."""

    lon: float = Field(description="longitude or easting (x) in `crs`")
    lat: float = Field(description="latitude or northing (y) in `crs`")
    crs: str = Field("wgs84", description="wgs84, gcj02, bd09, cgcs2000 or EPSG:nnnn")
    accuracy_m: float | None = Field(None, ge=0, le=100_000)
    role: str = Field(description="service role, by code or name (e.g. 平安创建示范员)")
    member_id: int | None = Field(None, description="admins registering on a member's behalf")
    move: bool = Field(False, description="end the active registration (moving house) and register here")


class Decision(Body):
    reason: str | None = Field(None, max_length=500)


def _view(session, registration_id: int, caller: Caller) -> dict:
    row = regs.registration_row(session, registration_id)
    own = caller.role == "member" and caller.member_id == row.member_id
    entitled = own or (caller.role in ("admin", "grid_worker") and caller.covers(row.grid_code))
    if not entitled:
        raise Forbidden(f"registration {registration_id} is not yours to see")
    return regs.registration_view(row, personal=True)


@router.post("", status_code=201, summary="Register a member at the grid where they live (pending until confirmed)")
def create_registration(request: Request, body: RegistrationCreate, session: SessionDep, caller: MemberOrAdmin) -> dict:
    settings = request.app.state.settings.locate
    if caller.role == "member":
        if body.member_id not in (None, caller.member_id):
            raise Forbidden("a member registers only themselves", field="member_id")
        member_id = caller.member_id
    else:
        if body.member_id is None:
            raise InvalidInput("member_id is required when an admin registers on a member's behalf", field="member_id")
        member_id = body.member_id
    lon, lat, spec = to_wgs84_point(body.lon, body.lat, body.crs)
    point = regs.ResidencePoint(lon, lat, spec.name, body.lon, body.lat, body.accuracy_m)
    index = request.app.state.grid_index.get(session)
    if caller.role == "admin":
        grid = regs.residence_grid(index, point, tolerance_m=settings.tolerance_m, edge_m=settings.edge_m)
        if not caller.covers(grid["grid"]["code"]):
            raise Forbidden(f"grid {grid['grid']['code']} is outside your area {caller.area_code}")
    registration_id = regs.register_member(
        session, member_id=member_id, point=point, role=body.role, index=index,
        tolerance_m=settings.tolerance_m, edge_m=settings.edge_m, move=body.move, actor=caller.username,
    )
    session.commit()
    return _view(session, registration_id, caller)


@router.get("", summary="Registrations in an area (admins of that area)")
def list_registrations(
    session: SessionDep,
    caller: Deciders,
    within: Annotated[str | None, Query(description="area or grid code; default your area")] = None,
    status: Annotated[Literal["pending", "confirmed", "rejected", "ended"] | None, Query()] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict:
    within = check_code(within, "within") if within is not None else caller.area_code
    if not caller.covers(within):
        raise Forbidden(f"{within} is outside your area {caller.area_code}", field="within")
    rows, total = regs.registrations_within(session, within, status=status, limit=limit, offset=offset)
    return {"total": total, "items": [regs.registration_view(r, personal=True) for r in rows]}


@router.get("/stats", summary="Registration rate and roles filled per grid, community, street or district")
def registration_stats(
    session: SessionDep,
    caller: Admins,
    level: Annotated[Literal["district", "street", "community", "grid"], Query()] = "street",
    within: Annotated[str | None, Query(description="area code; default your area")] = None,
) -> dict:
    within = check_code(within, "within") if within is not None else caller.area_code
    if not caller.covers(within):
        raise Forbidden(f"{within} is outside your area {caller.area_code}", field="within")
    return {"level": level, "within": within, "units": regs.registration_stats(session, level=level, within=within)}


@router.get("/roles", summary="The service roles a member can claim (六员), in their configured order")
def list_roles(session: SessionDep, caller: Public) -> dict:
    return {"roles": regs.service_roles(session)}


@router.get("/mine", summary="The signed-in member's registrations, newest first, and the active one")
def my_registrations(session: SessionDep, caller: Members) -> dict:
    if caller.member_id is None:
        raise Forbidden("this account is not linked to a member")
    items = [regs.registration_view(r, personal=True) for r in regs.member_registrations(session, caller.member_id)]
    return {"active": next((i for i in items if i["status"] in regs.ACTIVE), None), "items": items}


@router.get("/{registration_id}", summary="One registration (the member, or admins of its area)")
def get_registration(session: SessionDep, caller: Annotated[Caller, require_roles("member", "admin", "grid_worker")],
                     registration_id: Annotated[int, Path(ge=1)]) -> dict:
    return _view(session, registration_id, caller)


@router.post("/{registration_id}/confirm", summary="Confirm a pending registration (admin or grid worker of its area)")
def confirm(session: SessionDep, caller: Deciders, registration_id: Annotated[int, Path(ge=1)]) -> dict:
    regs.decide_registration(session, registration_id, confirm=True, actor=caller.username, covers=caller.covers)
    session.commit()
    return _view(session, registration_id, caller)


@router.post("/{registration_id}/reject", summary="Reject a pending registration with a reason")
def reject(session: SessionDep, caller: Deciders, body: Decision, registration_id: Annotated[int, Path(ge=1)]) -> dict:
    regs.decide_registration(session, registration_id, confirm=False, actor=caller.username, covers=caller.covers,
                             reason=body.reason)
    session.commit()
    return _view(session, registration_id, caller)

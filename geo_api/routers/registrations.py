from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request
from pydantic import Field

from geo_api.audit import Audited
from geo_api.deps import (
    CachesDep,
    Caller,
    Public,
    ScopedRegistration,
    ScopedWithin,
    SessionDep,
    require_roles,
    scoped_member,
)
from geo_api.idempotency import IdempotencyKey, Once
from geo_api.params import Body, Limit, Offset
from geo_api.responses import problems
from layers import registrations as regs
from layers import textfields
from layers.boundaries import parse_instant
from layers.errors import Forbidden, InvalidInput
from layers.points import to_wgs84_point

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
    reason: textfields.Text(500) | None = None


#: What a registration's personal view carries (layers.audit.FIELDS).
PERSONAL = ("name", "phone", "residence")


def _view(session, registration_id: int) -> dict:
    """A registration the caller may see (checked by ``ScopedRegistration``, or made by
    them in their area)."""
    return regs.registration_view(regs.registration_row(session, registration_id), personal=True)


def _audited(audit, views: list[dict], status: int = 200) -> None:
    """Record the personal views answered (registrations with their member's data)."""
    if views:
        audit.record(
            PERSONAL,
            members=[v["member_id"] for v in views],
            status=status,
            detail={"registrations": [v["id"] for v in views]},
        )


@router.post("", status_code=201, summary="Register a member at the grid where they live (pending until confirmed)")
def create_registration(
    request: Request,
    body: RegistrationCreate,
    session: SessionDep,
    caches: CachesDep,
    caller: MemberOrAdmin,
    audit: Audited,
    idempotency_key: IdempotencyKey = None,
) -> dict:
    settings = request.app.state.settings.locate
    once = Once.of(request, caller, idempotency_key, body.model_dump(mode="json"))
    replay = once.claim(session)
    if replay is not None:
        _audited(audit, [orjson.loads(replay.body)], 201)  # the first answer, as stored
        return replay
    if caller.role == "member":
        member_id = caller.member_id if body.member_id is None else body.member_id
    else:
        if body.member_id is None:
            raise InvalidInput("member_id is required when an admin registers on a member's behalf", field="member_id")
        member_id = body.member_id
    # the member's row locked first (every write on a member starts there), and only a
    # member of the caller's area — or the caller themselves — before anything is written
    scoped_member(session, caller, member_id, lock=True)
    lon, lat, spec = to_wgs84_point(body.lon, body.lat, body.crs)
    point = regs.ResidencePoint(lon, lat, spec.name, body.lon, body.lat, body.accuracy_m)
    index = caches.grid_index.get(session)
    if caller.role == "admin":
        grid = regs.residence_grid(index, point, tolerance_m=settings.tolerance_m, edge_m=settings.edge_m)
        caller.require_covers(grid["grid"]["code"], None, what="grid")
    registration_id = regs.register_member(
        session,
        member_id=member_id,
        point=point,
        role=body.role,
        index=index,
        tolerance_m=settings.tolerance_m,
        edge_m=settings.edge_m,
        move=body.move,
        actor=caller.username,
    )
    view = _view(session, registration_id)
    answer = once.answer(session, 201, view)  # kept in the same transaction
    session.commit()
    _audited(audit, [view], 201)
    return answer


@router.get("", summary="Registrations in an area (admins of that area)")
def list_registrations(
    session: SessionDep,
    caller: Deciders,
    within: ScopedWithin,
    audit: Audited,
    status: Annotated[Literal["pending", "confirmed", "rejected", "ended"] | None, Query()] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict:
    rows, total = regs.registrations_within(session, within, status=status, limit=limit, offset=offset)
    items = [regs.registration_view(r, personal=True) for r in rows]
    _audited(audit, items)
    return {"total": total, "items": items}


@router.get("/stats", summary="Registration rate and roles filled per grid, community, street or district")
def registration_stats(
    session: SessionDep,
    caches: CachesDep,
    caller: Admins,
    within: ScopedWithin,
    level: Annotated[Literal["district", "street", "community", "grid"], Query()] = "street",
) -> dict:
    return {
        "level": level,
        "within": within,
        "units": regs.registration_stats(session, caches, level=level, within=within),
    }


@router.get("/moved", summary="Registrations whose residence now lies in another grid (after a boundary change)")
def moved_registrations(
    session: SessionDep,
    caller: Admins,
    within: ScopedWithin,
    at: Annotated[
        str | None,
        Query(
            description="in the grid layer in force on this day (2027-01-01, China "
            "Standard Time) or at this instant; default now"
        ),
    ] = None,
) -> dict:
    """Active registrations at grids inside ``within`` whose residence a new boundary
    generation puts outside their grid, with the grid now holding it: listed for the
    admins, never moved silently (the member re-registers, or an admin on their behalf)."""
    instant = parse_instant(at, "at") if at is not None else None
    items = regs.moved_registrations(session, within, at=instant)
    return {"within": within, "at": instant.isoformat() if instant else None, "total": len(items), "items": items}


@router.get("/roles", summary="The service roles a member can claim (六员), in their configured order")
def list_roles(session: SessionDep, caller: Public) -> dict:
    return {"roles": regs.service_roles(session)}


@router.get("/mine", summary="The signed-in member's registrations, newest first, and the active one")
def my_registrations(session: SessionDep, caller: Members, audit: Audited) -> dict:
    if caller.member_id is None:
        raise Forbidden("this account is not linked to a member")
    items = [regs.registration_view(r, personal=True) for r in regs.member_registrations(session, caller.member_id)]
    _audited(audit, items)
    return {"active": next((i for i in items if i["status"] in regs.ACTIVE), None), "items": items}


@router.get("/{registration_id}", summary="One registration (the member, or admins of its area)")
def get_registration(
    session: SessionDep,
    caller: Annotated[Caller, require_roles("member", "admin", "grid_worker")],
    registration_id: ScopedRegistration,
    audit: Audited,
) -> dict:
    view = _view(session, registration_id)
    _audited(audit, [view])
    return view


@router.post("/{registration_id}/confirm", summary="Confirm a pending registration (admin or grid worker of its area)")
def confirm(session: SessionDep, caller: Deciders, registration_id: ScopedRegistration, audit: Audited) -> dict:
    regs.decide_registration(session, registration_id, confirm=True, actor=caller.username, covers=caller.covers)
    session.commit()
    view = _view(session, registration_id)
    _audited(audit, [view])
    return view


@router.post("/{registration_id}/reject", summary="Reject a pending registration with a reason")
def reject(
    session: SessionDep, caller: Deciders, registration_id: ScopedRegistration, body: Decision, audit: Audited
) -> dict:
    regs.decide_registration(
        session, registration_id, confirm=False, actor=caller.username, covers=caller.covers, reason=body.reason
    )
    session.commit()
    view = _view(session, registration_id)
    _audited(audit, [view])
    return view

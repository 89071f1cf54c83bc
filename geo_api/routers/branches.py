from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import Field

from geo_api.deps import Caller, SessionDep, require_roles
from geo_api.params import Body, Limit, Offset
from geo_api.responses import problems
from ingest.points import to_wgs84_point
from layers import branches
from layers import registrations as regs
from layers.codes import check_code, level_of
from layers.errors import Forbidden, InvalidInput

router = APIRouter(prefix="/v1/branches", tags=["branches"], responses=problems(400, 403, 404, 409))
Admins = Annotated[Caller, require_roles("admin")]
BranchCode = Annotated[str, Path(max_length=32)]


class Site(Body):
    lon: float = Field(description="longitude or easting (x) in `crs`")
    lat: float = Field(description="latitude or northing (y) in `crs`")
    crs: str = Field("wgs84", description="wgs84, gcj02, bd09, cgcs2000 or EPSG:nnnn")


class BranchCreate(Body):
    """A new branch of a community: a grid branch (网格党支部) or the community's own."""

    name: str = Field(max_length=200)
    kind: Literal["grid", "community"]
    community: str = Field(pattern=r"^[0-9]{12}$", description="the community's 12-digit code")
    grids: list[str] = Field(max_length=200, description="codes of the grids it covers (at least one)")
    site: Site | None = Field(None, description="the activity site (阵地)")
    secretary_name: str | None = Field(None, max_length=200)
    secretary_phone: str | None = Field(None, max_length=64)


class BranchUpdate(Body):
    """What changes; fields left out stay as they are (``site`` null removes the site)."""

    name: str | None = Field(None, max_length=200)
    grids: list[str] | None = Field(None, max_length=200, description="the full list of grids it covers")
    site: Site | None = None
    secretary_name: str | None = Field(None, max_length=200)
    secretary_phone: str | None = Field(None, max_length=64)
    active: bool | None = Field(None, description="false dissolves the branch; true restores it")


def _site(site: Site | None) -> tuple[float, float] | None:
    if site is None:
        return None
    try:
        return to_wgs84_point(site.lon, site.lat, site.crs)[:2]
    except InvalidInput as exc:
        raise InvalidInput(exc.detail, field=f"site.{exc.field}") from exc


def _check_area(caller: Caller, community: str | None, code: str) -> None:
    """Admins of an area holding the branch's community; a branch of no community (a
    work unit's) is the district admins'."""
    if community is None:
        if not caller.area_code or level_of(caller.area_code) != "district":
            raise Forbidden(f"branch {code} belongs to no community: district admins only", field="code")
    elif not caller.covers(community):
        raise Forbidden(f"branch {code} is outside your area {caller.area_code}", field="code")


@router.get("/{code}", summary="One branch with its secretary, site and grids (admins of its community)")
def get_branch(session: SessionDep, caller: Admins, code: BranchCode) -> dict:
    view = branches.branch_view(session, code)
    _check_area(caller, view["community"], code)
    return view


@router.post("", status_code=201, summary="Set up a branch of a community (admins of an area holding it)")
def create_branch(session: SessionDep, caller: Admins, body: BranchCreate) -> dict:
    if not caller.covers(body.community):
        raise Forbidden(f"community {body.community} is outside your area {caller.area_code}", field="community")
    code = branches.create_branch(
        session, name=body.name, kind=body.kind, community=body.community, grids=body.grids, site=_site(body.site),
        secretary_name=body.secretary_name, secretary_phone=body.secretary_phone, actor=caller.username,
    )
    session.commit()
    return branches.branch_view(session, code)


@router.patch("/{code}", summary="Rename a branch, change its grids, site or secretary, dissolve or restore it")
def update_branch(session: SessionDep, caller: Admins, code: BranchCode, body: BranchUpdate) -> dict:
    _check_area(caller, branches.branch_view(session, code)["community"], code)
    sent = body.model_fields_set
    changes: dict = {k: getattr(body, k) for k in ("name", "grids", "active") if k in sent and getattr(body, k) is not None}
    if "site" in sent:
        changes["site"] = _site(body.site)
    if sent & {"secretary_name", "secretary_phone"}:
        changes["secretary"] = (body.secretary_name, body.secretary_phone)
    branches.update_branch(session, code, changes, actor=caller.username)
    session.commit()
    return branches.branch_view(session, code)


@router.get("/{code}/unregistered", summary="In-service members of a work-unit branch not registered at any residence grid")
def unregistered(session: SessionDep, caller: Annotated[Caller, require_roles("admin")],
                 code: Annotated[str, Path(max_length=32)]) -> dict:
    if caller.area_code is None or len(caller.area_code) != 12 or caller.area_code[6:] != "000000":
        raise Forbidden("only district-level admins see work-unit branch rosters")
    branch, members = regs.unregistered_members(session, code)
    return {"branch": branch, "total": len(members), "members": members}


log_router = APIRouter(prefix="/v1/upkeep", tags=["branches"], responses=problems(403))


@log_router.get("", summary="Who changed which grid worker or branch, when, from what to what (admins of the area)")
def upkeep_log(session: SessionDep, caller: Admins,
               within: Annotated[str | None, Query(description="an area or grid code inside yours; default yours")] = None,
               limit: Limit = 50, offset: Offset = 0) -> dict:
    area = within or caller.area_code
    if area is None:
        raise Forbidden("an admin without an area has no upkeep log", field="within")
    check_code(area, "within")
    if not caller.covers(area):
        raise Forbidden(f"{area} is outside your area {caller.area_code}", field="within")
    items, total = branches.upkeep_log(session, area, limit, offset)
    return {"within": area, "total": total, "items": items}

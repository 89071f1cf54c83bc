from typing import Annotated, Literal

from fastapi import APIRouter
from pydantic import Field

from geo_api.audit import Audited
from geo_api.deps import Caller, ScopedBranch, ScopedWithin, SessionDep, area_in_scope, require_roles
from geo_api.params import Body, Limit, Offset
from geo_api.responses import problems
from layers import branches, textfields
from layers import registrations as regs
from layers.errors import Forbidden, InvalidInput
from layers.points import to_wgs84_point

router = APIRouter(prefix="/v1/branches", tags=["branches"], responses=problems(400, 403, 404, 409))
Admins = Annotated[Caller, require_roles("admin")]


class Site(Body):
    lon: float = Field(description="longitude or easting (x) in `crs`")
    lat: float = Field(description="latitude or northing (y) in `crs`")
    crs: str = Field("wgs84", description="wgs84, gcj02, bd09, cgcs2000 or EPSG:nnnn")


class BranchCreate(Body):
    """A new branch of a community: a grid branch (网格党支部) or the community's own."""

    # names' and phones' lengths and formats: layers.textfields, through the upkeep checks (declared here)
    name: str = Field(json_schema_extra={"maxLength": textfields.NAME_MAX})
    kind: Literal["grid", "community"]
    community: str = Field(pattern=r"^[0-9]{12}$", description="the community's 12-digit code")
    grids: list[str] = Field(max_length=200, description="codes of the grids it covers (at least one)")
    site: Site | None = Field(None, description="the activity site (阵地)")
    secretary_name: str | None = Field(None, json_schema_extra={"maxLength": textfields.NAME_MAX})
    secretary_phone: str | None = Field(None, json_schema_extra={"maxLength": textfields.PHONE_MAX})


class BranchUpdate(Body):
    """What changes; fields left out stay as they are (``site`` null removes the site)."""

    name: str | None = Field(None, json_schema_extra={"maxLength": textfields.NAME_MAX})
    grids: list[str] | None = Field(None, max_length=200, description="the full list of grids it covers")
    site: Site | None = None
    secretary_name: str | None = Field(None, json_schema_extra={"maxLength": textfields.NAME_MAX})
    secretary_phone: str | None = Field(None, json_schema_extra={"maxLength": textfields.PHONE_MAX})
    active: bool | None = Field(None, description="false dissolves the branch; true restores it")


def _site(site: Site | None) -> tuple[float, float] | None:
    if site is None:
        return None
    try:
        return to_wgs84_point(site.lon, site.lat, site.crs)[:2]
    except InvalidInput as exc:
        raise InvalidInput(exc.detail, field=f"site.{exc.field}") from exc


def _audited(audit, view: dict, status: int = 200) -> dict:
    """A branch's view, its secretary's name and phone recorded as answered."""
    fields = [f for f, key in (("name", "secretary_name"), ("phone", "secretary_phone")) if view.get(key)]
    audit.record(fields, status=status, detail={"branches": [view["code"]]})
    return view


@router.get("/{code}", summary="One branch with its secretary, site and grids (admins of its community)")
def get_branch(session: SessionDep, caller: Admins, code: ScopedBranch, audit: Audited) -> dict:
    return _audited(audit, branches.branch_view(session, code))


@router.post("", status_code=201, summary="Set up a branch of a community (admins of an area holding it)")
def create_branch(session: SessionDep, caller: Admins, body: BranchCreate, audit: Audited) -> dict:
    area_in_scope(caller, body.community, "community")  # its grids must lie in it (layers.branches)
    code = branches.create_branch(
        session,
        name=body.name,
        kind=body.kind,
        community=body.community,
        grids=body.grids,
        site=_site(body.site),
        secretary_name=body.secretary_name,
        secretary_phone=body.secretary_phone,
        actor=caller.username,
    )
    session.commit()
    return _audited(audit, branches.branch_view(session, code), 201)


@router.patch("/{code}", summary="Rename a branch, change its grids, site or secretary, dissolve or restore it")
def update_branch(session: SessionDep, caller: Admins, code: ScopedBranch, body: BranchUpdate, audit: Audited) -> dict:
    sent = body.model_fields_set
    changes: dict = {
        k: getattr(body, k) for k in ("name", "grids", "active") if k in sent and getattr(body, k) is not None
    }
    if "site" in sent:
        changes["site"] = _site(body.site)
    if sent & {"secretary_name", "secretary_phone"}:
        changes["secretary"] = (body.secretary_name, body.secretary_phone)
    branches.update_branch(session, code, changes, actor=caller.username)
    session.commit()
    return _audited(audit, branches.branch_view(session, code))


@router.get(
    "/{code}/unregistered", summary="In-service members of a work-unit branch not registered at any residence grid"
)
def unregistered(
    session: SessionDep, caller: Annotated[Caller, require_roles("admin")], code: ScopedBranch, audit: Audited
) -> dict:
    if not caller.district_wide:  # members of no residence grid: the district's to see
        raise Forbidden("only district-level admins see work-unit branch rosters")
    branch, members = regs.unregistered_members(session, code)
    if members:
        audit.record(("name", "phone"), members=[m["id"] for m in members], detail={"branches": [code]})
    return {"branch": branch, "total": len(members), "members": members}


log_router = APIRouter(prefix="/v1/upkeep", tags=["branches"], responses=problems(403))


@log_router.get("", summary="Who changed which grid worker or branch, when, from what to what (admins of the area)")
def upkeep_log(
    session: SessionDep, caller: Admins, area: ScopedWithin, audit: Audited, limit: Limit = 50, offset: Offset = 0
) -> dict:
    items, total = branches.upkeep_log(session, area, limit, offset)
    # a branch's secretary (name, phone) before and after a change is personal; a grid
    # worker's is the residents' public contact
    secretaries = [
        i
        for i in items
        if i["subject"] == "branch"
        and any((s or {}).get(k) for s in (i["before"], i["after"]) for k in ("secretary_name", "secretary_phone"))
    ]
    if secretaries:
        audit.record(
            ("name", "phone"),
            detail={"upkeep": [i["id"] for i in secretaries], "branches": sorted({i["code"] for i in secretaries})},
        )
    return {"within": area, "total": total, "items": items}

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from geo_api.deps import Public, SessionDep
from geo_api.responses import problems
from layers import areas
from layers.codes import check_code

router = APIRouter(prefix="/v1/areas", tags=["areas"], responses=problems(404))


@router.get("", summary="The area tree: district → streets/towns → communities")
def area_tree(session: SessionDep, caller: Public) -> dict:
    return {"areas": areas.area_tree(session)}


@router.get("/boundaries", summary="Area boundaries as GeoJSON (WGS84)")
def area_boundaries(
    session: SessionDep,
    caller: Public,
    level: Annotated[Literal["district", "street", "community"] | None, Query()] = None,
    within: Annotated[str | None, Query(description="an area code; only areas inside it")] = None,
) -> dict:
    if within is not None:
        check_code(within, "within")
    return areas.area_boundaries(session, level=level, within=within)


@router.get("/{code}", summary="One area (no geometry)")
def area(session: SessionDep, caller: Public, code: Annotated[str, Path(pattern=r"^[0-9]{12}$")]) -> dict:
    a = areas.area_by_code(session, code)
    return {"code": a.code, "name": a.name, "level": a.level, "parent": a.parent.code if a.parent else None}

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from pydantic import Field

from geo_api.deps import CachesDep, Caller, Public, ScopedGrid, SessionDep, require_roles
from geo_api.params import Body, Limit, Offset, parse_bbox
from geo_api.responses import problems
from layers import branches, grids, textfields
from layers.codes import check_code
from layers.geojson import collection

router = APIRouter(prefix="/v1/grids", tags=["grids"], responses=problems(400, 403, 404))


def _disclosure(request: Request, caller: Caller) -> grids.Disclosure:
    """Exact figures and the worker for staff of the grid's area (admins, grid workers;
    dispatchers everywhere); for everyone else small counts suppressed as in the public
    tiles, and the worker as the deployment says."""
    settings = request.app.state.settings
    return grids.Disclosure(
        k=settings.coverage.h3_min_count,
        public_worker=settings.audit.public_grid_worker,
        full=caller.staff_covering,
    )


@router.get(
    "",
    summary="Current grids as a GeoJSON FeatureCollection: all of them, or paged with `limit` (a `next` link)",
    description="Without `limit` the answer is the whole collection (for GIS readers that do not page); "
    "with it, a page with a `next` link while more follow. `numberMatched` and `numberReturned` always say "
    "how many grids match and how many the answer holds.",
)
def list_grids(
    request: Request,
    session: SessionDep,
    caches: CachesDep,
    caller: Public,
    bbox: Annotated[str | None, Query(description="minlon,minlat,maxlon,maxlat (WGS84)")] = None,
    within: Annotated[str | None, Query(description="an area code")] = None,
    limit: Limit | None = None,
    offset: Offset = 0,
) -> dict:
    box = parse_bbox(bbox)
    if within is not None:
        check_code(within, "within")
    features, matched = grids.grids_page(
        session, caches, bbox=box, within=within, limit=limit, offset=offset, disclosure=_disclosure(request, caller)
    )
    links = [{"rel": "self", "type": "application/geo+json", "href": str(request.url)}]
    if limit is not None and offset + len(features) < matched:
        links.append(
            {
                "rel": "next",
                "type": "application/geo+json",
                "href": str(request.url.include_query_params(offset=offset + limit, limit=limit)),
            }
        )
    return collection(features, numberMatched=matched, numberReturned=len(features), links=links)


@router.get("/{code}", summary="One grid with the branches covering it")
def get_grid(
    request: Request,
    session: SessionDep,
    caches: CachesDep,
    caller: Public,
    code: Annotated[str, Path(pattern=r"^[0-9]{15}$")],
) -> dict:
    return grids.grid_feature(session, caches, code, _disclosure(request, caller))


class WorkerUpdate(Body):
    """The grid's worker (网格员): a name and a phone, or both null for nobody."""

    # lengths and formats: layers.textfields, through the upkeep checks (declared here)
    name: str | None = Field(None, json_schema_extra={"maxLength": textfields.NAME_MAX})
    phone: str | None = Field(
        None,
        json_schema_extra={"maxLength": textfields.PHONE_MAX},
        description="a mobile number, or a landline with its area code",
    )


@router.put("/{code}/worker", summary="Put a grid worker in charge of a grid (admins of an area holding it)")
def set_worker(
    request: Request,
    session: SessionDep,
    caches: CachesDep,
    caller: Annotated[Caller, require_roles("admin")],
    code: ScopedGrid,
    body: WorkerUpdate,
) -> dict:
    branches.set_grid_worker(session, code, body.name, body.phone, actor=caller.username)
    session.commit()
    return grids.grid_feature(session, caches, code, _disclosure(request, caller))

from typing import Annotated

from fastapi import APIRouter, Query

from geo_api.deps import CachesDep, Public, SessionDep
from layers import places

router = APIRouter(prefix="/v1/places", tags=["places"])


@router.get(
    "",
    summary="Find the district, a street, community or grid by name, part of a name or code "
    "(anonymous; GeoJSON points where the map writes their names, with bounds)",
)
def find_places(
    session: SessionDep,
    caches: CachesDep,
    caller: Public,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=places.MAX_QUERY,
            description="a name or part of one (its characters in order suffice: 凤鸣3 finds "
            "凤鸣社区第3网格), or a code or its first digits",
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=50, description="results at most")] = 10,
) -> dict:
    return places.place_collection(session, caches, q, limit)

"""Coverage analysis: summary metrics, issues (gaps, overlaps, branchless grids …) and
H3 aggregates. Summary and issues carry no personal data but are internal (admins of
the area, dispatchers); H3 is public: anyone not entitled to individual member data gets
whole-cell counts of one H3 hierarchy with small cells and their complements suppressed
(see :func:`layers.coverage.h3_aggregate`)."""

from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from geo_api.deps import ADMINS_AND_WORKERS, CachesDep, Caller, Public, SessionDep, require_roles, scoped_area
from geo_api.responses import CSV, GEOJSON, GeoJSONResponse, media, problems
from layers import coverage as cov
from layers.errors import InvalidInput

router = APIRouter(prefix="/v1/coverage", tags=["coverage"], responses=problems(403, 404))

Internal = Annotated[Caller, require_roles("admin", "dispatcher")]
CSV_TYPE = "text/csv; charset=utf-8"
BOM = "\ufeff"  # so that spreadsheet programs read the Chinese names as UTF-8


def _json(body, media_type: str = "application/json") -> Response:
    return Response(orjson.dumps(body), media_type=media_type)


def _csv(body: str, filename: str) -> Response:
    return Response(
        (BOM + body).encode("utf-8"),
        media_type=CSV_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _existing(request: Request, session, caches, code: str | None, field: str) -> str | None:
    """``code`` (already in the caller's scope: ``scoped_area``), which must exist in the
    coverage model; None stays None (dispatchers: everything)."""
    if code is not None:
        cov.coverage_model(session, caches, request.app.state.settings.coverage.thresholds()).check_code(code, field)
    return code


@router.get(
    "/summary",
    summary="Coverage metrics of an area and of each unit of a level inside it, with rankings",
    responses=media(GEOJSON, CSV),
)
def coverage_summary(
    request: Request,
    session: SessionDep,
    caches: CachesDep,
    caller: Internal,
    code: Annotated[
        str | None, scoped_area("code", "area or grid code; default your area (dispatchers: the district)")
    ],
    level: Annotated[
        str | None, Query(description="district, street, community or grid; default the level below `code`")
    ] = None,
    format: Annotated[
        Literal["json", "csv", "geojson"], Query(description="json, csv or geojson (units with their boundaries)")
    ] = "json",
):
    thresholds = request.app.state.settings.coverage.thresholds()
    if level is not None and level not in cov.LEVELS:
        raise InvalidInput(f"unknown level {level!r}; one of {', '.join(cov.LEVELS)}", field="level")
    code = _existing(request, session, caches, code, "code")
    if code is None:
        code = cov.root_code(session, caches, thresholds)
        if code is None:
            raise InvalidInput("code is required: there is more than one district (or none)", field="code")
    result = cov.summary(session, caches, code=code, level=level, thresholds=thresholds)
    if format == "csv":
        return _csv(cov.summary_csv(result), cov.summary_filename(result))
    if format == "geojson":
        return _json(cov.summary_geojson(session, caches, result, thresholds), "application/geo+json")
    return _json(result)


@router.get(
    "/issues",
    summary="Gaps, overlaps, slivers, grids outside their community, invalid or stray parts, "
    "branchless grids and other coverage findings (GeoJSON or CSV)",
    response_class=GeoJSONResponse,
    responses=media(CSV),
)
def coverage_issues(
    request: Request,
    session: SessionDep,
    caches: CachesDep,
    caller: Internal,
    within: Annotated[
        str | None, scoped_area("within", "area or grid code; default your area (dispatchers: everywhere)")
    ],
    kind: Annotated[
        list[str] | None,
        Query(description="kinds, repeated or comma-separated; `topology` or `branch` for a group; default all"),
    ] = None,
    format: Annotated[Literal["geojson", "csv"], Query()] = "geojson",
):
    thresholds = request.app.state.settings.coverage.thresholds()
    kinds = cov.parse_kinds(kind)
    within = _existing(request, session, caches, within, "within")
    found = cov.issues(session, caches, kinds=kinds, within=within, thresholds=thresholds)
    name = within or "all"
    if format == "csv":
        return _csv(cov.issues_csv(found), f"coverage_{name}_issues.csv")
    counts: dict[str, int] = {}
    for f in found:
        counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    return _json(
        cov.issues_geojson(found, within=within, kinds=list(kinds), counts=counts, thresholds=thresholds.as_dict()),
        "application/geo+json",
    )


def _entitled(caller: Caller, metric: str, within: str | None) -> bool:
    """Who sees H3 cells unsuppressed: admins and grid workers whose area covers
    ``within`` (they may see the members themselves); for events also dispatchers."""
    if metric == "events" and caller.role == "dispatcher":
        return True
    return caller.staff_covering(within, ADMINS_AND_WORKERS)


H3_DESCRIPTION = """\
Points are counted in their resolution-10 cell; a coarser cell's count is the sum of its
children's (`h3.cell_to_parent`), so it counts the points of its res-10 descendants (H3
children overhang their parent slightly).

**Entitled callers** (admins and grid workers whose area covers `within`; dispatchers for
`events`) get the points lying inside `within` counted per cell, nothing suppressed, and
`total`.

**Everyone else** gets figures that cannot be combined into a count below `k`
(`GRIDBRANCH_COVERAGE_H3_MIN_COUNT`):

- each cell's count is the whole cell's, over the whole service area: `within` only selects
  which cells are listed (those holding at least one point inside it), so asking with
  different `within` values gives nothing to subtract;
- cells counting fewer than `k` are suppressed, and so are the smallest published cells
  wherever a parent cell minus its published children (at any two resolutions, e.g. the
  tiles of two zooms) would reveal between 1 and `k − 1` people, or would pin down a
  suppressed parent;
- `suppressed_cells` is how many of the listed cells were left out; `total` is withheld.
"""


@router.get(
    "/h3",
    summary="Registered members, residences or events counted per H3 cell (GeoJSON); "
    "small cells suppressed unless you may see the people themselves",
    description=H3_DESCRIPTION,
    response_class=GeoJSONResponse,
)
async def coverage_h3(
    request: Request,
    session: SessionDep,
    caches: CachesDep,
    caller: Public,
    res: Annotated[int, Query(description="H3 resolution, 7 to 10")] = 9,
    metric: Annotated[str, Query(description="members (registered), residences or events")] = "members",
    within: Annotated[
        str | None, Query(description="area or grid code; default your area (admins, grid workers) or everywhere")
    ] = None,
):
    cov.check_h3(res, metric)
    if within is None and caller.role in ("admin", "grid_worker"):
        within = caller.area_code
    k = request.app.state.settings.coverage.h3_min_count
    suppress = None if _entitled(caller, metric, within) else k

    def work():
        out = cov.h3_aggregate(session, caches, res=res, metric=metric, within=within, suppress_below=suppress)
        features = [
            {
                "type": "Feature",
                "id": c["cell"],
                "geometry": {"type": "Polygon", "coordinates": [c["boundary"]]},
                "properties": {"cell": c["cell"], "count": c["count"]},
            }
            for c in out["cells"]
        ]
        body = {
            "type": "FeatureCollection",
            "features": features,
            # every cell listed: the whole collection, never a page
            "numberMatched": len(features),
            "numberReturned": len(features),
            "res": res,
            "metric": metric,
            "within": within,
            "suppressed": suppress is not None,
            "k": suppress,
            "suppressed_cells": out["suppressed_cells"],
            "total": out["total"],
        }
        return orjson.dumps(body)

    return Response(await run_in_threadpool(work), media_type="application/geo+json")

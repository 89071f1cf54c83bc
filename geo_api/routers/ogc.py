"""OGC API – Features (Part 1 Core with GeoJSON, Part 2 CRS by reference) at ``/ogc``, so
QGIS, GDAL's OAPIF driver and other OGC clients read the feature layers without knowing
our API. The collections and their queries are :mod:`layers.ogc`; here: the documents
around them (landing page, conformance, collections), links, and who may read what —
the API's rules: public collections to anyone, the private ones (coverage findings)
with a token and within the caller's area, personal fields (a branch's secretary) to the
admins of its community and audited as ``/v1/branches/{code}`` is.

Invalid parameters are a 400 problem detail (the Part 1 requirement; the rest of the API
says 422), and so is a parameter the collection does not know."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from geo_api.audit import Audited
from geo_api.deps import STAFF, CachesDep, Caller, Public, SessionDep
from geo_api.responses import GEOJSON, media, problems
from layers import ogc
from layers.codes import area_prefix
from layers.errors import Forbidden, Unauthorized

router = APIRouter(prefix="/ogc", tags=["ogc"], responses=problems(400, 403, 404))

CORE = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/"
CONFORMANCE = [
    CORE + "core",
    CORE + "oas30",
    CORE + "geojson",
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
]
JSON = "application/json"
OPENAPI = "application/vnd.oai.openapi+json;version=3.0"

#: The roles that read private collections (the coverage findings: internal, as
#: ``/v1/coverage/issues``).
FINDINGS_ROLES = ("admin", "dispatcher")


def _json(body, media_type: str = JSON, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), media_type=media_type, headers=headers)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/ogc"


def _only(request: Request, *allowed: str) -> None:
    """Part 1: a query parameter the operation does not define is a 400."""
    unknown = sorted(set(request.query_params) - {*allowed, "f"})
    if unknown:
        raise ogc.BadParameter(
            f"unknown query parameter {unknown[0]!r}; this operation takes {', '.join(allowed) or 'none'}",
            field=unknown[0],
            detail_zh=f"不认识的查询参数 {unknown[0]}",
        )
    f = request.query_params.get("f")
    if f is not None and f not in ("json", "geojson"):
        raise ogc.BadParameter(
            f"f {f!r} is not offered; json (or geojson for features)", field="f", detail_zh="仅提供 JSON 格式（f=json）"
        )


def _readable(caller: Caller, collection: ogc.Collection) -> bool:
    return not collection.private or caller.role in FINDINGS_ROLES


def _check_readable(caller: Caller, collection: ogc.Collection) -> None:
    if _readable(caller, collection):
        return
    if caller.anonymous:
        raise Unauthorized(
            f"collection {collection.id} needs a token (sign in at /v1/auth/token)",
            field="collectionId",
            detail_zh=f"要素集合 {collection.id} 须登录后读取",
        )
    raise Forbidden(
        f"collection {collection.id} is for admins and dispatchers",
        field="collectionId",
        detail_zh=f"要素集合 {collection.id} 仅供管理员和指挥中心读取",
    )


def _reader(caller: Caller) -> ogc.Reader:
    """The caller's entitlements, as the API's routes have them."""
    staff_prefix = None
    if caller.role == "dispatcher":
        staff_prefix = ""
    elif caller.role in STAFF and caller.area_code:
        staff_prefix = area_prefix(caller.area_code)

    def secretaries(community: str | None) -> bool:
        if caller.role != "admin":
            return False
        return caller.covers(community) if community else caller.district_wide

    return ogc.Reader(
        staff_prefix=staff_prefix,
        findings_within=caller.area_code if caller.role == "admin" else None,
        findings_all=caller.role == "dispatcher",
        secretaries=secretaries,
    )


@router.get("", summary="OGC API – Features landing page")
def landing(request: Request, caller: Public) -> Response:
    _only(request)
    base = _base(request)
    return _json(
        {
            "title": "gridbranch 网格党支部空间服务",
            "description": "Areas, grids, branches, public events and coverage findings as OGC API – Features.",
            "links": [
                {"rel": "self", "type": JSON, "title": "this document", "href": base},
                {
                    "rel": "service-desc",
                    "type": OPENAPI,
                    "title": "the API definition",
                    "href": str(request.base_url).rstrip("/") + request.app.openapi_url,
                },
                {"rel": "conformance", "type": JSON, "title": "conformance classes", "href": f"{base}/conformance"},
                {"rel": "data", "type": JSON, "title": "collections", "href": f"{base}/collections"},
            ],
        }
    )


@router.get("/conformance", summary="The conformance classes implemented")
def conformance(request: Request, caller: Public) -> Response:
    _only(request)
    return _json({"conformsTo": CONFORMANCE})


def _collection_doc(request: Request, c: ogc.Collection, extent: list[float] | None) -> dict:
    base = f"{_base(request)}/collections/{c.id}"
    doc: dict = {
        "id": c.id,
        "title": c.title,
        "description": c.description,
        "itemType": "feature",
        "crs": [x.uri for x in ogc.OFFERED],
        "storageCrs": ogc.EPSG_URI.format(4326),
        "links": [
            {"rel": "self", "type": JSON, "href": base},
            {"rel": "items", "type": GEOJSON, "title": c.title, "href": f"{base}/items"},
        ],
    }
    if extent is not None:
        doc["extent"] = {"spatial": {"bbox": [extent], "crs": ogc.CRS84}}
    if c.temporal is not None:
        # open at both ends: boundary generations and reports have no end; `datetime`
        # selects by the properties named here
        doc.setdefault("extent", {})["temporal"] = {
            "interval": [[None, None]],
            "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian",
        }
        doc["description"] += f" `datetime` selects by {c.temporal}."
    return doc


@router.get("/collections", summary="The collections readable by the caller")
def collections(request: Request, session: SessionDep, caller: Public) -> Response:
    _only(request)
    extent = ogc.extent(session)
    base = _base(request)
    return _json(
        {
            "links": [{"rel": "self", "type": JSON, "href": f"{base}/collections"}],
            "collections": [
                _collection_doc(request, c, extent) for c in ogc.COLLECTIONS.values() if _readable(caller, c)
            ],
            "crs": [x.uri for x in ogc.OFFERED],
        }
    )


@router.get("/collections/{collectionId}", summary="One collection")
def collection(request: Request, session: SessionDep, caller: Public, collectionId: str) -> Response:  # noqa: N803
    _only(request)
    c = ogc.collection(collectionId)
    _check_readable(caller, c)
    return _json(_collection_doc(request, c, ogc.extent(session)))


def _limit(raw: str | None) -> int:
    if raw is None:
        return ogc.DEFAULT_LIMIT
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ogc.BadParameter(
            f"limit must be a whole number of at least 1, got {raw!r}", field="limit", detail_zh="每页数量须是正整数"
        )
    return min(int(raw), ogc.MAX_LIMIT)  # more than the most is answered with the most (Part 1)


def _crs_header(crs: ogc.OutputCrs) -> dict[str, str]:
    return {"Content-Crs": f"<{crs.uri}>"}


def _audit(audit, page: ogc.Page) -> None:
    if page.secretaries:
        audit.record(("name", "phone"), detail={"branches": page.secretaries})


ITEMS = ("bbox", "bbox-crs", "datetime", "crs", "limit", "cursor")


@router.get(
    "/collections/{collectionId}/items",
    summary="A page of a collection's features (GeoJSON), with numberMatched, numberReturned and a next link",
    responses=media(GEOJSON),
)
def items(
    request: Request,
    session: SessionDep,
    caches: CachesDep,
    caller: Public,
    audit: Audited,
    collectionId: str,  # noqa: N803
    bbox: Annotated[
        str | None, Query(description="lower corner, upper corner, in the axis order of `bbox-crs` (default CRS84)")
    ] = None,
    bbox_crs: Annotated[str | None, Query(alias="bbox-crs", description="the CRS of `bbox` (one of `crs`)")] = None,
    datetime: Annotated[
        str | None,
        Query(description="an instant, a day (from midnight China Standard Time) or an interval a/b, ../b, a/.."),
    ] = None,
    crs: Annotated[
        str | None, Query(description="the CRS of the answer: CRS84 (default), EPSG 4326, 4490 or 4547 by URI")
    ] = None,
    limit: Annotated[
        str | None,
        Query(
            description=f"features per page (default {ogc.DEFAULT_LIMIT}, at most {ogc.MAX_LIMIT})",
            json_schema_extra={
                "type": "integer",
                "minimum": 1,
                "maximum": ogc.MAX_LIMIT,
                "default": ogc.DEFAULT_LIMIT,
            },
        ),
    ] = None,
    cursor: Annotated[str | None, Query(max_length=64, description="where a page starts: from a `next` link")] = None,
) -> Response:
    _only(request, *ITEMS)
    c = ogc.collection(collectionId)
    _check_readable(caller, c)
    bbox_in = ogc.parse_crs_param(bbox_crs, "bbox-crs")
    q = ogc.Query(
        bbox=ogc.parse_bbox_param(bbox, bbox_in),
        bbox_crs=bbox_in,
        crs=ogc.parse_crs_param(crs),
        interval=ogc.parse_datetime_param(datetime),
        limit=_limit(limit),
        after=cursor,
    )
    page = ogc.items(session, caches, c.id, q, _reader(caller))
    _audit(audit, page)
    links = [{"rel": "self", "type": GEOJSON, "href": str(request.url)}]
    if page.next_after is not None:
        nxt = request.url.include_query_params(cursor=page.next_after, limit=q.limit)
        links.append({"rel": "next", "type": GEOJSON, "href": str(nxt)})
    links.append({"rel": "collection", "type": JSON, "href": f"{_base(request)}/collections/{c.id}"})
    body = {
        "type": "FeatureCollection",
        "features": page.features,
        "numberMatched": page.matched,
        "numberReturned": len(page.features),
        "links": links,
    }
    return _json(body, GEOJSON, _crs_header(q.crs))


@router.get("/collections/{collectionId}/items/{featureId}", summary="One feature", responses=media(GEOJSON))
def item(
    request: Request,
    session: SessionDep,
    caches: CachesDep,
    caller: Public,
    audit: Audited,
    collectionId: str,  # noqa: N803
    featureId: str,  # noqa: N803
    crs: Annotated[str | None, Query(description="the CRS of the answer (as for items)")] = None,
) -> Response:
    _only(request, "crs")
    c = ogc.collection(collectionId)
    _check_readable(caller, c)
    out_crs = ogc.parse_crs_param(crs)
    page = ogc.item(session, caches, c.id, featureId, out_crs, _reader(caller))
    _audit(audit, page)
    feature = page.features[0]
    base = f"{_base(request)}/collections/{c.id}"
    feature["links"] = [
        {"rel": "self", "type": GEOJSON, "href": f"{base}/items/{featureId}"},
        {"rel": "collection", "type": JSON, "href": base},
    ]
    return _json(feature, GEOJSON, _crs_header(out_crs))

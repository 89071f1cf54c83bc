"""The feature layers as OGC API – Features collections (Part 1 Core with GeoJSON, Part 2
CRS by reference): what each collection holds, its parameters (``bbox``, ``bbox-crs``,
``datetime``, ``crs``, ``limit``) and its pages.

Pages are keyed, not offset: each collection is ordered by a unique key (a code, an
event id, a finding id) and a ``next`` page starts after the last key answered, so a
reader walking the pages while grids are redrawn or events reported neither skips nor
repeats a feature (an OFFSET over a moving set does both).

Geometries are stored in EPSG:4326 and transformed by PostGIS (``ST_Transform``) into the
requested CRS; coordinates are written in that CRS's axis order, as Part 2 says
(EPSG:4326, EPSG:4490 latitude first; EPSG:4547 northing first; CRS84 longitude first),
and the answer names its CRS in ``Content-Crs``.

Nothing here decides who may read a collection: ``Collection.private`` says that a
collection needs a signed-in caller, and the caller's entitlement comes in as plain
values (``Reader``), as the API's routes decide it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import shapely
from pyproj import CRS
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers import coverage as cov
from layers import events_open311 as o311
from layers.boundaries import parse_instant
from layers.crs import geoms_from_wgs84, geoms_to_wgs84, parse_crs
from layers.errors import InvalidInput, NotFound
from layers.places import all_places

if TYPE_CHECKING:
    from layers.caches import Caches

CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG_URI = "http://www.opengis.net/def/crs/EPSG/0/{}"

#: Items per page without ``limit``, and the most a page holds (a larger ``limit`` is
#: answered with this many, as Part 1 lets a server do).
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000


class BadParameter(InvalidInput):
    """A query parameter OGC API – Features answers with 400 (Part 1,
    /req/core/query-param-invalid), where the rest of the API says 422."""

    status = 400


@dataclass(frozen=True)
class OutputCrs:
    """A CRS features are offered in: its URI, PostGIS SRID, whether its first axis is
    latitude or northing, and the decimals written (7 for degrees, ~1 cm; 3 for metres)."""

    uri: str
    srid: int
    northing_first: bool
    decimals: int


def _epsg(code: int) -> OutputCrs:
    spec = parse_crs(f"EPSG:{code}")  # the project's CRS vocabulary (layers.crs) must know it
    pyproj_crs = CRS.from_epsg(code)
    first = pyproj_crs.axis_info[0].direction.lower()
    return OutputCrs(
        EPSG_URI.format(code),
        code,
        northing_first=first in ("north", "south"),
        decimals=7 if spec.is_geographic else 3,
    )


#: CRS84 (the default), WGS84 by EPSG (latitude first), CGCS2000 (EPSG:4490) and its
#: Gauss-Krüger zone of Zhengzhou without zone prefix (EPSG:4547).
OFFERED: tuple[OutputCrs, ...] = (OutputCrs(CRS84, 4326, False, 7), _epsg(4326), _epsg(4490), _epsg(4547))
_BY_URI = {c.uri: c for c in OFFERED}


def parse_crs_param(raw: str | None, name: str = "crs") -> OutputCrs:
    """A ``crs`` or ``bbox-crs`` value: a URI of :data:`OFFERED` (``http://www.opengis.net/
    def/crs/EPSG/0/4547``), or its short form (``EPSG:4547``, ``[EPSG:4547]``, ``CRS84``,
    ``OGC:CRS84``); None is CRS84."""
    if raw is None:
        return OFFERED[0]
    value = raw.strip()
    if value.startswith("[") and value.endswith("]"):  # a safe CURIE
        value = value[1:-1]
    value = value.replace("https://", "http://", 1)
    short = value.upper()
    if short in ("CRS84", "OGC:CRS84"):
        return OFFERED[0]
    if short.startswith("EPSG:") and short[5:].isdigit():
        value = EPSG_URI.format(int(short[5:]))
    found = _BY_URI.get(value)
    if found is None:
        raise BadParameter(
            f"{name} {raw!r} is not offered; one of {', '.join(c.uri for c in OFFERED)}",
            field=name,
            detail_zh=f"不提供坐标系 {raw}；可用：CRS84、EPSG:4326、EPSG:4490（CGCS2000）、EPSG:4547",
        )
    return found


BBox = tuple[float, float, float, float]


def parse_bbox_param(raw: str | None, crs: OutputCrs) -> BBox | None:
    """``bbox`` in the axis order of ``bbox-crs`` (four numbers, or six with heights, which
    are ignored) as (min x, min y, max x, max y) with x easting or longitude."""
    if raw is None:
        return None
    parts = raw.split(",")
    if len(parts) not in (4, 6):
        raise BadParameter(
            f"bbox needs 4 (or 6) comma-separated numbers; got {len(parts)}",
            field="bbox",
            detail_zh="范围须是 4 个（或 6 个）以逗号分隔的数字",
        )
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise BadParameter(
            f"bbox must contain only numbers, got {raw!r}", field="bbox", detail_zh="范围只能包含数字"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise BadParameter(
            f"bbox must contain finite numbers, got {raw!r}", field="bbox", detail_zh="范围必须是有限的数字"
        )
    if len(values) == 6:
        values = [values[0], values[1], values[3], values[4]]
    a1, b1, a2, b2 = values
    if crs.northing_first:
        a1, b1, a2, b2 = b1, a1, b2, a2
    if a1 > a2 or b1 > b2:
        raise BadParameter(
            f"bbox minimum exceeds maximum in {raw!r} (lower corner first, in the axis order of bbox-crs)",
            field="bbox",
            detail_zh="范围的最小值大于最大值（先写左下角，按坐标系的轴顺序）",
        )
    if crs.decimals == 7 and not (-180 <= a1 <= a2 <= 180 and -90 <= b1 <= b2 <= 90):
        raise BadParameter(
            f"bbox is outside ±180 longitude, ±90 latitude: {raw!r}",
            field="bbox",
            detail_zh="范围超出经度 ±180、纬度 ±90",
        )
    return a1, b1, a2, b2


@dataclass(frozen=True)
class Interval:
    """A ``datetime``: an instant (``start == end``) or an interval, either end open (None)."""

    start: datetime | None
    end: datetime | None

    @property
    def instant(self) -> bool:
        return self.start is not None and self.start == self.end


def parse_datetime_param(raw: str | None) -> Interval | None:
    """RFC 3339 instants, days (from midnight China Standard Time, as ``/v1/locate?at=``)
    and intervals ``a/b``, ``../b``, ``a/..``."""
    if raw is None:
        return None

    def instant(part: str) -> datetime | None:
        part = part.strip()
        if part in ("..", ""):
            return None
        try:
            return parse_instant(part.replace("z", "Z"), "datetime")
        except InvalidInput as exc:
            raise BadParameter(exc.detail, field="datetime", detail_zh=exc.extra.get("detail_zh")) from None

    if "/" in raw:
        first, _, second = raw.partition("/")
        start, end = instant(first), instant(second)
        if start is None and end is None:
            raise BadParameter(
                "datetime: an interval needs at least one end", field="datetime", detail_zh="时间区间至少须有一端"
            )
        if start is not None and end is not None and start > end:
            raise BadParameter(
                f"datetime: the interval {raw!r} ends before it starts",
                field="datetime",
                detail_zh="时间区间的结束早于开始",
            )
        return Interval(start, end)
    at = instant(raw)
    if at is None:
        raise BadParameter("datetime must not be empty", field="datetime", detail_zh="时间不能为空")
    return Interval(at, at)


@dataclass(frozen=True)
class Reader:
    """Who reads, as the API decides it: ``staff_prefix`` — the code prefix of the area in
    which the caller is staff entitled to events as stored (None: nowhere; ``""``:
    everywhere, dispatchers); ``findings_within`` — the area of coverage findings
    (None with ``findings_all`` for dispatchers); ``secretaries`` — whether a branch's
    secretary is shown (``secretaries(community_code)``)."""

    staff_prefix: str | None = None
    findings_within: str | None = None
    findings_all: bool = False
    secretaries: Callable[[str | None], bool] = lambda community: False

    def entitled(self, grid_code: str | None) -> bool:
        return self.staff_prefix is not None and grid_code is not None and grid_code.startswith(self.staff_prefix)


@dataclass(frozen=True)
class Query:
    """One request's parameters, parsed."""

    bbox: BBox | None = None
    bbox_crs: OutputCrs = OFFERED[0]
    crs: OutputCrs = OFFERED[0]
    interval: Interval | None = None
    limit: int = DEFAULT_LIMIT
    after: str | None = None


@dataclass
class Page:
    features: list[dict[str, Any]]
    matched: int
    #: the key the next page starts after; None on the last page
    next_after: str | None
    #: secretaries answered (branches), for the audit
    secretaries: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Collection:
    id: str
    title: str
    description: str
    #: needs a signed-in caller (admins and dispatchers: coverage findings)
    private: bool = False
    #: what ``datetime`` selects by; None: the collection has no time, and ``datetime``
    #: is accepted and selects nothing out (Part 1 lets a server ignore it there)
    temporal: str | None = None


COLLECTIONS: dict[str, Collection] = {
    c.id: c
    for c in (
        Collection(
            "areas",
            "行政区域",
            "The district, its streets and towns, and their communities: code, name, level, parent code.",
        ),
        Collection(
            "grids",
            "网格",
            "Grids as drawn by the boundary generation in force (now, or at `datetime`: an instant, "
            "or an interval for the last version in force within it): code, name, community, "
            "version, validity, whether an active branch covers it and which.",
            temporal="the boundary generations: valid_from, valid_to",
        ),
        Collection(
            "branches",
            "党支部",
            "Active branches with their activity site (阵地) as the point, kind, community and grids; "
            "the secretary's name and phone only for admins of the branch's community (audited).",
        ),
        Collection(
            "events",
            "事件",
            "Reported events as the public Open311 view shows them: no reporter or contact; a "
            "description and photo once accepted; outside public space at the label point of its "
            "grid — staff of the event's area see them as stored.",
            temporal="requested_datetime (reported)",
        ),
        Collection(
            "coverage-findings",
            "覆盖问题",
            "Gaps, overlaps, slivers, grids outside their community, branchless grids and the other "
            "coverage findings of the caller's area (admins; dispatchers: everywhere). Needs a token.",
            private=True,
        ),
    )
}


def collection(collection_id: str) -> Collection:
    found = COLLECTIONS.get(collection_id)
    if found is None:
        raise NotFound(
            f"no collection {collection_id!r}; one of {', '.join(COLLECTIONS)}",
            field="collectionId",
            detail_zh=f"没有要素集合 {collection_id}",
        )
    return found


# ---- SQL ---------------------------------------------------------------------------


def _geometry_sql(column: str, crs: OutputCrs) -> str:
    """``column`` (EPSG:4326) as GeoJSON text in ``crs``, in its axis order."""
    expr = column if crs.srid == 4326 else f"ST_Transform({column}, {crs.srid})"
    if crs.northing_first:
        expr = f"ST_FlipCoordinates({expr})"
    return f"ST_AsGeoJSON({expr}, {crs.decimals})"


def _bbox_sql(column: str, q: Query, params: dict[str, Any]) -> str:
    if q.bbox is None:
        return "TRUE"
    params.update(bx1=q.bbox[0], by1=q.bbox[1], bx2=q.bbox[2], by2=q.bbox[3])
    envelope = f"ST_MakeEnvelope(:bx1, :by1, :bx2, :by2, {q.bbox_crs.srid})"
    if q.bbox_crs.srid != 4326:
        # the envelope's corners and edges densified, so a projected box keeps its shape
        envelope = f"ST_Transform(ST_Segmentize({envelope}, 50), 4326)"
    return f"({column} && {envelope} AND ST_Intersects({column}, {envelope}))"


def _keyed_page(
    session: Session,
    base: str,
    params: dict[str, Any],
    q: Query,
    *,
    key: str,
    numeric_key: bool = False,
) -> tuple[list[Any], int, str | None]:
    """Rows of ``base`` (a SELECT with columns ``_key``, ``_geom`` (EPSG:4326) and the
    properties; filters already applied) after ``q.after`` in key order, at most
    ``q.limit``, with the number matched and the key of the last row when more follow."""
    after: Any = q.after
    if after is not None and numeric_key:
        if not after.isdigit() or len(after) > 18:
            raise BadParameter(f"cursor {after!r} is not a page of {key}", field="cursor", detail_zh="分页位置无效")
        after = int(after)
    params = {**params, "after": after, "limit": q.limit + 1}
    matched = session.execute(text(f"SELECT count(*) FROM ({base}) f"), params).scalar_one()
    cast = "bigint" if numeric_key else "text"
    rows = session.execute(
        text(
            f"""SELECT f.*, {_geometry_sql("f._geom", q.crs)} AS _geometry FROM ({base}) f
                WHERE CAST(:after AS {cast}) IS NULL OR f._key > CAST(:after AS {cast})
                ORDER BY f._key LIMIT :limit"""
        ),
        params,
    ).all()
    more = len(rows) > q.limit
    rows = list(rows[: q.limit])
    return rows, matched, (str(rows[-1]._key) if more and rows else None)


def _feature(fid: Any, geometry: str | None, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": fid,
        "geometry": json.loads(geometry) if geometry else None,
        "properties": properties,
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


_AREAS_SQL = """
    SELECT a.code AS _key, a.geom AS _geom, a.code, a.name, a.level, p.code AS parent
      FROM admin_areas a LEFT JOIN admin_areas p ON p.id = a.parent_id
     WHERE {where}"""


def _coded(
    session: Session,
    template: str,
    q: Query,
    fid: str | None,
    *,
    geom: str,
    code: str,
    where: list[str] | None = None,
    params: dict[str, Any] | None = None,
) -> tuple[list[Any], int, str | None]:
    """:func:`_keyed_page` of a collection keyed by its ``code`` column, selected by
    ``bbox`` on ``geom``, ``where`` and, for one feature, its code."""
    params = dict(params or {})
    where = [_bbox_sql(geom, q, params), *(where or [])]
    if fid is not None:
        where.append(f"{code} = :fid")
        params["fid"] = fid
    return _keyed_page(session, template.format(where=" AND ".join(where)), params, q, key="code")


def _areas(session: Session, caches: Caches, q: Query, reader: Reader, fid: str | None) -> Page:
    rows, matched, nxt = _coded(session, _AREAS_SQL, q, fid, geom="a.geom", code="a.code")
    feats = [
        _feature(r.code, r._geometry, {"code": r.code, "name": r.name, "level": r.level, "parent": r.parent})
        for r in rows
    ]
    return Page(feats, matched, nxt)


_GRIDS_SQL = """
    SELECT DISTINCT ON (g.code) g.code AS _key, gv.geom AS _geom, g.code, g.name,
           c.code AS community, c.name AS community_name, gv.version, gv.valid_from, gv.valid_to,
           g.retired_at,
           (SELECT string_agg(b.code, ';' ORDER BY b.code) FROM branch_grids bg
              JOIN branches b ON b.id = bg.branch_id AND b.active
             WHERE bg.grid_id = g.id) AS branches
      FROM grids g
      JOIN grid_versions gv ON gv.grid_id = g.id
      JOIN admin_areas c ON c.id = g.community_id
     WHERE {where}
     ORDER BY g.code, gv.version DESC"""


def _grids(session: Session, caches: Caches, q: Query, reader: Reader, fid: str | None) -> Page:
    params: dict[str, Any] = {}
    iv = q.interval
    if iv is None:
        where = ["gridbranch_in_force(gv.valid_from, gv.valid_to) AND gridbranch_live(g.retired_at)"]
    elif iv.instant:
        where = ["gridbranch_in_force(gv.valid_from, gv.valid_to, :at) AND gridbranch_live(g.retired_at, :at)"]
        params["at"] = iv.start
    else:  # every grid in force at some instant of the interval, as last drawn within it
        where = []
        if iv.end is not None:
            where.append("gv.valid_from <= :end")
            params["end"] = iv.end
        if iv.start is not None:
            where.append("(gv.valid_to IS NULL OR gv.valid_to > :start)")
            where.append("(g.retired_at IS NULL OR g.retired_at > :start)")
            params["start"] = iv.start
    rows, matched, nxt = _coded(session, _GRIDS_SQL, q, fid, geom="gv.geom", code="g.code", where=where, params=params)
    feats = [
        _feature(
            r.code,
            r._geometry,
            {
                "code": r.code,
                "name": r.name,
                "community": r.community,
                "community_name": r.community_name,
                "version": r.version,
                "valid_from": _iso(r.valid_from),
                "valid_to": _iso(r.valid_to),
                "has_branch": r.branches is not None,
                "branches": r.branches,
            },
        )
        for r in rows
    ]
    return Page(feats, matched, nxt)


_BRANCHES_SQL = """
    SELECT b.code AS _key, b.site AS _geom, b.code, b.name, b.kind, c.code AS community,
           b.secretary_name, b.secretary_phone,
           (SELECT string_agg(g.code, ';' ORDER BY g.code) FROM branch_grids bg
              JOIN grids g ON g.id = bg.grid_id WHERE bg.branch_id = b.id) AS grids
      FROM branches b LEFT JOIN admin_areas c ON c.id = b.community_id
     WHERE b.active AND {where}"""


def _branches(session: Session, caches: Caches, q: Query, reader: Reader, fid: str | None) -> Page:
    rows, matched, nxt = _coded(session, _BRANCHES_SQL, q, fid, geom="b.site", code="b.code")
    feats, shown = [], []
    for r in rows:
        props = {"code": r.code, "name": r.name, "kind": r.kind, "community": r.community, "grids": r.grids}
        if reader.secretaries(r.community):
            props.update(secretary_name=r.secretary_name, secretary_phone=r.secretary_phone)
            if r.secretary_name or r.secretary_phone:
                shown.append(r.code)
        feats.append(_feature(r.code, r._geometry, props))
    return Page(feats, matched, nxt, secretaries=shown)


def _events(session: Session, caches: Caches, q: Query, reader: Reader, fid: str | None) -> Page:
    # the point shown (layers.events_open311): the stored one for staff of the event's
    # area and in public space, else the label point of its grid — bbox selects by it too,
    # so a small box cannot place a report the answer itself does not
    labels = [p for p in all_places(session, caches) if p.level == "grid"]
    params: dict[str, Any] = {
        "lp_codes": [p.code for p in labels],
        "lp_lons": [p.lon for p in labels],
        "lp_lats": [p.lat for p in labels],
        "staff_prefix": reader.staff_prefix,
    }
    shown = """CASE WHEN r.public_space OR (CAST(:staff_prefix AS text) IS NOT NULL
                                          AND r.grid_code LIKE CAST(:staff_prefix AS text) || '%')
                    THEN ST_SetSRID(ST_MakePoint(r.lon, r.lat), 4326)
                    ELSE ST_SetSRID(ST_MakePoint(lp.lon, lp.lat), 4326) END"""
    where = [_bbox_sql("s._geom", q, params)]
    iv = q.interval
    if iv is not None and iv.start is not None:
        where.append("s.reported_at >= :start")
        params["start"] = iv.start
    if iv is not None and iv.end is not None:
        where.append("s.reported_at <= :end")
        params["end"] = iv.end
    if fid is not None:
        if not fid.isdigit() or len(fid) > 18:
            raise NotFound(f"no event {fid!r} in collection events", field="featureId", detail_zh=f"没有事件 {fid}")
        where.append("s.id = :fid")
        params["fid"] = int(fid)
    base = f"""
        SELECT s.* FROM (
          SELECT r.id AS _key, {shown} AS _geom, r.*
            FROM ({o311._REQUESTS_SQL}) r
            LEFT JOIN unnest(CAST(:lp_codes AS text[]), CAST(:lp_lons AS float8[]), CAST(:lp_lats AS float8[]))
                 AS lp(code, lon, lat) ON lp.code = r.grid_code) s
        WHERE {" AND ".join(where)}"""
    rows, matched, nxt = _keyed_page(session, base, params, q, key="id", numeric_key=True)
    view = o311._shown(session, caches, reader.entitled)
    feats = []
    for r in rows:
        props = view(r)
        props.pop("lat", None), props.pop("long", None)  # the geometry says where, in the CRS asked for
        feats.append(_feature(r.id, r._geometry, props))
    return Page(feats, matched, nxt)


def _findings(session: Session, caches: Caches, q: Query, reader: Reader, fid: str | None) -> Page:
    """Coverage findings are computed (layers.coverage), not stored: paged by their ids
    over the computed list, which a write changes as a whole."""
    within = None if reader.findings_all else reader.findings_within
    if within is None and not reader.findings_all:
        return Page([], 0, None)
    found = sorted(cov.issues(session, caches, within=within), key=lambda f: str(f["id"]))
    if fid is not None:
        found = [f for f in found if str(f["id"]) == fid]
    if q.bbox is not None:
        box = shapely.box(*q.bbox)
        if q.bbox_crs.srid != 4326:
            box = shapely.segmentize(box, 50)
            box = _from_crs(box, q.bbox_crs)
        found = [f for f in found if f["geom"] is not None and shapely.intersects(f["geom"], box)]
    matched = len(found)
    if q.after is not None:
        found = [f for f in found if str(f["id"]) > q.after]
    more = len(found) > q.limit
    found = found[: q.limit]
    geoms = [f["geom"] for f in found]
    if q.crs.srid != 4326 and geoms:
        geoms = list(geoms_from_wgs84(geoms, f"EPSG:{q.crs.srid}"))
    feats = []
    for f, g in zip(found, geoms, strict=True):
        if g is not None and not shapely.is_empty(g):
            if q.crs.northing_first:
                g = shapely.transform(g, lambda xy: xy[:, ::-1])
            g = shapely.set_precision(g, 10.0**-q.crs.decimals) if q.crs.decimals == 3 else g
            geometry = shapely.to_geojson(g)
        else:
            geometry = None
        props = {k: v for k, v in f.items() if k not in ("geom", "id", "point")}
        props["codes"] = ";".join(props.get("codes") or [])
        feats.append(_feature(f["id"], geometry, props))
    return Page(feats, matched, str(found[-1]["id"]) if more and found else None)


def _from_crs(geom, crs: OutputCrs):
    return geoms_to_wgs84([geom], f"EPSG:{crs.srid}")[0]


_READERS: dict[str, Callable[[Session, Caches, Query, Reader, str | None], Page]] = {
    "areas": _areas,
    "grids": _grids,
    "branches": _branches,
    "events": _events,
    "coverage-findings": _findings,
}


def items(session: Session, caches: Caches, collection_id: str, q: Query, reader: Reader = Reader()) -> Page:
    """A page of ``collection_id``'s features as ``q`` selects them, shown as ``reader`` may see them."""
    return _READERS[collection(collection_id).id](session, caches, q, reader, None)


def item(
    session: Session, caches: Caches, collection_id: str, fid: str, crs: OutputCrs, reader: Reader = Reader()
) -> Page:
    """The page of one feature of ``collection_id`` by its id (a grid: the version in force now)."""
    page = _READERS[collection(collection_id).id](session, caches, Query(crs=crs, limit=1), reader, fid)
    if not page.features:
        raise NotFound(
            f"no feature {fid!r} in collection {collection_id}",
            field="featureId",
            detail_zh=f"集合 {collection_id} 中没有要素 {fid}",
        )
    return page


def extent(session: Session) -> list[float] | None:
    """The service area's bounding box in CRS84 (min lon, min lat, max lon, max lat)."""
    row = session.execute(
        text(
            """SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e)
                 FROM (SELECT ST_Extent(geom)::geometry AS e FROM admin_areas) x"""
        )
    ).first()
    if row is None or row[0] is None:
        return None
    return [round(v, 7) for v in row]

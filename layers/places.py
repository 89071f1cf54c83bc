"""Places: the district, its streets and communities and the current grids, each with the
point at which its name is written on the map, found by name or code.

A place's point (:func:`label_point`) is where the ``labels`` tiles write its name and
where a search result leads; its bounds are what the map fits to. Both come from the
current boundaries (EPSG:4326) and are kept per ``areas`` and ``grids`` data versions.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import shapely
from shapely.ops import polylabel
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.errors import InvalidInput
from layers.geojson import COORD_DECIMALS, collection, feature

if TYPE_CHECKING:
    from layers.caches import Caches

#: Levels from the top down (the order results and labels are ranked in).
LEVELS = ("district", "street", "community", "grid")
LEVEL_RANK = {level: i for i, level in enumerate(LEVELS)}
#: The longest query taken (the longest name in the demo has 16 characters).
MAX_QUERY = 50


@dataclass(frozen=True)
class Place:
    level: str
    code: str
    name: str
    parent: str | None  # the code of the area it lies in (a grid's community); None at the top
    lon: float  # where its name is written (WGS84)
    lat: float
    bounds: tuple[float, float, float, float]  # minlon, minlat, maxlon, maxlat


def label_point(geom) -> tuple[float, float]:
    """Where to write a unit's name (WGS84 lon, lat): the pole of inaccessibility of its
    largest polygon — the inside point farthest from the boundary, found to 1/200 of
    the polygon's diagonal — which, unlike the centroid, is inside every shape (an L,
    a ring). A geometry it cannot take (invalid, or no polygon) gets a point on its
    surface."""
    try:
        shape = geom if geom.is_valid else shapely.make_valid(geom)
        polygons = [p for p in shapely.get_parts(shape) if p.geom_type == "Polygon" and not p.is_empty]
        largest = max(polygons, key=lambda p: p.area)
        minx, miny, maxx, maxy = largest.bounds
        point = polylabel(largest, tolerance=max(math.hypot(maxx - minx, maxy - miny) / 200, 1e-7))
    except Exception:  # noqa: BLE001 - any shape still gets a point to write its name at
        point = geom.representative_point()
    return point.x, point.y


_PLACES_SQL = text(
    """
    SELECT a.level::text AS level, a.code::text AS code, a.name, p.code::text AS parent, ST_AsBinary(a.geom) AS wkb
      FROM admin_areas a LEFT JOIN admin_areas p ON p.id = a.parent_id
    UNION ALL
    SELECT 'grid', g.code::text, g.name, c.code::text, ST_AsBinary(gv.geom)
      FROM grids g
      JOIN grid_versions gv ON gv.grid_id = g.id AND gridbranch_in_force(gv.valid_from, gv.valid_to)
      JOIN admin_areas c ON c.id = g.community_id
     WHERE gridbranch_live(g.retired_at)
    """
)


def _label_point_of(geom) -> Callable[[], tuple[float, float]]:
    return lambda: label_point(geom)


def _read_places(session: Session, caches: Caches) -> list[Place]:
    out = []
    for level, code, name, parent, wkb in session.execute(_PLACES_SQL).all():
        wkb = bytes(wkb)
        geom = shapely.from_wkb(wkb)
        # points already found are kept by (level, code, WKB digest): a write that leaves
        # a boundary as it was (a branch, a renamed grid) finds its point again for nothing
        key = (level, code, hashlib.blake2b(wkb, digest_size=16).digest())
        xy = caches.label_points.memo(key, _label_point_of(geom))
        x0, y0, x1, y1 = (float(v) for v in geom.bounds)
        out.append(Place(level, code, name, parent, *xy, (x0, y0, x1, y1)))
    out.sort(key=lambda p: (LEVEL_RANK[p.level], p.code))
    return out


def all_places(session: Session, caches: Caches) -> list[Place]:
    """Every place, top level first, then by code (kept per areas and grids versions,
    ``caches.places``)."""
    return caches.places.get(session, lambda s: _read_places(s, caches))


def _match_rank(name: str, code: str, q: str) -> int | None:
    """How well ``q`` names a place (lower is better), None when it does not: the code
    (when ``q`` is digits: equal, then a prefix — the place and everything inside it);
    the name equal, starting with ``q``, holding it, holding each of its space-separated
    words, or holding its characters in order (凤鸣3 → 凤鸣社区第3网格)."""
    if q.isdigit():
        return 0 if code == q else 1 if code.startswith(q) else None
    folded = name.casefold()
    if folded == q:
        return 0
    if folded.startswith(q):
        return 1
    if q in folded:
        return 2
    words = q.split()
    if len(words) > 1 and all(w in folded for w in words):
        return 3
    chars = iter(folded)
    if all(c in chars for c in q.replace(" ", "")):  # a subsequence
        return 4
    return None


def search_places(places: list[Place], q: str, limit: int = 10) -> tuple[list[Place], int]:
    """Of ``places``, those named by ``q`` (a name, part of one, or a code or its prefix),
    best first — by how well it matches (:func:`_match_rank`), then top level first,
    shorter names first, by code — at most ``limit`` of them, and how many matched in all."""
    query = re.sub(r"\s+", " ", q).strip().casefold()
    if not query:
        raise InvalidInput("q must name a place: part of a street, community or grid name, or a code", field="q")
    if len(query) > MAX_QUERY:
        raise InvalidInput(f"q is longer than {MAX_QUERY} characters", field="q")
    found = []
    for place in places:
        rank = _match_rank(place.name, place.code, query)
        if rank is not None:
            found.append(((rank, LEVEL_RANK[place.level], len(place.name), place.code), place))
    found.sort(key=lambda item: item[0])
    return [place for _, place in found[:limit]], len(found)


def place_feature(place: Place, names: dict[str, str], parents: dict[str, str | None]) -> dict:
    """A place as a GeoJSON Point feature (its label point) with its level, code, name,
    bounds (``bbox``) and the names of the areas it lies in, top first (``within``)."""
    within: list[str] = []
    code = place.parent
    while code is not None and code in names:
        within.insert(0, names[code])
        code = parents.get(code)
    point = {"type": "Point", "coordinates": [round(place.lon, COORD_DECIMALS), round(place.lat, COORD_DECIMALS)]}
    out = feature(
        None, {"level": place.level, "code": place.code, "name": place.name, "within": within}, fid=place.code
    )
    return {**out, "geometry": point, "bbox": [round(v, COORD_DECIMALS) for v in place.bounds]}


def place_collection(session: Session, caches: Caches, q: str, limit: int = 10) -> dict:
    """:func:`search_places` as a GeoJSON FeatureCollection (``numberMatched``, ``numberReturned``)."""
    everything = all_places(session, caches)
    found, matched = search_places(everything, q, limit)
    areas = [p for p in everything if p.level != "grid"]
    names = {p.code: p.name for p in areas}
    parents = {p.code: p.parent for p in areas}
    return collection(
        [place_feature(p, names, parents) for p in found], numberMatched=matched, numberReturned=len(found)
    )

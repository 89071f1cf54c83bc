"""Tile addresses on the Web Mercator grid (EPSG:3857, XYZ scheme, y from the north):
validation, bounds in WGS84 degrees, and the simplification tolerance of a zoom.

Tiles are 4096 units wide (``EXTENT``) with a ``BUFFER`` of 64 units on each side, so
features crossing an edge are drawn continuously by the renderer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from layers.errors import NotFound

EXTENT = 4096
BUFFER = 64
MARGIN = BUFFER / EXTENT  # the buffer as a share of the tile width (ST_TileEnvelope's margin)
MAX_ZOOM = 24
#: Polygons are simplified by this many tile units (at 4096 units per tile) before they
#: are reprojected and encoded; ST_AsMVTGeom snaps to whole units afterwards anyway.
SIMPLIFY_UNITS = 1.0
_MERC_LAT = math.degrees(math.atan(math.sinh(math.pi)))  # 85.0511…


@dataclass(frozen=True)
class Tile:
    z: int
    x: int
    y: int

    def __str__(self) -> str:
        return f"{self.z}/{self.x}/{self.y}"


def check_tile(z: int, x: int, y: int) -> Tile:
    """The tile, or :class:`NotFound` naming the coordinate outside the zoom's grid."""
    if not 0 <= z <= MAX_ZOOM:
        raise NotFound(f"zoom {z} is outside 0–{MAX_ZOOM}", field="z")
    n = 1 << z
    if not 0 <= x < n:
        raise NotFound(f"x {x} is outside the zoom {z} grid (0–{n - 1})", field="x")
    if not 0 <= y < n:
        raise NotFound(f"y {y} is outside the zoom {z} grid (0–{n - 1})", field="y")
    return Tile(z, x, y)


def _lon(x: float, n: int) -> float:
    return x / n * 360.0 - 180.0


def _lat(y: float, n: int) -> float:
    return math.degrees(math.atan(math.sinh(math.pi * (1.0 - 2.0 * y / n))))


def tile_bounds(tile: Tile, margin: float = 0.0) -> tuple[float, float, float, float]:
    """(minlon, minlat, maxlon, maxlat) in WGS84 degrees of the tile grown by ``margin``
    tile widths on every side — the same rectangle as PostGIS's
    ``ST_Transform(ST_TileEnvelope(z, x, y, margin => margin), 4326)``, except that a
    buffer crossing the antimeridian gives every longitude (a superset)."""
    n = 1 << tile.z
    minlon, maxlon = _lon(tile.x - margin, n), _lon(tile.x + 1 + margin, n)
    if minlon < -180.0 or maxlon > 180.0:  # the buffer crosses the antimeridian: every longitude
        minlon, maxlon = -180.0, 180.0
    maxlat = _lat(max(tile.y - margin, -0.5 * n), n)
    minlat = _lat(min(tile.y + 1 + margin, 1.5 * n), n)
    return minlon, max(minlat, -_MERC_LAT), maxlon, min(maxlat, _MERC_LAT)


def simplify_tolerance(tile: Tile) -> float:
    """Douglas–Peucker tolerance in degrees for polygons of this tile: ``SIMPLIFY_UNITS``
    tile units, measured along a parallel at the tile's centre (a unit spans fewer
    degrees of latitude than of longitude away from the equator, so the latitude span is
    the conservative one). A rendering tolerance, not a distance."""
    n = 1 << tile.z
    lat = math.radians(_lat(tile.y + 0.5, n))
    unit_lon = 360.0 / (n * EXTENT)
    return SIMPLIFY_UNITS * unit_lon * math.cos(lat)


def lonlat_to_tile(lon: float, lat: float, z: int) -> Tile:
    """The tile containing a WGS84 point at zoom ``z``."""
    n = 1 << z
    lat = max(min(lat, _MERC_LAT), -_MERC_LAT)
    x = int((lon + 180.0) / 360.0 * n)
    y = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return Tile(z, min(max(x, 0), n - 1), min(max(y, 0), n - 1))

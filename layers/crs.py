"""Coordinate-system handling for gridbranch (the single owner of CRS logic).

Everything that converts, names or validates coordinates goes through this
module:

* Chinese offset datums, done with plain numpy (no network, no PROJ):

  - GCJ-02 ("Mars" coordinates, used by Amap/Gaode, Tencent and most Chinese
    web maps) <-> WGS84;
  - BD-09 (Baidu) <-> GCJ-02 / WGS84.

  Forward transforms follow the published formulas.  The inverses are exact
  to well under a millimetre because they iterate on the forward function
  (the usual one-step inverse is off by up to a few metres).

* A small CRS vocabulary (:func:`parse_crs`): ``wgs84``, ``gcj02``, ``bd09``,
  ``cgcs2000`` and every horizontal ``EPSG:nnnn`` CRS that pyproj knows, for
  example the CGCS2000 Gauss-Krüger zones EPSG:4513-4554.  Zhengzhou's local
  grid is EPSG:4547 (CGCS2000 / 3-degree Gauss-Kruger CM 114E, no zone
  prefix on the easting).

* :func:`to_wgs84` / :func:`from_wgs84` for moving between any accepted CRS
  and WGS84 longitude/latitude.

* Validation helpers (:func:`check_lonlat`, :func:`looks_swapped`) and a
  great-circle distance (:func:`haversine_m`).

* For files: geometries to and from WGS84 (:func:`geoms_to_wgs84`), the CGCS2000
  Gauss-Krüger zones (:func:`gauss_kruger`) and the zone-prefix mistake
  (:func:`zone_prefix_mismatch`), and a guess at coordinates given without a CRS
  (:func:`crs_hint`).

Axis-order convention (important)
---------------------------------
Every function here takes and returns coordinates as ``x, y`` in the
"easting/longitude first" order, whatever the authority definition says.
EPSG:4326 officially lists latitude first and EPSG:4547 lists northing
first, but this module always uses ``(lon, lat)`` and ``(easting, northing)``
(pyproj ``always_xy=True``).

Units: angles are decimal degrees, projected coordinates are in the CRS's own
linear unit (metres for all the CGCS2000 Gauss-Krüger zones), and distances
are metres.

Array handling: the numeric functions take scalars or array-likes (broadcast
against each other).  Two scalars give a tuple of Python ``float``; anything
else gives ``float64`` numpy arrays of the broadcast shape.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError

from layers.errors import InvalidInput

__all__ = [
    "CHINA_BBOX",
    "EARTH_RADIUS_M",
    "CoordinateError",
    "CrsSpec",
    "GaussKruger",
    "UnknownCRSError",
    "bd09_to_gcj02",
    "bd09_to_wgs84",
    "check_lonlat",
    "crs_hint",
    "from_wgs84",
    "gcj02_to_bd09",
    "gauss_kruger",
    "gauss_kruger_for",
    "gcj02_to_wgs84",
    "geoms_from_wgs84",
    "geoms_to_wgs84",
    "haversine_m",
    "in_china_rough",
    "looks_swapped",
    "parse_crs",
    "to_wgs84",
    "wgs84_to_bd09",
    "wgs84_to_gcj02",
    "zone_prefix_mismatch",
]


class UnknownCRSError(InvalidInput, ValueError):
    """Raised when a CRS name or code is not recognised (a 422 naming ``crs``)."""

    def __init__(self, detail: str, *, field: str = "crs"):
        super().__init__(detail, field=field)


class CoordinateError(InvalidInput, ValueError):
    """Raised when coordinate values are invalid (NaN, infinite, out of range);
    ``field`` names the coordinate (``lon`` or ``lat``)."""


# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------

#: Mean Earth radius (IUGG), metres.
EARTH_RADIUS_M = 6371008.8

#: The rough rectangle (minlon, minlat, maxlon, maxlat), in degrees, that the
#: common GCJ-02 implementations use to decide "inside China".  Outside it
#: GCJ-02 is treated as identical to WGS84.
CHINA_BBOX = (72.004, 0.8293, 137.8347, 55.8271)

# Krasovsky 1940 ellipsoid, used by the GCJ-02 formula.
_KRASOVSKY_A = 6378245.0
_KRASOVSKY_EE = 0.00669342162296594323

# BD-09 constant.
_X_PI = math.pi * 3000.0 / 180.0

# Inverse iteration control: stop once the forward transform of the estimate
# is this close to the target (degrees; 1e-10 deg is about 0.01 mm).
_INVERSE_TOL_DEG = 1e-10
_INVERSE_MAX_ITER = 30


# --------------------------------------------------------------------------
# Array helpers
# --------------------------------------------------------------------------


def _as_arrays(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Broadcast *x*, *y* to float64 arrays; also report whether both were scalars."""
    scalar = np.ndim(x) == 0 and np.ndim(y) == 0
    xa, ya = np.broadcast_arrays(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    # broadcast_arrays returns read-only views; copy so the results can be edited.
    return np.array(xa, dtype=float), np.array(ya, dtype=float), scalar


def _result(x: np.ndarray, y: np.ndarray, scalar: bool):
    """Return Python floats for scalar input and arrays otherwise."""
    if scalar:
        return float(x), float(y)
    return x, y


def _converged(dx: np.ndarray, dy: np.ndarray) -> bool:
    """True when every residual is below the tolerance (NaN residuals count as done)."""
    return not (np.any(np.abs(dx) > _INVERSE_TOL_DEG) or np.any(np.abs(dy) > _INVERSE_TOL_DEG))


# --------------------------------------------------------------------------
# GCJ-02
# --------------------------------------------------------------------------


def in_china_rough(lon: Any, lat: Any):
    """Return whether (lon, lat) in degrees lies in the rough :data:`CHINA_BBOX`.

    This is the rectangle the GCJ-02 formula uses, not a real border test.
    Scalars give a ``bool``; arrays give a boolean array.
    """
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    minx, miny, maxx, maxy = CHINA_BBOX
    inside = (lon_a >= minx) & (lon_a <= maxx) & (lat_a >= miny) & (lat_a <= maxy)
    return bool(inside) if scalar else inside


def _gcj_offset(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """GCJ-02 minus WGS84 offset (dlon, dlat) in degrees at WGS84 (lon, lat).

    This is the offset with no China mask applied.
    """
    x = lon - 105.0
    y = lat - 35.0
    pi = np.pi
    # Shared periodic terms of both series.
    common = (20.0 * np.sin(6.0 * x * pi) + 20.0 * np.sin(2.0 * x * pi)) * 2.0 / 3.0
    sqrt_abs_x = np.sqrt(np.abs(x))

    # Northward displacement series (roughly in metres).
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x
    dlat = dlat + common
    dlat = dlat + (20.0 * np.sin(y * pi) + 40.0 * np.sin(y / 3.0 * pi)) * 2.0 / 3.0
    dlat = dlat + (160.0 * np.sin(y / 12.0 * pi) + 320.0 * np.sin(y * pi / 30.0)) * 2.0 / 3.0

    # Eastward displacement series (roughly in metres).
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x
    dlon = dlon + common
    dlon = dlon + (20.0 * np.sin(x * pi) + 40.0 * np.sin(x / 3.0 * pi)) * 2.0 / 3.0
    dlon = dlon + (150.0 * np.sin(x / 12.0 * pi) + 300.0 * np.sin(x / 30.0 * pi)) * 2.0 / 3.0

    # Convert the metric displacements to degrees on the Krasovsky ellipsoid
    # (meridian and prime-vertical radii of curvature).
    rad_lat = np.radians(lat)
    w = 1.0 - _KRASOVSKY_EE * np.sin(rad_lat) ** 2
    sqrt_w = np.sqrt(w)
    meridian_radius = _KRASOVSKY_A * (1.0 - _KRASOVSKY_EE) / (w * sqrt_w)
    normal_radius = _KRASOVSKY_A / sqrt_w
    dlat = dlat * 180.0 / (meridian_radius * pi)
    dlon = dlon * 180.0 / (normal_radius * np.cos(rad_lat) * pi)
    return dlon, dlat


def wgs84_to_gcj02(lon: Any, lat: Any) -> tuple[Any, Any]:
    """Convert WGS84 (lon, lat) in degrees to GCJ-02 (lon, lat) in degrees.

    Points outside the rough :data:`CHINA_BBOX` come back unchanged.
    """
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    inside = in_china_rough(lon_a, lat_a)
    out_lon, out_lat = lon_a.copy(), lat_a.copy()
    if np.any(inside):
        dlon, dlat = _gcj_offset(lon_a[inside], lat_a[inside])
        out_lon[inside] += dlon
        out_lat[inside] += dlat
    return _result(out_lon, out_lat, scalar)


def gcj02_to_wgs84(lon: Any, lat: Any) -> tuple[Any, Any]:
    """Convert GCJ-02 (lon, lat) in degrees to WGS84 (lon, lat) in degrees.

    This is an exact inverse of :func:`wgs84_to_gcj02`, found by fixed-point
    iteration: ``w <- w - (forward(w) - g)``.  The offset changes slowly (its
    derivative is below 0.01 degree per degree), so each step cuts the error
    by over 100x and the residual is below 1e-10 degrees after about 4
    iterations (at most 30 are run).
    Points whose GCJ-02 input is outside :data:`CHINA_BBOX` come back
    unchanged.  Within a few hundred metres of the box edges the forward
    transform jumps and has no unique inverse; there the result is the
    inverse of the formula with no mask applied.
    """
    g_lon, g_lat, scalar = _as_arrays(lon, lat)
    inside = in_china_rough(g_lon, g_lat)
    out_lon, out_lat = g_lon.copy(), g_lat.copy()
    if np.any(inside):
        t_lon, t_lat = g_lon[inside], g_lat[inside]
        # The one-step inverse is already accurate to a few metres.
        dlon, dlat = _gcj_offset(t_lon, t_lat)
        w_lon, w_lat = t_lon - dlon, t_lat - dlat
        for _ in range(_INVERSE_MAX_ITER):
            dlon, dlat = _gcj_offset(w_lon, w_lat)
            r_lon = (w_lon + dlon) - t_lon
            r_lat = (w_lat + dlat) - t_lat
            w_lon, w_lat = w_lon - r_lon, w_lat - r_lat
            if _converged(r_lon, r_lat):
                break
        out_lon[inside] = w_lon
        out_lat[inside] = w_lat
    return _result(out_lon, out_lat, scalar)


# --------------------------------------------------------------------------
# BD-09
# --------------------------------------------------------------------------


def _bd_forward(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The BD-09 forward formula applied to GCJ-02 arrays, in degrees."""
    z = np.hypot(lon, lat) + 0.00002 * np.sin(lat * _X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def gcj02_to_bd09(lon: Any, lat: Any):
    """Convert GCJ-02 (lon, lat) in degrees to BD-09 (lon, lat) in degrees.

    Baidu's formula is applied everywhere, with no China mask.
    """
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    b_lon, b_lat = _bd_forward(lon_a, lat_a)
    return _result(b_lon, b_lat, scalar)


def bd09_to_gcj02(lon: Any, lat: Any):
    """Convert BD-09 (lon, lat) in degrees to GCJ-02 (lon, lat) in degrees.

    Starts from the usual closed-form approximate inverse, then iterates on
    :func:`gcj02_to_bd09` until the residual is below 1e-10 degrees.
    """
    b_lon, b_lat, scalar = _as_arrays(lon, lat)
    x = b_lon - 0.0065
    y = b_lat - 0.006
    z = np.hypot(x, y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    g_lon, g_lat = z * np.cos(theta), z * np.sin(theta)
    for _ in range(_INVERSE_MAX_ITER):
        f_lon, f_lat = _bd_forward(g_lon, g_lat)
        r_lon, r_lat = f_lon - b_lon, f_lat - b_lat
        g_lon, g_lat = g_lon - r_lon, g_lat - r_lat
        if _converged(r_lon, r_lat):
            break
    return _result(g_lon, g_lat, scalar)


def wgs84_to_bd09(lon: Any, lat: Any) -> tuple[Any, Any]:
    """Convert WGS84 (lon, lat) in degrees to BD-09 (lon, lat) in degrees (via GCJ-02)."""
    g_lon, g_lat = wgs84_to_gcj02(lon, lat)
    return gcj02_to_bd09(g_lon, g_lat)


def bd09_to_wgs84(lon: Any, lat: Any) -> tuple[Any, Any]:
    """Convert BD-09 (lon, lat) in degrees to WGS84 (lon, lat) in degrees (via GCJ-02)."""
    g_lon, g_lat = bd09_to_gcj02(lon, lat)
    return gcj02_to_wgs84(g_lon, g_lat)


# --------------------------------------------------------------------------
# CRS vocabulary
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class CrsSpec:
    """A parsed coordinate reference system.

    Attributes:
        name: canonical name: ``"wgs84"``, ``"gcj02"``, ``"bd09"`` or
            ``"EPSG:nnnn"`` (for example ``"EPSG:4547"``).  ``cgcs2000`` is
            stored as ``"EPSG:4490"``.
        kind: ``"offset"`` for the Chinese offset datums (GCJ-02, BD-09),
            which are done with the formulas in this module; ``"proj"`` for
            datums and projections that pyproj handles (WGS84 included).
        epsg: EPSG code for ``"proj"`` CRSs (4326 for WGS84), else ``None``.
    """

    name: str
    kind: Literal["offset", "proj"]
    epsg: int | None = None

    @property
    def is_geographic(self) -> bool:
        """True if coordinates are longitude/latitude in degrees."""
        if self.kind == "offset":
            return True
        return bool(_pyproj_crs(self.epsg).is_geographic)

    def __str__(self) -> str:
        return self.name


WGS84 = CrsSpec("wgs84", "proj", 4326)
GCJ02 = CrsSpec("gcj02", "offset")
BD09 = CrsSpec("bd09", "offset")
CGCS2000 = CrsSpec("EPSG:4490", "proj", 4490)

# Accepted names after lower-casing and removing spaces, '-' and '_'.
_ALIASES: dict[str, CrsSpec] = {
    "wgs84": WGS84,
    "gcj02": GCJ02,
    "gcj": GCJ02,
    "mars": GCJ02,
    "bd09": BD09,
    "bd09ll": BD09,
    "baidu": BD09,
    "cgcs2000": CGCS2000,
}

_EPSG_RE = re.compile(r"^(?:epsg:)?(\d{1,6})$")


@lru_cache(maxsize=256)
def _pyproj_crs(code: int) -> CRS:
    """Return the pyproj CRS for an EPSG code (cached)."""
    return CRS.from_epsg(code)


@lru_cache(maxsize=256)
def _spec_for_epsg(code: int) -> CrsSpec:
    """Check with pyproj that *code* is a usable horizontal CRS, then build its spec."""
    if code == 4326:
        return WGS84
    try:
        crs = _pyproj_crs(code)
    except CRSError as exc:
        raise UnknownCRSError(f"unknown CRS 'EPSG:{code}': pyproj does not know this EPSG code") from exc
    if not (crs.is_geographic or crs.is_projected):
        raise UnknownCRSError(
            f"unsupported CRS 'EPSG:{code}' ({crs.name}): not a horizontal geographic or projected CRS"
        )
    return CrsSpec(f"EPSG:{code}", "proj", code)


def parse_crs(name: str | CrsSpec) -> CrsSpec:
    """Parse a CRS name into a :class:`CrsSpec`.

    Accepted (case-insensitive, surrounding whitespace ignored):

    * ``wgs84`` (also ``wgs-84``, ``EPSG:4326``, ``4326``);
    * ``gcj02`` (also ``gcj-02``, ``gcj``, ``mars``);
    * ``bd09`` (also ``bd-09``, ``bd09ll``, ``baidu``);
    * ``cgcs2000`` (also ``EPSG:4490``, ``4490``);
    * ``EPSG:nnnn`` or plain ``nnnn`` for any horizontal geographic or
      projected CRS that pyproj knows, for example ``EPSG:4547`` (Zhengzhou's
      CGCS2000 Gauss-Krüger zone).

    A :class:`CrsSpec` is returned unchanged.  Anything else (non-strings,
    empty strings, ``"nan"``, unknown EPSG codes, vertical or geocentric CRSs)
    raises :class:`UnknownCRSError`.
    """
    if isinstance(name, CrsSpec):
        return name
    if not isinstance(name, str):
        raise UnknownCRSError(f"unknown CRS {name!r}: expected a CRS name string")
    key = name.strip().lower()
    alias = re.sub(r"[\s_\-]", "", key)
    if alias in _ALIASES:
        return _ALIASES[alias]
    m = _EPSG_RE.match(key.replace(" ", ""))
    if m:
        return _spec_for_epsg(int(m.group(1)))
    raise UnknownCRSError(f"unknown CRS {name!r}: expected wgs84, gcj02, bd09, cgcs2000 or EPSG:<code>")


@lru_cache(maxsize=64)
def _transformers(code: int) -> tuple[Transformer, Transformer]:
    """Return cached (to-WGS84, from-WGS84) transformers for an EPSG code, in x/y order."""
    src = _pyproj_crs(code)
    wgs = _pyproj_crs(4326)
    return (
        Transformer.from_crs(src, wgs, always_xy=True),
        Transformer.from_crs(wgs, src, always_xy=True),
    )


def to_wgs84(x: Any, y: Any, crs: str | CrsSpec):
    """Convert coordinates in *crs* to WGS84 (EPSG:4326) ``(lon, lat)`` degrees.

    *x*, *y* are always easting/longitude first, then northing/latitude
    (pyproj ``always_xy=True``), whatever the EPSG axis order.  For EPSG:4547
    pass ``(easting, northing)`` in metres; for gcj02 or bd09 pass
    ``(lon, lat)`` in degrees.  CGCS2000 (EPSG:4490) is treated as equal to
    WGS84 (PROJ applies a null transformation; the real difference is under a
    metre).  Points that PROJ cannot transform come back as ``inf``.

    Raises:
        UnknownCRSError: if *crs* is not recognised (see :func:`parse_crs`).
    """
    spec = parse_crs(crs)
    xa, ya, scalar = _as_arrays(x, y)
    if spec is GCJ02:
        return _result(*gcj02_to_wgs84(xa, ya), scalar)
    if spec is BD09:
        return _result(*bd09_to_wgs84(xa, ya), scalar)
    if spec.epsg == 4326:
        return _result(xa, ya, scalar)
    lon, lat = _transformers(spec.epsg)[0].transform(xa, ya)
    return _result(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float), scalar)


def from_wgs84(lon: Any, lat: Any, crs: str | CrsSpec):
    """Convert WGS84 ``(lon, lat)`` degrees to coordinates in *crs*.

    Returns ``(x, y)``, easting/longitude first (pyproj ``always_xy=True``):
    for EPSG:4547 that is ``(easting, northing)`` in metres, and for gcj02 or
    bd09 it is ``(lon, lat)`` in degrees.

    Raises:
        UnknownCRSError: if *crs* is not recognised (see :func:`parse_crs`).
    """
    spec = parse_crs(crs)
    lon_a, lat_a, scalar = _as_arrays(lon, lat)
    if spec is GCJ02:
        return _result(*wgs84_to_gcj02(lon_a, lat_a), scalar)
    if spec is BD09:
        return _result(*wgs84_to_bd09(lon_a, lat_a), scalar)
    if spec.epsg == 4326:
        return _result(lon_a, lat_a, scalar)
    x, y = _transformers(spec.epsg)[1].transform(lon_a, lat_a)
    return _result(np.asarray(x, dtype=float), np.asarray(y, dtype=float), scalar)


# --------------------------------------------------------------------------
# Validation and distance
# --------------------------------------------------------------------------


def _check_field(name: str, value: Any, limit: float) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise CoordinateError(f"{name} is not numeric: {value!r}", field=name) from exc
    flat = arr.reshape(-1)
    bad = np.flatnonzero(np.isnan(flat))
    if bad.size:
        raise CoordinateError(f"{name} is NaN ({bad.size} value(s), first at index {bad[0]})", field=name)
    bad = np.flatnonzero(np.isinf(flat))
    if bad.size:
        raise CoordinateError(f"{name} is infinite: {float(flat[bad[0]])} (index {bad[0]})", field=name)
    bad = np.flatnonzero(np.abs(flat) > limit)
    if bad.size:
        raise CoordinateError(
            f"{name} out of range [-{limit:g}, {limit:g}]: {float(flat[bad[0]])!r} (index {bad[0]})", field=name
        )
    return arr


def check_lonlat(lon: Any, lat: Any):
    """Check longitude/latitude values in degrees.

    Returns them as floats (for scalars) or float arrays, so the call can
    also be used for conversion: ``lon, lat = check_lonlat(lon, lat)``.

    Raises:
        CoordinateError: naming the field (``lon`` or ``lat``) when a value
            is not numeric, NaN, infinite, ``|lon| > 180`` or ``|lat| > 90``.
    """
    lon_a = _check_field("lon", lon, 180.0)
    lat_a = _check_field("lat", lat, 90.0)
    if lon_a.ndim == 0 and lat_a.ndim == 0:
        return float(lon_a), float(lat_a)
    return lon_a, lat_a


def looks_swapped(lon: Any, lat: Any, bbox: tuple[float, float, float, float]):
    """Detect a longitude/latitude pair given in the wrong order.

    *bbox* is ``(minx, miny, maxx, maxy)`` in the same units as the
    coordinates (e.g. degrees).  Returns True when ``(lat, lon)`` falls inside
    *bbox* but ``(lon, lat)`` does not.  Scalars give a ``bool``; arrays give
    a boolean array.
    """
    minx, miny, maxx, maxy = bbox
    x, y, scalar = _as_arrays(lon, lat)

    def inside(px: np.ndarray, py: np.ndarray) -> np.ndarray:
        return (px >= minx) & (px <= maxx) & (py >= miny) & (py <= maxy)

    result = inside(y, x) & ~inside(x, y)
    return bool(result) if scalar else result


def haversine_m(lon1: Any, lat1: Any, lon2: Any, lat2: Any):
    """Great-circle distance in metres between WGS84 points given in degrees.

    Uses a sphere of radius :data:`EARTH_RADIUS_M` (6371008.8 m), so it can be
    up to about 0.5 % off the ellipsoidal distance.  Inputs broadcast against
    each other; four scalars give a ``float``.
    """
    scalar = all(np.ndim(v) == 0 for v in (lon1, lat1, lon2, lat2))
    p1, p2 = np.radians(np.asarray(lat1, dtype=float)), np.radians(np.asarray(lat2, dtype=float))
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2, dtype=float) - np.asarray(lon1, dtype=float))
    h = np.sin(dphi / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2.0) ** 2
    d = 2.0 * EARTH_RADIUS_M * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))
    return float(d) if scalar else d


# --------------------------------------------------------------------------
# Geometries, CGCS2000 Gauss-Krüger zones, hints for files
# --------------------------------------------------------------------------


def geoms_to_wgs84(geoms, crs: str | CrsSpec):
    """Shapely geometries (2D, x first) in *crs* → the same geometries in WGS84 lon/lat.

    Vertices PROJ cannot transform come back as ``inf`` (see :func:`to_wgs84`)."""
    import shapely

    spec = parse_crs(crs)

    def xy(coords: np.ndarray) -> np.ndarray:
        lon, lat = to_wgs84(coords[:, 0], coords[:, 1], spec)
        return np.column_stack([lon, lat])

    return shapely.transform(geoms, xy)


def geoms_from_wgs84(geoms, crs: str | CrsSpec):
    """Shapely geometries in WGS84 lon/lat → the same geometries in *crs* (x first)."""
    import shapely

    spec = parse_crs(crs)

    def xy(coords: np.ndarray) -> np.ndarray:
        x, y = from_wgs84(coords[:, 0], coords[:, 1], spec)
        return np.column_stack([x, y])

    return shapely.transform(geoms, xy)


@dataclass(frozen=True)
class GaussKruger:
    """A CGCS2000 Gauss-Krüger CRS (EPSG:4491–4554): zone width (3 or 6 degrees), its
    central meridian, its zone number and whether eastings carry the zone number as a
    prefix (false easting zone × 1,000,000 + 500,000, e.g. 38 512 345.6 m in EPSG:4526)
    or not (500,000, e.g. 512 345.6 m in EPSG:4547)."""

    epsg: int
    width: int
    central_meridian: int
    zone: int
    prefixed: bool

    @property
    def crs(self) -> CrsSpec:
        return parse_crs(f"EPSG:{self.epsg}")

    @property
    def title(self) -> str:
        return f"EPSG:{self.epsg} ({_pyproj_crs(self.epsg).name})"


def gauss_kruger(crs: str | CrsSpec) -> GaussKruger | None:
    """The :class:`GaussKruger` description of a CGCS2000 Gauss-Krüger CRS, else None.

    EPSG:4491–4501 are the 6-degree zones 13–23 with prefix, 4502–4512 the same without
    (CM 75°E–135°E); 4513–4533 the 3-degree zones 25–45 with prefix, 4534–4554 without."""
    spec = parse_crs(crs)
    e = spec.epsg
    if e is None or not 4491 <= e <= 4554:
        return None
    if e <= 4501:
        zone = 13 + e - 4491
        return GaussKruger(e, 6, 6 * zone - 3, zone, True)
    if e <= 4512:
        cm = 75 + 6 * (e - 4502)
        return GaussKruger(e, 6, cm, (cm + 3) // 6, False)
    if e <= 4533:
        zone = 25 + e - 4513
        return GaussKruger(e, 3, 3 * zone, zone, True)
    cm = 75 + 3 * (e - 4534)
    return GaussKruger(e, 3, cm, cm // 3, False)


def gauss_kruger_for(width: int, zone: int, prefixed: bool) -> GaussKruger | None:
    """The CGCS2000 Gauss-Krüger CRS of a zone (3- or 6-degree), with or without the
    zone prefix on eastings; None for a zone outside China's (6°: 13–23, 3°: 25–45)."""
    if width == 6 and 13 <= zone <= 23:
        epsg = 4491 + zone - 13 if prefixed else 4502 + zone - 13
    elif width == 3 and 25 <= zone <= 45:
        epsg = 4513 + zone - 25 if prefixed else 4534 + zone - 25
    else:
        return None
    return gauss_kruger(f"EPSG:{epsg}")


def _prefix_zone(easting: float) -> GaussKruger | None:
    """The prefixed zone an easting like 38 512 345.6 names (the two leading digits; the
    3- and 6-degree zone numbers used in China do not overlap), if it is one."""
    zone, rest = divmod(easting, 1_000_000)
    if not 100_000 <= rest <= 900_000:
        return None
    zone = int(zone)
    return gauss_kruger_for(3, zone, True) or gauss_kruger_for(6, zone, True)


def zone_prefix_mismatch(crs: str | CrsSpec, eastings) -> tuple[GaussKruger, str] | None:
    """Detect the common Gauss-Krüger mistake: eastings carrying the zone prefix
    (38xxxxxx.x) in a file declared without it (EPSG:4547), or the reverse.

    *eastings* are the file's x values (metres). Returns the CRS the coordinates fit and
    an explanation, or None when they fit *crs* (or *crs* is no CGCS2000 Gauss-Krüger CRS).
    """
    gk = gauss_kruger(crs)
    e = np.asarray(eastings, dtype=float).reshape(-1)
    e = e[np.isfinite(e)]
    if gk is None or not len(e):
        return None
    median = float(np.median(e))
    sample = f"{median:.1f}"
    if not gk.prefixed and median >= 1_000_000:
        fit = _prefix_zone(median)
        if fit is None:
            return None
        return fit, (
            f"the eastings carry a zone prefix (e.g. {sample}: zone {fit.zone}) but {gk.title} has none "
            f"(eastings about 500000 ± 300000 m): the coordinates are {fit.title}; give --crs EPSG:{fit.epsg}"
        )
    if gk.prefixed:
        zone = int(median // 1_000_000)
        if zone == gk.zone:
            return None
        if median < 1_000_000:
            fit = gauss_kruger_for(gk.width, gk.zone, False)
            assert fit is not None  # the unprefixed twin of a prefixed zone always exists
            return fit, (
                f"the eastings have no zone prefix (e.g. {sample}) but {gk.title} expects them to start with "
                f"its zone number {gk.zone} ({gk.zone}xxxxxx.x): the coordinates are {fit.title}; "
                f"give --crs EPSG:{fit.epsg}"
            )
        fit = _prefix_zone(median)
        if fit is not None:
            return fit, (
                f"the eastings carry the prefix of zone {fit.zone} (e.g. {sample}), not of zone {gk.zone} "
                f"as {gk.title} says: the coordinates are {fit.title}; give --crs EPSG:{fit.epsg}"
            )
    return None


def crs_hint(x, y, near_lon: float | None = None) -> str:
    """A guess at the CRS of coordinates given without one, for error messages: degrees
    (WGS84, GCJ-02 or CGCS2000 cannot be told apart by their values), Gauss-Krüger
    eastings with a zone prefix, or without (the zone then from *near_lon*, e.g. the
    district's longitude)."""
    xa = np.asarray(x, dtype=float).reshape(-1)
    ya = np.asarray(y, dtype=float).reshape(-1)
    ok = np.isfinite(xa) & np.isfinite(ya)
    if not ok.any():
        return "the file has no usable coordinates"
    mx, my = float(np.median(xa[ok])), float(np.median(ya[ok]))
    if abs(mx) <= 180 and abs(my) <= 180:
        if abs(my) <= 90 and in_china_rough(mx, my):
            return (
                f"the coordinates look like longitude/latitude in China (e.g. {mx:.6f}, {my:.6f}): wgs84, "
                "cgcs2000, or gcj02 if they come from Amap, Tencent or WeChat"
            )
        if in_china_rough(my, mx):
            return (
                f"the coordinates look like latitude/longitude in China with the axes swapped, latitude first "
                f"(e.g. {mx:.6f}, {my:.6f})"
            )
        if abs(my) <= 90:
            return f"the coordinates look like longitude/latitude, but outside China (e.g. {mx:.6f}, {my:.6f})"
    fit = _prefix_zone(mx)
    if fit is not None and 2_000_000 <= my <= 6_500_000:
        return (
            f"the coordinates look like CGCS2000 Gauss-Krüger with a zone prefix (e.g. {mx:.1f}, {my:.1f}): {fit.title}"
        )
    if 100_000 <= mx <= 900_000 and 2_000_000 <= my <= 6_500_000:
        guess = ""
        if near_lon is not None:
            fit = gauss_kruger_for(3, int(round(near_lon / 3)), False)
            if fit is not None:
                guess = f"; near the district that is {fit.title}"
        return (
            f"the coordinates look like CGCS2000 Gauss-Krüger metres without a zone prefix (e.g. {mx:.1f}, "
            f"{my:.1f}){guess}"
        )
    return f"the coordinates (e.g. {mx:.1f}, {my:.1f}) fit no CRS gridbranch can guess"

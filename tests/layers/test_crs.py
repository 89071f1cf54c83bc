"""Tests for layers.crs (coordinate-system handling). No database needed.

The references here are independent of the module:

* GCJ-02 / BD-09 forward transforms are checked against a plain scalar
  ``math`` version, written in this file straight from the published formulas.
* The inverses are checked by round trip in metres.
* EPSG:4547 is checked with Gauss-Krüger geometry: false easting 500 km on
  the 114E central meridian, and a northing on that meridian equal to the
  GRS80 meridian arc length, found here by numerical integration.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from pyproj import CRS

from layers import crs as C
from layers.crs import (
    CoordinateError,
    CrsSpec,
    UnknownCRSError,
    bd09_to_gcj02,
    bd09_to_wgs84,
    check_lonlat,
    from_wgs84,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    haversine_m,
    looks_swapped,
    parse_crs,
    to_wgs84,
    wgs84_to_bd09,
    wgs84_to_gcj02,
)

ZHENGZHOU = (113.66, 34.76)
PARIS = (2.35, 48.85)


# ---------------------------------------------------------------------------
# Independent scalar reference (pure math, written from the formula text)
# ---------------------------------------------------------------------------

_REF_A = 6378245.0
_REF_EE = 0.00669342162296594323


def _ref_out_of_china(lon: float, lat: float) -> bool:
    return not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _ref_transform_lat(x: float, y: float) -> float:
    pi = math.pi
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(y * pi) + 40.0 * math.sin(y / 3.0 * pi)) * 2.0 / 3.0
    ret += (160.0 * math.sin(y / 12.0 * pi) + 320.0 * math.sin(y * pi / 30.0)) * 2.0 / 3.0
    return ret


def _ref_transform_lon(x: float, y: float) -> float:
    pi = math.pi
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(x * pi) + 40.0 * math.sin(x / 3.0 * pi)) * 2.0 / 3.0
    ret += (150.0 * math.sin(x / 12.0 * pi) + 300.0 * math.sin(x / 30.0 * pi)) * 2.0 / 3.0
    return ret


def ref_wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    if _ref_out_of_china(lon, lat):
        return lon, lat
    dlat = _ref_transform_lat(lon - 105.0, lat - 35.0)
    dlon = _ref_transform_lon(lon - 105.0, lat - 35.0)
    radlat = lat / 180.0 * math.pi
    magic = 1.0 - _REF_EE * math.sin(radlat) ** 2
    sqrtmagic = math.sqrt(magic)
    dlat = (dlat * 180.0) / ((_REF_A * (1.0 - _REF_EE)) / (magic * sqrtmagic) * math.pi)
    dlon = (dlon * 180.0) / (_REF_A / sqrtmagic * math.cos(radlat) * math.pi)
    return lon + dlon, lat + dlat


def ref_gcj02_to_bd09(lon: float, lat: float) -> tuple[float, float]:
    x_pi = math.pi * 3000.0 / 180.0
    z = math.sqrt(lon * lon + lat * lat) + 0.00002 * math.sin(lat * x_pi)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * x_pi)
    return z * math.cos(theta) + 0.0065, z * math.sin(theta) + 0.006


def ref_naive_gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]:
    """The common one-step inverse (NOT exact); used to show the test is strict enough."""
    glon, glat = ref_wgs84_to_gcj02(lon, lat)
    return 2.0 * lon - glon, 2.0 * lat - glat


def _sample_points() -> list[tuple[float, float]]:
    rng = np.random.default_rng(20240601)
    pts = [(float(a), float(b)) for a, b in zip(rng.uniform(73.0, 135.0, 400), rng.uniform(18.0, 54.0, 400))]
    pts += [(float(a), float(b)) for a, b in zip(rng.uniform(112.7, 114.2, 100), rng.uniform(34.2, 35.0, 100))]
    pts += [ZHENGZHOU, (105.0, 35.0), (121.4737, 31.2304), (116.3913, 39.9075), PARIS, (-74.0, 40.7)]
    return pts


def _china_grid() -> tuple[np.ndarray, np.ndarray]:
    # Covers the whole GCJ box except a 0.05 deg strip at the edges, where the
    # forward transform is discontinuous and cannot be inverted uniquely.
    lon, lat = np.meshgrid(np.linspace(72.06, 137.78, 331), np.linspace(0.88, 55.77, 276))
    return lon, lat


def _zhengzhou_grid() -> tuple[np.ndarray, np.ndarray]:
    lon, lat = np.meshgrid(np.linspace(112.7, 114.2, 151), np.linspace(34.2, 35.0, 81))
    return lon, lat


# ---------------------------------------------------------------------------
# Forward transforms against the independent reference
# ---------------------------------------------------------------------------


def test_wgs84_to_gcj02_matches_reference():
    pts = _sample_points()
    lon = np.array([p[0] for p in pts])
    lat = np.array([p[1] for p in pts])
    got_lon, got_lat = wgs84_to_gcj02(lon, lat)
    ref = np.array([ref_wgs84_to_gcj02(a, b) for a, b in pts])
    assert np.max(np.abs(got_lon - ref[:, 0])) < 1e-11
    assert np.max(np.abs(got_lat - ref[:, 1])) < 1e-11
    # The scalar path agrees too.
    for a, b in pts[:20]:
        assert wgs84_to_gcj02(a, b) == pytest.approx(ref_wgs84_to_gcj02(a, b), abs=1e-11)


def test_gcj02_to_bd09_matches_reference():
    pts = _sample_points()
    lon = np.array([p[0] for p in pts])
    lat = np.array([p[1] for p in pts])
    got_lon, got_lat = gcj02_to_bd09(lon, lat)
    ref = np.array([ref_gcj02_to_bd09(a, b) for a, b in pts])
    assert np.max(np.abs(got_lon - ref[:, 0])) < 1e-11
    assert np.max(np.abs(got_lat - ref[:, 1])) < 1e-11


def test_wgs84_to_bd09_is_composition_of_references():
    for a, b in _sample_points()[:50]:
        expected = ref_gcj02_to_bd09(*ref_wgs84_to_gcj02(a, b))
        assert wgs84_to_bd09(a, b) == pytest.approx(expected, abs=1e-11)


def test_gcj02_identity_outside_china():
    assert wgs84_to_gcj02(*PARIS) == PARIS
    assert gcj02_to_wgs84(*PARIS) == PARIS
    # Just outside each side of the rough China box.
    outside = [(72.0, 30.0), (137.84, 35.0), (100.0, 0.8), (100.0, 55.83), (0.0, 90.0), (-180.0, -90.0)]
    lon = np.array([p[0] for p in outside])
    lat = np.array([p[1] for p in outside])
    for fn in (wgs84_to_gcj02, gcj02_to_wgs84):
        out_lon, out_lat = fn(lon, lat)
        np.testing.assert_array_equal(out_lon, lon)
        np.testing.assert_array_equal(out_lat, lat)


# ---------------------------------------------------------------------------
# Physical magnitudes around Zhengzhou
# ---------------------------------------------------------------------------


def test_zhengzhou_offset_magnitudes():
    gcj = wgs84_to_gcj02(*ZHENGZHOU)
    bd = wgs84_to_bd09(*ZHENGZHOU)
    gcj_offset = haversine_m(*ZHENGZHOU, *gcj)
    bd_offset = haversine_m(*ZHENGZHOU, *bd)
    assert 400.0 < gcj_offset < 700.0
    assert 900.0 < bd_offset < 1500.0
    # GCJ-02 shifts Zhengzhou eastwards; BD-09 shifts it further north-east.
    assert gcj[0] > ZHENGZHOU[0]
    assert bd[0] > gcj[0] and bd[1] > gcj[1]


# ---------------------------------------------------------------------------
# Inverses: round trips below 1 cm
# ---------------------------------------------------------------------------


def _max_roundtrip_m(fwd, inv, lon, lat) -> float:
    back_lon, back_lat = inv(*fwd(lon, lat))
    return float(np.max(haversine_m(lon, lat, back_lon, back_lat)))


@pytest.mark.parametrize("grid", [_china_grid, _zhengzhou_grid], ids=["china", "zhengzhou"])
@pytest.mark.parametrize(
    "fwd, inv",
    [
        (wgs84_to_gcj02, gcj02_to_wgs84),
        (gcj02_to_bd09, bd09_to_gcj02),
        (wgs84_to_bd09, bd09_to_wgs84),
    ],
    ids=["gcj02", "bd09-from-gcj02", "bd09-from-wgs84"],
)
def test_roundtrip_below_1cm(grid, fwd, inv):
    lon, lat = grid()
    assert _max_roundtrip_m(fwd, inv, lon, lat) < 0.01
    # The inverse direction as well: a point given in the offset datum
    # maps back to itself.
    assert _max_roundtrip_m(inv, fwd, lon, lat) < 0.01


def test_naive_inverse_would_not_pass():
    """A sanity check that the 1 cm threshold is strict: the one-step inverse fails it."""
    lon, lat = _zhengzhou_grid()
    errs = []
    for a, b in zip(lon.ravel()[::7], lat.ravel()[::7]):
        glon, glat = ref_wgs84_to_gcj02(a, b)
        nlon, nlat = ref_naive_gcj02_to_wgs84(glon, glat)
        errs.append(haversine_m(a, b, nlon, nlat))
    assert max(errs) > 0.01


# ---------------------------------------------------------------------------
# Shapes and types
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn", [wgs84_to_gcj02, gcj02_to_wgs84, gcj02_to_bd09, bd09_to_gcj02, wgs84_to_bd09, bd09_to_wgs84]
)
def test_shapes_and_types(fn):
    out = fn(113.66, 34.76)
    assert isinstance(out, tuple) and all(type(v) is float for v in out)

    lon = np.full((3, 4), 113.66)
    lat = np.linspace(34.0, 35.0, 12).reshape(3, 4)
    lon_copy, lat_copy = lon.copy(), lat.copy()
    out_lon, out_lat = fn(lon, lat)
    assert out_lon.shape == (3, 4) and out_lat.shape == (3, 4)
    assert out_lon.dtype == np.float64
    np.testing.assert_array_equal(lon, lon_copy)  # inputs not modified
    np.testing.assert_array_equal(lat, lat_copy)

    # Lists and int inputs are fine; scalars broadcast against arrays.
    out_lon, out_lat = fn([113, 114], 35)
    assert out_lon.shape == (2,) and out_lat.shape == (2,)
    # Element-wise equals the scalar path.
    assert out_lon[1] == pytest.approx(fn(114.0, 35.0)[0], abs=1e-12)


# ---------------------------------------------------------------------------
# Projected CRSs via pyproj
# ---------------------------------------------------------------------------


def _grs80_meridian_arc(lat_deg: float, n: int = 2000) -> float:
    """Meridian arc length from the equator, GRS80, by Simpson integration."""
    a = 6378137.0
    f = 1.0 / 298.257222101
    e2 = f * (2.0 - f)
    phi = math.radians(lat_deg)
    h = phi / n

    def m(p: float) -> float:
        return a * (1.0 - e2) / (1.0 - e2 * math.sin(p) ** 2) ** 1.5

    s = m(0.0) + m(phi)
    s += sum((4 if i % 2 else 2) * m(i * h) for i in range(1, n))
    return s * h / 3.0


def test_epsg4547_zhengzhou():
    lon, lat = 113.6654, 34.7579
    e, n = from_wgs84(lon, lat, "EPSG:4547")
    assert type(e) is float and type(n) is float
    # Easting first (always_xy). Zhengzhou lies WEST of the 114E central
    # meridian, so the easting is below the 500 km false easting.
    assert 465_000.0 < e < 475_000.0
    assert 3_830_000.0 < n < 3_860_000.0
    # The distance west of the CM agrees with a great-circle estimate to 0.5 %.
    west = haversine_m(lon, lat, 114.0, lat)
    assert (500_000.0 - e) == pytest.approx(west, rel=5e-3)
    # And the inverse comes back within about 1 mm.
    back_lon, back_lat = to_wgs84(e, n, "EPSG:4547")
    assert abs(back_lon - lon) < 1e-8 and abs(back_lat - lat) < 1e-8


def test_epsg4547_central_meridian_geometry():
    # On the central meridian, Gauss-Krüger (k0 = 1) gives easting = 500 000 m
    # and northing = meridian arc length.
    e, n = from_wgs84(114.0, 34.7579, "epsg:4547")
    assert e == pytest.approx(500_000.0, abs=1e-6)
    assert n == pytest.approx(_grs80_meridian_arc(34.7579), abs=1e-3)


def test_epsg4547_authority_axis_order_is_north_east_but_api_is_xy():
    # The EPSG definition lists northing first ...
    assert [ax.direction for ax in CRS.from_epsg(4547).axis_info] == ["north", "east"]
    # ... but the API always works in easting, northing.
    lon = np.array([113.3, 113.6654, 114.1])
    lat = np.array([34.5, 34.7579, 34.9])
    e, n = from_wgs84(lon, lat, "EPSG:4547")
    assert np.all(e < 1_000_000) and np.all(n > 3_000_000)
    back_lon, back_lat = to_wgs84(e, n, "4547")
    np.testing.assert_allclose(back_lon, lon, atol=1e-8)
    np.testing.assert_allclose(back_lat, lat, atol=1e-8)


def test_cgcs2000_is_identity_with_wgs84():
    lon, lat = _zhengzhou_grid()
    for name in ("cgcs2000", "EPSG:4490"):
        out_lon, out_lat = to_wgs84(lon, lat, name)
        assert np.max(np.abs(out_lon - lon)) < 1e-6
        assert np.max(np.abs(out_lat - lat)) < 1e-6
        assert np.max(np.abs(np.asarray(from_wgs84(lon, lat, name)) - np.asarray([lon, lat]))) < 1e-6


def test_to_from_wgs84_offset_and_identity_crs():
    assert to_wgs84(*ZHENGZHOU, "wgs84") == ZHENGZHOU
    assert from_wgs84(*ZHENGZHOU, "EPSG:4326") == ZHENGZHOU
    assert from_wgs84(*ZHENGZHOU, "gcj02") == pytest.approx(ref_wgs84_to_gcj02(*ZHENGZHOU), abs=1e-11)
    g = ref_wgs84_to_gcj02(*ZHENGZHOU)
    assert from_wgs84(*ZHENGZHOU, "BD09") == pytest.approx(ref_gcj02_to_bd09(*g), abs=1e-11)
    for name in ("gcj02", "bd09"):
        back = to_wgs84(*from_wgs84(*ZHENGZHOU, name), name)
        assert haversine_m(*ZHENGZHOU, *back) < 0.001
    with pytest.raises(UnknownCRSError):
        to_wgs84(1.0, 2.0, "foo")


def test_transformers_are_cached():
    C._transformers.cache_clear()
    from_wgs84(113.0, 34.0, "EPSG:4547")
    to_wgs84(470_000.0, 3_846_000.0, "EPSG:4547")
    info = C._transformers.cache_info()
    assert info.misses == 1 and info.hits == 1


# ---------------------------------------------------------------------------
# parse_crs
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, canonical, kind",
    [
        ("wgs84", "wgs84", "proj"),
        ("WGS84", "wgs84", "proj"),
        ("WGS-84", "wgs84", "proj"),
        ("EPSG:4326", "wgs84", "proj"),
        ("epsg:4326", "wgs84", "proj"),
        ("4326", "wgs84", "proj"),
        ("gcj02", "gcj02", "offset"),
        ("GCJ-02", "gcj02", "offset"),
        ("bd09", "bd09", "offset"),
        ("BD09", "bd09", "offset"),
        ("cgcs2000", "EPSG:4490", "proj"),
        ("CGCS2000", "EPSG:4490", "proj"),
        ("EPSG:4490", "EPSG:4490", "proj"),
        ("4490", "EPSG:4490", "proj"),
        ("EPSG:4547", "EPSG:4547", "proj"),
        ("epsg:4547", "EPSG:4547", "proj"),
        (" 4547 ", "EPSG:4547", "proj"),
        ("EPSG:4513", "EPSG:4513", "proj"),
        ("EPSG:4554", "EPSG:4554", "proj"),
        ("EPSG:3857", "EPSG:3857", "proj"),
    ],
)
def test_parse_crs_accepts(name, canonical, kind):
    spec = parse_crs(name)
    assert isinstance(spec, CrsSpec)
    assert spec.name == canonical and spec.kind == kind
    assert parse_crs(spec) is spec


def test_parse_crs_all_cgcs2000_gk_zones():
    for code in range(4513, 4555):
        spec = parse_crs(f"EPSG:{code}")
        assert spec.epsg == code and not spec.is_geographic


@pytest.mark.parametrize(
    "bad", ["EPSG:999999", "foo", "", "   ", "nan", "NaN", "EPSG:", "EPSG:5773", "EPSG:4978", None, float("nan"), 4547]
)
def test_parse_crs_rejects(bad):
    with pytest.raises(UnknownCRSError) as exc_info:
        parse_crs(bad)
    assert repr(bad) in str(exc_info.value) or str(bad) in str(exc_info.value)
    assert isinstance(exc_info.value, ValueError)


def test_crsspec_is_frozen():
    spec = parse_crs("gcj02")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "x"  # type: ignore[misc]
    assert parse_crs("EPSG:4490") == parse_crs("cgcs2000")


# ---------------------------------------------------------------------------
# Validation helpers and distance
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "lon, lat, field",
    [
        (float("nan"), 34.0, "lon"),
        (113.0, float("nan"), "lat"),
        (float("inf"), 34.0, "lon"),
        (113.0, float("-inf"), "lat"),
        (113.0, 91.0, "lat"),
        (113.0, -90.5, "lat"),
        (181.0, 34.0, "lon"),
        (-180.01, 34.0, "lon"),
        ([113.0, 200.0], [34.0, 35.0], "lon"),
        (np.array([113.0, 114.0]), np.array([34.0, np.nan]), "lat"),
        ("abc", 34.0, "lon"),
    ],
)
def test_check_lonlat_rejects(lon, lat, field):
    with pytest.raises(CoordinateError, match=rf"^{field}\b"):
        check_lonlat(lon, lat)


def test_check_lonlat_accepts():
    assert check_lonlat(113, 34.5) == (113.0, 34.5)
    assert check_lonlat(180.0, -90.0) == (180.0, -90.0)
    lon, lat = check_lonlat([113.0, -180.0], [34.0, 90.0])
    assert lon.dtype == np.float64 and lat.shape == (2,)
    assert issubclass(CoordinateError, ValueError)


def test_looks_swapped():
    zz_bbox = (112.7, 34.2, 114.2, 35.0)
    assert looks_swapped(34.76, 113.66, zz_bbox) is True
    assert looks_swapped(113.66, 34.76, zz_bbox) is False
    assert looks_swapped(*PARIS, zz_bbox) is False
    out = looks_swapped([34.76, 113.66, 0.0], [113.66, 34.76, 0.0], zz_bbox)
    np.testing.assert_array_equal(out, [True, False, False])


def test_haversine():
    one_degree = 6371008.8 * math.pi / 180.0
    assert haversine_m(113.0, 34.0, 113.0, 35.0) == pytest.approx(one_degree, rel=1e-12)
    assert haversine_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(one_degree, rel=1e-12)
    assert haversine_m(*ZHENGZHOU, *ZHENGZHOU) == 0.0
    d = haversine_m([0.0, 113.0], [0.0, 34.0], [0.0, 113.0], [1.0, 35.0])
    np.testing.assert_allclose(d, [one_degree, one_degree])
    assert haversine_m(0.0, 0.0, 180.0, 0.0) == pytest.approx(math.pi * 6371008.8)

"""Random sampling of the demo: where people (and events) are — a base density plus the
old centre and a second one — points inside polygons, and instants in a period. Every
draw is from the build's one generator, in the order the build asks."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import shapely
from shapely.geometry import Point

from ingest.demo.model import DENSITY_BASE, DENSITY_CENTRES, METRIC_CRS, xy_to_wgs84
from layers.crs import from_wgs84


class Density:
    """Relative density of people/events at metric coordinates."""

    def __init__(self) -> None:
        self.centres = []
        for lon, lat, weight, sigma in DENSITY_CENTRES:
            x, y = from_wgs84(lon, lat, METRIC_CRS)
            self.centres.append((x, y, weight, sigma))
        self.max = DENSITY_BASE + sum(c[2] for c in self.centres)

    def __call__(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        d = np.full(np.shape(x), DENSITY_BASE)
        for cx, cy, weight, sigma in self.centres:
            d = d + weight * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2.0 * sigma * sigma))
        return d


def sample_in(rng: np.random.Generator, n: int, poly, density: Density | None = None) -> np.ndarray:
    """``n`` points (n×2) inside ``poly`` (any CRS), weighted by ``density`` if given."""
    shapely.prepare(poly)
    minx, miny, maxx, maxy = poly.bounds
    out: list[np.ndarray] = []
    got = 0
    batch = max(64, 4 * n)
    while got < n:
        x = rng.uniform(minx, maxx, batch)
        y = rng.uniform(miny, maxy, batch)
        ok = shapely.contains_xy(poly, x, y)
        if density is not None:
            ok &= rng.uniform(0.0, density.max, batch) < density(x, y)
        pts = np.column_stack([x[ok], y[ok]])
        out.append(pts)
        got += len(pts)
        batch = min(max(64, 4 * (n - got)), 400_000)
    return np.concatenate(out)[:n]


def sample_lonlat(rng, n, district_m, district_ll, density) -> np.ndarray:
    """``n`` density-weighted WGS84 points (n×2) strictly inside the WGS84 district."""
    shapely.prepare(district_ll)
    out: list[np.ndarray] = []
    got = 0
    while got < n:
        ll = xy_to_wgs84(sample_in(rng, n - got, district_m, density))
        ll = ll[shapely.contains_xy(district_ll, ll[:, 0], ll[:, 1])]
        out.append(ll)
        got += len(ll)
    return np.concatenate(out)[:n]


def point_in(rng, geom_ll) -> Point:
    """A uniformly random point inside a WGS84 polygon."""
    xy = sample_in(rng, 1, geom_ll)[0]
    return Point(float(xy[0]), float(xy[1]))


def random_times(rng, n: int, start: datetime, end: datetime) -> list[datetime]:
    span = (end - start).total_seconds()
    secs = rng.uniform(0, span, n)
    return [start + timedelta(seconds=float(round(s))) for s in secs]

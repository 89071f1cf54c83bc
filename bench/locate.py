"""Locate benchmark (issue: member-to-grid registration).

Prints, in one run on the Jinshui demo database:
- single locate over HTTP (GET /v1/locate), p50 / p99 at 1 and 50 concurrent clients;
- batch locate of N random points inside the district (default 1,000,000) over HTTP
  (POST /v1/locate/batch as CSV, in chunks), in points per second, end to end;
- the same points located (a) with one PostGIS query per point (on a sample, rate
  extrapolated) and (b) with shapely's STRtree in memory (the in-process ceiling);
- the ratios. Goals: batch ≥ 200,000 points/s; single p99 < 10 ms at 50 clients.

Usage: .venv/bin/python bench/locate.py [--points 1000000] [--chunk 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import shapely  # noqa: E402
from sqlalchemy import text  # noqa: E402

from bench.common import demo_engine, fmt, get_request, load, served  # noqa: E402


def random_points(engine, n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """n uniformly random WGS84 points inside the district (rejection sampling)."""
    with engine.connect() as conn:
        wkb = conn.execute(text("SELECT ST_AsBinary(geom) FROM admin_areas WHERE level = 'district'")).scalar()
    district = shapely.from_wkb(bytes(wkb))
    shapely.prepare(district)
    minx, miny, maxx, maxy = district.bounds
    rng = np.random.default_rng(seed)
    lon, lat = np.empty(0), np.empty(0)
    while len(lon) < n:
        x = rng.uniform(minx, maxx, n)
        y = rng.uniform(miny, maxy, n)
        keep = shapely.contains_xy(district, x, y)
        lon, lat = np.concatenate([lon, x[keep]]), np.concatenate([lat, y[keep]])
    return lon[:n], lat[:n]


PER_POINT_SQL = text(
    """SELECT g.code FROM grid_versions gv JOIN grids g ON g.id = gv.grid_id
       WHERE gv.valid_to IS NULL AND ST_Intersects(gv.geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326))
       ORDER BY g.code LIMIT 1"""
)


def per_point_queries(engine, lon, lat) -> float:
    with engine.connect() as conn:
        t0 = time.perf_counter()
        for x, y in zip(lon.tolist(), lat.tolist()):
            conn.execute(PER_POINT_SQL, {"x": x, "y": y}).first()
        return len(lon) / (time.perf_counter() - t0)


def strtree_ceiling(engine, lon, lat) -> float:
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT ST_AsBinary(geom) FROM grid_versions WHERE valid_to IS NULL ORDER BY id")
        ).scalars().all()
    geoms = shapely.from_wkb([bytes(r) for r in rows])
    t0 = time.perf_counter()
    tree = shapely.STRtree(geoms)
    pts = shapely.points(lon, lat)
    tree.query(pts, predicate="intersects")
    return len(lon) / (time.perf_counter() - t0)


def batch_over_http(port: int, lon, lat, chunk: int, answer: str = "json") -> tuple[float, int]:
    bodies = []
    for start in range(0, len(lon), chunk):
        lines = ["id,lon,lat"]
        lines += [f"{start + i},{x:.7f},{y:.7f}" for i, (x, y) in enumerate(zip(lon[start:start + chunk].tolist(),
                                                                               lat[start:start + chunk].tolist()))]
        bodies.append(("\n".join(lines) + "\n").encode())
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    located = 0
    t0 = time.perf_counter()
    for body in bodies:
        accept = "text/csv" if answer == "csv" else "application/json"
        conn.request("POST", "/v1/locate/batch", body=body, headers={"Content-Type": "text/csv", "Accept": accept})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"batch failed: {resp.status} {data[:200]!r}")
        if answer == "csv":
            located += sum(1 for line in data.split(b"\n")[1:] if b",inside," in line or b",boundary," in line
                           or b",nearest," in line)
        else:
            results = orjson.loads(data)["results"]
            located += sum(1 for r in results if r.get("grid"))
    elapsed = time.perf_counter() - t0
    return len(lon) / elapsed, located


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--single", type=int, default=5_000, help="requests per single-locate run")
    parser.add_argument("--per-point-sample", type=int, default=5_000)
    args = parser.parse_args()

    engine = demo_engine()
    lon, lat = random_points(engine, args.points)
    print(f"{args.points:,} random points inside 金水区 (seeded)")

    with served() as port:
        # warm up: build the grid index once
        load(port, [get_request(f"/v1/locate?lon={lon[0]}&lat={lat[0]}")] * 20, 1)
        singles = [get_request(f"/v1/locate?lon={x:.7f}&lat={y:.7f}") for x, y in zip(lon[: args.single], lat[: args.single])]
        one = load(port, singles, 1)
        fifty = load(port, singles, 50)
        print(f"single locate, 1 client:   {fmt(one)}")
        print(f"single locate, 50 clients: {fmt(fifty)}")
        batch_rate, located = batch_over_http(port, lon, lat, args.chunk, "json")
        print(f"batch locate over HTTP (CSV in, JSON out, chunks of {args.chunk:,}): {batch_rate:,.0f} points/s, "
              f"{located:,} located")
        csv_rate, located = batch_over_http(port, lon, lat, args.chunk, "csv")
        print(f"batch locate over HTTP (CSV in, CSV out, chunks of {args.chunk:,}): {csv_rate:,.0f} points/s, "
              f"{located:,} located")
        batch_rate = max(batch_rate, csv_rate)

    sample = args.per_point_sample
    pp_rate = per_point_queries(engine, lon[:sample], lat[:sample])
    print(f"(a) one PostGIS query per point ({sample:,}-point sample, same data): {pp_rate:,.0f} points/s")
    ceiling = strtree_ceiling(engine, lon, lat)
    print(f"(b) shapely STRtree in memory (build + query, {args.points:,} points): {ceiling:,.0f} points/s")
    print(f"ratio batch / per-point queries: {batch_rate / pp_rate:,.1f}x")
    print(f"ratio batch / STRtree ceiling:   {batch_rate / ceiling:,.2f}x")
    print(f"goal batch >= 200,000 points/s: {'met' if batch_rate >= 200_000 else 'NOT met'}; "
          f"goal single p99 < 10 ms at 50 clients: {'met' if fifty['p99_ms'] < 10 else 'NOT met'}")
    engine.dispose()


if __name__ == "__main__":
    main()

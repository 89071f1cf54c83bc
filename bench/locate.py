"""Locate benchmark (issue: member-to-grid registration).

Prints, in one run on the Jinshui demo database:
- single locate over HTTP (GET /v1/locate), p50 / p99 at 1 and 50 concurrent clients;
- batch locate of N random points inside the district (default 1,000,000) over HTTP
  (POST /v1/locate/batch as CSV, in chunks), in points per second, end to end;
- the same points located (a) with one PostGIS query per point (on a sample, rate
  extrapolated) and (b) with shapely's STRtree in memory (the in-process ceiling);
- the ratios. Goals: batch ≥ 200,000 points/s; single p99 < 10 ms at 50 clients.

Everything is measured with 1 and with 2 uvicorn workers (``--workers``) of
``gridbranch serve`` (access log off); with w workers the batch goes over w connections.
The client runs on the same machine: single locates are loaded by the benchmarks' Python
client and, when the Debian package ``wrk`` is installed, by wrk too — a client in C,
which leaves the server the CPU the Python client takes (at thousands of requests a
second it needs about a core of this 2-core machine itself). Each is warmed up at 50
connections first, so that every worker has built its grid index.

Usage: .venv/bin/python bench/locate.py [--points 1000000] [--chunk 100000] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
import shapely  # noqa: E402
from sqlalchemy import text  # noqa: E402

from bench.common import (  # noqa: E402
    bare_served,
    demo_engine,
    fmt,
    get_request,
    load,
    served,
    wrk_available,
    wrk_load,
)


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
        rows = (
            conn.execute(text("SELECT ST_AsBinary(geom) FROM grid_versions WHERE valid_to IS NULL ORDER BY id"))
            .scalars()
            .all()
        )
    geoms = shapely.from_wkb([bytes(r) for r in rows])
    t0 = time.perf_counter()
    tree = shapely.STRtree(geoms)
    pts = shapely.points(lon, lat)
    tree.query(pts, predicate="intersects")
    return len(lon) / (time.perf_counter() - t0)


def chunk_bodies(lon, lat, chunk: int) -> list[bytes]:
    bodies = []
    for start in range(0, len(lon), chunk):
        lines = ["id,lon,lat"]
        lines += [
            f"{start + i},{x:.7f},{y:.7f}"
            for i, (x, y) in enumerate(zip(lon[start : start + chunk].tolist(), lat[start : start + chunk].tolist()))
        ]
        bodies.append(("\n".join(lines) + "\n").encode())
    return bodies


def batch_over_http(
    port: int, bodies: list[bytes], n: int, answer: str = "json", connections: int = 1
) -> tuple[float, int]:
    """POST the CSV ``bodies`` (n points in all) over ``connections`` keep-alive
    connections (each takes the next chunk when its answer is in); every answer is read
    whole and its located rows counted (JSON answers parsed, as a client would)."""
    import http.client
    import threading

    accept = "text/csv" if answer == "csv" else "application/json"
    pending = list(reversed(bodies))
    lock = threading.Lock()
    located = [0]
    failures: list[str] = []

    def post(conn, body: bytes):
        conn.request("POST", "/v1/locate/batch", body=body, headers={"Content-Type": "text/csv", "Accept": accept})
        return conn.getresponse()

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        while True:
            with lock:
                if not pending or failures:
                    break
                body = pending.pop()
            try:
                resp = post(conn, body)
            except (ConnectionError, http.client.RemoteDisconnected):
                # the server closed the idle keep-alive connection (uvicorn does after 5 s)
                # as the request went out: a new connection, as HTTP clients do (batch
                # locate changes nothing, so sending it again is safe)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                resp = post(conn, body)
            data = resp.read()
            if resp.status != 200:
                failures.append(f"batch failed: {resp.status} {data[:200]!r}")
                break
            if answer == "csv":  # ids are numbers: a match name between commas is the match column
                count = data.count(b",inside,") + data.count(b",boundary,") + data.count(b",nearest,")
            else:
                count = sum(1 for r in orjson.loads(data)["results"] if r.get("grid"))
            with lock:
                located[0] += count
        conn.close()

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if failures:
        raise RuntimeError(failures[0])
    return n / elapsed, located[0]


def fetch(port: int, path: str) -> bytes:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return body


def _workers(w: int) -> str:
    return f"{w} worker{'s' if w > 1 else ''}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--single", type=int, default=5_000, help="requests per single-locate run")
    parser.add_argument("--per-point-sample", type=int, default=5_000)
    parser.add_argument("--wrk-seconds", type=float, default=10, help="length of each wrk run")
    parser.add_argument(
        "--workers",
        default="1,2",
        help="uvicorn worker processes to serve with, comma-separated: each count is measured "
        "(single locates, and the batch over as many connections as workers)",
    )
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",")]

    engine = demo_engine()
    lon, lat = random_points(engine, args.points)
    print(
        f"{args.points:,} random points inside 金水区 (seeded); {os.cpu_count()} CPUs; "
        f"server and client on this machine"
    )

    paths = [f"/v1/locate?lon={x:.7f}&lat={y:.7f}" for x, y in zip(lon[: args.single], lat[: args.single])]
    singles = [get_request(p) for p in paths]
    wrk = wrk_available()
    if not wrk:
        print("wrk is not installed (apt-get install wrk): single locates measured with the Python client only")
    bodies = chunk_bodies(lon, lat, args.chunk)
    fifty_by_workers, wrk_by_workers, batch_by_workers = {}, {}, {}
    for w in workers:
        # the batches go anonymously, in chunks above the anonymous caps: raised to the chunk
        anonymous_caps = {
            "GRIDBRANCH_LOCATE_BATCH_MAX_ROWS_ANONYMOUS": str(max(args.chunk, 1)),
            "GRIDBRANCH_LOCATE_BATCH_MAX_BYTES_ANONYMOUS": str(max(len(b) for b in bodies)),
        }
        with served(anonymous_caps, workers=w) as port:
            # warm up at 50 connections: every worker builds its grid index
            load(port, singles[:2000], 50)
            one = load(port, singles, 1)
            fifty = fifty_by_workers[w] = load(port, singles, 50)
            print(f"single locate, {_workers(w)}, Python client, 1 client:   {fmt(one)}")
            print(f"single locate, {_workers(w)}, Python client, 50 clients: {fmt(fifty)}")
            if wrk:
                one = wrk_load(port, paths, 1, args.wrk_seconds)
                fifty = wrk_by_workers[w] = wrk_load(port, paths, 50, args.wrk_seconds)
                print(f"single locate, {_workers(w)}, wrk, 1 client:   {fmt(one)}")
                print(f"single locate, {_workers(w)}, wrk, 50 clients: {fmt(fifty)}")
                answer = fetch(port, paths[0])
                with bare_served(answer, w) as bare_port:
                    wrk_load(bare_port, paths, 50, 2)
                    bare = wrk_load(bare_port, paths, 50, args.wrk_seconds)
                print(
                    f"  ceiling: uvicorn alone, {_workers(w)}, answering those bytes with no app, wrk, 50 clients: "
                    f"{fmt(bare)}"
                )
            for answer in ("json", "csv"):
                rate, located = batch_over_http(port, bodies, args.points, answer, connections=w)
                batch_by_workers[w, answer] = rate
                print(
                    f"batch locate over HTTP, {_workers(w)}, {w} connection{'s' if w > 1 else ''} "
                    f"(CSV in, {answer.upper()} out, chunks of {args.chunk:,}): {rate:,.0f} points/s, "
                    f"{located:,} located"
                )

    sample = args.per_point_sample
    pp_rate = per_point_queries(engine, lon[:sample], lat[:sample])
    print(f"(a) one PostGIS query per point ({sample:,}-point sample, same data): {pp_rate:,.0f} points/s")
    ceiling = strtree_ceiling(engine, lon, lat)
    print(f"(b) shapely STRtree in memory (build + query, {args.points:,} points): {ceiling:,.0f} points/s")
    for (w, answer), rate in batch_by_workers.items():
        print(
            f"ratios, batch {answer.upper()} out on {_workers(w)}: {rate / pp_rate:,.1f}x per-point queries, "
            f"{rate / ceiling:,.2f}x the STRtree ceiling"
        )
    best = max(batch_by_workers.items(), key=lambda kv: kv[1])
    print(
        f"goal batch >= 200,000 points/s: {'met' if best[1] >= 200_000 else 'NOT met'} "
        f"(best {best[1]:,.0f} points/s, {best[0][1].upper()} out on {_workers(best[0][0])})"
    )
    for client, runs in (("Python client", fifty_by_workers), ("wrk", wrk_by_workers)):
        if runs:
            p99 = ", ".join(f"{_workers(w)} {runs[w]['p99_ms']:.2f} ms" for w in sorted(runs))
            print(
                f"goal single p99 < 10 ms at 50 clients ({client}): "
                f"{'met' if min(f['p99_ms'] for f in runs.values()) < 10 else 'NOT met'} ({p99})"
            )
    engine.dispose()


if __name__ == "__main__":
    main()

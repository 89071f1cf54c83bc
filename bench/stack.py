"""The stack's tile speed (issue 19, Speed): what nginx in front of several workers gives.

On the Jinshui demo database, the same list of public grids tiles (every z12–z16 tile
meeting the district, shuffled), gzip asked, loaded with wrk (``--connections``
keep-alive connections, closed loop, ``--seconds`` per run, runs interleaved ``--rounds``
times; the median run is reported):

1. **warm through the stack**: ``gridbranch stack up --workers N`` (nginx's proxy_cache,
   revalidating every request with If-None-Match; the workers' in-process cache warm);
   against **nginx serving the same tiles as static files** (the bytes the stack served,
   written to disk, another private nginx): the serving limit on this machine. Goal ≥ 80 %.
2. **cache off through the stack**: the same with the workers' tile cache off
   (``GRIDBRANCH_TILES_CACHE=false``: every tile drawn), against **one worker without
   nginx**, cache off too. Goal ≥ 1.7× with 2 workers.

Usage: .venv/bin/python bench/stack.py [--workers 2] [--connections 8] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, demo_engine, fmt, free_port, served, wrk_available, wrk_load  # noqa: E402
from bench.tiles import ACCEPT, district_tiles  # noqa: E402
from geo_api.stack import NGINX  # noqa: E402

#: The workers' environment in every configuration: the load comes from loopback
#: (exempt from the rate limits, which are not measured here), no access logs.
ENV = {
    "GRIDBRANCH_DEMO": "true",
    "GRIDBRANCH_ACCESS_LOG": "false",
    "GRIDBRANCH_RATE_LIMIT_EXEMPT": '["127.0.0.1"]',
    "PYTHONPATH": str(ROOT),
}


def _cli(env: dict[str, str], *args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "geo_api.cli", *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"gridbranch {' '.join(args)} failed:\n{out.stdout}{out.stderr}")


@contextmanager
def stack(workers: int, extra: dict[str, str] | None = None):
    """A stack of ``workers`` on free ports in a directory of its own; yields nginx's port."""
    root = Path(tempfile.mkdtemp(prefix="gridbranch-bench-stack-"))
    root.chmod(0o755)  # nginx's workers (www-data under root) must reach it
    port = free_port()
    while any(_taken(port + i) for i in range(workers + 1)):
        port = free_port()
    env = {**os.environ, **ENV, **(extra or {}), "GRIDBRANCH_STACK_DIR": str(root)}
    try:
        _cli(env, "stack", "up", "--port", str(port), "--workers", str(workers))
        yield port
    finally:
        _cli(env, "stack", "down")
        shutil.rmtree(root, ignore_errors=True)


def _taken(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


STATIC_CONF = """
worker_processes auto;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {root}/tmp;
    proxy_temp_path {root}/tmp;
    fastcgi_temp_path {root}/tmp;
    uwsgi_temp_path {root}/tmp;
    scgi_temp_path {root}/tmp;
    server {{
        listen 127.0.0.1:{port};
        location /tiles/ {{
            root {root}/files;
            default_type application/vnd.mapbox-vector-tile;
            add_header Content-Encoding gzip;
            etag on;
        }}
    }}
}}
"""


def fetch_all(port: int, paths: list[str]) -> dict[str, bytes]:
    """The gzipped bodies of ``paths`` served on ``port`` (200s only; 204s have none)."""
    import http.client

    bodies = {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for path in paths:
            conn.request("GET", path, headers=ACCEPT)
            reply = conn.getresponse()
            body = reply.read()
            if reply.status == 200:
                bodies[path] = body
    finally:
        conn.close()
    return bodies


@contextmanager
def static_nginx(bodies: dict[str, bytes]):
    """A private nginx serving ``bodies`` as files (the same bytes, gzip already)."""
    root = Path(tempfile.mkdtemp(prefix="gridbranch-bench-static-"))
    root.chmod(0o755)
    (root / "tmp").mkdir()
    for path, body in bodies.items():
        target = root / "files" / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    for folder in [root, *root.rglob("*")]:
        folder.chmod(0o755 if folder.is_dir() else 0o644)
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(STATIC_CONF.format(root=root, port=port))
    subprocess.run([NGINX, "-p", str(root), "-c", str(conf)], check=True, capture_output=True)
    try:
        yield port
    finally:
        subprocess.run([NGINX, "-p", str(root), "-c", str(conf), "-s", "quit"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def median(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["per_s"])[len(runs) // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    if not wrk_available():
        sys.exit("wrk is not installed (apt-get install wrk; scripts/setup.sh does)")
    engine = demo_engine()
    tiles = district_tiles(engine, zooms=range(12, 17))
    engine.dispose()
    paths = [f"/tiles/grids/{z}/{x}/{y}.mvt" for z, x, y in tiles]
    n, c, s = args.workers, args.connections, args.seconds
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"{len(paths)} public grids tiles z12–16, gzip, wrk {c} connections, {s:g} s a run, {args.rounds} rounds; "
        f"{os.cpu_count()} cores, load average {load} (figures from a shared machine move with it)"
    )

    def runs(port: int, listing: list[str]) -> dict:
        wrk_load(port, listing, c, 1, ACCEPT)  # warm (and settle) before the measured runs
        return median([wrk_load(port, listing, c, s, ACCEPT) for _ in range(args.rounds)])

    with stack(n) as port:
        bodies = fetch_all(port, paths)  # warms nginx's cache and the workers'
        served_paths = list(bodies)
        warm = runs(port, served_paths)
        with static_nginx(bodies) as static_port:
            static = runs(static_port, served_paths)
    with stack(n, {"GRIDBRANCH_TILES_CACHE": "false"}) as port:
        fetch_all(port, served_paths)  # nginx holds every tile: each request a revalidation, as in use
        cold_stack = runs(port, served_paths)
    with served({**ENV, "GRIDBRANCH_TILES_CACHE": "false"}, workers=1) as port:
        cold_one = runs(port, served_paths)

    rows = [
        (f"warm, through the stack ({n} workers)", warm),
        ("the same tiles as static files, nginx", static),
        (f"cache off, through the stack ({n} workers)", cold_stack),
        ("cache off, one worker, no nginx", cold_one),
    ]
    for name, r in rows:
        print(f"  {name:<44} {fmt(r)}")
    ratio_static = warm["per_s"] / static["per_s"]
    ratio_workers = cold_stack["per_s"] / cold_one["per_s"]
    print(f"warm through the stack / static files: {ratio_static:.1%} (goal >= 80 %)")
    print(f"cache off, stack of {n} / one worker without nginx: {ratio_workers:.2f}x (goal >= 1.7x with 2 workers)")
    if any(r["non_2xx"] for _, r in rows):
        print("warning: some answers were not 2xx: " + ", ".join(f"{name} {r['non_2xx']}" for name, r in rows))


if __name__ == "__main__":
    main()

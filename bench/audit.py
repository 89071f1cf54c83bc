"""The personal-data audit's cost: a members read (``GET /v1/registrations``) and a private
``members`` tile as a district admin, with the audit off, on (rows written in groups
after the answer) and on with ``GRIDBRANCH_AUDIT_WAIT`` (each answer waits until its
row is committed); single locates, which carry no personal data, alongside to show
they are untouched. Same demo database, same requests, the servers side by side and
loaded in turn, round after round (medians); ratios against the audit off (goal: ≤ 1.05
on tiles and locate), and a second server with the audit off for the noise.

    .venv/bin/python bench/audit.py [--requests 3000] [--clients 8]
"""

from __future__ import annotations

import argparse
import math
import secrets
import statistics
import sys
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from bench.common import demo_engine, ensure_accounts, get_request, load, served  # noqa: E402

#: "off again" is a second server with the audit off: how far two identical servers drift
#: apart on this machine is the noise the other ratios are read against.
CONFIGS = {
    "off": {"GRIDBRANCH_AUDIT_ENABLED": "false"},
    "on": {"GRIDBRANCH_AUDIT_ENABLED": "true"},
    "on+wait": {"GRIDBRANCH_AUDIT_ENABLED": "true", "GRIDBRANCH_AUDIT_WAIT": "true"},
    "off again": {"GRIDBRANCH_AUDIT_ENABLED": "false"},
}


def _tiles(engine, n: int) -> list[str]:
    """z15 members,grids tiles over current residences (the admin map's view)."""
    with engine.connect() as conn:
        pts = conn.execute(
            text("SELECT ST_X(geom), ST_Y(geom) FROM residences WHERE ended_at IS NULL ORDER BY id LIMIT 400")
        ).all()
    z, out = 15, set()
    for lon, lat in pts:
        x = int((lon + 180) / 360 * 2**z)
        y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z)
        out.add(f"/tiles/members,grids/{z}/{x}/{y}.mvt")
    tiles = sorted(out)
    return [tiles[i % len(tiles)] for i in range(n)]


def _median(runs: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in runs) for key in ("per_s", "p50_ms", "p95_ms")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--requests",
        type=int,
        default=1000,
        help="requests per kind, configuration and round (members reads: a twentieth)",
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    from geo_api.security import issue_token
    from layers.clock import SYSTEM

    engine = demo_engine()
    ensure_accounts(engine)
    url = engine.url.render_as_string(hide_password=False)
    tiles = _tiles(engine, args.requests)
    with engine.connect() as conn:
        lon, lat = conn.execute(
            text(
                "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) p FROM "
                "grid_versions WHERE valid_to IS NULL ORDER BY id LIMIT 1) q"
            )
        ).one()
        before = conn.execute(text("SELECT count(*) FROM audit_log")).scalar()
        epoch = conn.execute(text("SELECT token_epoch FROM users WHERE username = 'admin'")).scalar_one()
    secret = secrets.token_urlsafe(48)
    now = SYSTEM.now()
    token = issue_token(
        secret,
        "admin",
        epoch=epoch,
        session_id="bench",
        started=now,
        session_end=now + timedelta(hours=2),
        idle_minutes=120,
        now=now,
    )
    auth = {"Authorization": f"Bearer {token}"}
    kinds = {
        "members read": [get_request("/v1/registrations?limit=50", auth)] * max(20, args.requests // 20),
        "members tile": [get_request(t, {**auth, "Accept-Encoding": "gzip"}) for t in tiles],
        "locate": [get_request(f"/v1/locate?lon={lon:.6f}&lat={lat:.6f}")] * args.requests,
    }
    results: dict[str, dict[str, list[dict]]] = {kind: {name: [] for name in CONFIGS} for kind in kinds}
    with ExitStack() as stack:
        # the configurations served at once and loaded in turn, round after round:
        # whatever else the machine does then weighs on all three alike
        ports = {
            name: stack.enter_context(served({"GRIDBRANCH_DATABASE_URL": url, "GRIDBRANCH_AUTH_SECRET": secret, **env}))
            for name, env in CONFIGS.items()
        }
        for _name, port in ports.items():
            for reqs in kinds.values():
                load(port, reqs[: max(50, len(reqs) // 5)], args.clients)  # warm the caches
        names = list(ports)
        for i in range(args.rounds):
            for kind, reqs in kinds.items():
                # each round starts at the next configuration: none always runs first or last
                for name in names[i % len(names) :] + names[: i % len(names)]:
                    results[kind][name].append(load(ports[name], reqs, args.clients))
    with engine.connect() as conn:
        after = conn.execute(text("SELECT count(*) FROM audit_log")).scalar()
    print(
        f"{args.requests:,} requests per kind and round, {args.clients} clients, 1 uvicorn worker each; "
        f"audit rows written {after - before:,}"
    )
    for kind, by in results.items():
        base = _median(by["off"])
        print(f"\n{kind} (median of {args.rounds} rounds)")
        for name, runs in by.items():
            r = _median(runs)
            print(
                f"  audit {name:9s} {r['per_s']:8,.1f}/s  p50 {r['p50_ms']:7.2f} ms  p95 {r['p95_ms']:7.2f} ms"
                f"  | time per request ×{base['per_s'] / r['per_s']:.3f} of off, p50 ×{r['p50_ms'] / base['p50_ms']:.3f}"
            )
    engine.dispose()


if __name__ == "__main__":
    main()

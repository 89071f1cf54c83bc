"""Event reporting benchmark (issue: events — report, route, dispatch, track, evaluate).

Serves the real app (uvicorn, one worker) on a scratch copy of the Jinshui demo database
and sends POST /v1/events reports at random points in the district from 50 concurrent
keep-alive clients (closed loop). Prints, in one run on the same data:
- anonymous public reports (locate, route, duplicates check, store, log): reports/s and
  p50 / p95 / p99 latency — goal ≥ 300 reports/s with p95 < 100 ms;
- the dispatcher's hotline intake (the same plus member suggestions by KNN);
- the baseline: GET /v1/locate at the same points (no write), and the ratio;
- one client's latency, and the CPU the app and PostgreSQL spend per report (with the
  ceilings they imply on this machine), both with one client (every report its own
  transaction) and during the main run (reports arriving together are stored in groups,
  one transaction each: ``layers.events_batch``);
then checks in the database that every report was stored once, in the grid containing
its point (current version), with its department and its first log entry.

The scratch database ``gridbranch_bench_events`` is created from the demo database as a
template (``CREATE DATABASE … TEMPLATE gridbranch``, which needs nobody else connected
to it); when that is refused, the demo is loaded into it afresh (about a minute). It is
dropped at the end (``--keep`` keeps it). No event is written to the demo database (it
is only migrated to head, as serving it would).

Usage: .venv/bin/python bench/events.py [--reports 20000] [--hotline 5000] [--clients 50] [--workers 1] [--keep]
(``--workers 2`` serves with two uvicorn processes, as a deployment on both cores would.)
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.common import demo_engine, fmt, get_request, load, served  # noqa: E402
from bench.locate import random_points  # noqa: E402

SCRATCH = "gridbranch_bench_events"


GOAL_PER_S, GOAL_P95_MS = 300, 100


def scratch_database(source_url: str) -> str:
    """A fresh copy of the demo database; returns its URL."""
    import psycopg2
    from psycopg2 import sql

    from layers import cluster as pg
    from layers import db, migrate

    u = make_url(source_url)
    pg.drop_database(source_url, SCRATCH)
    conn = psycopg2.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname="postgres")
    conn.autocommit = True
    copied = True
    try:
        with conn.cursor() as cur:
            try:
                cur.execute(
                    sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        sql.Identifier(SCRATCH), sql.Identifier(u.database)
                    )
                )
            except psycopg2.errors.ObjectInUse:
                print(f"(the demo database {u.database} is in use: loading the demo into {SCRATCH} afresh)")
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(SCRATCH)))
                copied = False
    finally:
        conn.close()
    url = u.set(database=SCRATCH).render_as_string(hide_password=False)
    engine = db.make_engine(url, 2)
    migrate.upgrade(engine)
    if not copied:
        from geo_api.cli import load_demo_if_missing

        load_demo_if_missing(engine)
    with engine.begin() as c:  # the demo accounts (kept as they are when copied)
        from sqlalchemy.orm import Session

        from geo_api.accounts import ensure_demo_accounts

        with Session(bind=c) as session:
            if session.execute(text("SELECT count(*) FROM users WHERE username = 'dispatcher'")).scalar() == 0:
                ensure_demo_accounts(session, secrets.token_urlsafe(12))
                session.flush()
    engine.dispose()
    return url


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_pids(port: int) -> list[int]:
    """The ``gridbranch serve`` process serving ``port`` and its worker processes."""
    master = None
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"geo_api.cli import main" in cmd and f"'--port', '{port}'".encode() in cmd:  # bench.common.served
                master = int(proc.name)
    if master is None:
        return []
    children = Path(f"/proc/{master}/task/{master}/children")
    return [master, *(int(c) for c in children.read_text().split())] if children.exists() else [master]


def backend_pids(engine) -> list[int]:
    with engine.connect() as conn:
        return (
            conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"), {"d": SCRATCH}
            )
            .scalars()
            .all()
        )


def cpu_per_request(port: int, engine, requests: list[bytes]) -> tuple[dict, float, float]:
    """Send ``requests`` from one client (so the server keeps one database connection)
    and measure the CPU the app and its PostgreSQL backends spent per request (ms)."""
    app, pgs = server_pids(port), backend_pids(engine)
    a0, b0 = sum(map(_cpu_s, app)), sum(map(_cpu_s, pgs))
    figures = load(port, requests, 1)
    a1, b1 = sum(map(_cpu_s, app)), sum(map(_cpu_s, pgs))
    return figures, 1000 * (a1 - a0) / len(requests), 1000 * (b1 - b0) / len(requests)


def report_requests(lon, lat, categories, run: str, token: str | None, channel: str) -> list[bytes]:
    rng = np.random.default_rng(11)
    cats = rng.choice(categories, size=len(lon))
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    out = []
    for i, (x, y, c) in enumerate(zip(lon.tolist(), lat.tolist(), cats.tolist())):
        body = orjson.dumps(
            {
                "lon": round(x, 7),
                "lat": round(y, 7),
                "crs": "wgs84",
                "category": c,
                "channel": channel,
                "description": f"{run}-{i} 压测上报：{c}",
            }
        )
        out.append(
            (
                f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{auth}"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
    return out


CHECK_SQL = text(
    """
    SELECT count(*) AS stored,
           count(*) FILTER (WHERE e.grid_id IS NOT NULL AND e.department_id IS NOT NULL
                            AND e.department_id = COALESCE(r.department_id, c.department_id)) AS routed,
           count(*) FILTER (WHERE gv.valid_to IS NULL AND ST_Covers(gv.geom, e.geom)) AS in_their_grid,
           count(*) FILTER (WHERE (SELECT count(*) FROM event_log l WHERE l.event_id = e.id AND l.action = 'report') = 1)
               AS logged,
           count(DISTINCT e.description) AS distinct_reports
    FROM events e
    JOIN event_categories c ON c.code = e.category_code
    JOIN grid_versions gv ON gv.id = e.grid_version_id
    JOIN grids g ON g.id = e.grid_id
    JOIN admin_areas cm ON cm.id = g.community_id
    LEFT JOIN event_routes r ON r.category_code = c.code AND r.street_code = (SELECT code FROM admin_areas WHERE id = cm.parent_id)
    WHERE e.description LIKE :run
    """
)


def check(engine, run: str, n: int) -> bool:
    with engine.connect() as conn:
        r = conn.execute(CHECK_SQL, {"run": f"{run}-%"}).first()
        gapped = conn.execute(
            text(
                "SELECT count(*) FROM events e JOIN grid_versions gv ON gv.id = e.grid_version_id "
                "WHERE e.description LIKE :run AND NOT ST_Covers(gv.geom, e.geom)"
            ),
            {"run": f"{run}-%"},
        ).scalar()
    ok = r.stored == n and r.routed == n and r.logged == n and r.distinct_reports == n
    print(
        f"  check: {r.stored:,} of {n:,} stored, {r.routed:,} routed to their department, "
        f"{r.in_their_grid:,} inside their grid's current version (+{gapped:,} in gaps/edges, "
        f"attached to the nearest grid), {r.logged:,} with their report log entry — {'OK' if ok else 'MISMATCH'}"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=20_000, help="public reports in the main run")
    parser.add_argument("--hotline", type=int, default=5_000, help="dispatcher hotline reports")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1, as served)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()

    from geo_api.security import issue_token
    from layers import cluster as pg
    from layers import db

    demo = demo_engine()
    source_url = demo.url.render_as_string(hide_password=False)
    with demo.connect() as conn:
        categories = conn.execute(text("SELECT code FROM event_categories ORDER BY code")).scalars().all()
    lon, lat = random_points(demo, args.reports + args.hotline + 2_000, seed=23)
    demo.dispose()
    url = scratch_database(source_url)
    engine = db.make_engine(url, 2)
    secret = secrets.token_urlsafe(48)
    token = issue_token(secret, "dispatcher", 120)
    run = f"bench{int(time.time())}"
    print(
        f"scratch database {SCRATCH}; {args.reports:,} public + {args.hotline:,} hotline reports at random points "
        f"in 金水区, {len(categories)} categories, {args.clients} clients, {args.workers} uvicorn worker(s)"
    )
    try:
        with served({"GRIDBRANCH_DATABASE_URL": url, "GRIDBRANCH_AUTH_SECRET": secret}, args.workers) as port:
            warm = report_requests(lon[-2000:-1000], lat[-2000:-1000], categories, run + "w", None, "public")
            load(port, warm, args.clients)
            base = [get_request(f"/v1/locate?lon={x:.7f}&lat={y:.7f}") for x, y in zip(lon[-1000:], lat[-1000:])]
            load(port, base, args.clients)  # warm
            baseline = load(
                port,
                [
                    get_request(f"/v1/locate?lon={x:.7f}&lat={y:.7f}")
                    for x, y in zip(lon[: args.reports], lat[: args.reports])
                ],
                args.clients,
            )
            app, pgs = server_pids(port), backend_pids(engine)
            a0, b0 = sum(map(_cpu_s, app)), sum(map(_cpu_s, pgs))
            public = load(
                port,
                report_requests(lon[: args.reports], lat[: args.reports], categories, run + "p", None, "public"),
                args.clients,
            )
            gone = [p for p in pgs if not Path(f"/proc/{p}").exists()]
            load_app_ms = 1000 * (sum(map(_cpu_s, app)) - a0) / args.reports
            load_pg_ms = 1000 * (sum(map(_cpu_s, pgs)) - b0) / args.reports
            hot = args.reports + args.hotline
            hotline = load(
                port,
                report_requests(
                    lon[args.reports : hot], lat[args.reports : hot], categories, run + "h", token, "hotline"
                ),
                args.clients,
            )
            single, app_ms, pg_ms = cpu_per_request(
                port, engine, report_requests(lon[-1000:], lat[-1000:], categories, run + "s", None, "public")
            )
        print(f"public reports (POST /v1/events, anonymous): {fmt(public)}")
        print(f"hotline reports (dispatcher, with member suggestions): {fmt(hotline)}")
        print(f"baseline GET /v1/locate, same points, {args.clients} clients: {fmt(baseline)}")
        print(
            f"ratio report / locate throughput: {public['per_s'] / baseline['per_s']:.2f}x; "
            f"p95 report / locate: {public['p95_ms'] / baseline['p95_ms']:.1f}x"
        )
        print(f"one client, 1,000 public reports: {fmt(single)}")
        cores = os.cpu_count() or 1

        def ceilings(a_ms, p_ms):
            return (
                f"ceilings on this machine ({cores} cores, nothing else running): "
                f"{1000 * args.workers / a_ms if a_ms else float('inf'):,.0f}/s for {args.workers} app process(es), "
                f"{cores * 1000 / (a_ms + p_ms) if a_ms + p_ms else float('inf'):,.0f}/s for all cores"
            )

        print(
            f"CPU per report, one client (each report its own transaction): app {app_ms:.2f} ms + PostgreSQL "
            f"{pg_ms:.2f} ms; {ceilings(app_ms, pg_ms)}"
        )
        print(
            f"CPU per report, {args.clients} clients (reports stored in groups): app {load_app_ms:.2f} ms + "
            f"PostgreSQL {load_pg_ms:.2f} ms{' (some backends left: PostgreSQL undercounted)' if gone else ''}; "
            f"{ceilings(load_app_ms, load_pg_ms)}"
        )
        ok = (
            check(engine, run + "p", args.reports)
            & check(engine, run + "h", args.hotline)
            & check(engine, run + "s", 1000)
        )
        met = public["per_s"] >= GOAL_PER_S and public["p95_ms"] < GOAL_P95_MS and not public["non_2xx"]
        print(
            f"goal >= {GOAL_PER_S} reports/s with p95 < {GOAL_P95_MS} ms at {args.clients} clients: "
            f"{'met' if met else 'NOT met'} ({public['per_s']:,.0f}/s, p95 {public['p95_ms']:.1f} ms); "
            f"stored and routed: {'all' if ok else 'NOT all'}"
        )
    finally:
        engine.dispose()
        if not args.keep:
            pg.drop_database(url, SCRATCH)


if __name__ == "__main__":
    main()

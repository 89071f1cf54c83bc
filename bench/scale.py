"""Scale benchmark (issue 19, item 8): a generated city of 10 districts — 5,000 grids,
160,000 members with their residences and registrations, 300,000 events over a year —
in the service's own schema (a scratch database migrated to head), and the same rows in
the partitioned layout of ``docs/scale.md`` (``bench/scale_partitioned.sql``: people and
events split by county, events also by year). Prints, side by side on the same data:

* table sizes and bytes per row, and what they come to at national scale (1M grids,
  100M members, 10M events a year kept 5 years);
* a county's month of events by state, a county's registrations per grid, and the
  partitions each reads: the service's schema (joins to the county through grids) vs
  the partitioned layout (the county's partitions only), and the ratio;
* locating points in the shared grid layer and a z14 tile of grids, which the layout
  leaves as they are (one shared table).

Usage: .venv/bin/python bench/scale.py [--districts 10] [--members 160000] [--events 300000] [--keep]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from bench import common  # noqa: E402

SCRATCH_DB = "gridbranch_bench_scale"
LAYOUT = Path(__file__).resolve().parent / "scale_partitioned.sql"
#: a district's streets, a street's communities, a community's grids (5 × 2 cells)
STREETS, COMMUNITIES, GRIDS = 10, 5, 10
SIZE = 0.1  # a district's side in degrees
NATIONAL = {"grids": 1_000_000, "members": 100_000_000, "events": 10_000_000 * 5}


def generate(engine, districts: int, members: int, events: int) -> list[str]:
    """The city, in the service's tables; the districts' 6-digit codes."""
    codes = [str(410102 + i) for i in range(districts)]
    with engine.begin() as conn:
        conn.execute(text("SELECT setseed(0.19)"))
        for i, code in enumerate(codes):
            x0, y0 = 113.0 + (i % 5) * (SIZE + 0.02), 34.5 + (i // 5) * (SIZE + 0.02)
            p = {"c": code, "x": x0, "y": y0, "s": SIZE, "ns": STREETS, "nc": COMMUNITIES}
            conn.execute(
                text(
                    """INSERT INTO admin_areas (code, name, level, geom)
                       VALUES (:c || '000000', '区' || :c, 'district',
                               ST_Multi(ST_MakeEnvelope(:x, :y, :x + :s, :y + :s, 4326)))"""
                ),
                p,
            )
            conn.execute(
                text(
                    """INSERT INTO admin_areas (code, name, level, parent_id, geom)
                       SELECT :c || lpad(s::text, 3, '0') || '000', '街道' || s, 'street', d.id,
                              ST_Multi(ST_MakeEnvelope(:x, :y + (s - 1) * :s / :ns, :x + :s, :y + s * :s / :ns, 4326))
                       FROM generate_series(1, :ns) s, admin_areas d WHERE d.code = :c || '000000'"""
                ),
                p,
            )
            conn.execute(
                text(
                    """INSERT INTO admin_areas (code, name, level, parent_id, geom)
                       SELECT left(st.code, 9) || lpad(k::text, 3, '0'), st.name || '社区' || k, 'community', st.id,
                              ST_Multi(ST_MakeEnvelope(:x + (k - 1) * :s / :nc, ST_YMin(st.geom),
                                                       :x + k * :s / :nc, ST_YMax(st.geom), 4326))
                       FROM admin_areas st, generate_series(1, :nc) k
                       WHERE st.level = 'street' AND st.code LIKE :c || '%'"""
                ),
                p,
            )
        # every community cut into 5 × 2 grids
        conn.execute(
            text(
                """INSERT INTO grids (code, name, community_id)
                   SELECT c.code || lpad(n::text, 3, '0'), c.name || '第' || n || '网格', c.id
                   FROM admin_areas c, generate_series(1, :g) n WHERE c.level = 'community'"""
            ),
            {"g": GRIDS},
        )
        conn.execute(
            text(
                """INSERT INTO grid_versions (grid_id, version, geom, valid_from)
                   SELECT g.id, 1, ST_Multi(ST_MakeEnvelope(
                              ST_XMin(c.geom) + ((n - 1) % 5) * w, ST_YMin(c.geom) + ((n - 1) / 5) * h,
                              ST_XMin(c.geom) + ((n - 1) % 5 + 1) * w, ST_YMin(c.geom) + ((n - 1) / 5 + 1) * h, 4326)),
                          timestamptz '2025-01-01 00:00+08'
                   FROM grids g JOIN admin_areas c ON c.id = g.community_id,
                        LATERAL (SELECT right(g.code, 3)::int AS n,
                                        (ST_XMax(c.geom) - ST_XMin(c.geom)) / 5 AS w,
                                        (ST_YMax(c.geom) - ST_YMin(c.geom)) / 2 AS h) cell"""
            )
        )
        conn.execute(text("INSERT INTO departments (code, name) VALUES ('CG', '城管局'), ('ZJ', '住建局')"))
        conn.execute(
            text(
                """INSERT INTO event_categories (code, name, department_id, time_limit_hours, public_space)
                   SELECT c, n, d.id, 48, p FROM (VALUES ('road', '道路破损', 'CG', true),
                                                        ('house', '房屋安全', 'ZJ', false)) v(c, n, dc, p)
                   JOIN departments d ON d.code = v.dc"""
            )
        )
        per = members // len(codes)
        for i, code in enumerate(codes):
            x0, y0 = 113.0 + (i % 5) * (SIZE + 0.02), 34.5 + (i // 5) * (SIZE + 0.02)
            conn.execute(
                text(
                    """INSERT INTO members (number, name, phone, status)
                       SELECT :c || lpad(k::text, 7, '0'), '党员' || k, '138' || lpad(k::text, 8, '0'), 'in_service'
                       FROM generate_series(1, :n) k"""
                ),
                {"c": code, "n": per},
            )
            conn.execute(
                text(
                    """INSERT INTO residences (member_id, geom, source_crs, source_x, source_y, recorded_at)
                       SELECT id, g, 'wgs84', ST_X(g), ST_Y(g), timestamptz '2026-01-01 00:00+08'
                       FROM (SELECT m.id, ST_SetSRID(ST_MakePoint(:x + random() * :s, :y + random() * :s), 4326) AS g
                             FROM members m WHERE m.number LIKE :c || '%') p"""
                ),
                {"c": code, "x": x0 + 1e-6, "y": y0 + 1e-6, "s": SIZE - 2e-6},
            )
        conn.execute(
            text(
                """INSERT INTO registrations (member_id, residence_id, grid_id, grid_version_id, status, created_at)
                   SELECT r.member_id, r.id, v.grid_id, v.id,
                          CASE WHEN random() < 0.8 THEN 'confirmed' ELSE 'pending' END, r.recorded_at
                   FROM residences r JOIN grid_versions v ON ST_Intersects(v.geom, r.geom)
                   WHERE r.member_id % 4 <> 0"""  # a quarter not yet registered
            )
        )
        for i in range(len(codes)):
            x0, y0 = 113.0 + (i % 5) * (SIZE + 0.02), 34.5 + (i // 5) * (SIZE + 0.02)
            conn.execute(
                text(
                    """INSERT INTO events (geom, source_crs, category_code, channel, description, grid_id,
                                           grid_version_id, status, reported_at, dispatched_at, due_at, closed_at)
                       SELECT p.g, 'wgs84', CASE WHEN random() < 0.6 THEN 'road' ELSE 'house' END, 'public', '事件',
                              v.grid_id, v.id, p.status, p.at,
                              CASE WHEN p.status <> 'reported' THEN p.at + interval '1 hour' END,
                              CASE WHEN p.status <> 'reported' THEN p.at + interval '49 hours' END,
                              CASE WHEN p.status = 'closed' THEN p.at + interval '30 hours' END
                       FROM (SELECT ST_SetSRID(ST_MakePoint(:x + random() * :s, :y + random() * :s), 4326) AS g,
                                    (ARRAY['reported', 'dispatched', 'in_progress', 'handled', 'closed', 'closed',
                                           'closed'])[1 + floor(random() * 7)::int] AS status,
                                    timestamptz '2026-01-01 00:00+08' + random() * interval '364 days' AS at
                             FROM generate_series(1, :n)) p
                       JOIN grid_versions v ON ST_Intersects(v.geom, p.g)"""
                ),
                {"n": events // len(codes), "x": x0 + 1e-6, "y": y0 + 1e-6, "s": SIZE - 2e-6},
            )
        conn.execute(text("ANALYZE"))
    return codes


def fill_layout(engine, codes: list[str]) -> None:
    """The same rows in the partitioned layout."""
    with engine.begin() as conn:
        conn.connection.cursor().execute(LAYOUT.read_text())
        for code in codes:
            conn.execute(text("SELECT scale.add_district(:c, 2025, 2027)"), {"c": code})
        county = """(SELECT left(c.code, 6) FROM grids g JOIN admin_areas c ON c.id = g.community_id
                     WHERE g.id = {grid})"""
        conn.execute(
            text(
                """INSERT INTO scale.members (district_code, id, number, name, phone, status)
                   SELECT left(number, 6), id, number, name, phone, status FROM members"""
            )
        )
        conn.execute(
            text(
                """INSERT INTO scale.residences (district_code, id, member_id, geom, recorded_at, ended_at)
                   SELECT left(m.number, 6), r.id, r.member_id, r.geom, r.recorded_at, r.ended_at
                   FROM residences r JOIN members m ON m.id = r.member_id"""
            )
        )
        conn.execute(
            text(
                """INSERT INTO scale.registrations (district_code, id, member_id, grid_id, status, created_at)
                   SELECT left(m.number, 6), r.id, r.member_id, r.grid_id, r.status, r.created_at
                   FROM registrations r JOIN members m ON m.id = r.member_id"""
            )
        )
        conn.execute(
            text(
                f"""INSERT INTO scale.events (district_code, id, reported_at, geom, category_code, grid_id, status,
                                              due_at, closed_at)
                    SELECT {county.format(grid="e.grid_id")}, e.id, e.reported_at, e.geom, e.category_code,
                           e.grid_id, e.status, e.due_at, e.closed_at
                    FROM events e"""
            )
        )
        conn.execute(text("ANALYZE"))


QUERIES = {
    "a county's month of events by state": (
        """SELECT e.status, count(*) FROM events e JOIN grids g ON g.id = e.grid_id
           JOIN admin_areas c ON c.id = g.community_id
           WHERE c.code LIKE :county || '%'
             AND e.reported_at >= '2026-03-01 00:00+08' AND e.reported_at < '2026-04-01 00:00+08'
           GROUP BY e.status""",
        """SELECT status, count(*) FROM scale.events
           WHERE district_code = :county
             AND reported_at >= '2026-03-01 00:00+08' AND reported_at < '2026-04-01 00:00+08'
           GROUP BY status""",
    ),
    "a county's confirmed registrations per grid": (
        """SELECT r.grid_id, count(*) FROM registrations r JOIN grids g ON g.id = r.grid_id
           JOIN admin_areas c ON c.id = g.community_id
           WHERE c.code LIKE :county || '%' AND r.status = 'confirmed' GROUP BY r.grid_id""",
        """SELECT grid_id, count(*) FROM scale.registrations
           WHERE district_code = :county AND status = 'confirmed' GROUP BY grid_id""",
    ),
}

LOCATE = """SELECT g.code FROM grid_versions v JOIN grids g ON g.id = v.grid_id
            WHERE v.valid_to IS NULL AND ST_Intersects(v.geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326)) LIMIT 1"""
TILE = """SELECT length(ST_AsMVT(t, 'grids')) FROM (
              SELECT g.code, ST_AsMVTGeom(ST_Transform(v.geom, 3857), ST_TileEnvelope(14, :x, :y)) AS geom
              FROM grid_versions v JOIN grids g ON g.id = v.grid_id
              WHERE v.valid_to IS NULL AND v.geom && ST_Transform(ST_TileEnvelope(14, :x, :y), 4326)) t"""


def timed(conn, sql: str, params: dict, runs: int) -> float:
    """Median seconds of ``runs`` executions (after one warm-up)."""
    conn.execute(text(sql), params).all()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        conn.execute(text(sql), params).all()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def scanned(conn, sql: str, params: dict) -> int:
    """How many tables (partitions included) the plan of ``sql`` reads."""
    import json

    plan = conn.execute(text("EXPLAIN (FORMAT JSON) " + sql), params).scalar()
    plan = plan if isinstance(plan, list) else json.loads(plan)

    def walk(node) -> set[str]:
        out = {node["Relation Name"]} if "Relation Name" in node else set()
        for child in node.get("Plans", []):
            out |= walk(child)
        return out

    return len(walk(plan[0]["Plan"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--districts", type=int, default=10)
    parser.add_argument("--members", type=int, default=160_000)
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    print(f"load average at the start: {', '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    server = common.server_url()
    engine = common.scratch_database(server, SCRATCH_DB)
    try:
        t0 = time.perf_counter()
        codes = generate(engine, args.districts, args.members, args.events)
        t1 = time.perf_counter()
        fill_layout(engine, codes)
        t2 = time.perf_counter()
        with engine.connect() as conn:
            n = dict(
                conn.execute(
                    text(
                        """SELECT 'grids', count(*) FROM grids UNION ALL SELECT 'members', count(*) FROM members
                           UNION ALL SELECT 'residences', count(*) FROM residences
                           UNION ALL SELECT 'registrations', count(*) FROM registrations
                           UNION ALL SELECT 'events', count(*) FROM events"""
                    )
                ).all()
            )
            print(
                f"generated {args.districts} districts: {n['grids']:,} grids, {n['members']:,} members, "
                f"{n['registrations']:,} registrations, {n['events']:,} events in {t1 - t0:.1f} s; "
                f"partitioned copy in {t2 - t1:.1f} s"
            )
            print("\nsize (table, its indexes and TOAST) and what it comes to at national scale:")
            for table, national in (
                ("grid_versions", NATIONAL["grids"]),
                ("members", NATIONAL["members"]),
                ("residences", NATIONAL["members"]),
                ("registrations", NATIONAL["members"] * 0.75),
                ("events", NATIONAL["events"]),
            ):
                size = conn.execute(text("SELECT pg_total_relation_size(CAST(:t AS regclass))"), {"t": table}).scalar()
                rows = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                per = size / max(rows, 1)
                print(
                    f"  {table:14} {rows:>9,} rows {size / 2**20:>8,.1f} MiB = {per:>6,.0f} B/row "
                    f"→ {national:>13,.0f} rows ≈ {per * national / 2**30:>8,.1f} GiB"
                )
            county = codes[len(codes) // 2]
            print(f"\nqueries of county {county}, median of {args.runs} (service schema vs partitioned layout):")
            for what, (plain, parted) in QUERIES.items():
                a = timed(conn, plain, {"county": county}, args.runs)
                b = timed(conn, parted, {"county": county}, args.runs)
                sa, sb = scanned(conn, plain, {"county": county}), scanned(conn, parted, {"county": county})
                print(
                    f"  {what}: {a * 1000:,.1f} ms ({sa} tables read) vs {b * 1000:,.1f} ms "
                    f"({sb} partitions read): {a / b:,.1f}x"
                )
            import random

            rnd = random.Random(19)
            # points inside the districts: each finds its grid
            points = []
            for _ in range(1000):
                i = rnd.randrange(len(codes))
                x0, y0 = 113.0 + (i % 5) * (SIZE + 0.02), 34.5 + (i // 5) * (SIZE + 0.02)
                points.append((x0 + rnd.random() * SIZE, y0 + rnd.random() * SIZE))
            t = time.perf_counter()
            for x, y in points:
                conn.execute(text(LOCATE), {"x": x, "y": y}).all()
            per_locate = (time.perf_counter() - t) / len(points)
            print(f"\nshared layers: locate {per_locate * 1e6:,.0f} µs per point (1,000 points, one query each)")
            # the tile holding the city's centre at z14
            import math

            lon, lat = 113.3, 34.61
            x = int((lon + 180) / 360 * 2**14)
            y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**14)
            tile = timed(conn, TILE, {"x": x, "y": y}, args.runs)
            print(f"  a z14 tile of grids (14/{x}/{y}) in SQL: {tile * 1000:,.1f} ms")
    finally:
        engine.dispose()
        if not args.keep:
            from layers import cluster as pg

            pg.drop_database(server, SCRATCH_DB)


if __name__ == "__main__":
    main()

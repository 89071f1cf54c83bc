"""Import benchmark (issue 16, Speed).

``--roster``: the member roster import (``gridbranch ingest members``). Generates
1,000,000 roster rows as CSV (UTF-8, Chinese headers, 60 % of the rows with a GCJ-02
residence) and 100,000 as XLSX, in a scratch database on the private cluster (or
``GRIDBRANCH_TEST_DATABASE_URL``'s server; ``gridbranch_bench_ingest``, dropped
afterwards) with 100 work-unit branches; then times, each in a fresh process (so that
its peak resident memory is its own):

* the dry run: read, check every row, count the changes against the stored data
  (staging through COPY, rolled back);
* the commit into the empty roster (1,000,000 members created, 600,000 residences);
* the same file again (nothing changes);
* the baseline: PostgreSQL ``COPY`` of the same CSV into a bare table of text columns
  (what a DBA would do, no checks at all), and the ratio.

Prints rows per second and peak memory (``ru_maxrss``). Goal: ≥ 50,000 rows/s from CSV.

Usage: .venv/bin/python bench/ingest.py --roster [--rows 1000000] [--xlsx-rows 100000] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from sqlalchemy import text  # noqa: E402

SCRATCH_DB = "gridbranch_bench_ingest"
HEADER = ["党员编号", "姓名", "手机号码", "所在支部", "党员类别", "经度", "纬度", "坐标系"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国红梅玉兰志强海燕晓东"
STATUSES = ("在职党员", "在职党员", "在职党员", "流动党员", "退休党员")


def server_url() -> str:
    from geo_api.settings import DatabaseSettings
    from layers import cluster as pg
    from layers import db

    given = os.environ.get("GRIDBRANCH_TEST_DATABASE_URL")
    if given:
        return db.database_url(DatabaseSettings(database_url=given), start=False)
    settings = DatabaseSettings()
    c = pg.Cluster(root=settings.db_dir, port=settings.db_port)
    pg.start(c)
    return c.url("postgres")


def scratch_url(server: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(server).set(database=SCRATCH_DB).render_as_string(hide_password=False)


def fresh_database(server: str) -> None:
    from layers import cluster as pg
    from layers import db, migrate

    pg.drop_database(server, SCRATCH_DB)
    admin = db.make_engine(server, 1)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{SCRATCH_DB}"'))
    admin.dispose()
    engine = db.make_engine(scratch_url(server), 1)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO branches (code, name, kind) SELECT 'W' || lpad(i::text, 3, '0'), "
                          "'单位党支部' || i, 'work_unit' FROM generate_series(1, 100) i"))
    engine.dispose()


def roster_rows(n: int, prefix: str, seed: int):
    """n generated roster rows (lists of text), reproducible."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, len(SURNAMES), n)
    g1 = rng.integers(0, len(GIVEN), n)
    g2 = rng.integers(-len(GIVEN), len(GIVEN), n)  # negative: a two-character name
    phones = rng.integers(0, 10**8, n)
    branches = rng.integers(1, 101, n)
    statuses = rng.integers(0, len(STATUSES), n)
    located = rng.random(n) < 0.6
    lon = rng.uniform(113.55, 113.80, n)
    lat = rng.uniform(34.70, 34.85, n)
    for i in range(n):
        name = SURNAMES[s[i]] + GIVEN[g1[i]] + (GIVEN[g2[i]] if g2[i] >= 0 else "")
        yield [f"{prefix}{i:08d}", name, f"139{phones[i]:08d}", f"W{branches[i]:03d}", STATUSES[statuses[i]],
               *((f"{lon[i]:.6f}", f"{lat[i]:.6f}", "gcj02") if located[i] else ("", "", ""))]


def write_csv(path: Path, n: int) -> None:
    with open(path, "w", newline="", encoding="utf-8-sig") as handle:
        w = csv.writer(handle)
        w.writerow(HEADER)
        w.writerows(roster_rows(n, "CS", 1))


def write_xlsx(path: Path, n: int) -> None:
    import openpyxl

    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("花名册")
    ws.append(HEADER)
    for r in roster_rows(n, "XL", 2):
        ws.append(r)
    wb.save(path)


# ---- measured phases, each in a child process -------------------------------------------------


def _cpu() -> float:
    """CPU seconds of this process so far (the machine may be shared: wall time alone
    says little)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _phase(url: str, path: str, commit: bool, out) -> None:
    from sqlalchemy.orm import Session

    from ingest import roster
    from layers import db

    c0 = _cpu()
    t0 = time.perf_counter()
    table = roster.read(Path(path), "members")
    t1 = time.perf_counter()
    engine = db.make_engine(url, 1)
    with Session(engine) as session:
        plan = roster.plan(session, "members", table)
        t2 = time.perf_counter()
        counts = roster.changes(session.connection(), plan, write=commit)
        if commit:
            session.commit()
        else:
            session.rollback()
    t3 = time.perf_counter()
    engine.dispose()
    out.put({"read": t1 - t0, "check": t2 - t1, "db": t3 - t2, "total": t3 - t0, "cpu": _cpu() - c0,
             "rows": plan.total,
             "good": len(plan.good), "rejected": len(plan.rejects), "counts": counts,
             "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def _baseline(url: str, path: str, out) -> None:
    import psycopg2
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = psycopg2.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database)
    t0 = time.perf_counter()
    with conn, conn.cursor() as cur, open(path, encoding="utf-8-sig") as handle:
        cur.execute("DROP TABLE IF EXISTS bench_copy")
        cur.execute("CREATE TABLE bench_copy (number text, name text, phone text, branch text, status text, "
                    "lon text, lat text, crs text)")
        cur.copy_expert("COPY bench_copy FROM STDIN WITH (FORMAT csv, HEADER true)", handle)
    t1 = time.perf_counter()
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM bench_copy")
        rows = cur.fetchone()[0]
        cur.execute("DROP TABLE bench_copy")
    conn.close()
    out.put({"total": t1 - t0, "rows": rows, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def in_child(target, *args) -> dict:
    ctx = mp.get_context("spawn")  # a fresh interpreter: its peak memory is the phase's own
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def _line(what: str, r: dict) -> str:
    parts = [f"{what}: {r['rows']:,} rows in {r['total']:,.1f} s = {r['rows'] / r['total']:,.0f} rows/s"]
    if "read" in r:
        parts.append(f"(read {r['read']:.1f} s, check {r['check']:.1f} s, database {r['db']:.1f} s)")
    if "cpu" in r:
        parts.append(f"[this process's CPU {r['cpu']:,.1f} s = {r['rows'] / r['cpu']:,.0f} rows per CPU-s]")
    parts.append(f"peak RSS {r['rss_mib']:,.0f} MiB")
    return " ".join(parts)


def roster_part(rows: int, xlsx_rows: int, keep: bool) -> None:
    from layers import cluster as pg

    server = server_url()
    url = scratch_url(server)
    fresh_database(server)
    try:
        with tempfile.TemporaryDirectory(prefix="gridbranch-bench-") as tmp:
            path = Path(tmp) / "roster.csv"
            t0 = time.perf_counter()
            write_csv(path, rows)
            print(f"generated {rows:,} roster rows as CSV ({path.stat().st_size / 2**20:,.0f} MiB) in "
                  f"{time.perf_counter() - t0:.1f} s")
            base = in_child(_baseline, url, str(path))
            print(_line("baseline COPY into a bare text table", base))
            print(f"load average at the start: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
                  f"({os.cpu_count()} CPUs)")
            dry = in_child(_phase, url, str(path), False)
            print(_line("CSV dry run", dry) + f"; would write {dry['counts']}")
            commit = in_child(_phase, url, str(path), True)
            print(_line("CSV commit (empty roster)", commit) + f"; wrote {commit['counts']}")
            again = in_child(_phase, url, str(path), True)
            print(_line("CSV commit again (nothing changes)", again) + f"; {again['counts']}")
            for what, r in (("dry run", dry), ("commit", commit), ("again", again)):
                print(f"  {what}: {r['total'] / base['total']:,.1f}x the time of the bare COPY")
            goal = min(rows / dry["total"], rows / commit["total"])
            print(f"goal ≥ 50,000 rows/s from CSV: {'met' if goal >= 50_000 else 'NOT met'} "
                  f"(slowest of dry run and commit: {goal:,.0f} rows/s)")
            if xlsx_rows:
                xpath = Path(tmp) / "roster.xlsx"
                t0 = time.perf_counter()
                write_xlsx(xpath, xlsx_rows)
                print(f"generated {xlsx_rows:,} roster rows as XLSX ({xpath.stat().st_size / 2**20:,.0f} MiB) in "
                      f"{time.perf_counter() - t0:.1f} s")
                print(_line("XLSX dry run", in_child(_phase, url, str(xpath), False)))
                print(_line("XLSX commit", in_child(_phase, url, str(xpath), True)))
    finally:
        if not keep:
            pg.drop_database(server, SCRATCH_DB)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--roster", action="store_true", help="the member roster import")
    parser.add_argument("--rows", type=int, default=1_000_000, help="CSV roster rows")
    parser.add_argument("--xlsx-rows", type=int, default=100_000, help="XLSX roster rows (0: skip)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    if not args.roster:
        parser.error("say which part: --roster")
    roster_part(args.rows, args.xlsx_rows, args.keep)


if __name__ == "__main__":
    main()

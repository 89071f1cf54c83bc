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

``--boundaries``: the grids import (``gridbranch ingest grids``). Generates a district
of 100 communities and 50,000 grids (``--grids``; cells of about 150 m with a vertex
every ~20 m, so a few dozen vertices each, as digitised grids have) written as a
GeoPackage in EPSG:4547 (CGCS2000 Gauss-Krüger, no zone prefix) into a scratch database
holding the district, its streets and communities; then times, each in a fresh process:

* the dry run: read, reproject, validate every grid fully (geometry, codes, parents,
  the place in its community, overlaps and gaps among siblings) and compare it with the
  stored layer, writing nothing;
* the commit into the empty layer (one generation: 50,000 grids and versions), read and
  validation included, as ``--commit`` does;
* the same file again (nothing changes, no generation);
* the baseline: GDAL's ``ogr2ogr`` loading the same file into a bare PostGIS table in
  EPSG:4326 (reprojecting, COPY, a spatial index; no checks), and the ratios. Debian's
  ``gdal-bin`` is installed when missing (as root), or the baseline is skipped saying so.

Goals: the dry run under 60 s, the commit within 2x of ogr2ogr.

Usage: .venv/bin/python bench/ingest.py --roster [--rows 1000000] [--xlsx-rows 100000] [--keep]
       .venv/bin/python bench/ingest.py --boundaries [--grids 50000] [--keep]
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

from bench import common  # noqa: E402

SCRATCH_DB = "gridbranch_bench_ingest"
HEADER = ["党员编号", "姓名", "手机号码", "所在支部", "党员类别", "经度", "纬度", "坐标系"]
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华建国红梅玉兰志强海燕晓东"
STATUSES = ("在职党员", "在职党员", "在职党员", "流动党员", "退休党员")


def scratch_url(server: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(server).set(database=SCRATCH_DB).render_as_string(hide_password=False)


def fresh_database(server: str) -> None:
    engine = common.scratch_database(server, SCRATCH_DB, pool=1)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO branches (code, name, kind) SELECT 'W' || lpad(i::text, 3, '0'), "
                "'单位党支部' || i, 'work_unit' FROM generate_series(1, 100) i"
            )
        )
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
        yield [
            f"{prefix}{i:08d}",
            name,
            f"139{phones[i]:08d}",
            f"W{branches[i]:03d}",
            STATUSES[statuses[i]],
            *((f"{lon[i]:.6f}", f"{lat[i]:.6f}", "gcj02") if located[i] else ("", "", "")),
        ]


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
    out.put(
        {
            "read": t1 - t0,
            "check": t2 - t1,
            "db": t3 - t2,
            "total": t3 - t0,
            "cpu": _cpu() - c0,
            "rows": plan.total,
            "good": len(plan.good),
            "rejected": len(plan.rejects),
            "counts": counts,
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def _baseline(url: str, path: str, out) -> None:
    import psycopg2
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = psycopg2.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database)
    t0 = time.perf_counter()
    with conn, conn.cursor() as cur, open(path, encoding="utf-8-sig") as handle:
        cur.execute("DROP TABLE IF EXISTS bench_copy")
        cur.execute(
            "CREATE TABLE bench_copy (number text, name text, phone text, branch text, status text, "
            "lon text, lat text, crs text)"
        )
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

    server = common.server_url()
    url = scratch_url(server)
    fresh_database(server)
    try:
        with tempfile.TemporaryDirectory(prefix="gridbranch-bench-") as tmp:
            path = Path(tmp) / "roster.csv"
            t0 = time.perf_counter()
            write_csv(path, rows)
            print(
                f"generated {rows:,} roster rows as CSV ({path.stat().st_size / 2**20:,.0f} MiB) in "
                f"{time.perf_counter() - t0:.1f} s"
            )
            base = in_child(_baseline, url, str(path))
            print(_line("baseline COPY into a bare text table", base))
            print(
                f"load average at the start: {', '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)"
            )
            dry = in_child(_phase, url, str(path), False)
            print(_line("CSV dry run", dry) + f"; would write {dry['counts']}")
            commit = in_child(_phase, url, str(path), True)
            print(_line("CSV commit (empty roster)", commit) + f"; wrote {commit['counts']}")
            again = in_child(_phase, url, str(path), True)
            print(_line("CSV commit again (nothing changes)", again) + f"; {again['counts']}")
            for what, r in (("dry run", dry), ("commit", commit), ("again", again)):
                print(f"  {what}: {r['total'] / base['total']:,.1f}x the time of the bare COPY")
            goal = min(rows / dry["total"], rows / commit["total"])
            print(
                f"goal ≥ 50,000 rows/s from CSV: {'met' if goal >= 50_000 else 'NOT met'} "
                f"(slowest of dry run and commit: {goal:,.0f} rows/s)"
            )
            if xlsx_rows:
                xpath = Path(tmp) / "roster.xlsx"
                t0 = time.perf_counter()
                write_xlsx(xpath, xlsx_rows)
                print(
                    f"generated {xlsx_rows:,} roster rows as XLSX ({xpath.stat().st_size / 2**20:,.0f} MiB) in "
                    f"{time.perf_counter() - t0:.1f} s"
                )
                print(_line("XLSX dry run", in_child(_phase, url, str(xpath), False)))
                print(_line("XLSX commit", in_child(_phase, url, str(xpath), True)))
    finally:
        if not keep:
            pg.drop_database(server, SCRATCH_DB)


# ---- boundaries --------------------------------------------------------------------------------

DISTRICT = "410102"
#: the synthetic district's corner (WGS84) and its lattice: streets × communities per street,
#: and grids per community as columns × rows
ORIGIN = (113.50, 34.70)
STREETS, COMMUNITIES_PER_STREET = 10, 10
VERTICES_PER_EDGE = 8  # a cell's side of ~150 m cut every ~20 m


def _lattice(n_grids: int) -> tuple[int, int]:
    per = max(1, n_grids // (STREETS * COMMUNITIES_PER_STREET))
    cols = max(1, int(round((per * 1.2) ** 0.5)))
    while per % cols:  # exactly ``per`` cells where it divides (500 = 20 × 25)
        cols -= 1
    return cols, per // cols


def boundary_files(folder: Path, n_grids: int) -> tuple[Path, Path, Path, int]:
    """(district GeoJSON, areas GeoJSON — both WGS84 —, grids GeoPackage in EPSG:4547,
    grids written)."""
    import json

    import pyogrio.raw
    import shapely

    from layers.crs import geoms_from_wgs84

    cols, rows = _lattice(n_grids)
    cw, ch = cols * 0.0016, rows * 0.0013  # a community's size in degrees: cells of ~150 m
    x0, y0 = ORIGIN
    # One lattice of vertices, ~20 m apart, for every boundary: shared edges are cut at
    # the very same points from both sides, as in a layer digitised with snapping (edges
    # computed per cell would differ in the last bits, which no digitiser produces).
    m = VERTICES_PER_EDGE
    xs = x0 + np.arange(COMMUNITIES_PER_STREET * cols * m + 1) * (cw / (cols * m))
    ys = y0 + np.arange(STREETS * rows * m + 1) * (ch / (rows * m))

    def box(i0: int, j0: int, i1: int, j1: int):  # corners by lattice index
        return shapely.box(xs[i0], ys[j0], xs[i1], ys[j1])

    ci, rj = cols * m, rows * m  # a community's extent in lattice steps
    district = box(0, 0, COMMUNITIES_PER_STREET * ci, STREETS * rj)
    dpath = folder / "district.geojson"
    dpath.write_text(
        json.dumps(
            {"type": "Feature", "properties": {"name": "基准区"}, "geometry": shapely.geometry.mapping(district)}
        ),
        encoding="utf-8",
    )
    features, codes, names, parents, cells = [], [], [], [], []
    t = np.arange(m)
    for s in range(STREETS):
        scode = f"{DISTRICT}{s + 1:03d}000"
        street = box(0, s * rj, COMMUNITIES_PER_STREET * ci, (s + 1) * rj)
        features.append((scode, f"第{s + 1}街道", f"{DISTRICT}000000", street))
        for c in range(COMMUNITIES_PER_STREET):
            ccode = f"{scode[:9]}{c + 1:03d}"
            features.append(
                (ccode, f"第{s + 1}街道第{c + 1}社区", scode, box(c * ci, s * rj, (c + 1) * ci, (s + 1) * rj))
            )
            k = 0
            for j in range(rows):
                for i in range(cols):
                    k += 1
                    codes.append(f"{ccode}{k:03d}")
                    names.append(f"{ccode[-3:]}社区第{k}网格")
                    parents.append(ccode)
                    a, b = c * ci + i * m, s * rj + j * m  # the cell's lower left corner
                    ring = np.concatenate(
                        [
                            np.column_stack([xs[a + t], np.full(m, ys[b])]),  # bottom, eastwards
                            np.column_stack([np.full(m, xs[a + m]), ys[b + t]]),  # right, northwards
                            np.column_stack([xs[a + m - t], np.full(m, ys[b + m])]),  # top, westwards
                            np.column_stack([np.full(m, xs[a]), ys[b + m - t]]),  # left, southwards
                            [[xs[a], ys[b]]],
                        ]
                    )
                    cells.append(shapely.multipolygons([shapely.polygons(ring)]))
    apath = folder / "areas.geojson"
    apath.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"code": c, "name": n, "parent": p},
                        "geometry": shapely.geometry.mapping(g),
                    }
                    for c, n, p, g in features
                ],
            },
            ensure_ascii=False,
        ),
        encoding="utf-8",
    )
    gk = np.asarray(geoms_from_wgs84(np.asarray(cells, dtype=object), "EPSG:4547"), dtype=object)
    gpath = folder / "grids.gpkg"
    pyogrio.raw.write(
        gpath,
        shapely.to_wkb(gk),
        [np.array(codes, dtype=object), np.array(names, dtype=object), np.array(parents, dtype=object)],
        ["网格编码", "网格名称", "所属社区"],
        driver="GPKG",
        geometry_type="MultiPolygon",
        crs="EPSG:4547",
        layer="网格",
    )
    return dpath, apath, gpath, len(codes)


def _start_boundary_district(url: str, dpath: Path, apath: Path) -> None:
    from sqlalchemy.orm import Session

    from ingest import boundaries
    from ingest.district import start_district
    from ingest.files import read_features
    from layers import db

    engine = db.make_engine(url, 1)
    with Session(engine) as session:
        start_district(
            session,
            code=DISTRICT,
            boundary=read_features(dpath),
            crs="wgs84",
            name="基准区",
            admin_password_hash="not-a-hash: the bench signs nobody in",
        )
        session.commit()
    with Session(engine) as session:
        plan = boundaries.plan_import(session, "areas", read_features(apath), crs="wgs84")
        assert plan.ok, boundaries.format_report(plan)
        boundaries.commit_plan(session, plan)
        session.commit()
    engine.dispose()


def _grids_phase(url: str, path: str, commit: bool, profile: str | None, out) -> None:
    from sqlalchemy.orm import Session

    from ingest import boundaries
    from ingest.files import read_features
    from layers import db

    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler()
        profiler.start()
    c0 = _cpu()
    t0 = time.perf_counter()
    src = read_features(Path(path), geometry_field=None)
    t1 = time.perf_counter()
    engine = db.make_engine(url, 1)
    with Session(engine) as session:
        plan = boundaries.plan_import(
            session, "grids", src, mapping=boundaries.parse_mapping("code=网格编码,name=网格名称,parent=所属社区")
        )
        t2 = time.perf_counter()
        counts = boundaries.commit_plan(session, plan) if commit else plan.counts()
        session.commit() if commit else session.rollback()
    t3 = time.perf_counter()
    engine.dispose()
    if profiler is not None:
        profiler.stop()
        Path(profile).write_text(profiler.output_text(unicode=True, color=False, show_all=False), "utf-8")
    out.put(
        {
            "read": t1 - t0,
            "check": t2 - t1,
            "db": t3 - t2,
            "total": t3 - t0,
            "cpu": _cpu() - c0,
            "rows": len(src),
            "counts": counts,
            "errors": len(plan.errors),
            "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    )


def ogr2ogr() -> str | None:
    """The ogr2ogr command: installed from Debian's gdal-bin when missing (as root), else None."""
    import shutil
    import subprocess

    found = shutil.which("ogr2ogr")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("installing Debian's gdal-bin for the ogr2ogr baseline …")
    subprocess.run(["apt-get", "install", "-y", "-q", "gdal-bin"], check=False, stdout=subprocess.DEVNULL)
    return shutil.which("ogr2ogr")


def _ogr2ogr_baseline(command: str, url: str, path: str, out) -> None:
    import subprocess

    from sqlalchemy.engine import make_url

    u = make_url(url)
    pg = f"PG:host={u.host} port={u.port} dbname={u.database} user={u.username}" + (
        f" password={u.password}" if u.password else ""
    )
    t0 = time.perf_counter()
    subprocess.run(
        [
            command,
            "-f",
            "PostgreSQL",
            pg,
            path,
            "-nln",
            "bench_ogr",
            "-overwrite",
            "-t_srs",
            "EPSG:4326",
            "-nlt",
            "MULTIPOLYGON",
            "-lco",
            "GEOMETRY_NAME=geom",
            "--config",
            "PG_USE_COPY",
            "YES",
        ],
        check=True,
    )
    total = time.perf_counter() - t0
    import psycopg2

    conn = psycopg2.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname=u.database)
    with conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM bench_ogr")
        rows = cur.fetchone()[0]
        cur.execute("DROP TABLE bench_ogr")
    conn.close()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    out.put(
        {
            "total": total,
            "rows": rows,
            "cpu": children.ru_utime + children.ru_stime,
            "rss_mib": children.ru_maxrss / 1024,
        }
    )


def server_cpu() -> float | None:
    """CPU seconds the private cluster's PostgreSQL has used so far: the postmaster's own,
    its ended backends' (reaped into its children's times) and its live processes'.
    None when the cluster is not ours to read (another server)."""
    if os.environ.get("GRIDBRANCH_TEST_DATABASE_URL"):
        return None
    from geo_api.settings import DatabaseSettings
    from layers import cluster as pg

    settings = DatabaseSettings()
    try:
        data_dir = pg.Cluster(root=settings.db_dir, port=settings.db_port).data_dir
        pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        tick = os.sysconf("SC_CLK_TCK")

        def fields(p: int) -> list[str]:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()

        own = fields(pid)
        total = sum(int(x) for x in own[11:15])  # utime, stime, cutime, cstime
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            try:
                total += sum(int(x) for x in fields(int(child))[11:13])
            except OSError:
                pass  # ended meanwhile: counted in the postmaster's children's times
        return total / tick
    except (OSError, ValueError, IndexError):
        return None


def measured(target, *args) -> dict:
    """``in_child`` with the server's CPU seconds over the phase (``server_cpu``)."""
    before = server_cpu()
    r = in_child(target, *args)
    after = server_cpu()
    r["server_cpu"] = after - before if before is not None and after is not None else None
    return r


def _cpu_line(r: dict) -> str:
    if r.get("server_cpu") is None:
        return ""
    return f"; CPU {r['cpu']:,.1f} s here + {r['server_cpu']:,.1f} s PostgreSQL = {r['cpu'] + r['server_cpu']:,.1f} s"


def boundaries_part(n_grids: int, keep: bool, profile: str | None) -> None:
    from layers import cluster as pg

    server = common.server_url()
    url = scratch_url(server)
    fresh_database(server)
    try:
        with tempfile.TemporaryDirectory(prefix="gridbranch-bench-") as tmp:
            t0 = time.perf_counter()
            dpath, apath, gpath, n = boundary_files(Path(tmp), n_grids)
            print(
                f"generated {n:,} grids in 100 communities as a GeoPackage in EPSG:4547 "
                f"({gpath.stat().st_size / 2**20:,.0f} MiB) in {time.perf_counter() - t0:.1f} s"
            )
            _start_boundary_district(url, dpath, apath)
            print(
                f"load average at the start: {', '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)"
            )
            command = ogr2ogr()
            base = measured(_ogr2ogr_baseline, command, url, str(gpath)) if command else None
            if base:
                print(_line("baseline ogr2ogr into a bare PostGIS table (EPSG:4326, COPY)", base) + _cpu_line(base))
            else:
                print("baseline skipped: ogr2ogr not found (apt-get install gdal-bin)")
            dry = measured(_grids_phase, url, str(gpath), False, profile and f"{profile}.dry.txt")
            print(_line("grids dry run (full validation)", dry) + _cpu_line(dry) + f"; {dry['counts']}")
            commit = measured(_grids_phase, url, str(gpath), True, profile and f"{profile}.commit.txt")
            print(_line("grids commit (empty layer)", commit) + _cpu_line(commit) + f"; wrote {commit['counts']}")
            again = measured(_grids_phase, url, str(gpath), True, None)
            print(_line("grids commit again (nothing changes)", again) + _cpu_line(again) + f"; {again['counts']}")
            print(f"  commit's write alone (after its validation): {commit['db']:,.1f} s")
            if base:
                # on a shared machine the wall-clock ratio says as much about the neighbours
                # as about the import: CPU seconds (ours and PostgreSQL's) are given beside it
                both = base.get("server_cpu") is not None
                for what, r in (("dry run", dry), ("commit", commit), ("again", again), ("commit's write", None)):
                    wall = (r["total"] if r else commit["db"]) / base["total"]
                    line = f"  {what}: {wall:,.2f}x the time of ogr2ogr"
                    if both and r and r.get("server_cpu") is not None:
                        line += (
                            f", {(r['cpu'] + r['server_cpu']) / (base['cpu'] + base['server_cpu']):,.2f}x "
                            "its CPU seconds"
                        )
                    print(line)
            print(f"goal dry run < 60 s: {'met' if dry['total'] < 60 else 'NOT met'} ({dry['total']:.1f} s)")
            if base:
                ratio = commit["total"] / base["total"]
                print(f"goal commit within 2x of ogr2ogr: {'met' if ratio <= 2 else 'NOT met'} ({ratio:.2f}x)")
    finally:
        if not keep:
            pg.drop_database(server, SCRATCH_DB)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--roster", action="store_true", help="the member roster import")
    parser.add_argument("--rows", type=int, default=1_000_000, help="CSV roster rows")
    parser.add_argument("--xlsx-rows", type=int, default=100_000, help="XLSX roster rows (0: skip)")
    parser.add_argument("--boundaries", action="store_true", help="the grids import, against ogr2ogr")
    parser.add_argument("--grids", type=int, default=50_000, help="generated grids")
    parser.add_argument(
        "--profile", help="with --boundaries: write pyinstrument profiles to PREFIX.dry.txt, PREFIX.commit.txt"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    if not (args.roster or args.boundaries):
        parser.error("say which part: --roster or --boundaries")
    if args.roster:
        roster_part(args.rows, args.xlsx_rows, args.keep)
    if args.boundaries:
        boundaries_part(args.grids, args.keep, args.profile)


if __name__ == "__main__":
    main()

"""Coverage analysis benchmark (issue: coverage analysis).

Prints, in one run:

1. the Jinshui demo (the ``gridbranch`` database, 500 grids): the full analysis —
   reading and analysing the layer (topology and branch coverage, uncached), the
   member figures, every finding (``issues``), the summary of every level — median of 5;
   the same topology done in PostGIS SQL (per-community ``ST_Union``/``ST_Difference``,
   ``&&`` + ``ST_Relate`` pairs, ``ST_Difference`` from the community), the named
   baseline; the cached HTTP latency of the three endpoints;
2. generated province-scale layers of 5,000, 10,000, 20,000 and 50,000 grids (Voronoi
   cells over a region growing with the grid count, ~4 km² a grid, 10 grids a
   community, 10 communities a street, 10 streets a district, a branch on 95 % of the
   grids, and injected defects: holes, overlaps inside and across communities, slivers,
   stray parts), each loaded into a fresh scratch database on the private cluster
   (``gridbranch_bench_coverage``, dropped afterwards): the same full analysis, the
   defects found against those injected, the PostGIS baseline (up to ``--baseline-max``
   grids), and how the time grows with the grid count.

Goals: under 1 s for the demo, under 60 s for 50,000 grids.

Usage: .venv/bin/python bench/coverage.py [--sizes 5000,10000,20000,50000] [--keep]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import shapely  # noqa: E402
from pyproj import Transformer  # noqa: E402
from shapely import STRtree  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench import common  # noqa: E402
from bench.common import demo_engine, fmt, get_request, load, served  # noqa: E402
from layers import coverage as cov  # noqa: E402
from layers.caches import Caches  # noqa: E402

SCRATCH_DB = "gridbranch_bench_coverage"
CENTRE = (113.5, 34.0)  # the middle of Henan
GRID_KM2 = 4.0
PER_PARENT = 10


# --------------------------------------------------------------------------------------
# The full analysis, timed
# --------------------------------------------------------------------------------------


def full_analysis(session: Session, root: str) -> dict:
    """Everything the coverage endpoints compute for ``root``, from nothing cached."""
    caches = Caches()
    t0 = time.perf_counter()
    model = cov.coverage_model(session, caches)
    t1 = time.perf_counter()
    cov.member_counts(session, caches, model)
    t2 = time.perf_counter()
    found = cov.issues(session, caches, within=root)
    t3 = time.perf_counter()
    for level in ("street", "community", "grid"):
        cov.summary(session, caches, code=root, level=level)
    t4 = time.perf_counter()
    return {
        "total_s": t4 - t0,
        "layer_s": t1 - t0,
        "members_s": t2 - t1,
        "issues_s": t3 - t2,
        "summaries_s": t4 - t3,
        "findings": found,
    }


def timed(session: Session, root: str, runs: int) -> tuple[dict, list[float]]:
    results = [full_analysis(session, root) for _ in range(runs)]
    totals = [r["total_s"] for r in results]
    best = sorted(results, key=lambda r: r["total_s"])[(len(results) - 1) // 2]
    return best, totals


def layer_runs(session: Session, runs: int) -> list[float]:
    """Seconds to read and analyse the layer (topology, branch coverage), uncached."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        cov.coverage_model(session, None)
        out.append(time.perf_counter() - t0)
    return out


BASELINE_SQL = {
    "gaps": """
        WITH cur AS (SELECT g.community_id, gv.geom FROM grids g
                     JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL WHERE g.retired_at IS NULL),
        d AS (SELECT (ST_Dump(ST_Difference(c.geom, ST_Union(cur.geom)))).geom AS geom
              FROM admin_areas c JOIN cur ON cur.community_id = c.id GROUP BY c.id, c.geom)
        SELECT count(*) FROM d WHERE ST_Area(geom::geography) >= :noise""",
    "overlaps": """
        WITH cur AS (SELECT g.id, gv.geom FROM grids g
                     JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL WHERE g.retired_at IS NULL)
        SELECT count(*) FROM cur a JOIN cur b ON a.id < b.id AND a.geom && b.geom
        WHERE ST_Relate(a.geom, b.geom, 'T********')
          AND ST_Area(ST_Intersection(a.geom, b.geom)::geography) >= :noise""",
    "outside": """
        SELECT count(*) FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL
        JOIN admin_areas c ON c.id = g.community_id
        WHERE g.retired_at IS NULL AND NOT ST_CoveredBy(gv.geom, c.geom)
          AND ST_Area(ST_Difference(gv.geom, c.geom)::geography) >= :noise""",
}


def postgis_baseline(session: Session, timeout_s: float) -> tuple[float | None, dict[str, int]]:
    """The topology (gaps, overlapping pairs, grids outside) in PostGIS SQL; seconds."""
    session.execute(text(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}"))
    counts = {}
    t0 = time.perf_counter()
    try:
        for name, sql in BASELINE_SQL.items():
            counts[name] = session.execute(text(sql), {"noise": 1.0}).scalar()
    except Exception:  # the statement timeout
        session.rollback()
        return None, counts
    elapsed = time.perf_counter() - t0
    session.rollback()
    return elapsed, counts


# --------------------------------------------------------------------------------------
# A generated province-scale layer
# --------------------------------------------------------------------------------------


class Layer:
    """Areas and grids in WGS84 with codes, plus the injected defects."""

    def __init__(self) -> None:
        self.areas: list[tuple[str, str, str, str | None, object]] = []  # code, name, level, parent, geom
        self.grids: list[tuple[str, str, object]] = []  # code, name, geom
        self.branchless: set[str] = set()
        self.injected: dict[str, int] = {}


def _laea(inverse: bool = False):
    """A coordinate function for shapely.transform: the generator's metric CRS (LAEA
    centred on Henan) to WGS84, or back with ``inverse``."""
    lon0, lat0 = CENTRE
    crs = f"+proj=laea +lat_0={lat0} +lon_0={lon0} +ellps=WGS84 +units=m +no_defs"
    t = (
        Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        if inverse
        else Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    )

    def convert(xy):
        x, y = t.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return convert


def _nearest(points: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    tree = STRtree(shapely.points(seeds))
    idx = tree.query_nearest(shapely.points(points), all_matches=False)
    out = np.empty(len(points), np.int64)
    out[idx[0]] = idx[1]
    return out


def _blob(rng, cx, cy, r, n=12):
    ang = np.linspace(0, 2 * math.pi, n, endpoint=False) + rng.uniform(-0.2, 0.2, n)
    rad = r * rng.uniform(0.8, 1.15, n)
    return shapely.Polygon(np.column_stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)]))


def _largest_polygon(geom):
    parts = shapely.get_parts(geom)
    parts = parts[shapely.get_type_id(parts) == 3]
    return parts[int(np.argmax(shapely.area(parts)))] if len(parts) else None


def generate(n_grids: int, seed: int = 4) -> Layer:
    """Voronoi grids over a square growing with ``n_grids`` (metric LAEA, then WGS84)."""
    rng = np.random.default_rng(seed)
    side = math.sqrt(n_grids * GRID_KM2) * 1000.0
    half = side / 2
    seeds = rng.uniform(-half, half, (n_grids, 2))
    n_comm = max(1, n_grids // PER_PARENT)
    n_street = max(1, n_comm // PER_PARENT)
    n_dist = max(1, n_street // PER_PARENT)
    comm_seeds = rng.uniform(-half, half, (n_comm, 2))
    street_seeds = rng.uniform(-half, half, (n_street, 2))
    dist_seeds = rng.uniform(-half, half, (n_dist, 2))
    grid_comm = _nearest(seeds, comm_seeds)
    comm_street = _nearest(comm_seeds, street_seeds)
    street_dist = _nearest(street_seeds, dist_seeds)
    # drop empty parents: relabel to the ones used
    extent = shapely.box(-half, -half, half, half)
    cells = shapely.get_parts(shapely.voronoi_polygons(shapely.multipoints(seeds), extend_to=extent))
    # voronoi_polygons returns cells in an order of its own: match them to their seeds
    tree = STRtree(cells)
    si, ci = tree.query(shapely.points(seeds), predicate="within")
    order = np.empty(n_grids, np.int64)
    order[si] = ci
    cells = shapely.intersection(cells[order], extent)  # clip to the square (shared cuts: identical)
    grids = np.asarray([_largest_polygon(c) for c in cells], dtype=object)

    # Everything to WGS84 first, then the defects are cut there: an overlay done in the
    # metric CRS and projected afterwards would leave centimetre-wide triangles along
    # the edges it touched (a straight metric edge is not straight in lon/lat) — real
    # slivers the analysis would rightly report.
    to_ll = _laea()
    cells_ll = shapely.transform(cells, to_ll)  # the undamaged cells make the areas
    grids = shapely.transform(grids, to_ll)
    deg = 1.0 / 111_320.0  # metres → degrees of latitude

    def blob_at(point, r):
        x, y = shapely.get_coordinates(shapely.transform(point, _laea(inverse=True)))[0]
        return shapely.transform(_blob(rng, x, y, r), to_ll)

    # injected defects, about one of each kind per 1,000 grids
    k = max(2, n_grids // 1000)
    layer = Layer()
    injected = {"gap": 0, "overlap": 0, "sliver": 0, "outside_community": 0, "stray_part": 0}
    used: set[int] = set()
    grid_tree = STRtree(grids)
    a_idx, b_idx = grid_tree.query(grids, predicate="touches")
    neighbours: dict[int, list[int]] = {}
    for a, b in zip(a_idx.tolist(), b_idx.tolist()):
        neighbours.setdefault(a, []).append(b)
    candidates = rng.permutation(n_grids).tolist()

    def pick(cross: bool | None = None):
        while candidates:
            g = candidates.pop()
            if g in used:
                continue
            for h in neighbours.get(g, []):
                if h in used:
                    continue
                same = grid_comm[g] == grid_comm[h]
                if cross is None or cross != same:
                    edge = shapely.line_merge(shapely.intersection(grids[g].boundary, grids[h].boundary))
                    if edge.geom_type == "LineString" and shapely.length(edge) > 300 * deg:
                        used.update((g, h))
                        return g, h, edge
        raise RuntimeError("no grid pair left for a defect")

    for _ in range(k):  # holes
        g, _, _ = pick()
        grids[g] = shapely.difference(grids[g], blob_at(shapely.point_on_surface(grids[g]), 40.0))
        injected["gap"] += 1
    for cross in (False, True):  # overlaps inside a community, and across (outside too)
        for _ in range(k):
            g, h, edge = pick(cross)
            blob = blob_at(shapely.line_interpolate_point(edge, 0.5, normalized=True), 50.0)
            both = shapely.coverage_union(grids[g], grids[h])
            grids[g] = _largest_polygon(shapely.difference(both, shapely.difference(grids[h], blob)))
            injected["overlap"] += 1
            injected["outside_community"] += int(cross)
    for _ in range(k):  # slivers: a strip ~0.3 m wide, ~40 m long, on the longest straight piece of a border
        while True:
            g, h, edge = pick()
            xy = shapely.get_coordinates(edge)
            seg = np.hypot(*(xy[1:] - xy[:-1]).T)
            i = int(seg.argmax())
            if seg[i] > 100 * deg:
                break
        a, b = xy[i], xy[i + 1]
        p0 = (a + b) / 2
        p1 = p0 + (b - a) / seg[i] * 40 * deg
        cutter = shapely.buffer(shapely.LineString([p0, p1]), 0.3 * deg, cap_style="flat")
        grids[g] = _largest_polygon(shapely.difference(grids[g], cutter))
        injected["sliver"] += 1
    for _ in range(k):  # stray parts: a ~10 m square of a neighbour given to the grid
        g, h, _ = pick(cross=False)
        c = shapely.get_coordinates(shapely.point_on_surface(grids[h]))[0]
        speck = shapely.box(c[0] - 5 * deg, c[1] - 5 * deg, c[0] + 5 * deg, c[1] + 5 * deg)
        grids[h] = shapely.difference(grids[h], speck)
        grids[g] = shapely.multipolygons([grids[g], speck])
        injected["stray_part"] += 1
    grids_ll = grids

    # areas: unions of the undamaged cells (exact coverages)
    def groups(labels, n):
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(n + 1))
        return [order[bounds[i] : bounds[i + 1]] for i in range(n)]

    comm_geoms = [shapely.coverage_union_all(cells_ll[ix]) if len(ix) else None for ix in groups(grid_comm, n_comm)]
    comm_alive = [c for c in range(n_comm) if comm_geoms[c] is not None]
    street_members = groups(comm_street[comm_alive], n_street)
    street_geoms = [
        shapely.coverage_union_all([comm_geoms[comm_alive[i]] for i in ix]) if len(ix) else None
        for ix in street_members
    ]
    street_alive = [s for s in range(n_street) if street_geoms[s] is not None]
    dist_members = groups(street_dist[street_alive], n_dist)
    dist_geoms = [
        shapely.coverage_union_all([street_geoms[street_alive[i]] for i in ix]) if len(ix) else None
        for ix in dist_members
    ]

    # codes: district 41ddd d, streets 001–, communities 001–, grids 001–
    dist_code, street_code, comm_code = {}, {}, {}
    for d_i, d in enumerate([d for d in range(n_dist) if dist_geoms[d] is not None]):
        dist_code[d] = f"41{d_i // 90 + 1:02d}{d_i % 90 + 10:02d}000000"
        layer.areas.append((dist_code[d], f"模拟{d_i + 1}区", "district", None, _multi(dist_geoms[d])))
    counters: dict[str, int] = {}
    for s in street_alive:
        parent = dist_code[street_dist[s]]
        counters[parent] = counters.get(parent, 0) + 1
        street_code[s] = f"{parent[:6]}{counters[parent]:03d}000"
        layer.areas.append((street_code[s], f"模拟街道{s + 1}", "street", parent, _multi(street_geoms[s])))
    for c in comm_alive:
        parent = street_code[comm_street[c]]
        counters[parent] = counters.get(parent, 0) + 1
        comm_code[c] = f"{parent[:9]}{counters[parent]:03d}"
        layer.areas.append((comm_code[c], f"模拟社区{c + 1}", "community", parent, _multi(comm_geoms[c])))
    for g in range(n_grids):
        parent = comm_code[grid_comm[g]]
        counters[parent] = counters.get(parent, 0) + 1
        code = f"{parent}{counters[parent]:03d}"
        layer.grids.append((code, f"模拟网格{g + 1}", _multi(grids_ll[g])))
    codes = [c for c, _, _ in layer.grids]
    layer.branchless = {codes[i] for i in rng.choice(n_grids, size=n_grids // 20, replace=False)}
    layer.injected = injected
    return layer


def _multi(geom):
    parts = shapely.get_parts(geom)
    parts = parts[shapely.get_type_id(parts) == 3]
    return shapely.multipolygons(parts)


# --------------------------------------------------------------------------------------
# The scratch database
# --------------------------------------------------------------------------------------


def _hex(geoms) -> list[str]:
    arr = shapely.set_srid(np.asarray(geoms, dtype=object), 4326)
    return shapely.to_wkb(arr, hex=True, include_srid=True).tolist()


def load_layer(engine, layer: Layer) -> None:
    with engine.begin() as conn:
        for level in ("district", "street", "community"):
            rows = [a for a in layer.areas if a[2] == level]
            conn.execute(
                text(
                    """INSERT INTO admin_areas (code, name, level, parent_id, geom)
                   SELECT t.code, t.name, t.level, p.id, ST_GeomFromEWKB(decode(t.g, 'hex'))
                   FROM unnest(CAST(:codes AS text[]), CAST(:names AS text[]), CAST(:levels AS text[]),
                               CAST(:parents AS text[]), CAST(:geoms AS text[])) AS t(code, name, level, parent, g)
                   LEFT JOIN admin_areas p ON p.code = t.parent"""
                ),
                {
                    "codes": [a[0] for a in rows],
                    "names": [a[1] for a in rows],
                    "levels": [a[2] for a in rows],
                    "parents": [a[3] for a in rows],
                    "geoms": _hex([a[4] for a in rows]),
                },
            )
        codes = [g[0] for g in layer.grids]
        conn.execute(
            text(
                """INSERT INTO grids (code, name, community_id, worker_name, worker_phone)
               SELECT t.code, t.name, c.id, '网格员', '13800000000'
               FROM unnest(CAST(:codes AS text[]), CAST(:names AS text[])) AS t(code, name)
               JOIN admin_areas c ON c.code = left(t.code, 12)"""
            ),
            {"codes": codes, "names": [g[1] for g in layer.grids]},
        )
        conn.execute(
            text(
                """INSERT INTO grid_versions (grid_id, version, geom)
               SELECT g.id, 1, ST_GeomFromEWKB(decode(t.g, 'hex'))
               FROM unnest(CAST(:codes AS text[]), CAST(:geoms AS text[])) AS t(code, g)
               JOIN grids g ON g.code = t.code"""
            ),
            {"codes": codes, "geoms": _hex([g[2] for g in layer.grids])},
        )
        branched = [c for c in codes if c not in layer.branchless]
        conn.execute(
            text(
                """INSERT INTO branches (code, name, kind, site, community_id)
               SELECT 'G' || g.code, g.name || '党支部', 'grid', ST_PointOnSurface(gv.geom), g.community_id
               FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id WHERE g.code = ANY(:codes)"""
            ),
            {"codes": branched},
        )
        conn.execute(
            text(
                """INSERT INTO branch_grids (branch_id, grid_id)
               SELECT b.id, g.id FROM branches b JOIN grids g ON 'G' || g.code = b.code"""
            )
        )
        conn.execute(text("ANALYZE"))


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


def demo_part(runs: int, http_requests: int) -> float:
    engine = demo_engine()
    with Session(engine) as session:
        root = cov.root_code(session, Caches())
        best, totals = timed(session, root, runs)
        kinds: dict[str, int] = {}
        for f in best["findings"]:
            kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
        grids = len(cov.coverage_model(session, None).grid_codes)
        print(
            f"demo {root} ({grids} grids): full analysis median {statistics.median(totals) * 1000:,.0f} ms "
            f"over {runs} runs (min {min(totals) * 1000:,.0f}, max {max(totals) * 1000:,.0f}); "
            f"layer + topology + branches {best['layer_s'] * 1000:,.0f} ms, "
            f"members {best['members_s'] * 1000:,.0f} ms, issues {best['issues_s'] * 1000:,.0f} ms, "
            f"summaries (street, community, grid) {best['summaries_s'] * 1000:,.0f} ms"
        )
        print("  findings: " + ", ".join(f"{k} {n}" for k, n in kinds.items()))
        base, counts = postgis_baseline(session, 600)
        layer_s = statistics.median(layer_runs(session, runs))
        print(
            f"  baseline: the topology alone in PostGIS SQL {base * 1000:,.0f} ms "
            f"({counts['gaps']} gap parts, {counts['overlaps']} overlapping pairs, {counts['outside']} grids outside "
            f"above 1 m²) vs reading + topology + branch coverage in process {layer_s * 1000:,.0f} ms "
            f"(median): {base / layer_s:,.1f}x"
        )
    engine.dispose()
    median = statistics.median(totals)
    print(f"  goal < 1 s for the demo: {'met' if median < 1 else 'NOT met'}")
    if http_requests:
        from geo_api.security import issue_token

        secret = "bench-secret-" + "x" * 40
        with served({"GRIDBRANCH_AUTH_SECRET": secret}) as port:
            auth = {"Authorization": f"Bearer {issue_token(secret, 'admin', 60)}"}
            paths = {
                "summary (street level)": ("/v1/coverage/summary", auth),
                "issues (all kinds, GeoJSON)": ("/v1/coverage/issues", auth),
                "h3 res 9 members (anonymous)": (f"/v1/coverage/h3?res=9&metric=members&within={root}", {}),
            }
            for name, (path, headers) in paths.items():
                load(port, [get_request(path, headers)] * 3, 1)  # warm the cache
                r = load(port, [get_request(path, headers)] * http_requests, 1)
                print(f"  HTTP {name}, cached, 1 client: {fmt(r)}")
    return median


def province_part(sizes: list[int], runs: int, baseline_max: int, keep: bool) -> None:
    from layers import cluster as pg

    server = common.server_url()
    figures = []
    try:
        for n in sizes:
            t0 = time.perf_counter()
            layer = generate(n)
            t1 = time.perf_counter()
            engine = common.scratch_database(server, SCRATCH_DB)
            load_layer(engine, layer)
            t2 = time.perf_counter()
            with Session(engine) as session:
                roots = [a[0] for a in layer.areas if a[2] == "district"]
                # the whole layer: no within filter, every district summarised one level down
                totals, runs_out = [], []
                for _ in range(runs):
                    caches = Caches()
                    s0 = time.perf_counter()
                    model = cov.coverage_model(session, caches)
                    s1 = time.perf_counter()
                    found = cov.issues(session, caches)
                    s2 = time.perf_counter()
                    for root in roots:
                        cov.summary(session, caches, code=root, level="street")
                    s3 = time.perf_counter()
                    totals.append(s3 - s0)
                    runs_out.append((s3 - s0, s1 - s0, s2 - s1, s3 - s2, found, model))
                runs_out.sort(key=lambda r: r[0])
                total, layer_s, issues_s, summaries_s, found, model = runs_out[(len(runs_out) - 1) // 2]
                kinds: dict[str, int] = {}
                for f in found:
                    kinds[f["kind"]] = kinds.get(f["kind"], 0) + 1
                base = None
                if n <= baseline_max:
                    base, _ = postgis_baseline(session, 900)
            engine.dispose()
            med = statistics.median(totals)
            figures.append((n, med, base))
            inj = layer.injected
            found_topology = sum(kinds.get(k, 0) for k in cov.TOPOLOGY_KINDS)
            print(
                f"{n:>6,} grids ({len(layer.areas):,} areas; generated in {t1 - t0:,.1f} s, loaded in "
                f"{t2 - t1:,.1f} s): full analysis median {med:,.2f} s over {len(totals)} runs — layer + "
                f"topology + branches {layer_s:,.2f} s, issues {issues_s:,.2f} s, {len(roots)} district "
                f"summaries {summaries_s:,.2f} s"
            )
            print(
                "        found/injected: "
                + ", ".join(f"{k} {kinds.get(k, 0)}/{inj[k]}" for k in inj)
                + f" — {found_topology} topology findings for {sum(inj.values())} injected; "
                f"no_branch {kinds.get('no_branch', 0)}/{len(layer.branchless)}"
            )
            if base is not None:
                print(
                    f"        baseline: the topology alone in PostGIS SQL {base:,.2f} s vs reading + topology + "
                    f"branch coverage in process {layer_s:,.2f} s: {base / layer_s:,.1f}x"
                )
            elif n > baseline_max:
                print(f"        baseline PostGIS SQL topology: skipped above {baseline_max:,} grids")
    finally:
        if not keep:
            pg.drop_database(server, SCRATCH_DB)
    if len(figures) > 1:
        n0, t0_, _ = figures[0]
        print(
            f"growth from {n0:,} grids: "
            + "; ".join(f"{n / n0:,.0f}x grids → {t / t0_:,.1f}x time" for n, t, _ in figures[1:])
        )
        n1, t1_, _ = figures[-1]
        k = math.log(t1_ / t0_) / math.log(n1 / n0)
        print(f"fitted exponent (time ∝ grids^k) from {n0:,} to {n1:,}: k = {k:.2f}")
        big = [t for n, t, _ in figures if n >= 50_000]
        if big:
            print(f"goal < 60 s for 50,000 grids: {'met' if big[-1] < 60 else 'NOT met'} ({big[-1]:,.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="5000,10000,20000,50000")
    parser.add_argument("--runs", type=int, default=3, help="runs per generated size")
    parser.add_argument("--demo-runs", type=int, default=5)
    parser.add_argument("--http", type=int, default=50, help="requests per endpoint over HTTP (0: skip)")
    parser.add_argument("--baseline-max", type=int, default=20_000, help="largest layer to run the SQL baseline on")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--no-demo", action="store_true")
    args = parser.parse_args()
    if not args.no_demo:
        demo_part(args.demo_runs, args.http)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if sizes:
        province_part(sizes, args.runs, args.baseline_max, args.keep)


if __name__ == "__main__":
    main()

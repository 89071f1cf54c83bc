"""Coverage analysis: small layouts with known gaps, overlaps, slivers, grids outside
their community, invalid and stray parts (codes and areas within 0.5 %); the demo's
manifest defects found and nothing else; branch coverage; metrics; H3; the cache."""

from __future__ import annotations

import h3
import numpy as np
import pytest
import shapely
from sqlalchemy import text

from layers import coverage as cov
from layers.coverage import h3 as cov_h3
from layers.coverage import members as cov_members
from layers.coverage.topology import Thresholds, analyse_topology
from layers.errors import InvalidInput
from tests.factories import (
    COMMUNITY,
    GRID_A,
    GRID_B,
    GRID_C,
    add_area,
    add_branch,
    add_grid,
    add_member,
    rect,
    small_layout,
)
from tests.factories.h3 import points, true_counts

X0, Y0 = 113.60, 34.70
TH = Thresholds(sliver_m2=100.0, noise_m2=1.0, stray_part_m2=1000.0)
AREA_TOLERANCE = 0.005  # 0.5 %

# The demo's deliberate defects and branchless grids, as listed by
# ``ingest.demo.generate.build_demo().manifest()`` (checked by the slow test below):
# (kind, form, grid codes, community code, area m²).
DEMO_DEFECTS = [
    ("gap", "gap", ["410105003003005"], "410105003003", 3058.7),
    ("gap", "gap", ["410105001008003"], "410105001008", 3040.2),
    ("overlap", "overlap", ["410105003008005", "410105003008007"], "410105003008", 2080.9),
    ("overlap", "overlap", ["410105005002005", "410105005002004"], "410105005002", 2646.9),
    ("sliver", "gap", ["410105001005002", "410105001005001"], "410105001005", 24.0),
]
DEMO_BRANCHLESS = [
    "410105001001006",
    "410105001002004",
    "410105001007002",
    "410105002005003",
    "410105003002002",
    "410105003003003",
    "410105004001003",
    "410105004004004",
    "410105004005005",
    "410105005004003",
    "410105005008005",
    "410105005008006",
    "410105007008003",
    "410105008003001",
    "410105009001002",
    "410105009002001",
    "410105010005004",
    "410105010005005",
    "410105012002003",
    "410105012003005",
    "410105012004004",
    "410105012004005",
    "410105012006003",
    "410105012006005",
    "410105100001004",
]


def poly(*rings) -> str:
    """EWKT multipolygon of one polygon from rings of relative (dx, dy) offsets from (X0, Y0)."""
    body = ",".join("(" + ",".join(f"{X0 + dx!r} {Y0 + dy!r}" for dx, dy in ring + [ring[0]]) + ")" for ring in rings)
    return f"SRID=4326;MULTIPOLYGON(({body}))"


def box(x0, y0, x1, y1) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def geography_area(session, ewkt: str) -> float:
    """The independent reference: PostGIS's area on the spheroid, m²."""
    return session.execute(text("SELECT ST_Area(ST_GeomFromEWKT(:g)::geography)"), {"g": ewkt}).scalar()


def topology(session, caches) -> list[dict]:
    return [f for f in cov.current_findings(session, caches, TH)]


def assert_area(found: float, expected: float) -> None:
    assert abs(found - expected) <= AREA_TOLERANCE * expected, (found, expected)


# --------------------------------------------------------------------------------------
# Known layouts
# --------------------------------------------------------------------------------------

S1, C1, C2, C3 = "410105001000", "410105001001", "410105001002", "410105001003"
G1, G2, G3, G4 = C1 + "001", C1 + "002", C2 + "001", C2 + "002"
NOTCH = [(0.01, 0.05), (0.0101, 0.05), (0.01005, 0.04995)]  # cut out of G1's top edge: ~25 m²
TOOTH = [(0.03, 0.05), (0.0301, 0.05), (0.03005, 0.04995)]  # G2 reaching into G1: ~25 m²
HOLE = box(0.02, 0.07, 0.03, 0.08)  # a hole in G2: ~1 km²


def known_layout(session) -> None:
    """District = street S1 = [0, .1]²; communities C1 = [0, .05] × [0, .1],
    C2 = [.05, .1] × [0, .08], C3 = [.05, .1] × [.08, .09] (no grids), and the strip
    [.05, .1] × [.09, .1] of S1 in no community. Grids: G1 = C1's lower half with a
    notch; G2 = C1's upper half with a hole and a tooth into G1; G3 = [.05, .1] × [0, .04];
    G4 = [.05, .1] × [.035, .085] (overlapping G3, reaching into C3)."""
    square = rect(X0, Y0, X0 + 0.1, Y0 + 0.1)
    add_area(session, "410105000000", "测试区", "district", square)
    add_area(session, S1, "测试街道", "street", square, "410105000000")
    add_area(session, C1, "一社区", "community", poly(box(0, 0, 0.05, 0.1)), S1)
    add_area(session, C2, "二社区", "community", poly(box(0.05, 0, 0.1, 0.08)), S1)
    add_area(session, C3, "三社区", "community", poly(box(0.05, 0.08, 0.1, 0.09)), S1)
    add_grid(
        session,
        G1,
        "一社区第1网格",
        poly([(0, 0), (0.05, 0), (0.05, 0.05), (0.0101, 0.05), (0.01005, 0.04995), (0.01, 0.05), (0, 0.05)]),
    )
    add_grid(
        session,
        G2,
        "一社区第2网格",
        poly([(0, 0.05), (0.03, 0.05), (0.03005, 0.04995), (0.0301, 0.05), (0.05, 0.05), (0.05, 0.1), (0, 0.1)], HOLE),
    )
    add_grid(session, G3, "二社区第1网格", poly(box(0.05, 0, 0.1, 0.04)))
    add_grid(session, G4, "二社区第2网格", poly(box(0.05, 0.035, 0.1, 0.085)))
    session.flush()


def test_known_gaps_overlaps_slivers_and_outside(empty_db, caches):
    known_layout(empty_db)
    found = topology(empty_db, caches)
    expected = [
        # kind, form, codes, area code, geometry
        ("gap", "gap", [C1, G2], C1, poly(HOLE)),
        ("gap", "gap", [C3, G2, G4], C3, poly(box(0.05, 0.085, 0.1, 0.09))),
        ("gap", "gap", [S1, G2], S1, poly(box(0.05, 0.09, 0.1, 0.1))),  # G2 borders it at x = .05
        ("overlap", "overlap", [G3, G4], C2, poly(box(0.05, 0.035, 0.1, 0.04))),
        ("sliver", "gap", [C1, G1, G2], C1, poly(NOTCH)),
        ("sliver", "overlap", [G1, G2], C1, poly(TOOTH)),
        ("outside_community", None, [G4, C2], C3, poly(box(0.05, 0.08, 0.1, 0.085))),
    ]
    got = sorted((f["kind"], f["form"], f["codes"], f["area_code"]) for f in found)
    assert got == sorted((k, fm, c, a) for k, fm, c, a, _ in expected)
    for kind, form, codes, area_code, geom in expected:
        f = next(f for f in found if f["kind"] == kind and f["codes"] == codes)
        assert_area(f["area_m2"], geography_area(empty_db, geom))
        # the geometry is the expected one, and the point lies inside it
        shape = shapely.from_wkb(f["wkb"])
        reference = shapely.from_wkt(geom.split(";", 1)[1])
        assert shapely.area(shapely.symmetric_difference(shape, reference)) < 1e-6 * max(reference.area, 1e-9)
        assert shapely.intersects(shape, shapely.Point(f["point"]))


def test_uncovered_share_by_level(empty_db, caches):
    known_layout(empty_db)
    result = cov.summary(empty_db, caches, code="410105000000", level="community", thresholds=TH)
    by = {u["code"]: u for u in result["units"]}
    hole = geography_area(empty_db, poly(HOLE))
    notch = geography_area(empty_db, poly(NOTCH))
    assert_area(by[C1]["uncovered_m2"], hole + notch)
    assert by[C2]["uncovered_m2"] == 0 and by[C2]["coverage_share"] == 1
    c3 = geography_area(empty_db, poly(box(0.05, 0.08, 0.1, 0.09)))
    assert_area(by[C3]["uncovered_m2"], c3 / 2)
    assert by[C3]["grids"] == 0 and by[C3]["branch_share"] is None
    street = geography_area(empty_db, poly(box(0.05, 0.09, 0.1, 0.1)))
    total = result["total"]
    assert_area(total["uncovered_m2"], hole + notch + c3 / 2 + street)
    area = geography_area(empty_db, rect(X0, Y0, X0 + 0.1, Y0 + 0.1))
    assert_area(total["area_km2"] * 1e6, area)
    assert total["coverage_share"] == pytest.approx(1 - total["uncovered_m2"] / area, rel=1e-3)
    # rankings put the fully covered community first
    assert result["rankings"]["coverage_share"][0] == C2
    assert by[C2]["rank"]["coverage_share"] == 1


def test_factory_layout_gap_strip_and_branch_coverage(empty_db, caches):
    ids = small_layout(empty_db, X0, Y0)
    found = cov.issues(empty_db, caches, thresholds=TH)
    gaps = [f for f in found if f["kind"] == "gap"]
    assert [f["codes"] for f in gaps] == [[COMMUNITY, GRID_A, GRID_B, GRID_C]]
    strip = rect(X0 + 0.05, Y0 + 0.05, X0 + 0.0502, Y0 + 0.1)
    assert_area(gaps[0]["area_m2"], geography_area(empty_db, strip))
    kinds = {(f["kind"], f["codes"][0]) for f in found if f["kind"] not in ("gap", "roles_missing")}
    assert kinds == {("no_branch", GRID_B), ("no_branch", GRID_C), ("no_worker", GRID_C)}
    # no members at all: every grid misses every role
    roles = [f for f in found if f["kind"] == "roles_missing"]
    assert sorted(f["codes"][0] for f in roles) == [GRID_A, GRID_B, GRID_C]
    assert len(roles[0]["missing"]) == 6 and roles[0]["registered"] == 0
    # a branch covering nothing, and one whose site lies outside its grid
    add_branch(empty_db, "B002", "空支部", [])
    site_branch = add_branch(empty_db, "B003", "场所在外支部", [ids["B"]])
    empty_db.execute(
        text("UPDATE branches SET site = ST_SetSRID(ST_MakePoint(:x, :y), 4326) WHERE id = :b"),
        {"x": X0 + 0.02, "y": Y0 + 0.02, "b": site_branch},
    )  # inside A, not B
    add_branch(empty_db, "W001", "机关党支部", [], kind="work_unit")  # covers no grid by design
    empty_db.flush()
    found = cov.issues(empty_db, caches, kinds="branch", thresholds=TH)
    kinds = {(f["kind"], f["codes"][0]) for f in found if f["kind"] != "roles_missing"}
    assert kinds == {
        ("no_branch", GRID_C),
        ("no_worker", GRID_C),
        ("branch_without_grid", "B002"),
        ("site_outside_grids", "B003"),
    }
    site = next(f for f in found if f["kind"] == "site_outside_grids")
    assert site["codes"] == ["B003", GRID_B] and site["distance_m"] > 2000
    assert site["point"] == [round(X0 + 0.02, 7), round(Y0 + 0.02, 7)]


def test_stray_part(empty_db, caches):
    square = rect(X0, Y0, X0 + 0.02, Y0 + 0.01)
    add_area(empty_db, "410105000000", "测试区", "district", square)
    add_area(empty_db, S1, "测试街道", "street", square, "410105000000")
    add_area(empty_db, C1, "一社区", "community", square, S1)
    speck = box(0.015, 0.005, 0.0152, 0.0052)  # ~18 m × 22 m
    main = box(0, 0, 0.01, 0.01)
    body = ",".join(
        "((" + ",".join(f"{X0 + dx!r} {Y0 + dy!r}" for dx, dy in ring + [ring[0]]) + "))" for ring in (main, speck)
    )
    add_grid(empty_db, G1, "一社区第1网格", f"SRID=4326;MULTIPOLYGON({body})")
    add_grid(empty_db, G2, "一社区第2网格", poly(box(0.01, 0, 0.02, 0.01), speck))
    empty_db.flush()
    found = topology(empty_db, caches)
    assert [(f["kind"], f["codes"]) for f in found] == [("stray_part", [G1, C1])]
    assert_area(found[0]["area_m2"], geography_area(empty_db, poly(speck)))
    # above the threshold it is a second part, not a stray one
    assert not topology_with(empty_db, caches, stray_part_m2=100.0)


def topology_with(session, caches, **changes) -> list[dict]:
    th = Thresholds(**{**TH.as_dict(), **changes})
    return cov.current_findings(session, caches, th)


def test_invalid_geometry_is_reported_and_repaired(empty_db, caches):
    # The database refuses invalid geometries (a CHECK constraint); lift it inside this
    # rolled-back transaction to store a bow-tie, as an import from elsewhere might.
    empty_db.execute(text("ALTER TABLE grid_versions DROP CONSTRAINT ck_grid_versions_geom_valid"))
    square = rect(X0, Y0, X0 + 0.02, Y0 + 0.02)
    add_area(empty_db, "410105000000", "测试区", "district", square)
    add_area(empty_db, S1, "测试街道", "street", square, "410105000000")
    add_area(empty_db, C1, "一社区", "community", square, S1)
    bowtie = poly([(0, 0), (0.02, 0.02), (0.02, 0), (0, 0.02)])
    add_grid(empty_db, G1, "一社区第1网格", bowtie)
    empty_db.flush()
    found = topology(empty_db, caches)
    invalid = [f for f in found if f["kind"] == "invalid"]
    assert [f["codes"] for f in invalid] == [[G1, C1]]
    assert invalid[0]["point"] == [pytest.approx(X0 + 0.01), pytest.approx(Y0 + 0.01)]
    triangles = poly([(0, 0), (0.01, 0.01), (0, 0.02)]), poly([(0.02, 0), (0.02, 0.02), (0.01, 0.01)])
    assert_area(invalid[0]["area_m2"], sum(geography_area(empty_db, t) for t in triangles))
    # the repaired bow-tie leaves the top and bottom triangles of the community uncovered
    gaps = [f for f in found if f["kind"] == "gap"]
    assert len(gaps) == 2 and all(f["codes"] == [C1, G1] for f in gaps)


def test_analyse_topology_in_memory_cross_community_overlap():
    """The pure function: two communities, a grid of one reaching into the other's grid."""
    a = shapely.box(0, 0, 0.01, 0.01)
    b = shapely.box(0.01, 0, 0.02, 0.01)
    topo = analyse_topology(
        area_codes=["410105000000", S1, C1, C2],
        area_levels=["district", "street", "community", "community"],
        area_parents=[None, "410105000000", S1, S1],
        area_geoms=[shapely.box(0, 0, 0.02, 0.01), shapely.box(0, 0, 0.02, 0.01), a, b],
        grid_codes=[G1, G3],
        grid_areas=[C1, C2],
        grid_geoms=[shapely.box(0, 0, 0.011, 0.01), b],
        thresholds=TH,
    )
    kinds = sorted((f.kind, f.codes, f.area_code) for f in topo.findings)
    assert kinds == [("outside_community", [G1, C1], C2), ("overlap", [G1, G3], C2)]
    assert topo.uncovered_m2 == {}


# --------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------


def test_demo_defects_found_and_nothing_else(demo_db, caches):
    found = cov.current_findings(demo_db, caches)
    assert len(found) == len(DEMO_DEFECTS), [(f["kind"], f["codes"], f["area_m2"]) for f in found]
    for kind, form, grids, community, area in DEMO_DEFECTS:
        if form == "overlap":
            hits = [f for f in found if f["kind"] == kind and set(f["codes"]) == set(grids)]
        else:
            hits = [
                f
                for f in found
                if f["kind"] == kind
                and f["form"] == form
                and f["codes"][0] == community
                and set(grids) <= set(f["codes"][1:])
            ]
        assert len(hits) == 1, (kind, grids)
        f = hits[0]
        assert f["form"] == form and f["area_code"] == community
        # The manifest measures the shapes the generator cut in EPSG:4547; stored in
        # lon/lat their long straight edges are straight in lon/lat instead, which moves
        # the 0.4 m wide sliver by 0.3 m² (see layers.coverage.topology): 0.5 % + 0.5 m².
        assert abs(f["area_m2"] - area) <= AREA_TOLERANCE * area + 0.5, (f["area_m2"], area)
        geom = shapely.from_wkb(f["wkb"])
        assert shapely.intersects(geom, shapely.Point(f["point"])) and geom.is_valid


def test_demo_branch_coverage_matches_the_manifest(demo_db, caches):
    found = cov.issues(demo_db, caches, kinds="branch")
    by_kind: dict[str, list] = {}
    for f in found:
        by_kind.setdefault(f["kind"], []).append(f)
    assert sorted(f["codes"][0] for f in by_kind["no_branch"]) == DEMO_BRANCHLESS
    assert set(by_kind) <= {"no_branch", "roles_missing"}  # workers, sites, branches all in order
    # roles missing: recomputed from the registrations themselves
    rows = (
        demo_db.execute(
            text(
                """SELECT g.code FROM grids g
           WHERE (SELECT count(DISTINCT r.role_code) FROM registrations r
                  WHERE r.grid_id = g.id AND r.status = 'confirmed') < 6 ORDER BY g.code"""
            )
        )
        .scalars()
        .all()
    )
    assert sorted(f["codes"][0] for f in by_kind["roles_missing"]) == rows


def test_demo_metrics_agree_with_postgis(demo_db, caches):
    result = cov.summary(demo_db, caches, code="410105000000", level="street")
    assert len(result["units"]) == 14
    total = result["total"]
    district_area, uncovered = demo_db.execute(
        text(
            """SELECT ST_Area(d.geom::geography), ST_Area(ST_Difference(
                      d.geom, (SELECT ST_Union(geom) FROM grid_versions WHERE valid_to IS NULL))::geography)
           FROM admin_areas d WHERE d.level = 'district'"""
        )
    ).one()
    assert_area(total["area_km2"] * 1e6, district_area)
    # PostGIS's difference also holds the sub-square-metre residue the analysis ignores
    assert total["uncovered_m2"] == pytest.approx(uncovered, abs=2.0)
    streets = dict(
        demo_db.execute(
            text(
                """SELECT s.code, count(*) FROM registrations r JOIN grids g ON g.id = r.grid_id
           JOIN admin_areas c ON c.id = g.community_id JOIN admin_areas s ON s.id = c.parent_id
           WHERE r.status = 'confirmed' GROUP BY s.code"""
            )
        ).all()
    )
    residents = dict(
        demo_db.execute(
            text(
                """SELECT s.code, count(*) FROM residences r JOIN admin_areas s ON s.level = 'street'
           AND ST_Covers(s.geom, r.geom) WHERE r.ended_at IS NULL GROUP BY s.code"""
            )
        ).all()
    )
    branched = dict(
        demo_db.execute(
            text(
                """SELECT left(g.code, 9) || '000', count(*) FILTER (WHERE EXISTS (
               SELECT 1 FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id
               WHERE bg.grid_id = g.id AND b.active)) FROM grids g GROUP BY 1"""
            )
        ).all()
    )
    for u in result["units"]:
        assert u["members_registered"] == streets[u["code"]]
        assert u["members_resident"] == residents[u["code"]]
        assert u["grids_with_branch"] == branched[u["code"]]
        assert u["registration_rate"] == pytest.approx(streets[u["code"]] / residents[u["code"]], abs=1e-4)
        assert u["member_density_km2"] == pytest.approx(residents[u["code"]] / u["area_km2"], rel=1e-3)
    assert sum(u["members_registered"] for u in result["units"]) == total["members_registered"]
    ranked = result["rankings"]["member_density_km2"]
    densities = [next(u for u in result["units"] if u["code"] == c)["member_density_km2"] for c in ranked]
    assert densities == sorted(densities, reverse=True) and len(ranked) == 14


def test_summary_bad_input(demo_db, caches):
    with pytest.raises(InvalidInput) as e:
        cov.summary(demo_db, caches, code="410105999000")
    assert e.value.field == "code"
    with pytest.raises(InvalidInput) as e:
        cov.summary(demo_db, caches, code="410105001000", level="district")
    assert e.value.field == "level"
    with pytest.raises(InvalidInput) as e:
        cov.summary(demo_db, caches, code="410105001000", level="province")
    assert e.value.field == "level"
    with pytest.raises(InvalidInput) as e:
        cov.issues(demo_db, caches, kinds="gaps")
    assert e.value.field == "kind"


@pytest.mark.slow
def test_stored_manifest_is_the_generators():
    from ingest.demo.generate import build_demo

    manifest = build_demo().manifest()
    listed = [(d["kind"], d["form"], d["grid_codes"], d["community_code"], d["area_m2"]) for d in manifest["defects"]]
    assert listed == DEMO_DEFECTS
    assert manifest["branchless_grids"] == DEMO_BRANCHLESS


# --------------------------------------------------------------------------------------
# H3
# --------------------------------------------------------------------------------------

STREET = "410105001000"
K = 5


def public(session, caches, metric: str, within: str | None = None, k: int = K) -> dict[int, dict]:
    return {
        res: cov.h3_aggregate(session, caches, res=res, metric=metric, within=within, suppress_below=k)
        for res in cov.H3_RESOLUTIONS
    }


def assert_nothing_recoverable(published: dict[int, dict[str, int]], true: dict[int, dict[str, int]], k: int):
    """Whatever a parent minus its published children leaves is 0 or ≥ k for a published
    parent, ≥ k for a suppressed parent counting ≥ k (≥ k people stay hidden under it)."""
    checked = 0
    for res in (7, 8, 9):
        for parent, n in true[res].items():
            kids = [c for c in h3.cell_to_children(parent, res + 1) if c in true[res + 1]]
            rest = n - sum(published[res + 1].get(c, 0) for c in kids)
            if parent in published[res]:
                assert published[res][parent] == n
                assert rest == 0 or rest >= k, (parent, n, rest)
                checked += 1
            elif n >= k:
                assert rest >= k, (parent, n, rest)
                checked += 1
    return checked


def test_h3_entitled_counts_are_exact_inside_within(demo_db, caches):
    full = cov.h3_aggregate(demo_db, caches, res=9, metric="members", within=STREET, suppress_below=None)
    inside = points(demo_db, "members", STREET)
    assert full["total"] == len(inside) == sum(c["count"] for c in full["cells"]) and len(inside) > 1000
    assert full["suppressed_cells"] == 0
    assert {c["cell"]: c["count"] for c in full["cells"]} == true_counts(inside)[9]
    assert any(c["count"] < K for c in full["cells"]), "res 9 should have cells with fewer than 5 members"
    for c in full["cells"][:20]:
        assert h3.get_resolution(c["cell"]) == 9
        ring = c["boundary"]
        assert ring[0] == ring[-1] and len(ring) == 7
        lat, lon = h3.cell_to_latlng(c["cell"])
        assert shapely.Polygon(ring).contains(shapely.Point(lon, lat))


def test_h3_public_counts_are_whole_cells_listed_by_within(demo_db, caches):
    everywhere = true_counts(points(demo_db, "members"))[9]
    listed = true_counts(points(demo_db, "members", STREET))[9]
    kept = cov.h3_aggregate(demo_db, caches, res=9, metric="members", within=STREET, suppress_below=K)
    counts = {c["cell"]: c["count"] for c in kept["cells"]}
    assert kept["total"] is None and all(n >= K for n in counts.values())
    # listed: the cells holding a member inside the street; counted whole
    assert set(counts) <= set(listed) and kept["suppressed_cells"] == len(listed) - len(counts) > 0
    assert counts == {c: everywhere[c] for c in counts}
    assert any(everywhere[c] > listed[c] for c in counts), "some boundary cell should count beyond the street"
    # the tile engineer's entry point gives the same cells
    assert cov.h3_cells(demo_db, caches, res=9, metric="members", within=STREET, suppress_below=K) == kept["cells"]


@pytest.mark.parametrize("metric", cov.H3_METRICS)
def test_h3_hierarchy_is_exact_and_differencing_across_resolutions_recovers_nothing(demo_db, metric, caches):
    true = true_counts(points(demo_db, metric))
    entitled = {
        res: cov.h3_aggregate(demo_db, caches, res=res, metric=metric, within=None, suppress_below=None)
        for res in cov.H3_RESOLUTIONS
    }
    for res, out in entitled.items():
        assert {c["cell"]: c["count"] for c in out["cells"]} == true[res]
        assert out["total"] == sum(true[10].values())
    answers = public(demo_db, caches, metric)
    published = {res: {c["cell"]: c["count"] for c in out["cells"]} for res, out in answers.items()}
    for res in (7, 8, 9):  # every published parent is the sum of all its children
        for parent, n in published[res].items():
            assert n == sum(true[res + 1].get(c, 0) for c in h3.cell_to_children(parent, res + 1))
    for res, out in answers.items():
        assert all(n >= K for n in published[res].values()) and out["total"] is None
        assert out["suppressed_cells"] == len(true[res]) - len(published[res])
    assert assert_nothing_recoverable(published, true, K) > 100
    # more than the small cells are withheld on the demo: the complementary step bites
    assert any(n >= K and c not in published[res] for res in (8, 9) for c, n in true[res].items())


def add_residences(session, xy) -> None:
    """One member per point, living there."""
    for i, (x, y) in enumerate(xy):
        member = add_member(session, f"测试党员{i}")
        session.execute(
            text(
                """INSERT INTO residences (member_id, geom, source_crs, source_x, source_y)
               VALUES (:m, ST_SetSRID(ST_MakePoint(:x, :y), 4326), 'wgs84', :x, :y)"""
            ),
            {"m": member, "x": x, "y": y},
        )
    session.flush()


def centre(cell: str) -> tuple[float, float]:
    lat, lon = h3.cell_to_latlng(cell)
    assert h3.latlng_to_cell(lat, lon, h3.get_resolution(cell)) == cell
    return lon, lat


def test_h3_complementary_suppression_on_a_small_layout(empty_db, caches):
    """Three places in the small layout (k = 5), each a differencing attack on the old
    per-resolution, per-``within`` suppression:

    1. res-9 cell P1 with res-10 children A (10 people) and B (2): P1 (12) − A gave B;
    2. res-8 cell R with res-9 children Q (3 people) and P2 (20 = C1 12 + C2 8): R − P2
       gave Q, and once P2 is hidden, C1 + C2 would give P2 back;
    3. res-10 cell X across the edge of grids A and B, 2 people in grid A and 6 in B:
       X asked within the district (8) minus X within grid B (6) gave grid A's 2."""
    small_layout(empty_db, X0, Y0)
    p1 = h3.latlng_to_cell(Y0 + 0.01, X0 + 0.01, 9)
    a, b = h3.cell_to_children(p1, 10)[:2]
    p2 = h3.latlng_to_cell(Y0 + 0.08, X0 + 0.02, 9)
    r = h3.cell_to_parent(p2, 8)
    q = next(c for c in h3.cell_to_children(r, 9) if c != p2)
    q10 = h3.cell_to_center_child(q, 10)
    c1, c2 = h3.cell_to_children(p2, 10)[:2]
    x_cell = h3.latlng_to_cell(Y0 + 0.02, X0 + 0.05, 10)
    west, east = (X0 + 0.05 - 0.00003, Y0 + 0.02), (X0 + 0.05 + 0.00003, Y0 + 0.02)
    assert h3.latlng_to_cell(west[1], west[0], 10) == h3.latlng_to_cell(east[1], east[0], 10) == x_cell
    assert len({h3.cell_to_parent(c, 7) for c in (p1, r, x_cell)}) == 3, "three places apart"
    xy = (
        [centre(a)] * 10
        + [centre(b)] * 2
        + [centre(q10)] * 3
        + [centre(c1)] * 12
        + [centre(c2)] * 8
        + [west] * 2
        + [east] * 6
    )
    add_residences(empty_db, xy)
    true = true_counts(xy)
    assert true[9][p1] == 12 and true[8][r] == 23 and true[9][p2] == 20 and true[10][x_cell] == 8

    answers = public(empty_db, caches, "residences")
    published = {res: {c["cell"]: c["count"] for c in out["cells"]} for res, out in answers.items()}
    assert assert_nothing_recoverable(published, true, K) > 0
    # 1: A is withheld with B, P1 and its ancestors stay
    assert a not in published[10] and b not in published[10] and published[9][p1] == 12
    assert published[8][h3.cell_to_parent(p1, 8)] == 12
    # 2: P2 is withheld with Q, and C2 with P2 (the smaller child); R and C1 stay
    assert q not in published[9] and p2 not in published[9] and published[8][r] == 23
    assert published[10][c1] == 12 and c2 not in published[10]
    assert answers[9]["suppressed_cells"] == 2 and answers[10]["suppressed_cells"] == 4
    # 3: X counts 8 whichever the within; listed where it holds a person inside
    for within in (None, "410105000000", STREET, COMMUNITY, GRID_A, GRID_B):
        out = cov.h3_aggregate(empty_db, caches, res=10, metric="residences", within=within, suppress_below=K)
        assert {c["cell"]: c["count"] for c in out["cells"]}.get(x_cell) == 8, within
    only_b = cov.h3_aggregate(empty_db, caches, res=10, metric="residences", within=GRID_B, suppress_below=K)
    assert [c["cell"] for c in only_b["cells"]] == [x_cell] and only_b["suppressed_cells"] == 0
    in_a = cov.h3_aggregate(empty_db, caches, res=10, metric="residences", within=GRID_A, suppress_below=K)
    assert [c["cell"] for c in in_a["cells"]] == sorted([c1, x_cell]) and in_a["suppressed_cells"] == 4
    assert cov.h3_cells(empty_db, caches, res=10, metric="residences", within=GRID_C, suppress_below=K) == []
    # entitled callers: the people inside, exactly
    for within, n in ((GRID_A, 2), (GRID_B, 6), (COMMUNITY, 8)):
        out = cov.h3_aggregate(empty_db, caches, res=10, metric="residences", within=within, suppress_below=None)
        assert {c["cell"]: c["count"] for c in out["cells"]}[x_cell] == n
    everything = cov.h3_aggregate(empty_db, caches, res=7, metric="residences", within=None, suppress_below=None)
    assert everything["total"] == len(xy) and everything["suppressed_cells"] == 0


@pytest.mark.parametrize(
    "metric, sql",
    [
        ("residences", "SELECT count(*) FROM residences WHERE ended_at IS NULL"),
        ("events", "SELECT count(*) FROM events"),
    ],
)
def test_h3_other_metrics_everywhere(demo_db, metric, sql, caches):
    out = cov.h3_aggregate(demo_db, caches, res=7, metric=metric, within=None, suppress_below=None)
    assert out["total"] == demo_db.execute(text(sql)).scalar() == sum(c["count"] for c in out["cells"])
    assert all(h3.get_resolution(c["cell"]) == 7 for c in out["cells"])


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"res": 6, "metric": "members", "within": None}, "res"),
        ({"res": 11, "metric": "members", "within": None}, "res"),
        ({"res": 9, "metric": "people", "within": None}, "metric"),
        ({"res": 9, "metric": "members", "within": "410105999000"}, "within"),
        ({"res": 9, "metric": "members", "within": "4101"}, "within"),
    ],
)
def test_h3_bad_input(demo_db, kwargs, field, caches):
    with pytest.raises(InvalidInput) as e:
        cov.h3_cells(demo_db, caches, suppress_below=None, **kwargs)
    assert e.value.field == field


# --------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------


def test_findings_cached_until_the_layer_changes(empty_db, caches):
    ids = small_layout(empty_db, X0, Y0)
    builds = caches.coverage.computed
    first = topology(empty_db, caches)
    assert caches.coverage.computed == builds + 1
    again = topology(empty_db, caches)
    assert caches.coverage.computed == builds + 1 and again == first
    again[0]["codes"].append("x")  # callers get fresh dicts: the cache is not theirs to change
    assert topology(empty_db, caches) == first
    # a new grid drawn over A: the grids version changes, the analysis is redone
    add_grid(empty_db, COMMUNITY + "004", "测试社区第4网格", rect(X0 + 0.01, Y0 + 0.01, X0 + 0.02, Y0 + 0.02))
    empty_db.flush()
    after = topology(empty_db, caches)
    assert caches.coverage.computed == builds + 2
    overlaps = [f for f in after if f["kind"] == "overlap"]
    assert [f["codes"] for f in overlaps] == [[GRID_A, COMMUNITY + "004"]]
    assert_area(overlaps[0]["area_m2"], geography_area(empty_db, rect(X0 + 0.01, Y0 + 0.01, X0 + 0.02, Y0 + 0.02)))
    assert ids["A"]


def test_h3_cache_follows_the_members_layer(demo_db, caches):
    community = "410105003003"
    before = cov.h3_aggregate(demo_db, caches, res=10, metric="residences", within=community, suppress_below=None)
    x, y = demo_db.execute(
        text("SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(geom) AS p FROM admin_areas WHERE code = :c) s"),
        {"c": community},
    ).one()
    member = add_member(demo_db, "测试党员")
    demo_db.execute(
        text(
            """INSERT INTO residences (member_id, geom, source_crs, source_x, source_y)
           VALUES (:m, ST_SetSRID(ST_MakePoint(:x, :y), 4326), 'wgs84', :x, :y)"""
        ),
        {"m": member, "x": x, "y": y},
    )
    demo_db.flush()
    after = cov.h3_aggregate(demo_db, caches, res=10, metric="residences", within=community, suppress_below=None)
    assert after["total"] == before["total"] + 1
    cell = h3.latlng_to_cell(y, x, 10)
    counts = lambda out: {c["cell"]: c["count"] for c in out["cells"]}  # noqa: E731
    assert counts(after)[cell] == counts(before).get(cell, 0) + 1


def test_registered_members_per_cell_come_from_cached_residence_cells(demo_db, monkeypatch, caches):
    """Members with an active registration per H3 cell, everywhere, are counted from the
    cells of the residences they registered with (located once per residences version):
    the same counts as locating every registered residence; a registration confirmed or
    rejected reuses the residence cells, a residence written locates them again; a
    residence the cells do not know yet falls back to locating the points."""
    points = cov_h3._xy(demo_db, cov_h3._H3_POINTS["members"].format(where=""))
    assert cov_h3._registered_cells(demo_db, caches) == cov.H3Counts.finest_of_points(points)

    reg, x, y = demo_db.execute(
        text(
            """SELECT r.id, ST_X(s.geom), ST_Y(s.geom) FROM registrations r JOIN residences s ON s.id = r.residence_id
            WHERE r.status = 'pending' ORDER BY r.id LIMIT 1"""
        )
    ).one()
    cell = h3.latlng_to_cell(y, x, cov.H3_FINEST)
    located = []
    real = h3.latlng_to_cell
    monkeypatch.setattr(h3, "latlng_to_cell", lambda *a: located.append(a) or real(*a))
    before = cov_h3._registered_cells(demo_db, caches)[cell]
    demo_db.execute(text("UPDATE registrations SET status = 'rejected', reason = 'test' WHERE id = :r"), {"r": reg})
    after = cov_h3._registered_cells(demo_db, caches)
    assert after.get(cell, 0) == before - 1 and located == []  # no point located again
    demo_db.execute(text("UPDATE residences SET source_x = source_x WHERE id = (SELECT min(id) FROM residences)"))
    cov_h3._registered_cells(demo_db, caches)
    assert len(located) >= len(points)  # a residences write: every residence located again

    monkeypatch.setattr(
        caches.residence_cells, "get", lambda session, compute, *a, **k: (np.zeros(0, np.int64), np.zeros(0, np.uint64))
    )
    assert cov_h3._registered_cells(demo_db, caches) is None  # registrations of residences it does not know
    fallback = cov_h3._finest_cells(demo_db, caches, "members", None)
    assert fallback == cov.H3Counts.finest_of_points(cov_h3._xy(demo_db, cov_h3._H3_POINTS["members"].format(where="")))


def test_h3_counts_are_kept_when_a_write_leaves_every_cell_as_it_was(demo_db, caches):
    """A registration confirmed (still active) changes the members version but no cell:
    the counts already built — hierarchy, suppression, rings — are kept; a registration
    rejected changes a cell and gets new counts."""
    before = cov.h3_counts(demo_db, caches, "members", None)
    pending = (
        demo_db.execute(text("SELECT id FROM registrations WHERE status = 'pending' ORDER BY id LIMIT 2"))
        .scalars()
        .all()
    )
    demo_db.execute(
        text("UPDATE registrations SET status = 'confirmed', decided_at = gridbranch_now() WHERE id = :r"),
        {"r": pending[0]},
    )
    assert cov.h3_counts(demo_db, caches, "members", None) is before
    demo_db.execute(
        text("UPDATE registrations SET status = 'rejected', reason = 'test' WHERE id = :r"), {"r": pending[1]}
    )
    after = cov.h3_counts(demo_db, caches, "members", None)
    assert after is not before and after.total == before.total - 1


def test_residents_are_recounted_only_when_residences_change(demo_db, monkeypatch, caches):
    """The member figures are read again after any member write, but the residents per
    grid and area (a point-in-polygon pass over every residence) only after a residences
    write: a registration confirmed reuses them."""
    model = cov.coverage_model(demo_db, caches)
    before = cov.member_counts(demo_db, caches, model)
    reg, grid_id = demo_db.execute(
        text("SELECT id, grid_id FROM registrations WHERE status = 'pending' ORDER BY id LIMIT 1")
    ).one()
    g = model.grid_ids.index(grid_id)
    passes = []
    real = cov_members.points_in
    monkeypatch.setattr(cov_members, "points_in", lambda *a, **k: passes.append(1) or real(*a, **k))
    demo_db.execute(
        text("UPDATE registrations SET status = 'confirmed', decided_at = gridbranch_now() WHERE id = :r"), {"r": reg}
    )
    after = cov.member_counts(demo_db, caches, model)
    assert after is not before and passes == []
    assert after.grid_registered[g] == before.grid_registered[g] + 1
    assert after.grid_pending[g] == before.grid_pending[g] - 1
    assert (after.grid_residents == before.grid_residents).all() and after.area_residents == before.area_residents
    demo_db.execute(text("UPDATE residences SET source_x = source_x WHERE id = (SELECT min(id) FROM residences)"))
    cov.member_counts(demo_db, caches, model)
    assert passes  # located again


def test_finding_ids_are_stable_across_filters(demo_db, caches):
    everything = {f["id"]: f for f in cov.issues(demo_db, caches)}
    assert len(everything) == len(cov.issues(demo_db, caches))  # unique
    part = cov.issues(demo_db, caches, kinds="gap,overlap,no_branch", within="410105003000")
    assert part and all(everything[f["id"]]["codes"] == f["codes"] for f in part)
    assert {f["id"] for f in cov.current_findings(demo_db, caches)} <= set(everything)


def test_an_empty_layer_has_no_findings(empty_db, caches):
    assert cov.current_findings(empty_db, caches) == [] and cov.issues(empty_db, caches) == []
    assert cov.root_code(empty_db, caches) is None
    assert cov.h3_cells(empty_db, caches, res=8, metric="events", within=None, suppress_below=5) == []

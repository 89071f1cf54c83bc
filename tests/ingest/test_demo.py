"""The Jinshui demo district: deterministic build, codes, counts, exact tilings with
exactly the listed defects, and a load into a fresh PostGIS database that passes
``check_invariants``."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import timedelta

import numpy as np
import pytest
import shapely
import shapely.geometry
from sqlalchemy import text

from ingest.demo import generate, load
from ingest.demo.generate import build_demo, to_metric
from layers.crs import haversine_m

# The district (geometry, codes, people) does not depend on the present; its timeline
# does: only the tests of the timeline are marked ``clock`` (run at every CLOCK_INSTANT).

NOISE_M2 = 0.5


@pytest.fixture(scope="module")
def demo() -> generate.DemoDistrict:
    return build_demo()


def _metric(geoms) -> np.ndarray:
    return to_metric(np.asarray(geoms, dtype=object))


def _tiling(parent, children) -> tuple[float, float, float]:
    """(uncovered, outside, pairwise overlap) areas in m² of ``children`` tiling ``parent``."""
    p = to_metric(parent)
    cs = _metric(children)
    union = shapely.union_all(cs)
    overlap = 0.0
    for i in range(len(cs)):
        for j in range(i + 1, len(cs)):
            if shapely.intersects(cs[i], cs[j]):
                overlap += shapely.intersection(cs[i], cs[j]).area
    return shapely.difference(p, union).area, shapely.difference(union, p).area, overlap


# --------------------------------------------------------------------------------------
# In memory
# --------------------------------------------------------------------------------------


def _fingerprint(d: generate.DemoDistrict) -> tuple:
    return (
        d.geometry_digest(),
        [g.code for g in d.grids],
        [(g.worker_name, g.worker_phone) for g in d.grids],
        [(b.code, b.grid_codes, b.site.wkb) for b in d.branches],
        [(m.name, m.phone, m.status, m.work_branch_code) for m in d.members],
        [(r.lon, r.lat) for r in d.residences],
        [(r.member_key, r.grid_code, r.role_code, r.status) for r in d.registrations],
        [(e.lon, e.lat, e.status, e.reported_at, e.closed_at) for e in d.events],
        d.defects,
    )


def test_build_is_deterministic(demo):
    again = build_demo()
    assert _fingerprint(again) == _fingerprint(demo)
    assert json.dumps(again.manifest(), sort_keys=True) == json.dumps(demo.manifest(), sort_keys=True)


@pytest.mark.clock
def test_the_timeline_leads_up_to_as_of(demo):
    """Built for another instant, the district is the same and every timestamp of its
    timeline (residences, registrations, events, their logs) moves by exactly as much,
    so a demo loaded today looks as fresh as the one built for AS_OF."""
    later = generate.AS_OF + timedelta(days=123, hours=5, minutes=7)
    moved = build_demo(as_of=later)
    shift = later - generate.AS_OF
    assert moved.as_of == later and moved.geometry_digest() == demo.geometry_digest()

    def times(d, delta):
        def at(v):
            return None if v is None else v + delta

        return (
            [at(r.recorded_at) for r in d.residences],
            [(r.member_key, r.status, at(r.created_at), at(r.decided_at)) for r in d.registrations],
            [
                (e.key, e.status, at(e.reported_at), at(e.dispatched_at), at(e.due_at), at(e.closed_at))
                for e in d.events
            ],
            [(x.event_key, x.action, at(x.at)) for x in d.event_log],
        )

    assert times(moved, timedelta(0)) == times(demo, shift)
    assert max(e.reported_at for e in moved.events) <= later
    assert [(m.name, m.created_at) for m in moved.members] == [(m.name, m.created_at) for m in demo.members]


def test_another_seed_gives_another_district_of_the_same_shape(demo):
    other = build_demo(7)
    assert other.geometry_digest() != demo.geometry_digest()
    assert len(other.streets) == 14 and len(other.communities) == 92 and len(other.grids) == len(demo.grids)
    assert [d["kind"] for d in other.defects] == [d["kind"] for d in demo.defects]


def test_counts(demo):
    c = demo.counts()
    assert c["streets"] == 14
    assert sum(s.code[6:9] < "100" for s in demo.streets) == 12
    assert sorted(s.code[6:9] for s in demo.streets if s.code[6:9] >= "100") == ["100", "101"]
    assert c["communities"] == 92
    assert 480 <= c["grids"] <= 520
    assert c["departments"] == 41
    assert len({d.name for d in demo.departments}) == 41
    assert 10 <= c["event_categories"] <= 14
    assert 400 <= c["branches_grid"] + c["branches_community"] <= 440
    assert 50 <= c["branches_work_unit"] <= 70
    assert c["members_in_service"] == 15_000 and c["members_floating"] == 1_300
    assert 0.85 <= c["registrations"] / c["members"] <= 0.90
    assert 2_900 <= c["events"] <= 3_100
    assert c["event_log"] >= c["events"]


def test_codes_follow_the_rules(demo):
    assert demo.district.code == "410105000000" and demo.district.name == "金水区"
    codes = [a.code for a in (demo.district, *demo.streets, *demo.communities)] + [g.code for g in demo.grids]
    assert len(codes) == len(set(codes))
    streets = {s.code: s for s in demo.streets}
    for s in demo.streets:
        assert re.fullmatch(r"410105(0(0[1-9]|[1-9]\d)|1\d\d)000", s.code), s.code
        assert s.parent_code == demo.district.code and s.name.endswith(("街道", "镇"))
    comms = {c.code: c for c in demo.communities}
    for c in demo.communities:
        assert re.fullmatch(r"\d{12}", c.code) and "001" <= c.code[9:] <= "199"
        assert c.parent_code in streets and c.code[:9] == c.parent_code[:9]
        assert c.name.endswith("社区")
    assert len({c.name for c in demo.communities}) == 92
    per_comm = defaultdict(list)
    for g in demo.grids:
        assert re.fullmatch(r"\d{15}", g.code) and g.code[:12] == g.community_code and g.community_code in comms
        assert g.name == f"{comms[g.community_code].name}第{int(g.code[12:])}网格"
        assert re.fullmatch(r"1\d{2}0000\d{4}", g.worker_phone) and 2 <= len(g.worker_name) <= 3
        per_comm[g.community_code].append(int(g.code[12:]))
    for seqs in per_comm.values():
        assert sorted(seqs) == list(range(1, len(seqs) + 1))
    assert set(per_comm) == set(comms)
    branch_codes = [b.code for b in demo.branches]
    assert len(branch_codes) == len(set(branch_codes))


def test_geometries_are_valid_multipolygons(demo):
    geoms = [demo.district.geom] + [a.geom for a in (*demo.streets, *demo.communities)] + [g.geom for g in demo.grids]
    assert all(g.geom_type == "MultiPolygon" for g in geoms)
    assert shapely.is_valid(np.asarray(geoms, dtype=object)).all()
    # Stored in WGS84, not GCJ-02: about 570 m west (and a little north) of the raw Amap data.
    raw = shapely.geometry.shape(json.loads(generate.BOUNDARY_FILE.read_text(encoding="utf-8")))
    (rx, ry), (wx, wy) = shapely.centroid(raw).coords[0], shapely.centroid(demo.district.geom).coords[0]
    assert wx < rx and 500 < haversine_m(rx, ry, wx, wy) < 650
    assert 230e6 < demo.district.area_m2 < 250e6


def test_streets_tile_the_district(demo):
    gap, out, overlap = _tiling(demo.district.geom, [s.geom for s in demo.streets])
    assert gap < NOISE_M2 and out < NOISE_M2 and overlap < NOISE_M2


def test_communities_tile_their_street(demo):
    for s in demo.streets:
        children = [c.geom for c in demo.communities if c.parent_code == s.code]
        assert len(children) >= 4
        gap, out, overlap = _tiling(s.geom, children)
        assert gap < NOISE_M2 and out < NOISE_M2 and overlap < NOISE_M2, s.code


def test_grids_tile_their_community_except_the_defects(demo):
    defects = defaultdict(list)
    for d in demo.defects:
        defects[d["community_code"]].append(d)
    for c in demo.communities:
        grids = [g.geom for g in demo.grids if g.community_code == c.code]
        gap, out, overlap = _tiling(c.geom, grids)
        listed = defects.get(c.code, [])
        want_gap = sum(d["area_m2"] for d in listed if d["form"] == "gap")
        want_overlap = sum(d["area_m2"] for d in listed if d["form"] == "overlap")
        assert out < NOISE_M2, c.code
        assert gap == pytest.approx(want_gap, abs=NOISE_M2), c.code
        assert overlap == pytest.approx(want_overlap, abs=NOISE_M2), c.code


def test_defect_manifest(demo):
    kinds = Counter(d["kind"] for d in demo.defects)
    assert kinds["gap"] >= 1 and kinds["overlap"] >= 1 and kinds["sliver"] >= 1
    grids = {g.code: g for g in demo.grids}
    for d in demo.defects:
        assert d["community_code"] == d["grid_codes"][0][:12]
        assert all(code in grids for code in d["grid_codes"])
        geom = shapely.from_wkt(d["wkt"])
        assert shapely.dwithin(geom, shapely.Point(d["lon"], d["lat"]), 1e-6)
        if d["kind"] == "sliver":
            assert d["area_m2"] < 50
        else:
            assert 1_000 < d["area_m2"] < 10_000
        rep = to_metric(shapely.Point(d["lon"], d["lat"]))
        covering = [g for g in demo.grids if shapely.covers(g.geom, shapely.Point(d["lon"], d["lat"]))]
        if d["form"] == "gap":
            assert covering == [] or all(shapely.distance(to_metric(g.geom), rep) < 0.01 for g in covering)
        else:
            assert {g.code for g in covering} == set(d["grid_codes"])
    manifest = demo.manifest()
    assert json.loads(json.dumps(manifest, ensure_ascii=False)) == manifest
    assert manifest["defects"] == demo.defects and "work_unit" in manifest["work_unit_note"]


def test_grids_get_smaller_towards_the_centre(demo):
    centre = to_metric(shapely.Point(113.66, 34.765))
    dist = np.array([shapely.distance(to_metric(g.geom), centre) for g in demo.grids])
    area = np.array([g.area_m2 for g in demo.grids])
    assert np.median(area[dist < 3000]) * 3 < np.median(area[dist > 8000])


def test_branches(demo):
    grids = {g.code: g for g in demo.grids}
    covered = Counter(code for b in demo.branches for code in b.grid_codes)
    assert max(covered.values()) == 1
    assert set(grids) - set(covered) == set(demo.branchless_grids)
    assert 0.03 <= len(demo.branchless_grids) / len(grids) <= 0.07
    for b in demo.branches:
        if b.kind == "work_unit":
            assert b.grid_codes == () and shapely.contains(demo.district.geom, b.site)
        else:
            assert b.kind in ("grid", "community") and 1 <= len(b.grid_codes) <= 3
            assert all(grids[c].community_code == b.community_code for c in b.grid_codes)
            assert any(shapely.covers(grids[c].geom, b.site) for c in b.grid_codes)
        assert re.fullmatch(r"1\d{2}0000\d{4}", b.secretary_phone)


@pytest.mark.clock
def test_members_residences_registrations(demo):
    district = demo.district.geom
    xy = np.array([(r.lon, r.lat) for r in demo.residences])
    assert shapely.contains_xy(district, xy[:, 0], xy[:, 1]).all()
    assert [r.member_key for r in demo.residences] == list(range(len(demo.members)))
    assert all(5 <= r.accuracy_m <= 50 for r in demo.residences)
    phones = [m.phone for m in demo.members]
    assert len(set(phones)) == len(phones)
    assert all((m.status == "in_service") == (m.work_branch_code is not None) for m in demo.members)
    grids = {g.code: g for g in demo.grids}
    branch_of = {c: b.code for b in demo.branches for c in b.grid_codes}
    registered = set()
    for r in demo.registrations:
        res = demo.residences[r.member_key]
        assert shapely.covers(grids[r.grid_code].geom, shapely.Point(res.lon, res.lat))
        assert r.branch_code == branch_of.get(r.grid_code)
        assert r.role_code in generate.ROLE_CODES and r.status in ("confirmed", "pending")
        assert (r.decided_at is None) == (r.status == "pending")
        registered.add(r.member_key)
    assert len(registered) == len(demo.registrations)
    # Members living in a real gap are not registered (and there are some).
    in_gap = 0
    for d in demo.defects:
        if d["kind"] == "gap":
            gap = shapely.from_wkt(d["wkt"])
            inside = np.flatnonzero(shapely.contains_xy(gap, xy[:, 0], xy[:, 1]))
            in_gap += len(inside)
            assert not registered & set(inside.tolist())
    assert in_gap >= 3


@pytest.mark.clock
def test_events(demo):
    limits = {c.code: c.time_limit_hours for c in demo.categories}
    depts = {c.code: c.department_code for c in demo.categories}
    statuses = Counter(e.status for e in demo.events)
    assert statuses["closed"] / len(demo.events) > 0.7
    for s in (
        "handled",
        "in_progress",
        "dispatched",
        "registered",
        "reported",
        "rejected",
        "duplicate",
        "deferred",
        "returned",
    ):
        assert statuses[s] > 0, s
    logs = defaultdict(list)
    for entry in demo.event_log:
        logs[entry.event_key].append(entry)
    start = min(e.reported_at for e in demo.events)
    assert (demo.as_of - start).days <= 366
    for e in demo.events:
        assert e.reported_at <= demo.as_of
        if e.dispatched_at:
            assert e.reported_at <= e.dispatched_at
            assert e.due_at - e.dispatched_at == timedelta(hours=limits[e.category_code])
            assert e.department_code == depts[e.category_code]
        if e.closed_at:
            assert (e.dispatched_at or e.reported_at) <= e.closed_at <= demo.as_of
        assert (e.status == "duplicate") == (e.duplicate_of is not None)
        if e.duplicate_of is not None:
            assert e.duplicate_of < e.key
        trail = logs[e.key]
        assert trail[0].action == "report" and trail[0].from_status is None and trail[0].at == e.reported_at
        assert trail[-1].to_status == e.status and e.version == len(trail)
        for a, b in zip(trail, trail[1:]):
            assert b.from_status == a.to_status and a.at <= b.at
    grids = {g.code: g for g in demo.grids}
    for e in demo.events:
        if e.grid_code:
            assert shapely.covers(grids[e.grid_code].geom, shapely.Point(e.lon, e.lat))
    assert sum(e.grid_code is None for e in demo.events) >= 1  # reported inside a gap


# --------------------------------------------------------------------------------------
# In PostGIS
# --------------------------------------------------------------------------------------


@pytest.mark.clock
def test_load_and_check_invariants(migrated_engine, demo):
    with migrated_engine.connect() as conn:
        trans = conn.begin()
        try:
            assert not load.is_loaded(conn)
            counts = load.load_demo(conn, demo)
            assert load.is_loaded(conn)
            assert counts == demo.counts()
            assert load.check_invariants(conn, demo) == []
            summary = load.format_counts(counts)
            assert "500 grids" in summary and "15000 in service" in summary
            # The sequences moved past the loaded ids: a plain insert still works.
            conn.execute(text("INSERT INTO departments (code, name) VALUES ('X1', '测试部门')"))
            # The demo's defects are visible to SQL as what they are.
            gaps = conn.execute(
                text("""
                SELECT count(*) FROM (
                    SELECT (ST_Dump(ST_Difference(c.geom, ST_Union(v.geom)))).geom AS g
                    FROM admin_areas c JOIN grids gr ON gr.community_id = c.id
                    JOIN grid_versions v ON v.grid_id = gr.id AND v.valid_to IS NULL
                    GROUP BY c.id, c.geom) d
                WHERE ST_Area(g::geography) > 1
            """)
            ).scalar()
            assert gaps == sum(d["form"] == "gap" for d in demo.defects)
        finally:
            trans.rollback()


def test_check_invariants_reports_breakage(migrated_engine, demo):
    with migrated_engine.connect() as conn:
        trans = conn.begin()
        try:
            load.load_demo(conn, demo)
            # Grow the easternmost grid of the first community by ~20 m: it now sticks
            # out of its community and overlaps its neighbours.
            community = demo.communities[0]
            east = max((g for g in demo.grids if g.community_code == community.code), key=lambda g: g.geom.bounds[2])
            conn.execute(
                text("""
                UPDATE grid_versions SET geom = ST_Multi(ST_Buffer(geom, 0.0002))
                WHERE grid_id = (SELECT id FROM grids WHERE code = :code)
            """),
                {"code": east.code},
            )
            # And move a confirmed member's residence out of their grid.
            conn.execute(
                text("""
                UPDATE residences SET geom = ST_Translate(geom, 0.05, 0)
                WHERE id = (SELECT residence_id FROM registrations WHERE status = 'confirmed' ORDER BY id LIMIT 1)
            """)
            )
            problems = load.check_invariants(conn, demo)
            assert any(p.startswith(f"grid {east.code} sticks out") for p in problems), problems
            assert any(p.startswith("unexpected overlap") and east.code in p for p in problems), problems
            assert any("registrations whose grid does not contain" in p for p in problems), problems
            assert not any("manifest" in p for p in problems), problems
        finally:
            trans.rollback()

"""Boundary imports refuse what they cannot use and say why: broken and hostile files,
CRS mistakes (a missing CRS, the Gauss-Krüger zone prefix, GCJ-02 declared as WGS84,
swapped axes), and per feature: invalid geometry (and --repair), points, codes, parents,
containment, overlaps and gaps, Z values. And a second import changes exactly what
changed: a redrawn grid gets a new version with the old one closed, a renamed one is
renamed, a grid absent from the file is kept.

One deployment of 中原区 (district and areas, from the generated files) serves the
module; plans read it and write nothing."""

from __future__ import annotations

import zipfile

import numpy as np
import pyogrio.raw
import pytest
import shapely
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo_api.security import hash_password
from ingest.boundaries import commit_plan, format_report, parse_mapping, plan_import
from ingest.district import start_district
from ingest.files import FileError, Limits, read_features
from layers.crs import geoms_from_wgs84
from layers.errors import Conflict, InvalidInput
from tests.conftest import scratch_engine
from tests.ingest.district_files import (
    AREA_MAP,
    CODE,
    GRID_MAP,
    NAME,
    Unit,
    build_district,
    write_areas_shapefile,
    write_grids_gpkg,
)
from tests.zh import untranslated_reasons


@pytest.fixture(scope="module")
def district():
    return build_district()


def _plan(engine, kind, path, *, layer=None, encoding=None, mapping=GRID_MAP, **kw):
    m = parse_mapping(mapping)
    src = read_features(path, layer=layer, encoding=encoding, geometry_field=m.get("geometry"))
    with Session(engine) as session:
        plan = plan_import(session, kind, src, mapping=m, **kw)
    assert not untranslated_reasons(p.reason for p in plan.problems)  # the web map shows each in Chinese
    return plan


def _commit(engine, plan) -> dict:
    with Session(engine) as session:
        counts = commit_plan(session, plan)
        session.commit()
    return counts


@pytest.fixture(scope="module")
def deployment(server_url, district, tmp_path_factory):
    """中原区 with its streets and communities (no grids)."""
    tmp = tmp_path_factory.mktemp("areas")
    with scratch_engine(server_url, "zhongyuan_checks", pool=3, migrated=True) as engine:
        with Session(engine) as session:
            start_district(
                session,
                code=CODE,
                boundary=read_features(district.boundary_file),
                crs="gcj02",
                name=NAME,
                admin_password_hash=hash_password("not-used-here"),
            )
            session.commit()
        plan = _plan(engine, "areas", write_areas_shapefile(district, tmp), crs="gcj02", mapping=AREA_MAP)
        assert plan.ok, format_report(plan)
        _commit(engine, plan)
        yield engine


def _versions(engine):
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT layer, version FROM data_versions")).all())


def _write(
    path,
    geoms_wgs,
    codes,
    names,
    parents,
    crs="EPSG:4547",
    declare=None,
    driver="GPKG",
    layer=None,
    geometry_type="MultiPolygon",
    z=None,
    encoding=None,
):
    geoms = np.asarray(geoms_from_wgs84(np.asarray(geoms_wgs, dtype=object), crs), dtype=object)
    if z is not None:
        geoms = shapely.force_3d(geoms, z)
    pyogrio.raw.write(
        path,
        shapely.to_wkb(geoms),
        [np.array(codes, dtype=object), np.array(names, dtype=object), np.array(parents, dtype=object)],
        ["网格编码", "网格名称", "所属社区"],
        driver=driver,
        geometry_type=geometry_type,
        crs=declare or crs,
        layer=layer,
        encoding=encoding,
    )
    return path


# ---- files that cannot be read ------------------------------------------------------------------


def test_truncated_zip(tmp_path, district):
    whole = write_areas_shapefile(district, tmp_path / "a")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(FileError) as e:
        read_features(cut)
    assert e.value.field == "file" and "cut.zip" in e.value.detail and "truncated" in e.value.detail


def test_shapefile_without_dbf(tmp_path, district):
    shp = write_areas_shapefile(district, tmp_path / "a", zipped=False)
    shp.with_suffix(".dbf").unlink()
    for given in (shp, shp.parent):  # the .shp, or its folder
        with pytest.raises(FileError) as e:
            read_features(given)
        assert ".dbf" in e.value.detail and "areas.shp" in e.value.detail


def test_kml_bombs(tmp_path):
    laughs = tmp_path / "laughs.kml"
    laughs.write_text(
        '<?xml version="1.0"?><!DOCTYPE kml [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
        '<kml xmlns="http://www.opengis.net/kml/2.2"><Placemark><name>&b;</name></Placemark></kml>'
    )
    with pytest.raises(FileError) as e:
        read_features(laughs)
    assert "laughs.kml" in e.value.detail and "entities" in e.value.detail
    kmz = tmp_path / "zeros.kmz"
    with zipfile.ZipFile(kmz, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("doc.kml", b"<kml>" + b" " * (8 << 20) + b"</kml>")
    with pytest.raises(FileError) as e:
        read_features(kmz)
    assert "zip bomb" in e.value.detail
    with pytest.raises(FileError) as e:  # and past the unpacked budget, whatever the ratio
        read_features(kmz, limits=Limits(max_unpacked_bytes=1 << 20, max_ratio=10**9))
    assert "zeros.kmz" in e.value.detail and "MiB" in e.value.detail


def test_xlsx_formula_cell_names_feature_and_field(tmp_path, deployment, district):
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["网格编码", "网格名称", "所属社区", "WKT"])
    g = district.grids[0]
    ws.append([g.code, g.name, g.parent, g.geom.wkt])
    ws.append(["=A2+1", "公式网格", g.parent, g.geom.wkt])
    wb.save(tmp_path / "grids.xlsx")
    with pytest.raises(FileError) as e:
        read_features(tmp_path / "grids.xlsx")
    assert e.value.field == "网格编码" and "row 3 (feature 2)" in e.value.detail and "formula" in e.value.detail
    # the same sheet without the formula reads, and needs --crs (a WKT column carries none)
    ws.delete_rows(3)
    wb.save(tmp_path / "grids.xlsx")
    with pytest.raises(FileError) as e:
        _plan(deployment, "grids", tmp_path / "grids.xlsx")
    assert e.value.field == "crs" and "longitude/latitude" in e.value.detail
    plan = _plan(deployment, "grids", tmp_path / "grids.xlsx", crs="wgs84")
    assert plan.ok and plan.counts()["add"] == 1


def test_geopackage_with_several_layers_asks_which(tmp_path, deployment, district):
    path = tmp_path / "two.gpkg"
    write_grids_gpkg(district, path, grids=district.grids[:3], layer="一")
    write_grids_gpkg(district, path, grids=district.grids[3:5], layer="二")
    with pytest.raises(FileError) as e:
        read_features(path)
    assert e.value.field == "layer" and "一" in e.value.detail and "二" in e.value.detail
    assert _plan(deployment, "grids", path, layer="二").counts()["add"] == 2


def test_points_where_polygons_are_expected(tmp_path, deployment, district):
    g = district.grids[0]
    path = _write(
        tmp_path / "points.geojson",
        [shapely.point_on_surface(g.geom)],
        [g.code],
        [g.name],
        [g.parent],
        crs="wgs84",
        declare="EPSG:4326",
        driver="GeoJSON",
        geometry_type="Point",
    )
    plan = _plan(deployment, "grids", path)
    assert not plan.ok
    [p] = plan.errors
    assert (p.feature, p.code, p.field) == (1, g.code, "geometry") and "Point: polygons expected" in p.reason


# ---- CRS mistakes -------------------------------------------------------------------------------------


def test_zone_prefix_detected_both_ways(tmp_path, deployment, district):
    grids = district.grids[:4]
    args = ([g.geom for g in grids], [g.code for g in grids], [g.name for g in grids], [g.parent for g in grids])
    prefixed = _write(tmp_path / "prefixed.gpkg", *args, crs="EPSG:4526", declare="EPSG:4547")
    with pytest.raises(FileError) as e:
        _plan(deployment, "grids", prefixed)
    assert e.value.field == "crs" and "zone prefix" in e.value.detail and "--crs EPSG:4526" in e.value.detail
    assert _plan(deployment, "grids", prefixed, crs="EPSG:4526").counts()["add"] == 4
    bare = _write(tmp_path / "bare.gpkg", *args, crs="EPSG:4547", declare="EPSG:4526")
    with pytest.raises(FileError) as e:
        _plan(deployment, "grids", bare)
    assert "no zone prefix" in e.value.detail and "--crs EPSG:4547" in e.value.detail


def test_gcj02_declared_as_wgs84_and_swapped_axes(tmp_path, deployment, district):
    grids = district.grids
    args = ([g.code for g in grids], [g.name for g in grids], [g.parent for g in grids])
    gcj = _write(
        tmp_path / "gcj.geojson", [g.geom for g in grids], *args, crs="gcj02", declare="EPSG:4326", driver="GeoJSON"
    )
    plan = _plan(deployment, "grids", gcj)
    assert not plan.ok
    assert any(p.feature is None and p.field == "crs" and "give --crs gcj02" in p.reason for p in plan.errors)
    assert any("GeoJSON is WGS84 by definition" in n for n in plan.notes)
    assert _plan(deployment, "grids", gcj, crs="gcj02").ok
    swapped = [shapely.transform(g.geom, lambda xy: xy[:, ::-1]) for g in grids]
    path = _write(tmp_path / "swapped.geojson", swapped, *args, crs="wgs84", declare="EPSG:4326", driver="GeoJSON")
    plan = _plan(deployment, "grids", path)
    assert any(p.field == "crs" and "axes are swapped" in p.reason for p in plan.errors)
    far = [p for p in plan.errors if p.feature is not None and "km from 中原区" in p.reason]
    assert len(far) == len(grids) and "falls at 34." in far[0].reason


def test_a_table_without_crs_is_refused_with_a_hint(tmp_path, deployment, district):
    g = district.grids[0]
    path = tmp_path / "grids.csv"
    gk = geoms_from_wgs84(np.asarray([g.geom], dtype=object), "EPSG:4526")[0]
    path.write_text(f'网格编码,网格名称,所属社区,WKT\n{g.code},{g.name},{g.parent},"{gk.wkt}"\n', encoding="gbk")
    with pytest.raises(FileError) as e:
        _plan(deployment, "grids", path)
    assert e.value.field == "crs" and "EPSG:4526" in e.value.detail  # the zone prefix says which
    plan = _plan(deployment, "grids", path, crs="EPSG:4526")
    assert plan.ok and plan.outcomes[0].name == g.name  # GBK decoded


# ---- per-feature validation -------------------------------------------------------------------------


def test_every_problem_names_feature_code_and_field(tmp_path, deployment, district):
    c1 = district.grids[:5]  # the first community's five grids
    a, b, c, d, e = c1
    inner = shapely.point_on_surface(a.geom)
    x0, y0, x1, y1 = inner.x - 0.0005, inner.y - 0.0005, inner.x + 0.0005, inner.y + 0.0005
    bowtie = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0), (x0, y1), (x0, y0)])
    out_of_parent = shapely.union_all(
        [b.geom, shapely.buffer(shapely.point_on_surface(district.grids[12].geom), 0.002)]
    )
    feats = [
        (bowtie, a.code, a.name, a.parent),  # 1 invalid: self-intersection
        (out_of_parent, b.code, b.name, b.parent),  # 2 reaches into another street
        (c.geom, c.code, c.name, c.parent),  # 3 fine
        (c.geom, c.code, "再次", c.parent),  # 4 duplicate code
        (d.geom, d.code[:14], d.name, d.parent),  # 5 malformed code
        (e.geom, e.code, e.name, "410102002001"),  # 6 not under its parent's code
        (e.geom, "410102009001001", "无社区", "410102009001"),  # 7 parent missing
        (d.geom, d.code, None, d.parent),  # 8 name missing
    ]
    path = _write(tmp_path / "bad.gpkg", *zip(*feats))
    before = _versions(deployment)
    plan = _plan(deployment, "grids", path)
    by_feature = {}
    for p in plan.errors:
        by_feature.setdefault(p.feature, []).append(p)
    assert sorted(by_feature) == [1, 2, 4, 5, 6, 7, 8]
    assert by_feature[1][0].field == "geometry" and "Self-intersection" in by_feature[1][0].reason
    assert "--repair" in by_feature[1][0].reason
    assert "outside its parent 410102001001" in by_feature[2][0].reason
    assert by_feature[4][0].field == "网格编码" and "appears again (first at feature 3)" in by_feature[4][0].reason
    assert "15 digits" in by_feature[5][0].reason
    assert (
        by_feature[6][0].field == "所属社区" and "not under its parent's code 410102002001" in by_feature[6][0].reason
    )
    assert "neither in the file nor in the database" in by_feature[7][0].reason
    assert by_feature[8][0].field == "网格名称"
    assert [o.action for o in plan.outcomes] == [
        "reject",
        "reject",
        "add",
        "reject",
        "reject",
        "reject",
        "reject",
        "reject",
    ]
    report = format_report(plan)
    assert "error: feature 4 (" + c.code + "), 网格编码: code " in report and "7 rejected" in report
    with pytest.raises(InvalidInput):
        commit_plan(Session(deployment), plan)
    assert _versions(deployment) == before

    # --repair applies make_valid and says what changed; the bowtie is then two triangles
    plan = _plan(deployment, "grids", path, do_repair=True)
    fixed = plan.outcomes[0]
    assert fixed.action != "reject" and "Self-intersection" in fixed.repaired and "2 part(s)" in fixed.repaired
    assert shapely.is_valid(fixed.geom)


def test_overlaps_gaps_and_z_values_are_reported(tmp_path, deployment, district):
    c1 = district.grids[:5]
    grown = shapely.intersection(shapely.buffer(c1[0].geom, 0.0005), district.communities[0].geom)
    geoms = [grown] + [g.geom for g in c1[1:4]]  # the fifth grid left out: a gap
    path = _write(
        tmp_path / "z.gpkg",
        geoms,
        [g.code for g in c1[:4]],
        [g.name for g in c1[:4]],
        [g.parent for g in c1[:4]],
        geometry_type="MultiPolygon Z",
        z=87.5,
    )
    plan = _plan(deployment, "grids", path)
    assert plan.ok, format_report(plan)  # warnings only
    overlaps = [p for p in plan.problems if "overlaps" in p.reason]
    assert overlaps and all(p.severity == "warning" and p.feature == 1 for p in overlaps)
    gaps = [p for p in plan.problems if "a gap of" in p.reason]
    assert len(gaps) == 1 and gaps[0].code == c1[0].parent and c1[4].code not in gaps[0].reason
    assert any("Z values dropped" in n for n in plan.notes)
    assert all(not shapely.has_z(o.geom) for o in plan.outcomes)


# ---- a second import changes what changed -------------------------------------------------------------


def test_redrawn_renamed_and_absent_grids(server_url, district, tmp_path, clock):
    with scratch_engine(server_url, "zhongyuan_redraw", pool=2, migrated=True) as engine:
        with Session(engine) as session:
            start_district(
                session,
                code=CODE,
                boundary=read_features(district.boundary_file),
                crs="gcj02",
                name=NAME,
                admin_password_hash=hash_password("not-used-here"),
            )
            session.commit()
        _commit(
            engine,
            _plan(engine, "areas", write_areas_shapefile(district, tmp_path / "a"), crs="gcj02", mapping=AREA_MAP),
        )
        grids = district.grids[:5]
        _commit(engine, _plan(engine, "grids", write_grids_gpkg(district, tmp_path / "v1.gpkg", grids=grids)))
        clock.advance(hours=24)
        # the border between the first two grids moves; the third is renamed; the fifth is left out
        a, b = grids[0], grids[1]
        shift = shapely.intersection(shapely.buffer(b.geom, 0.0003), district.communities[0].geom)
        new_a = shapely.multipolygons(shapely.get_parts(shapely.difference(a.geom, shift)))
        new_b = shapely.multipolygons(shapely.get_parts(shapely.union(b.geom, shapely.intersection(a.geom, shift))))
        v2 = [
            Unit(a.code, a.name, a.parent, new_a),
            Unit(b.code, b.name, b.parent, new_b),
            Unit(grids[2].code, "改名网格", grids[2].parent, grids[2].geom),
            grids[3],
        ]
        plan = _plan(engine, "grids", write_grids_gpkg(district, tmp_path / "v2.gpkg", grids=v2))
        assert plan.ok, format_report(plan)
        out = {o.code: o for o in plan.outcomes}
        assert out[a.code].action == out[b.code].action == "change"
        assert out[a.code].moved_m2 == pytest.approx(out[b.code].moved_m2, rel=0.01) and out[a.code].moved_m2 > 1000
        assert out[grids[2].code].renamed_from == grids[2].name and out[grids[2].code].moved_m2 is None
        assert out[grids[3].code].action == "unchanged"
        assert plan.absent == [{"code": grids[4].code, "name": grids[4].name}]
        report = format_report(plan)
        assert f"change {a.code}" in report and "boundary moved by" in report and "renamed from" in report
        counts = _commit(engine, plan)
        assert counts == {
            "added": 0,
            "renamed_or_reparented": 1,
            "redrawn": 2,
            "unchanged": 1,
            "retired": 0,
            "generation": 2,
        }
        with engine.connect() as conn:
            history = conn.execute(
                text(
                    """SELECT g.code, v.version, v.valid_to IS NULL FROM grids g JOIN grid_versions v ON v.grid_id = g.id
                   ORDER BY g.code, v.version"""
                )
            ).all()
            names = dict(conn.execute(text("SELECT code, name FROM grids")).all())
            retired = conn.execute(text("SELECT count(*) FROM grids WHERE retired_at IS NOT NULL")).scalar()
        assert [(c, v, cur) for c, v, cur in history if c in (a.code, b.code)] == [
            (a.code, 1, False),
            (a.code, 2, True),
            (b.code, 1, False),
            (b.code, 2, True),
        ]
        assert names[grids[2].code] == "改名网格" and retired == 0 and grids[4].code in names
        # the same file again: nothing
        again = _plan(engine, "grids", tmp_path / "v2.gpkg")
        assert again.counts()["unchanged"] == 4 and again.counts()["change"] == 0
        # a plan made before someone else's write is refused at commit
        stale = _plan(engine, "grids", tmp_path / "v1.gpkg")
        with engine.begin() as conn:
            conn.execute(text("UPDATE grids SET worker_name = '张三' WHERE code = :c"), {"c": grids[3].code})
        with pytest.raises(Conflict):
            _commit(engine, stale)


# ---- every format reads the same -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["geojson", "kml", "kmz", "fgb", "shp-folder", "csv", "xlsx"])
def test_every_format_gives_the_same_plan(tmp_path, deployment, district, kind):
    grids = district.grids[5:10]
    codes, names, parents = [g.code for g in grids], [g.name for g in grids], [g.parent for g in grids]
    geoms = [g.geom for g in grids]
    crs = None
    if kind in ("geojson", "fgb"):
        path = _write(
            tmp_path / f"g.{kind}",
            geoms,
            codes,
            names,
            parents,
            crs="EPSG:4326",
            driver={"geojson": "GeoJSON", "fgb": "FlatGeobuf"}[kind],
        )
    elif kind in ("kml", "kmz"):
        path = _write(tmp_path / "doc.kml", geoms, codes, names, parents, crs="EPSG:4326", driver="KML")
        if kind == "kmz":
            kmz = tmp_path / "g.kmz"
            with zipfile.ZipFile(kmz, "w", zipfile.ZIP_DEFLATED) as z:
                z.write(path, "doc.kml")
            path = kmz
    elif kind == "shp-folder":
        (tmp_path / "shp").mkdir()
        _write(
            tmp_path / "shp" / "grids.shp",
            geoms,
            codes,
            names,
            parents,
            crs="EPSG:4547",
            driver="ESRI Shapefile",
            encoding="GBK",
        )
        path = tmp_path / "shp"
    else:
        crs = "EPSG:4547"
        gk = geoms_from_wgs84(np.asarray(geoms, dtype=object), crs)
        rows = [["网格编码", "网格名称", "所属社区", "WKT"]] + [
            [c, n, p, g.wkt] for c, n, p, g in zip(codes, names, parents, gk)
        ]
        path = tmp_path / f"g.{kind}"
        if kind == "csv":
            path.write_text("\n".join(",".join(f'"{v}"' for v in r) for r in rows), encoding="utf-8")
        else:
            import openpyxl

            wb = openpyxl.Workbook()
            for r in rows:
                # codes as numbers, as Excel keeps them
                wb.active.append([int(v) if isinstance(v, str) and v.isdigit() else v for v in r])
            wb.save(path)
    plan = _plan(deployment, "grids", path, crs=crs)
    assert plan.ok, format_report(plan)
    # (FlatGeobuf's spatial index stores features in its own order)
    outcomes = sorted(plan.outcomes, key=lambda o: o.code) if kind == "fgb" else plan.outcomes
    assert [(o.code, o.name, o.parent, o.action) for o in outcomes] == [
        (c, n, p, "add") for c, n, p in zip(codes, names, parents)
    ]
    for o, g in zip(outcomes, geoms):
        assert shapely.hausdorff_distance(o.geom, g) < 1e-7  # ~1 cm


def test_utf8_dbf_field_names_cut_mid_character_still_read(tmp_path, district):
    """A DBF field name has 10 bytes: 网格编码 in UTF-8 (12) is cut inside 码."""
    g = district.grids[0]
    with pytest.warns(RuntimeWarning, match="laundered"):  # GDAL says it cuts them
        path = _write(tmp_path / "cut.shp", [g.geom], [g.code], [g.name], [g.parent], driver="ESRI Shapefile")
    src = read_features(path)
    assert "\ufffd" in src.fields[0] and src.fields[0].startswith("网格编")
    assert src.records[0][src.fields[1]] == g.name  # the values are fine
    assert "10 bytes" in src.encoding_note

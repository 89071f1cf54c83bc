"""GDAL's OAPIF driver (Debian's gdal-bin: ogrinfo, ogr2ogr) reads /ogc of a served app
as QGIS and GDAL users do, and every collection arrives in full: the feature counts it
reports and the features ogr2ogr writes match the database's own counts."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers import coverage as cov
from layers.caches import Caches
from tests.conftest import make_settings, token_for
from tests.web_map.conftest import serving

pytestmark = pytest.mark.xdist_group("ogc_gdal")

PUBLIC = ("areas", "grids", "branches", "events")


@pytest.fixture(scope="module")
def served(demo_engine) -> Iterator[str]:
    from geo_api.app import create_app

    with serving(create_app(make_settings(), engine=demo_engine)) as url:
        yield url + "/ogc"


def _expected(demo_engine) -> dict[str, int]:
    with demo_engine.connect() as conn:
        counts = {
            "areas": conn.execute(text("SELECT count(*) FROM admin_areas")).scalar_one(),
            "grids": conn.execute(
                text(
                    "SELECT count(*) FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id "
                    "WHERE gridbranch_in_force(gv.valid_from, gv.valid_to) AND gridbranch_live(g.retired_at)"
                )
            ).scalar_one(),
            "branches": conn.execute(text("SELECT count(*) FROM branches WHERE active")).scalar_one(),
            "events": conn.execute(text("SELECT count(*) FROM events")).scalar_one(),
        }
    return counts


def _gdal(*args: str, token: str | None = None, timeout: float = 300) -> str:
    assert shutil.which(args[0]), f"{args[0]} is missing: Debian's gdal-bin (bash scripts/setup.sh --test)"
    env = {**os.environ, "GDAL_HTTP_TIMEOUT": "60", "CPL_DEBUG": "OFF"}
    if token is not None:
        env["GDAL_HTTP_HEADERS"] = token
    run = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert run.returncode == 0, f"{args}: {run.stdout[-2000:]} {run.stderr[-2000:]}"
    return run.stdout


def _counts(summary: str) -> dict[str, int]:
    """Layer name → "Feature Count" from ``ogrinfo -so -al``."""
    out, layer = {}, None
    for line in summary.splitlines():
        m = re.match(r"^Layer name: (\S+)", line)
        if m:
            layer = m.group(1)
        m = re.match(r"^Feature Count: (-?\d+)", line)
        if m and layer:
            out[layer] = int(m.group(1))
    return out


def test_ogrinfo_lists_every_public_collection_with_its_count(served, demo_engine):
    counts = _counts(_gdal("ogrinfo", "-ro", "-al", "-so", f"OAPIF:{served}"))
    assert counts == _expected(demo_engine)


@pytest.mark.parametrize("name", PUBLIC)
def test_ogr2ogr_copies_a_collection_in_full(served, demo_engine, tmp_path, name):
    out = tmp_path / f"{name}.geojson"
    # a small page, so that every collection takes many pages (the next links)
    _gdal("ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{served}", name, "-oo", "PAGE_SIZE=97")
    features = json.loads(out.read_text(encoding="utf-8"))["features"]
    expected = _expected(demo_engine)[name]
    assert len(features) == expected > 0
    key = "code" if name != "events" else "service_request_id"
    ids = [f["properties"][key] for f in features]
    assert len(set(ids)) == len(ids)
    if name == "grids":
        assert all(f["geometry"]["type"] in ("Polygon", "MultiPolygon") for f in features)
        assert all(re.fullmatch(r"\d{15}", f["properties"]["code"]) for f in features)


def test_a_private_collection_needs_a_token_and_arrives_in_full_with_one(served, demo_engine, tmp_path):
    anonymous = _counts(_gdal("ogrinfo", "-ro", "-al", "-so", f"OAPIF:{served}"))
    assert "coverage-findings" not in anonymous
    bearer = token_for("dispatcher")["Authorization"]
    header = f"Authorization: {bearer}"
    counts = _counts(_gdal("ogrinfo", "-ro", "-so", f"OAPIF:{served}", "coverage-findings", token=header))
    with Session(demo_engine) as session:
        expected = len(cov.issues(session, Caches()))
    assert counts == {"coverage-findings": expected} and expected > 0
    out = tmp_path / "findings.geojson"
    _gdal(
        "ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{served}", "coverage-findings", "-oo", "PAGE_SIZE=7", token=header
    )
    assert len(json.loads(out.read_text(encoding="utf-8"))["features"]) == expected

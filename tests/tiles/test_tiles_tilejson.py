"""Bad tile requests (4xx naming the part), TileJSON and the MapLibre style (behind a
reverse proxy, offline, and through the style-spec validator)."""

from __future__ import annotations

import pytest

from tests.conftest import token_for
from tests.factories.tiles import PUBLIC, one
from tiles.layers import LAYERS, PUBLIC_LAYERS


@pytest.mark.parametrize(
    "url, status, field",
    [
        ("/tiles/nope/14/13368/6500.mvt", 404, "layers"),
        ("/tiles/grids,nope/14/13368/6500.mvt", 404, "layers"),
        ("/tiles/grids,grids/14/13368/6500.mvt", 422, "layers"),
        ("/tiles/grids,/14/13368/6500.mvt", 422, "layers"),
        ("/tiles/grids/17/13368/6500.mvt", 404, "z"),
        ("/tiles/grids/8/200/100.mvt", 404, "z"),
        ("/tiles/grids/99/1/1.mvt", 404, "z"),
        ("/tiles/grids/14/16384/6500.mvt", 404, "x"),
        ("/tiles/grids/14/13368/16384.mvt", 404, "y"),
        ("/tiles/grids/14/-1/6500.mvt", 404, "x"),
        ("/tiles/grids/14/13368/99999999999999999999.mvt", 404, "y"),
        ("/tiles/grids/z/13368/6500.mvt", 422, "z"),
        ("/tiles/grids/14/1.5/6500.mvt", 422, "x"),
        ("/tiles/nope.json", 404, "layers"),
    ],
)
def test_bad_tile_requests_are_4xx_naming_the_part(tiles_client, url, status, field):
    for headers in ({}, token_for("dispatcher")):
        r = tiles_client.get(url, headers=headers)
        assert r.status_code == status, (url, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert body["field"] == field and body["detail"]


def test_tilejson_for_a_layer_and_a_composite(tiles_client, demo_engine):
    extent = one(
        demo_engine,
        "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent(geom) e FROM admin_areas) s",
    )
    tj = tiles_client.get("/tiles/grids.json").json()
    assert tj["tilejson"] == "3.0.0" and tj["scheme"] == "xyz"
    assert tj["tiles"] == ["http://testserver/tiles/grids/{z}/{x}/{y}.mvt"]
    assert (tj["minzoom"], tj["maxzoom"]) == (9, 16)
    assert tj["bounds"] == pytest.approx(list(extent), abs=1e-5)
    layer = tj["vector_layers"][0]
    assert layer["id"] == "grids" and set(layer["fields"]) == set(LAYERS["grids"].fields)
    both = tiles_client.get("/tiles/areas,events.json").json()
    assert [v["id"] for v in both["vector_layers"]] == ["areas", "events", "truncated"]
    assert (both["minzoom"], both["maxzoom"]) == (8, 16)
    assert both["tiles"] == ["http://testserver/tiles/areas,events/{z}/{x}/{y}.mvt"]
    admin = tiles_client.get("/tiles/members.json", headers=token_for("admin"))
    assert admin.status_code == 200 and admin.headers["cache-control"].startswith("private")


def test_urls_hold_behind_a_reverse_proxy(tiles_client):
    proxied = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "map.example.org",
        "X-Forwarded-Prefix": "/gridbranch/",
    }
    tj = tiles_client.get("/tiles/grids.json", headers=proxied).json()
    assert tj["tiles"] == ["https://map.example.org/gridbranch/tiles/grids/{z}/{x}/{y}.mvt"]
    style = tiles_client.get("/tiles/style.json", headers=proxied).json()
    assert style["sources"]["gridbranch"]["tiles"][0].startswith("https://map.example.org/gridbranch/tiles/")
    odd = tiles_client.get(
        "/tiles/grids.json",
        headers={"X-Forwarded-Proto": "gopher", "X-Forwarded-Host": "a b/c", "X-Forwarded-Prefix": "no-slash"},
    ).json()
    assert odd["tiles"] == ["http://testserver/tiles/grids/{z}/{x}/{y}.mvt"]
    assert "X-Forwarded-Host" in tiles_client.get("/tiles/grids.json").headers["vary"]


def test_style_is_usable_offline_by_maplibre(tiles_client):
    r = tiles_client.get("/tiles/style.json")
    assert r.status_code == 200
    style = r.json()
    assert style["version"] == 8 and "glyphs" not in style and "sprite" not in style
    assert all(layer["type"] in ("background", "fill", "line", "circle", "symbol") for layer in style["layers"])
    source = style["sources"]["gridbranch"]
    assert source["tiles"] == [f"http://testserver/tiles/{PUBLIC}/{{z}}/{{x}}/{{y}}.mvt"]
    for layer in style["layers"]:
        if layer["type"] != "background":
            assert layer["source"] == "gridbranch" and layer["source-layer"] in PUBLIC_LAYERS
        if layer["type"] == "symbol":  # names only, in local fonts: no icons, no named fonts
            assert layer["source-layer"] == "labels" and layer["layout"]["text-field"] == ["get", "name"]
            assert not {"icon-image", "text-font"} & set(layer["layout"])
        else:
            assert "text-field" not in layer.get("layout", {})
    assert [layer["id"] for layer in style["layers"]][-1] == "labels"  # names over everything
    urls = [u for s in style["sources"].values() for u in s["tiles"]]
    assert all(u.startswith("http://testserver/") for u in urls)
    admin = tiles_client.get("/tiles/style.json", headers=token_for("admin"))
    assert "members" in admin.json()["sources"] and admin.headers["cache-control"].startswith("private")


def test_style_passes_the_maplibre_style_spec_validator(tiles_client, tmp_path):
    """The style-spec package MapLibre itself ships (web_map's npm install) validates it."""
    import json
    import shutil
    import subprocess
    from pathlib import Path

    web_map = Path(__file__).resolve().parents[2] / "web_map"
    spec = web_map / "node_modules" / "@maplibre" / "maplibre-gl-style-spec"
    node = shutil.which("node")
    if node is None or not spec.exists():
        pytest.fail("node or web_map's npm packages are not installed: scripts/test.sh installs them")
    for headers in ({}, token_for("admin")):
        path_ = tmp_path / "style.json"
        path_.write_text(json.dumps(tiles_client.get("/tiles/style.json", headers=headers).json()))
        script = (
            "const spec = require('@maplibre/maplibre-gl-style-spec');"
            f"const errors = spec.validateStyleMin(require({json.dumps(str(path_))}));"
            "console.log(JSON.stringify(errors));"
        )
        done = subprocess.run([node, "-e", script], cwd=web_map, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == []

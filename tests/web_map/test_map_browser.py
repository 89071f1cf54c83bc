"""The web map in a real browser (Debian's chromium, headless, software WebGL): it loads
offline and cleanly, its sources hold what the API serves, it renders the grids in the
legend's colours, and clicking a grid shows that grid."""

from __future__ import annotations

import json
import struct
import zlib
from functools import cache
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest
from shapely.geometry import Point, shape
from shapely.ops import polylabel

from tests.web_map.conftest import VIEWPORT

pytestmark = pytest.mark.browser

SCREENSHOT = "/tmp/gridbranch-map.png"
SCREENSHOT_POPUP = "/tmp/gridbranch-map-popup.png"
READY = "document.body.dataset.ready === '1' || document.body.dataset.error === '1'"

# the legend's colours as rendered: fill-opacity 0.7 over the district's #fbfaf7
WITH_BRANCH_RGB = (175, 209, 233)
WITHOUT_BRANCH_RGB = (245, 188, 183)
OUTSIDE_RGB = (230, 233, 237)
VIEWPORT_W, VIEWPORT_H = VIEWPORT["width"], VIEWPORT["height"]


# --- helpers --------------------------------------------------------------------


def get_json(url: str) -> dict:
    with urlopen(url, timeout=30) as r:
        assert r.status == 200, url
        return json.load(r)


@cache
def api_grids(base: str) -> list[dict]:
    """Every current grid, following the "next" links."""
    features, url = [], f"{base}/v1/grids?limit=1000"
    while url:
        body = get_json(url)
        features += body["features"]
        url = next((link["href"] for link in body.get("links", []) if link["rel"] == "next"), None)
    return features


@cache
def api_areas(base: str, level: str) -> list[dict]:
    return get_json(f"{base}/v1/areas/boundaries?level={level}")["features"]


def inner_point(geometry: dict) -> tuple[float, float]:
    """A point well inside a (multi)polygon: the pole of inaccessibility of its largest part."""
    geom = shape(geometry)
    part = max(getattr(geom, "geoms", [geom]), key=lambda g: g.area)
    p = polylabel(part, tolerance=1e-7)
    assert part.contains(p)
    return p.x, p.y


def open_map(page, base: str) -> None:
    page.goto(f"{base}/map")
    page.wait_for_function(READY, timeout=60_000)
    assert page.evaluate("document.body.dataset.error") is None, page.inner_text("#status")


def to_screen(page, lon: float, lat: float) -> tuple[float, float]:
    xy = page.evaluate("([lon, lat]) => { const p = window.gridbranchMap.project([lon, lat]); return [p.x, p.y]; }", [lon, lat])
    return xy[0], xy[1]


def png_pixels(data: bytes) -> list[list[tuple[int, ...]]]:
    """Decode a small 8-bit, non-interlaced RGB or RGBA PNG (what chromium's screenshots
    are) into rows of pixel tuples. Enough for the few pixels these tests sample."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        ftype, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append([tuple(line[x * channels : x * channels + 3]) for x in range(width)])
        prev = line
    return rows


def pixel_at(page, x: float, y: float) -> tuple[int, int, int]:
    """The colour the user sees at (x, y): the centre of a 3×3 screenshot."""
    shot = page.screenshot(clip={"x": round(x) - 1, "y": round(y) - 1, "width": 3, "height": 3}, animations="disabled")
    return png_pixels(shot)[1][1]


def near(rgb, expected, tolerance: int = 14) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, expected))


def pick_grid(page, base: str, has_branch: bool) -> tuple[dict, tuple[float, float]]:
    """A big grid with (or without) a branch whose inner point is on the visible map
    (not under the panel or a control), and that point on the screen."""
    candidates = [f for f in api_grids(base) if bool(f["properties"]["has_branch"]) == has_branch]
    if not candidates:
        pytest.skip(f"the demo has no grid with has_branch={has_branch}")
    covers = page.evaluate(
        """() => [...document.querySelectorAll('#panel, .maplibregl-ctrl')].map((e) => {
            const r = e.getBoundingClientRect();
            return [r.left - 8, r.top - 8, r.right + 8, r.bottom + 8];
        })"""
    )
    shapes = {f["properties"]["code"]: shape(f["geometry"]) for f in api_grids(base)}
    for grid in sorted(candidates, key=lambda f: shapes[f["properties"]["code"]].area, reverse=True):
        lon, lat = inner_point(grid["geometry"])
        here = Point(lon, lat)
        if any(g.intersects(here) for c, g in shapes.items() if c != grid["properties"]["code"]):
            continue  # an overlap (the demo draws a few on purpose): the click is ambiguous
        x, y = to_screen(page, lon, lat)
        inside = 10 < x < VIEWPORT_W - 10 and 10 < y < VIEWPORT_H - 10
        if inside and not any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in covers):
            return grid, (x, y)
    raise AssertionError(f"no grid with has_branch={has_branch} is visible on the map")


SOURCE_CODES = """(source) => {
    const map = window.gridbranchMap;
    return map.getSource(source).getData().then((data) => ({
        data: data.features.map((f) => f.properties.code),
        // what the worker has cut into tiles for the current view
        tiles: [...new Set(map.querySourceFeatures(source).map((f) => f.properties.code))],
    }));
}"""


# --- tests ----------------------------------------------------------------------


def test_page_loads_offline_without_errors(page, page_log, live_server):
    open_map(page, live_server)

    assert page.title() == "金水区网格党支部地图 · gridbranch"
    assert page_log.page_errors == []
    assert page_log.errors() == []
    assert page_log.failed == []
    assert page_log.bad_status == []
    assert page_log.foreign == []
    server = urlsplit(live_server).netloc
    assert page_log.requests
    for url in page_log.requests:
        parts = urlsplit(url)
        assert parts.scheme in ("http", "data", "blob"), url
        assert parts.scheme != "http" or parts.netloc == server, url
    paths = {urlsplit(u).path for u in page_log.requests}
    assert {"/map", "/static/map/map.js", "/static/vendor/maplibre-gl/maplibre-gl.mjs", "/v1/grids"} <= paths
    assert page.is_hidden("#status")
    # the style asks for nothing remote: no glyphs, no sprite, no symbol layers
    style = page.evaluate("window.gridbranchMap.getStyle()")
    assert "glyphs" not in style and "sprite" not in style
    assert all(layer["type"] != "symbol" for layer in style["layers"])
    assert all(src["type"] == "geojson" for src in style["sources"].values())


def test_sources_hold_what_the_api_serves(page, live_server):
    open_map(page, live_server)

    expected = {
        "district": [f["properties"]["code"] for f in api_areas(live_server, "district")],
        "streets": [f["properties"]["code"] for f in api_areas(live_server, "street")],
        "communities": [f["properties"]["code"] for f in api_areas(live_server, "community")],
        "grids": [f["properties"]["code"] for f in api_grids(live_server)],
    }
    assert len(expected["district"]) == 1
    assert expected["streets"] and expected["communities"] and expected["grids"]
    for source, codes in expected.items():
        got = page.evaluate(SOURCE_CODES, source)
        assert sorted(got["data"]) == sorted(codes), source
        # the whole district is in view, so every feature is in the loaded tiles
        assert sorted(got["tiles"]) == sorted(codes), source

    rendered = page.evaluate(
        "() => [...new Set(window.gridbranchMap.queryRenderedFeatures({layers: ['grids-fill']}).map((f) => f.properties.code))]"
    )
    assert sorted(rendered) == sorted(expected["grids"])
    without = sum(1 for f in api_grids(live_server) if not f["properties"]["has_branch"])
    assert page.inner_text("#stats") == (
        f"共 {len(expected['grids'])} 个网格，其中 {without} 个无党支部；"
        f"党支部覆盖率 {(len(expected['grids']) - without) / len(expected['grids']) * 100:.1f}%。"
    )


def test_map_renders_in_legend_colours(page, live_server):
    open_map(page, live_server)
    page.screenshot(path=SCREENSHOT)

    for has_branch, colour in ((True, WITH_BRANCH_RGB), (False, WITHOUT_BRANCH_RGB)):
        grid, (x, y) = pick_grid(page, live_server, has_branch)
        rgb = pixel_at(page, x, y)
        assert near(rgb, colour), (grid["properties"]["code"], has_branch, rgb)

    # the district is fitted with a margin, so the right edge is outside it
    assert near(pixel_at(page, VIEWPORT_W - 12, VIEWPORT_H // 2), OUTSIDE_RGB, 6)
    # and the district boundary is drawn: somewhere along a line across the map it is red
    row = png_pixels(page.screenshot(clip={"x": 0, "y": VIEWPORT_H // 2, "width": VIEWPORT_W, "height": 1}))[0]
    assert any(r > 150 and g < 90 and b < 90 for r, g, b in row), "no district boundary on the middle row"


@pytest.mark.parametrize("has_branch", [True, False], ids=["with-branch", "without-branch"])
def test_click_on_a_grid_shows_it(page, live_server, has_branch):
    open_map(page, live_server)
    grid, (x, y) = pick_grid(page, live_server, has_branch)
    code = grid["properties"]["code"]
    detail = get_json(f"{live_server}/v1/grids/{code}")["properties"]

    page.mouse.click(x, y)
    page.wait_for_selector(f'#grid-info[data-code="{code}"][data-state="ready"]')

    info = page.inner_text("#grid-info")
    for text in ("网格编码", code, "网格名称", detail["name"], "所属社区", detail["community_name"], detail["community"], "网格员"):
        assert text in info, (text, info)
    if detail["grid_worker"]:
        assert detail["grid_worker"] in info
    assert detail["has_branch"] == has_branch
    if has_branch:
        assert detail["branches"]
        for b in detail["branches"]:
            assert b["name"] in info
        assert "无党支部" not in info
    else:
        assert detail["branches"] == []
        assert "无党支部" in info

    popup = page.locator(".maplibregl-popup")
    assert popup.is_visible()
    assert code in popup.inner_text() and detail["name"] in popup.inner_text()
    assert page.evaluate("JSON.stringify(window.gridbranchMap.getFilter('grids-selected'))") == json.dumps(
        ["==", ["get", "code"], code], separators=(",", ":")
    )
    if has_branch:
        page.screenshot(path=SCREENSHOT_POPUP)


def test_legend_toggles_layers(page, live_server):
    open_map(page, live_server)
    visibility = "(id) => window.gridbranchMap.getLayoutProperty(id, 'visibility') || 'visible'"

    page.get_by_label("街道边界").uncheck()
    assert page.evaluate(visibility, "streets-line") == "none"
    page.get_by_label("街道边界").check()
    assert page.evaluate(visibility, "streets-line") == "visible"

    page.get_by_label("有党支部的网格").uncheck()
    page.wait_for_function("window.gridbranchMap.loaded()")
    shown = page.evaluate(
        "() => window.gridbranchMap.queryRenderedFeatures({layers: ['grids-fill']}).map((f) => f.properties.has_branch)"
    )
    assert shown and not any(shown)


def test_data_error_is_shown_in_chinese(page, live_server):
    page.route("**/v1/grids?*", lambda route: route.fulfill(status=503, json={"detail": "维护中"}))
    page.goto(f"{live_server}/map")
    page.wait_for_function(READY)

    assert page.evaluate("document.body.dataset.error") == "1"
    assert page.evaluate("document.body.dataset.ready") is None
    status = page.locator("#status")
    assert status.is_visible()
    assert "地图数据加载失败" in status.inner_text()
    assert "503" in status.inner_text()


def test_grids_are_fetched_page_by_page(page, page_log, live_server):
    grids = api_grids(live_server)
    page_size = 50
    if len(grids) <= page_size:
        pytest.skip("too few grids to page")

    # make the page's first request ask for small pages; it must follow the "next" links
    def small_pages(route):
        route.fulfill(response=route.fetch(url=route.request.url.replace("limit=1000", f"limit={page_size}")))

    page.route(lambda url: urlsplit(url).path == "/v1/grids" and "limit=1000" in url, small_pages)
    open_map(page, live_server)

    got = page.evaluate(SOURCE_CODES, "grids")
    assert sorted(got["data"]) == sorted(f["properties"]["code"] for f in grids)
    pages = [u for u in page_log.requests if urlsplit(u).path == "/v1/grids"]
    assert len(pages) == -(-len(grids) // page_size)


def test_works_behind_a_path_prefix(page, page_log, prefixed_server):
    proxy = urlsplit(prefixed_server)
    page_log.allowed = {proxy.netloc}  # everything must go through the proxy
    open_map(page, prefixed_server)

    assert page_log.page_errors == [] and page_log.errors() == []
    assert page_log.failed == [] and page_log.bad_status == [] and page_log.foreign == []
    for url in page_log.requests:
        parts = urlsplit(url)
        if parts.scheme == "http":
            assert parts.netloc == proxy.netloc and parts.path.startswith(proxy.path + "/"), url
    grid, (x, y) = pick_grid(page, prefixed_server, True)
    page.mouse.click(x, y)
    page.wait_for_selector(f'#grid-info[data-code="{grid["properties"]["code"]}"][data-state="ready"]')

"""The web map in a real browser (Debian's chromium, headless, software WebGL): it loads
offline and cleanly from the service's own vector tiles, the tiles hold what the API
serves, it renders grids, events and coverage issues in the legend's colours, clicks
explain what lies under them, the layer panel switches layers, the embedded map shows
public aggregates only, and no personal data is ever asked for."""

from __future__ import annotations

import json
import struct
import zlib
from datetime import datetime
from functools import cache
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
from shapely.geometry import Point, shape

from tests.conftest import TEST_CLOCK, TEST_PASSWORD
from tests.web_map.conftest import PROXY_PREFIX, VIEWPORT
from tests.web_map.helpers import (
    PHONE,
    READY,
    VIEWPORT_H,
    VIEWPORT_W,
    api_grids,
    bearer,
    get_json,
    inner_point,
    move_to,
    on_open_map,
    open_map,
    pick_grid,
    rendered,
    source_features,
    to_lonlat,
    to_screen,
    wait_idle,
)
from tiles.layers import LAYERS

pytestmark = pytest.mark.browser

SCREENSHOT = "/tmp/gridbranch-map.png"
SCREENSHOT_POPUP = "/tmp/gridbranch-map-popup.png"

# the tile layers the full map and the embedded map ask for; never "members"
PUBLIC_LAYERS = ("areas", "grids", "branches", "events", "coverage_issues", "members_h3", "labels")
EMBED_LAYERS = ("areas", "grids", "branches", "members_h3", "labels")
# endpoints that answer with personal data (or only to staff): the public map never calls them
PERSONAL_PATHS = (
    "/v1/registrations",
    "/v1/events",
    "/v1/auth",
    "/v1/coverage/summary",
    "/v1/coverage/issues",
    "/v1/branches",
    "/open311",
)
TERMINAL = {"closed", "rejected", "duplicate"}
EVENT_STATUS = {
    "reported": "已上报",
    "registered": "已登记",
    "dispatched": "已派遣",
    "in_progress": "处置中",
    "handled": "已处置",
    "returned": "已退回",
    "deferred": "暂缓",
    "closed": "已结案",
    "rejected": "不予受理",
    "duplicate": "重复事件",
}

# the legend's colours as rendered: fill-opacity 0.7 over the district's #fbfaf7
WITH_BRANCH_RGB = (175, 209, 233)
WITHOUT_BRANCH_RGB = (245, 188, 183)
OUTSIDE_RGB = (230, 233, 237)
# event dots (opaque): normal, warning, overdue
EVENT_RGB = {"normal": (0x2F, 0x6F, 0xDB), "warning": (0xF2, 0xA9, 0x00), "overdue": (0xD7, 0x19, 0x1C)}


# --- helpers --------------------------------------------------------------------


@cache
def api_areas(base: str, level: str) -> list[dict]:
    return get_json(f"{base}/v1/areas/boundaries?level={level}")["features"]


def api_events(base: str, time_state: str) -> dict[int, dict]:
    """Events in warning or overdue now, as the dispatcher sees them."""
    out, offset = {}, 0
    while True:
        body = get_json(
            f"{base}/v1/events?time_state={time_state}&limit=1000&offset={offset}", bearer(base, "dispatcher")
        )
        out.update({e["id"]: e for e in body["items"]})
        offset += len(body["items"])
        if not body["items"] or offset >= body["total"]:
            return out


def tile_requests(requests: list[str], prefix: str = "") -> list[tuple[tuple[str, ...], int]]:
    """(layers, z) of every tile the page asked for."""
    out = []
    for url in requests:
        path = urlsplit(url).path[len(prefix) :]
        if path.startswith("/tiles/") and path.endswith(".mvt"):
            layers, z = path.split("/")[2], int(path.split("/")[3])
            out.append((tuple(layers.split(",")), z))
    return out


def assert_public_only(requests: list[str], allowed: tuple[str, ...], prefix: str = "") -> None:
    """No tile request names a layer beyond ``allowed`` (and never ``members``); no
    request reaches an endpoint answering with personal data."""
    for layers, _ in tile_requests(requests, prefix):
        assert "members" not in layers, layers
        assert set(layers) <= set(allowed), layers
    for url in requests:
        path = urlsplit(url).path[len(prefix) :]
        assert not path.startswith(PERSONAL_PATHS), url
        assert "members" not in path.replace("members_h3", ""), url


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


STATE_RANK = {"normal": 1, "warning": 2, "overdue": 3}  # the map's circle-sort-key


def event_state(properties: dict) -> str:
    return "overdue" if properties.get("overdue") else "warning" if properties.get("warning") else "normal"


def isolated_event(page, state: str) -> dict:
    """An open event in ``state`` (normal, warning, overdue) drawn on the open map with no
    other event that could be drawn over it within 8 px (the map draws overdue above
    warning above the rest), and its screen position. Zooms in on one when the
    whole-district view has none."""

    def find() -> dict | None:
        for e in rendered(page, ["events-circle"]):
            if event_state(e["properties"]) != state or e["properties"]["status"] in TERMINAL:
                continue
            x, y = to_screen(page, *e["point"])
            if not on_open_map(page, x, y):
                continue
            others = [f for f in rendered(page, ["events-circle"], (x, y), 8) if f["id"] != e["id"]]
            if rendered(page, ["labels-text"], (x, y), 8):
                continue  # a name is written over it
            if all(STATE_RANK[event_state(f["properties"])] < STATE_RANK[state] for f in others):
                return {**e, "xy": (x, y)}
        return None

    found = find()
    if found is None:
        some = next(
            (
                e
                for e in source_features(page, "events")
                if event_state(e["properties"]) == state and e["properties"]["status"] not in TERMINAL
            ),
            None,
        )
        if some is None:
            raise AssertionError(f"the demo has no open event in state {state} on the map at {TEST_CLOCK.now()}")
        point = page.evaluate(
            """(id) => window.gridbranchMap.querySourceFeatures('gridbranch', {sourceLayer: 'events'})
                .find((f) => f.id === id).geometry.coordinates""",
            some["id"],
        )
        move_to(page, point[0], point[1], 15)
        found = find()
    assert found is not None, f"no event in state {state} stands clear of the others"
    return found


def beijing(iso: str) -> str:
    return (
        datetime.fromisoformat(iso.replace("Z", "+00:00"))
        .astimezone(ZoneInfo("Asia/Shanghai"))
        .strftime("%Y-%m-%d %H:%M")
    )


# --- tests ----------------------------------------------------------------------


def assert_offline(page_log, live_server) -> set[str]:
    """The page loaded cleanly and asked nothing of any host but ours (no CDN, no
    fonts, no validator); the paths it asked for."""
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
    return {urlsplit(u).path for u in page_log.requests}


def test_page_loads_offline_from_our_tiles(page, page_log, live_server):
    open_map(page, live_server)

    assert page.title() == "金水区网格党支部地图 · gridbranch"
    paths = assert_offline(page_log, live_server)
    composite = ",".join(PUBLIC_LAYERS)
    assert {
        "/map",
        "/static/map/map.js",
        "/static/vendor/maplibre-gl/maplibre-gl.mjs",
        f"/tiles/{composite}.json",
    } <= paths
    tiles = tile_requests(page_log.requests)
    assert tiles and all(layers == PUBLIC_LAYERS for layers, _ in tiles)
    # the summary came from the tiles: the grid list was not fetched; the one API call
    # is the area tree the page takes the district's name from (its title)
    assert page.evaluate("document.body.dataset.stats") == "tiles"
    assert {p for p in paths if p.startswith("/v1/")} == {"/v1/areas"}, paths
    assert_public_only(page_log.requests, PUBLIC_LAYERS)
    assert page.is_hidden("#status")
    # the style asks for nothing remote: no glyphs, no sprite, no icons (the names are
    # written in the browser's own fonts); one vector source on our own composite tiles
    style = page.evaluate("window.gridbranchMap.getStyle()")
    assert "glyphs" not in style and "sprite" not in style
    assert [layer["id"] for layer in style["layers"] if layer["type"] == "symbol"] == ["labels-text"]
    assert not any("icon-image" in layer.get("layout", {}) for layer in style["layers"])
    assert style["sources"] == {
        "gridbranch": {
            **style["sources"]["gridbranch"],
            "type": "vector",
            "tiles": [f"{live_server}/tiles/{composite}/{{z}}/{{x}}/{{y}}.mvt"],
        }
    }


def test_the_map_runs_under_its_content_security_policy(browser, live_server):
    """The map loads and draws its tiles with nothing refused under the page's own policy
    (geo_api.headers.MAP_POLICY: MapLibre's blob: workers, data: images) — in a browser
    context that does not bypass it; the embeddable map has the same policy but for
    its frame ancestors."""
    context = browser.new_context(viewport=VIEWPORT, locale="zh-CN", service_workers="block")
    context.add_init_script(
        "window.__refused = []; document.addEventListener('securitypolicyviolation', "
        "(e) => window.__refused.push(`${e.effectiveDirective} ${e.blockedURI}`));"
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    try:
        answer = page.goto(f"{live_server}/map")
        policy = answer.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
        embed = page.request.get(f"{live_server}/map?embed=1").headers["content-security-policy"]
        assert embed.replace("frame-ancestors 'self'", "frame-ancestors 'none'") == policy  # the same page policy
        # waited for by a promise in the page (wait_for_function's eval is refused here)
        page.evaluate(f"""() => new Promise((resolve) => {{
            const ready = () => {READY};
            const tick = () => (ready() ? resolve() : requestAnimationFrame(tick));
            tick();
        }})""")
        assert page.evaluate("document.body.dataset.error") is None
        page.evaluate(
            "() => new Promise((resolve) => { const map = window.gridbranchMap; "
            "map.once('idle', () => resolve()); map.triggerRepaint(); })"
        )
        assert page.evaluate("window.gridbranchMap.queryRenderedFeatures().length") > 0  # tiles drawn
        assert page.evaluate("window.__refused") == []
        assert errors == []
    finally:
        context.close()


def test_api_docs_load_offline(page, page_log, live_server):
    """/docs is Swagger UI from the service's own npm copy: it renders every operation of
    /openapi.json and asks no other host for anything."""
    operations = [
        (method.upper(), path)
        for path, item in get_json(f"{live_server}/openapi.json")["paths"].items()
        for method in item
    ]
    page.goto(f"{live_server}/docs")
    page.wait_for_function(f"document.querySelectorAll('.opblock').length >= {len(operations)}", timeout=60_000)
    shown = page.evaluate("""() => [...document.querySelectorAll('.opblock')].map(b => [
        b.querySelector('.opblock-summary-method').textContent.trim(),
        b.querySelector('.opblock-summary-path').getAttribute('data-path')])""")
    assert sorted(map(tuple, shown)) == sorted(operations)
    assert page.is_visible("button.authorize")  # the password flow is offered
    assert page.title() == "gridbranch · API"
    paths = assert_offline(page_log, live_server)
    assert {
        "/docs",
        "/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/static/vendor/swagger-ui/swagger-ui.css",
        "/openapi.json",
    } <= paths


def test_tiles_hold_what_the_api_serves(page, live_server):
    open_map(page, live_server)

    areas = source_features(page, "areas")
    for level in ("district", "street", "community"):
        expected = {f["properties"]["code"] for f in api_areas(live_server, level)}
        assert expected
        assert {f["properties"]["code"] for f in areas if f["properties"]["level"] == level} == expected, level
    assert len(api_areas(live_server, "district")) == 1

    grids = {f["properties"]["code"]: f["properties"] for f in api_grids(live_server)}
    in_tiles = {f["properties"]["code"]: f["properties"] for f in source_features(page, "grids")}
    assert set(in_tiles) == set(grids)
    assert all(in_tiles[c]["has_branch"] == grids[c]["has_branch"] for c in grids)
    drawn = {f["properties"]["code"] for f in rendered(page, ["grids-fill"])}
    assert drawn == set(grids)

    without = sum(1 for p in grids.values() if not p["has_branch"])
    assert page.inner_text("#stats") == (
        f"共 {len(grids)} 个网格，其中 {without} 个无党支部；"
        f"党支部覆盖率 {(len(grids) - without) / len(grids) * 100:.1f}%。"
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

    # event dots in their state's colour
    for state, colour in EVENT_RGB.items():
        event = isolated_event(page, state)
        rgb = pixel_at(page, *event["xy"])
        assert near(rgb, colour, 30), (state, event, rgb)


@pytest.mark.parametrize("has_branch", [True, False], ids=["with-branch", "without-branch"])
def test_click_on_a_grid_shows_it(page, live_server, has_branch):
    open_map(page, live_server)
    _, (x, y) = pick_grid(page, live_server, has_branch)
    # what the service says lies at the very point clicked
    lon, lat = to_lonlat(page, x, y)
    located = get_json(f"{live_server}/v1/locate?lon={lon}&lat={lat}")
    assert located["match"] == "inside"
    code = located["grid"]["code"]
    detail = get_json(f"{live_server}/v1/grids/{code}")["properties"]
    stats = get_json(
        f"{live_server}/v1/registrations/stats?level=grid&within={located['community']['code']}",
        bearer(live_server, "admin"),
    )
    figures = next(u for u in stats["units"] if u["code"] == code)

    page.mouse.click(x, y)
    page.wait_for_selector(f'#grid-info[data-code="{code}"][data-state="ready"]')

    info = page.inner_text("#grid-info")
    for text in (
        "网格编码",
        code,
        "网格名称",
        located["grid"]["name"],
        "所属社区",
        located["community"]["name"],
        located["community"]["code"],
        "网格员",
    ):
        assert text in info, (text, info)
    if located["grid_worker"]:
        assert located["grid_worker"]["name"] in info
    assert detail["has_branch"] == has_branch
    if has_branch:
        assert located["branches"]
        for b in located["branches"]:
            assert b["name"] in info
        assert "无党支部" not in info
    else:
        assert located["branches"] == []
        assert "无党支部" in info

    popup = page.locator(".maplibregl-popup")
    assert popup.is_visible()
    text = popup.inner_text()
    assert code in text and located["grid"]["name"] in text
    # registration figures, as the admin's statistics count them — unless withheld from
    # the public (fewer registered than k, or withheld with such a grid)
    if detail["suppressed"]:
        assert detail["registered"] is None and "人数较少，不公开" in text and f"{figures['registered']} 人" not in text
    else:
        assert detail["registered"] == figures["registered"]
        assert f"{figures['registered']} 人" in text
        rate = "—（无在住党员）" if figures["rate"] is None else f"{figures['rate'] * 100:.1f}%"
        assert rate in text
        roles = (
            "六员齐全"
            if not figures["roles_missing"]
            else f"缺 {len(figures['roles_missing'])} 项：" + ",".join(figures["roles_missing"])
        )
        assert roles in text
    assert page.evaluate("JSON.stringify(window.gridbranchMap.getFilter('grids-selected'))") == json.dumps(
        ["==", ["get", "code"], code], separators=(",", ":")
    )
    if has_branch:
        page.screenshot(path=SCREENSHOT_POPUP)


@pytest.mark.clock
def test_events_are_drawn_by_time_state(page, live_server):
    overdue_before, warning_before = api_events(live_server, "overdue"), api_events(live_server, "warning")
    open_map(page, live_server)
    overdue_after, warning_after = api_events(live_server, "overdue"), api_events(live_server, "warning")
    assert overdue_before and warning_before, "the demo has events in warning and overdue"

    west, south, east, north = page.evaluate("window.gridbranchMap.getSource('gridbranch').bounds")
    inside = lambda e: west <= e["point"][0] <= east and south <= e["point"][1] <= north  # noqa: E731
    in_tiles = {f["id"]: f["properties"] for f in source_features(page, "events")}
    tile_overdue = {i for i, p in in_tiles.items() if p.get("overdue")}
    tile_warning = {i for i, p in in_tiles.items() if p.get("warning")}
    # the clock moves on while the page loads: overdue only grows, warnings turn overdue
    assert {i for i, e in overdue_before.items() if inside(e)} <= tile_overdue <= set(overdue_after)
    assert tile_warning <= set(warning_before) | set(warning_after) | set(overdue_after)
    assert {i for i, e in warning_before.items() if inside(e)} - set(overdue_after) <= tile_warning

    # by default the map draws open events only; the legend's switch adds the others
    drawn = rendered(page, ["events-circle"])
    assert drawn and {f["id"] for f in drawn if f["properties"].get("overdue")} == tile_overdue
    assert not any(f["properties"]["status"] in TERMINAL for f in drawn)
    page.get_by_label("显示已结束的事件（结案、不予受理、重复）").check()
    wait_idle(page)
    drawn = rendered(page, ["events-circle"])
    assert {f["properties"]["status"] for f in drawn} & TERMINAL


@pytest.mark.clock
@pytest.mark.parametrize("state", ["overdue", "warning"])
def test_click_on_an_event_explains_it(page, live_server, state):
    open_map(page, live_server)
    event = isolated_event(page, state)
    page.mouse.click(*event["xy"])
    section = page.locator(".maplibregl-popup .popup-event", has_text=f"#{event['id']}")
    section.wait_for()
    text = section.inner_text()

    truth = get_json(f"{live_server}/v1/events/{event['id']}", bearer(live_server, "dispatcher"))
    assert f"#{truth['id']}" in text
    assert truth["category"]["name"] in text and truth["category"]["code"] in text
    assert EVENT_STATUS[truth["status"]] in text
    assert beijing(truth["due_at"]) in text
    label = {"overdue": "超期", "warning": "预警"}[state]
    assert section.locator(".event-state").inner_text() == label
    if truth["time_state"] in ("warning", "overdue"):
        assert truth["time_state"] == state or (state, truth["time_state"]) == ("warning", "overdue")
    # and the grid the event lies in follows it in the popup
    assert page.locator(".maplibregl-popup .popup-grid").count() == 1


def test_coverage_issues_are_drawn_and_explained(page, live_server):
    issues = get_json(f"{live_server}/v1/coverage/issues?kind=topology", bearer(live_server, "admin"))["features"]
    assert {f["properties"]["kind"] for f in issues} >= {"gap", "overlap"}, "the demo has gaps and overlaps"
    open_map(page, live_server)
    assert rendered(page, ["coverage-issues-fill"]), "no coverage issue on the whole-district view"

    for issue in issues:
        p = issue["properties"]
        move_to(page, *p["point"], 17)
        x, y = to_screen(page, *p["point"])
        here = [f["properties"] for f in rendered(page, ["coverage-issues-fill"], (x, y))]
        drawn = {"kind": p["kind"], "form": p["form"], "codes": ",".join(p["codes"]), "area_m2": p["area_m2"]}
        assert {**drawn, "message": p["message"]} in here, (p, here)

    gap = next(f["properties"] for f in issues if f["properties"]["kind"] == "gap")
    move_to(page, *gap["point"], 17)
    page.mouse.click(*to_screen(page, *gap["point"]))
    section = page.locator(".maplibregl-popup .popup-issue")
    section.wait_for()
    text = section.inner_text()
    assert "缺口" in text
    for code in gap["codes"]:
        assert code in text
    assert f"{gap['area_m2']:,.1f} m²" in text


@pytest.mark.parametrize("size", [VIEWPORT, PHONE], ids=["desktop", "phone"])
def test_a_gap_is_explained_in_chinese_and_seen_on_the_whole_district(page, live_server, size):
    """Issue 22 item 7: a gap's details give the service's own Chinese message (not only
    codes), and gaps are drawn on the whole-district views below zoom 10 (a phone's)."""
    issues = get_json(f"{live_server}/v1/coverage/issues?kind=gap", bearer(live_server, "admin"))["features"]
    assert issues, "the demo has gaps"
    page.set_viewport_size(size)
    open_map(page, live_server)
    page.evaluate("() => { window.gridbranchMap.zoomTo(9.5, {animate: false}); }")
    wait_idle(page)
    assert page.evaluate("window.gridbranchMap.getZoom()") < 10
    kinds = {f["properties"]["kind"] for f in rendered(page, ["coverage-issues-fill", "coverage-issues-line"])}
    assert "gap" in kinds, kinds
    assert page.is_hidden('.layer-group[data-group="coverage_issues"] .zoom-hint')

    gap = max(issues, key=lambda f: f["properties"]["area_m2"])["properties"]
    move_to(page, *gap["point"], 17)
    x, y = to_screen(page, *gap["point"])
    # above a phone's sheet (a quarter down the screen), where a tap reaches the map
    page.evaluate(
        "([dx, dy]) => { window.gridbranchMap.panBy([dx, dy], {animate: false}); }", [0, y - size["height"] / 4]
    )
    wait_idle(page)
    page.mouse.click(*to_screen(page, *gap["point"]))
    where = "#details" if size == PHONE else ".maplibregl-popup"
    message = page.locator(f"{where} .popup-issue dd.issue-message")
    message.wait_for()
    assert message.inner_text() == gap["message"]
    assert "未被任何网格覆盖" in message.inner_text()
    page.screenshot(path=f"/tmp/gridbranch-gap-{size['width']}.png")


def test_member_density_leaves_the_branchless_grids_readable(page, live_server):
    """Issue 22 item 7: the H3 density is not blue over the blue grids, and the pink
    branchless grids stay pink-red under it, with their outline on top."""
    open_map(page, live_server)
    style = page.evaluate("window.gridbranchMap.getStyle()")
    ids = [layer["id"] for layer in style["layers"]]
    assert ids.index("grids-nobranch-line") > ids.index("members-h3-fill")
    ramp = next(layer for layer in style["layers"] if layer["id"] == "members-h3-fill")["paint"]["fill-color"]
    for colour in (c for c in ramp if isinstance(c, str) and c.startswith("#")):
        r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
        assert b < r, f"{colour} is a blue: the grids with a branch are blue"

    grid, _ = pick_grid(page, live_server, False)
    page.check('[data-toggle="members-h3"]')
    lon, lat = inner_point(grid["geometry"])
    move_to(page, lon, lat, 13)
    x, y = to_screen(page, lon, lat)
    assert rendered(page, ["members-h3-fill"], (x, y)), "no density cell over the branchless grid"
    assert any(f["properties"]["code"] == grid["properties"]["code"] for f in rendered(page, ["grids-nobranch-line"]))
    r, g, b = pixel_at(page, x, y)
    assert r > b + 40 and r > g, (r, g, b)  # still the warm pink of 无党支部, not a blue
    page.screenshot(path="/tmp/gridbranch-h3.png")


def test_layer_panel_switches_layers_and_the_legend_follows(page, live_server):
    open_map(page, live_server)
    visibility = "(id) => window.gridbranchMap.getLayoutProperty(id, 'visibility') || 'visible'"

    page.get_by_label("街道边界").uncheck()
    assert page.evaluate(visibility, "streets-line") == "none"
    page.get_by_label("街道边界").check()
    assert page.evaluate(visibility, "streets-line") == "visible"

    page.get_by_label("有党支部的网格").uncheck()
    wait_idle(page)
    shown = [f["properties"]["has_branch"] for f in rendered(page, ["grids-fill"])]
    assert shown and not any(shown)
    page.get_by_label("有党支部的网格").check()

    for label, layers, group in (
        ("事件 Events", ["events-circle"], "events"),
        ("覆盖问题 Coverage issues", ["coverage-issues-fill", "coverage-issues-line"], "coverage_issues"),
        ("党支部活动阵地", ["branches-circle"], "branches"),
    ):
        legend = page.locator(f'.layer-group[data-group="{group}"] .legend-items')
        assert rendered(page, layers) and legend.is_visible(), label
        page.get_by_label(label, exact=True).uncheck()
        wait_idle(page)
        assert all(page.evaluate(visibility, id) == "none" for id in layers), label
        assert rendered(page, layers) == [] and legend.is_hidden(), label
        page.get_by_label(label, exact=True).check()
        wait_idle(page)
        assert rendered(page, layers) and legend.is_visible(), label

    # member density: off at first; on, it draws the public (suppressed) H3 cells
    legend = page.locator('.layer-group[data-group="members_h3"] .legend-items')
    assert rendered(page, ["members-h3-fill"]) == [] and legend.is_hidden()
    page.get_by_label("党员分布密度 H3").check()
    wait_idle(page)
    cells = {f["properties"]["cell"]: f["properties"]["count"] for f in rendered(page, ["members-h3-fill"])}
    assert cells and legend.is_visible()
    zoom = page.evaluate("window.gridbranchMap.getZoom()")
    res = {10: 7, 11: 7, 12: 8, 13: 8}[int(zoom)]
    public = get_json(f"{live_server}/v1/coverage/h3?res={res}&metric=members")
    assert public["suppressed"]
    assert set(cells) <= {f["properties"]["cell"] for f in public["features"]}
    assert all(count >= public["k"] for count in cells.values())


def test_names_are_written_once_per_unit_by_zoom(page, page_log, live_server):
    """The labels layer writes each unit's name once, the levels the zoom calls for, at
    the unit's own label point; the panel's 名称标注 switches them off and on."""
    from tiles.layers import label_levels

    open_map(page, live_server)
    units = {("grid", f["properties"]["code"]): f for f in api_grids(live_server)}
    for level in ("district", "street", "community"):
        units.update({(level, f["properties"]["code"]): f for f in api_areas(live_server, level)})

    def written() -> dict[tuple[str, str], dict]:
        out = {}
        for f in rendered(page, ["labels-text"]):
            key = (f["properties"]["level"], f["properties"]["code"])
            assert key not in out, key  # once, though its polygon spans several tiles
            out[key] = f
        return out

    names = written()
    zoom = page.evaluate("window.gridbranchMap.getZoom()")
    assert names and {level for level, _ in names} <= set(label_levels(int(zoom)))
    for key, f in names.items():
        assert f["properties"]["name"] == units[key]["properties"]["name"], key
        assert shape(units[key]["geometry"]).contains(Point(*f["point"])), key

    # close in on a grid: its name and its neighbours', nothing else
    grid, _ = pick_grid(page, live_server, True)
    move_to(page, *inner_point(grid["geometry"]), 16.2)
    names = written()
    assert ("grid", grid["properties"]["code"]) in names
    assert {level for level, _ in names} == {"grid"}
    page.get_by_label("名称标注 Names").uncheck()
    wait_idle(page)
    assert rendered(page, ["labels-text"]) == []
    page.get_by_label("名称标注 Names").check()
    wait_idle(page)
    assert ("grid", grid["properties"]["code"]) in written()
    assert page_log.page_errors == [] and page_log.errors() == []


def test_search_finds_a_place_and_shows_it(page, page_log, live_server):
    """搜索: a grid by the characters of its name in order → its result first → the map
    flies there and selects it as a click would; a street by its code and Enter; a name
    nowhere says so."""
    open_map(page, live_server)
    grid = next(
        g
        for g in sorted(api_grids(live_server), key=lambda g: g["properties"]["code"])
        if g["properties"]["name"].endswith("第3网格")
    )
    code, name = grid["properties"]["code"], grid["properties"]["name"]
    box = page.locator("#place-q")
    box.fill(name[:2] + "3")
    page.wait_for_function("document.getElementById('place-results').dataset.state === 'ready'")
    first = page.locator("#place-results li").first
    assert first.get_attribute("data-code") == code
    assert name in first.inner_text() and "网格" in first.inner_text()
    first.locator("button").click()
    page.wait_for_function(
        f"document.getElementById('grid-info').dataset.code === '{code}' && "
        "document.getElementById('grid-info').dataset.state === 'ready'",
        timeout=30_000,
    )
    assert page.is_hidden("#place-results") and box.input_value() == name
    assert page.url.endswith(f"/map?focus={code}")  # a link to share
    centre = page.evaluate("window.gridbranchMap.getCenter().toArray()")
    assert shape(grid["geometry"]).buffer(0.002).contains(Point(centre))
    assert page.evaluate("window.gridbranchMap.getZoom()") >= 15
    assert json.loads(page.evaluate("JSON.stringify(window.gridbranchMap.getFilter('grids-selected'))")) == [
        "==",
        ["get", "code"],
        code,
    ]

    street = api_areas(live_server, "street")[0]
    box.fill(street["properties"]["code"])
    box.press("Enter")  # at once: searched, then the best result taken
    page.wait_for_function(
        "(name) => document.getElementById('place-q').value === name", arg=street["properties"]["name"]
    )
    assert page.is_hidden("#place-results")
    wait_idle(page)
    west, south, east, north = page.evaluate("window.gridbranchMap.getBounds().toArray().flat()")
    minx, miny, maxx, maxy = shape(street["geometry"]).bounds
    assert west <= minx + 1e-3 and east >= maxx - 1e-3 and south <= miny + 1e-3 and north >= maxy - 1e-3

    # the keyboard: down into the results, down again, Enter takes that one
    box.fill(name[:2])
    page.wait_for_function("document.getElementById('place-results').dataset.state === 'ready'")
    second = page.locator("#place-results li").nth(1)
    second_code = second.get_attribute("data-code")
    box.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.evaluate("document.activeElement.closest('li')?.dataset.code") == second_code
    page.keyboard.press("Enter")
    page.wait_for_function(f"window.location.search === '?focus={second_code}'")

    box.fill("不存在的地方")
    page.wait_for_function("document.getElementById('place-results').dataset.state === 'empty'")
    assert "未找到" in page.inner_text("#place-note")
    box.press("Escape")
    assert page.is_hidden("#place-note") and box.input_value() == ""
    assert page_log.page_errors == [] and page_log.errors() == [] and page_log.bad_status == []


def test_a_focus_link_opens_the_map_on_its_place(page, page_log, live_server):
    """/map?focus=<code>: on a grid (selected, with its details), the coverage line still
    the whole district's; with embed=1 on a street, asking the API for nothing but the
    place; a code that is malformed or names nothing shows the district and says so."""
    grids = api_grids(live_server)
    grid = sorted(grids, key=lambda g: g["properties"]["code"])[7]
    code = grid["properties"]["code"]
    open_map(page, live_server, f"?focus={code}")
    assert page.evaluate("document.getElementById('grid-info').dataset.code") == code
    page.wait_for_function("document.getElementById('grid-info').dataset.state === 'ready'")
    centre = page.evaluate("window.gridbranchMap.getCenter().toArray()")
    assert shape(grid["geometry"]).buffer(0.002).contains(Point(centre))
    assert page.evaluate("window.gridbranchMap.getZoom()") >= 15
    assert page.inner_text("#stats").startswith(f"共 {len(grids)} 个网格")
    assert page.is_hidden("#status")

    street = api_areas(live_server, "street")[3]
    page_log.requests.clear()
    open_map(page, live_server, f"?embed=1&focus={street['properties']['code']}")
    west, south, east, north = page.evaluate("window.gridbranchMap.getBounds().toArray().flat()")
    minx, miny, maxx, maxy = shape(street["geometry"]).bounds
    assert west <= minx + 1e-3 and east >= maxx - 1e-3 and south <= miny + 1e-3 and north >= maxy - 1e-3
    assert (east - west) < 3 * (maxx - minx)  # the street, not the district
    api = {urlsplit(u).path for u in page_log.requests if urlsplit(u).path.startswith("/v1/")}
    assert api == {"/v1/places"}
    assert_public_only(page_log.requests, EMBED_LAYERS)

    for bad in ("12345", "410105999999"):
        open_map(page, live_server, f"?focus={bad}")
        assert bad in page.inner_text("#status") and "显示全区" in page.inner_text("#status")
        zoom = page.evaluate("window.gridbranchMap.getZoom()")
        assert zoom < 12  # the whole district
    assert page_log.page_errors == [] and page_log.bad_status == []


def test_zoom_hints_follow_the_zoom(page, live_server):
    open_map(page, live_server)
    hint = page.locator('.layer-group[data-group="events"] .zoom-hint')
    assert hint.is_hidden()
    page.evaluate("() => { window.gridbranchMap.zoomTo(10.2, {animate: false}); }")
    wait_idle(page)
    assert hint.is_visible() and "11" in hint.inner_text()
    assert rendered(page, ["events-circle"]) == []


def test_anonymous_map_never_asks_for_members(page, page_log, live_server):
    open_map(page, live_server)
    grid, _ = pick_grid(page, live_server, True)
    lon, lat = inner_point(grid["geometry"])
    for zoom in (15.2, 16.5, 18):
        move_to(page, lon, lat, zoom)
    assert {z for _, z in tile_requests(page_log.requests)} >= {15, 16}
    assert_public_only(page_log.requests, PUBLIC_LAYERS)
    assert page_log.bad_status == [] and page_log.failed == []
    # the layer is there for an entitled admin, so leaving it out is the page's doing
    style = get_json(f"{live_server}/tiles/style.json", bearer(live_server, "admin"))
    assert "members" in style["sources"]


def test_signed_in_admin_sees_members_from_zoom_15_only(page, page_log, live_server):
    open_map(page, live_server)
    authorised = []  # tile URLs sent with an Authorization header
    page.on("request", lambda r: "authorization" in r.headers and authorised.append(r.url))

    page.fill("#signin input[name=username]", "admin")
    page.fill("#signin input[name=password]", TEST_PASSWORD)
    page.click("#signin button[type=submit]")
    page.wait_for_function("document.body.dataset.role === 'admin' && document.body.dataset.stats === 'coverage'")
    total = get_json(f"{live_server}/v1/coverage/summary", bearer(live_server, "admin"))["total"]
    without = total["grids"] - total["grids_with_branch"]
    assert page.inner_text("#stats").startswith(
        f"共 {total['grids']} 个网格，其中 {without} 个无党支部；党支部覆盖率 "
        f"{total['grids_with_branch'] / total['grids'] * 100:.1f}%。"
    )
    assert f"党员报到率 {total['registration_rate'] * 100:.1f}%" in page.inner_text("#stats")
    wait_idle(page)
    # the whole-district view is below zoom 15: no residence is asked for yet
    assert not any("members" in layers for layers, _ in tile_requests(page_log.requests))
    assert page.is_visible('.layer-group[data-group="members"] .zoom-hint')

    grid, _ = pick_grid(page, live_server, True)
    lon, lat = inner_point(grid["geometry"])
    move_to(page, lon, lat, 14.5)
    assert not any("members" in layers for layers, _ in tile_requests(page_log.requests))
    assert rendered(page, ["members-circle"]) == []
    move_to(page, lon, lat, 15.5)
    members = [z for layers, z in tile_requests(page_log.requests) if layers == ("members",)]
    assert members and min(members) >= 15
    assert rendered(page, ["members-circle"]), "no residence drawn at zoom 15.5"
    assert page.is_hidden('.layer-group[data-group="members"] .zoom-hint')
    # the token goes with the members tiles and with nothing else on the map
    tiles_with_token = [u for u in authorised if "/tiles/" in u]
    assert tiles_with_token and all(urlsplit(u).path.startswith("/tiles/members/") for u in tiles_with_token)
    assert page_log.bad_status == [] and page_log.failed == []

    page.click("#signout")
    page.wait_for_function("document.body.dataset.role === undefined && document.body.dataset.stats === 'tiles'")
    assert page.evaluate("window.gridbranchMap.getSource('members') === undefined")
    assert page.is_hidden('.layer-group[data-group="members"]')


def test_embed_mode_shows_public_aggregates_only(page, page_log, live_server):
    open_map(page, live_server, "?embed=1")

    assert page.is_hidden("#panel") and page.is_visible("#embed-legend")
    composite = ",".join(EMBED_LAYERS)
    style = page.evaluate("window.gridbranchMap.getStyle()")
    assert style["sources"]["gridbranch"]["tiles"] == [f"{live_server}/tiles/{composite}/{{z}}/{{x}}/{{y}}.mvt"]
    layer_ids = {layer["id"] for layer in style["layers"]}
    assert not layer_ids & {"events-circle", "coverage-issues-fill", "coverage-issues-line"}
    assert rendered(page, ["grids-fill"]) and rendered(page, ["branches-circle"])

    grid, (x, y) = pick_grid(page, live_server, True)
    page.mouse.click(x, y)
    popup = page.locator(".maplibregl-popup .popup-grid")
    popup.wait_for()
    code = grid["properties"]["code"]
    assert code in popup.inner_text() and grid["properties"]["name"] in popup.inner_text()
    assert "网格员" not in popup.inner_text()
    lon, lat = inner_point(grid["geometry"])
    move_to(page, lon, lat, 16)

    tiles = tile_requests(page_log.requests)
    assert tiles and all(layers == EMBED_LAYERS for layers, _ in tiles)
    assert 16 in {z for _, z in tiles}
    assert_public_only(page_log.requests, EMBED_LAYERS)
    # nothing but the page, its scripts and the tiles: no API call at all
    paths = {urlsplit(u).path for u in page_log.requests}
    assert not any(p.startswith("/v1/") for p in paths), paths
    assert page_log.page_errors == [] and page_log.bad_status == [] and page_log.foreign == []

    # a portal may ask for the member density too: still aggregates only
    assert rendered(page, ["members-h3-fill"]) == []
    open_map(page, live_server, "?embed=1&h3=1")
    assert rendered(page, ["members-h3-fill"]) and page.is_visible("#embed-legend-h3")
    assert_public_only(page_log.requests, EMBED_LAYERS)
    assert not any(urlsplit(u).path.startswith("/v1/") for u in page_log.requests)


def test_data_error_is_shown_in_chinese(page, live_server):
    page.route("**/tiles/*.json", lambda route: route.fulfill(status=503, json={"detail": "维护中"}))
    page.goto(f"{live_server}/map")
    page.wait_for_function(READY)

    assert page.evaluate("document.body.dataset.error") == "1"
    assert page.evaluate("document.body.dataset.ready") is None
    status = page.locator("#status")
    assert status.is_visible()
    assert "地图数据加载失败" in status.inner_text()
    assert "503" in status.inner_text()


def test_small_screens_count_grids_from_the_paged_list(page, page_log, live_server):
    """Below the grids' first zoom the tiles carry no grid: the summary then comes from
    the public grid list, following its "next" links."""
    grids = api_grids(live_server)
    page_size = 50
    if len(grids) <= page_size:
        raise AssertionError(f"the demo has only {len(grids)} grids: too few to page")

    # make the page's first request ask for small pages; it must follow the "next" links
    def small_pages(route):
        route.fulfill(response=route.fetch(url=route.request.url.replace("limit=1000", f"limit={page_size}")))

    page.route(lambda url: urlsplit(url).path == "/v1/grids" and "limit=1000" in url, small_pages)
    page.set_viewport_size({"width": 240, "height": 400})
    open_map(page, live_server)

    assert page.evaluate("window.gridbranchMap.getZoom()") < LAYERS["grids"].minzoom
    assert page.evaluate("document.body.dataset.stats") == "api"
    without = sum(1 for f in grids if not f["properties"]["has_branch"])
    assert page.inner_text("#stats") == (
        f"共 {len(grids)} 个网格，其中 {without} 个无党支部；"
        f"党支部覆盖率 {(len(grids) - without) / len(grids) * 100:.1f}%。"
    )
    pages = [u for u in page_log.requests if urlsplit(u).path == "/v1/grids"]
    assert len(pages) == -(-len(grids) // page_size)
    assert page.is_visible('.layer-group[data-group="grids"] .zoom-hint')


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
    assert tile_requests(page_log.requests, PROXY_PREFIX)
    assert rendered(page, ["grids-fill"])
    grid, (x, y) = pick_grid(page, prefixed_server, True)
    page.mouse.click(x, y)
    page.wait_for_selector(f'#grid-info[data-code="{grid["properties"]["code"]}"][data-state="ready"]')


def test_the_map_draws_the_services_one_style(page, live_server):
    """The page draws /tiles/style.json as it is served, adding only its interactive
    layers; the embedded map leaves out the layers the style does not name for it, and a
    signed-in admin's residences are drawn as the admin's style draws them."""
    served = get_json(f"{live_server}/tiles/style.json")
    composites = served["metadata"]["gridbranch:composites"]
    assert tuple(composites["map"]) == PUBLIC_LAYERS and tuple(composites["embed"]) == EMBED_LAYERS
    interactive = {"grids-hover", "grids-selected"}

    def drawn(page) -> dict[str, dict]:
        return {layer["id"]: layer for layer in page.evaluate("window.gridbranchMap.getStyle()")["layers"]}

    for query, names in (("", PUBLIC_LAYERS), ("?embed=1", EMBED_LAYERS)):
        open_map(page, live_server, query)
        assert tuple(page.evaluate("window.gridbranchTileLayers")) == names
        layers = drawn(page)
        expected = [s for s in served["layers"] if s["type"] == "background" or s["source-layer"] in names]
        assert [i for i in layers if i not in interactive] == [s["id"] for s in expected], query
        for spec in expected:
            mine = layers[spec["id"]]
            assert mine["paint"] == spec["paint"] and mine.get("minzoom") == spec.get("minzoom"), spec["id"]
            if spec["id"] != "events-circle":  # the page's own toggle filters the closed events
                assert mine.get("filter") == spec.get("filter"), spec["id"]
        assert interactive <= set(layers) and list(layers)[-1] == "labels-text"

    open_map(page, live_server)
    page.fill("#signin input[name=username]", "admin")
    page.fill("#signin input[name=password]", TEST_PASSWORD)
    page.click("#signin button[type=submit]")
    page.wait_for_function("Boolean(window.gridbranchMap.getLayer('members-circle'))")
    admins = {s["id"]: s for s in get_json(f"{live_server}/tiles/style.json", bearer(live_server, "admin"))["layers"]}
    layers = drawn(page)
    assert layers["members-circle"]["paint"] == admins["members-circle"]["paint"]
    ids = list(layers)
    assert ids.index("members-circle") == ids.index("events-circle") - 1

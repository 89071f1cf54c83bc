"""Browser helpers the web map's test modules share: opening and moving the map, reading
what it drew, picking a grid to click, signing in, registering, and the API reads the
tests check the page against. Test modules import these from here, never from each other."""

from __future__ import annotations

import json
from functools import cache
from urllib.parse import urlencode
from urllib.request import Request, urlopen

from shapely.geometry import Point, shape
from shapely.ops import polylabel
from sqlalchemy import text

from tests.conftest import TEST_PASSWORD
from tests.web_map.conftest import VIEWPORT

READY = "document.body.dataset.ready === '1' || document.body.dataset.error === '1'"
VIEWPORT_W, VIEWPORT_H = VIEWPORT["width"], VIEWPORT["height"]
# map layers through which a click at a grid's inner point may pass and still be "just the grid"
GRID_ONLY = {"district-fill", "grids-fill", "grids-hover", "grids-selected", "grids-nobranch-line"}


def get_json(url: str, headers: dict | None = None) -> dict:
    with urlopen(Request(url, headers=headers or {}), timeout=30) as r:
        assert r.status == 200, url
        return json.load(r)


def post_json(url: str, body: dict, headers: dict) -> dict:
    request = Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **headers})
    with urlopen(request, timeout=30) as r:
        return json.load(r)


def bearer(base: str, username: str) -> dict:
    """Sign in a demo account through the password flow (for the cross-checks only:
    the map itself never signs in). Not cached: a page that signs the account out ends
    all of its tokens (revocation), this one included."""
    body = urlencode({"username": username, "password": TEST_PASSWORD}).encode()
    with urlopen(Request(f"{base}/v1/auth/token", data=body), timeout=30) as r:
        return {"Authorization": f"Bearer {json.load(r)['access_token']}"}


@cache
def api_grids(base: str) -> list[dict]:
    """Every current grid, following the "next" links."""
    features, url = [], f"{base}/v1/grids?limit=1000"
    while url:
        body = get_json(url)
        features += body["features"]
        url = next((link["href"] for link in body.get("links", []) if link["rel"] == "next"), None)
    return features


def inner_point(geometry: dict) -> tuple[float, float]:
    """A point well inside a (multi)polygon: the pole of inaccessibility of its largest part."""
    geom = shape(geometry)
    part = max(getattr(geom, "geoms", [geom]), key=lambda g: g.area)
    p = polylabel(part, tolerance=1e-7)
    assert part.contains(p)
    return p.x, p.y


def open_map(page, base: str, query: str = "") -> None:
    page.goto(f"{base}/map{query}")
    page.wait_for_function(READY, timeout=60_000)
    assert page.evaluate("document.body.dataset.error") is None, page.inner_text("#status")


def wait_idle(page) -> None:
    """Until the map has drawn every tile of the current view."""
    page.evaluate(
        """() => new Promise((resolve) => {
            const map = window.gridbranchMap;
            map.once('idle', () => resolve());  // not the event: it holds the map
            map.triggerRepaint();
        })"""
    )


def move_to(page, lon: float, lat: float, zoom: float) -> None:
    # (braces: the map that jumpTo returns is not to be serialised back to Python)
    page.evaluate(
        "([lon, lat, zoom]) => { window.gridbranchMap.jumpTo({center: [lon, lat], zoom}); }", [lon, lat, zoom]
    )
    wait_idle(page)


def to_screen(page, lon: float, lat: float) -> tuple[float, float]:
    xy = page.evaluate(
        "([lon, lat]) => { const p = window.gridbranchMap.project([lon, lat]); return [p.x, p.y]; }", [lon, lat]
    )
    return xy[0], xy[1]


def to_lonlat(page, x: float, y: float) -> tuple[float, float]:
    ll = page.evaluate(
        "([x, y]) => { const l = window.gridbranchMap.unproject([x, y]); return [l.lng, l.lat]; }", [x, y]
    )
    return ll[0], ll[1]


def rendered(page, layers: list[str], around: tuple[float, float] | None = None, pad: float = 0) -> list[dict]:
    """queryRenderedFeatures on ``layers`` (all of the view, or a box around a point):
    layer id, feature id, properties and (for points) coordinates."""
    return page.evaluate(
        """([layers, around, pad]) => {
            const map = window.gridbranchMap;
            const where = around ? [[around[0] - pad, around[1] - pad], [around[0] + pad, around[1] + pad]] : undefined;
            const existing = layers.filter((id) => map.getLayer(id));
            if (!existing.length) return [];
            return map.queryRenderedFeatures(where, {layers: existing}).map((f) => ({
                layer: f.layer.id, id: f.id, properties: f.properties,
                point: f.geometry.type === 'Point' ? f.geometry.coordinates : null,
            }));
        }""",
        [layers, list(around) if around else None, pad],
    )


def source_features(page, source_layer: str) -> list[dict]:
    """What the worker has cut into tiles for the current view (a feature once per tile)."""
    return page.evaluate(
        """(layer) => window.gridbranchMap.querySourceFeatures('gridbranch', {sourceLayer: layer})
            .map((f) => ({id: f.id, properties: f.properties}))""",
        source_layer,
    )


def everything_at(page, x: float, y: float, pad: float) -> set[str]:
    """The ids of the map layers that draw something within ``pad`` pixels of (x, y)."""
    return set(
        page.evaluate(
            """([x, y, pad]) => [...new Set(window.gridbranchMap.queryRenderedFeatures(
            [[x - pad, y - pad], [x + pad, y + pad]]).map((f) => f.layer.id))]""",
            [x, y, pad],
        )
    )


def covered(page) -> list[tuple[float, float, float, float]]:
    """Screen boxes of the chrome floating over the map (panel, controls, legend)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('#panel, .maplibregl-ctrl, #embed-legend, .maplibregl-popup')]
            .filter((e) => !e.hidden && e.getBoundingClientRect().width > 0).map((e) => {
                const r = e.getBoundingClientRect();
                return [r.left - 8, r.top - 8, r.right + 8, r.bottom + 8];
            })"""
    )


def on_open_map(page, x: float, y: float) -> bool:
    inside = 10 < x < VIEWPORT_W - 10 and 10 < y < VIEWPORT_H - 10
    return inside and not any(x0 <= x <= x1 and y0 <= y <= y1 for x0, y0, x1, y1 in covered(page))


def pick_grid(page, base: str, has_branch: bool) -> tuple[dict, tuple[float, float]]:
    """A big grid with (or without) a branch whose inner point is on the visible map
    (not under the panel or a control) with nothing but the grid drawn around it (no
    event, site, coverage issue or boundary), and that point on the screen."""
    candidates = [f for f in api_grids(base) if bool(f["properties"]["has_branch"]) == has_branch]
    if not candidates:
        raise AssertionError(
            f"the demo has no grid with has_branch={has_branch}: it is deterministic, so this is a defect"
        )
    shapes = {f["properties"]["code"]: shape(f["geometry"]) for f in api_grids(base)}
    for grid in sorted(candidates, key=lambda f: shapes[f["properties"]["code"]].area, reverse=True):
        lon, lat = inner_point(grid["geometry"])
        here = Point(lon, lat)
        if any(g.intersects(here) for c, g in shapes.items() if c != grid["properties"]["code"]):
            continue  # an overlap (the demo draws a few on purpose): the click is ambiguous
        x, y = to_screen(page, lon, lat)
        if on_open_map(page, x, y) and everything_at(page, x, y, 8) <= GRID_ONLY:
            return grid, (x, y)
    raise AssertionError(f"no grid with has_branch={has_branch} is visible on the map")


PHONE = {"width": 390, "height": 844}


def pressable(page, selector: str) -> list[str]:
    """The texts of the elements matching ``selector`` that a tap at their centre reaches
    (on the screen, nothing drawn over them)."""
    return page.evaluate(
        """(selector) => [...document.querySelectorAll(selector)].filter((b) => {
            const r = b.getBoundingClientRect();
            if (r.width === 0 || r.bottom > innerHeight || r.top < 0) return false;
            const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
            return hit === b || b.contains(hit);
        }).map((b) => b.textContent.trim())""",
        selector,
    )


def submit_sign_in(page, username: str, password: str) -> None:
    """Sign out if signed in, then send the sign-in form (its outcome is the caller's to
    wait for: a refused account never gets a role)."""
    if page.is_visible("#signout"):
        page.click("#signout")
        page.wait_for_function("document.body.dataset.role === undefined")
    page.fill("#signin input[name=username]", username)
    page.fill("#signin input[name=password]", password)
    page.click("#signin button[type=submit]")


def sign_in(page, username: str) -> None:
    submit_sign_in(page, username, TEST_PASSWORD)
    page.wait_for_function("document.body.dataset.role !== undefined")
    # and the map has moved to the account's area (or had none to move to)
    page.wait_for_function("document.body.dataset.area !== undefined")


def wait_state(page, state: str) -> None:
    page.wait_for_function(f"document.getElementById('register').dataset.state === '{state}'")


def wait_located(page, code: str) -> None:
    page.wait_for_function(f"document.getElementById('register-located').dataset.grid === '{code}'")


def registrations(engine, member_id: int) -> list:
    with engine.connect() as conn:
        return conn.execute(
            text(
                """SELECT r.id, r.status, r.reason, r.role_code, g.code, res.source_crs, res.source_x, res.source_y,
                      ST_X(res.geom), ST_Y(res.geom), res.accuracy_m
                 FROM registrations r JOIN grids g ON g.id = r.grid_id JOIN residences res ON res.id = r.residence_id
                WHERE r.member_id = :m ORDER BY r.id"""
            ),
            {"m": member_id},
        ).all()


def submit(page, role: str) -> None:
    page.select_option("#register-form select[name=role]", role)
    page.click("#register-form button[type=submit]")


def department_code(engine, username: str = "department") -> str:
    """The code of the department a department staff account works for."""
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT d.code FROM users u JOIN departments d ON d.id = u.department_id WHERE u.username = :u"),
            {"u": username},
        ).scalar_one()


def drop_events(engine, ids: list[int]) -> None:
    """Remove events a test reported, with their track."""
    with engine.begin() as conn:
        # the log is append-only (a trigger refuses deletes): set aside for this cleanup only,
        # and the events version bumped by hand, so no cached tile keeps the events
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text("DELETE FROM event_log WHERE event_id = ANY(:e)"), {"e": ids})
        conn.execute(text("DELETE FROM events WHERE id = ANY(:e)"), {"e": ids})
        conn.execute(text("UPDATE data_versions SET version = version + 1 WHERE layer = 'events'"))

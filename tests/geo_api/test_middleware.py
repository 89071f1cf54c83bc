"""The app's middleware — added with ``add_middleware`` like any — applies to the fast
paths (locate, public tiles, anonymous reports) as to the routes; and the middleware the
app brings itself: rate limits of anonymous writes, security headers, CORS."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import text

from geo_api.app import create_app
from geo_api.telemetry import REGISTRY
from tests.conftest import make_settings, token_for

POINT = (113.6849, 34.7979)  # inside a demo grid
REPORT = {"lon": POINT[0], "lat": POINT[1], "category": "xfyh", "channel": "public", "description": "井盖缺失"}
TILE = "/tiles/grids/14/13365/6500.mvt"  # the tile of POINT
PORTAL = "https://portal.example.cn"


def client_for(demo_engine, demo_db, *, middleware=(), client=("testclient", 50000), **concerns) -> TestClient:
    """A client of an app on the demo data (writes rolled back) with ``middleware`` added
    the app's normal way, and settings ``concerns`` changed (``security={...}``)."""
    settings = make_settings()
    for concern, values in concerns.items():
        for name, value in values.items():
            setattr(getattr(settings, concern), name, value)
    app = create_app(settings, engine=demo_engine)
    app.state.bound_session = demo_db  # geo_api.deps.bound_session
    for cls, kwargs in middleware:
        app.add_middleware(cls, **kwargs)
    return TestClient(app, client=client)


class Marker:
    """A middleware as any to come (rate limits, request ids, metrics): marks every answer
    and notes, per request, whether a route answered it (the router puts the route in
    the scope; a fast path answers without one)."""

    def __init__(self, app, seen: list):
        self.app = app
        self.seen = seen

    async def __call__(self, scope, receive, send):
        async def marked(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), (b"x-marker", b"seen")]}
            await send(message)

        await self.app(scope, receive, marked)
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"], scope.get("route") is not None))


def _counted(method: str, route: str, status: int) -> float:
    return (
        REGISTRY.get_sample_value(
            "gridbranch_http_requests_total", {"method": method, "route": route, "status": str(status)}
        )
        or 0.0
    )


def test_a_middleware_added_to_the_app_sees_every_fast_path(demo_engine, demo_db):
    seen: list = []
    requests = [
        ("GET", "/v1/locate", {"params": {"lon": POINT[0], "lat": POINT[1]}}),
        ("GET", TILE, {"headers": {"Accept-Encoding": "gzip"}}),
        ("POST", "/v1/events", {"json": REPORT}),
    ]
    # the app's own telemetry (geo_api.telemetry) is such a middleware: it counts the fast
    # paths' answers under their routes' templates, never the raw path
    templates = [
        ("GET", "/v1/locate", 200),
        ("GET", "/tiles/{layers}/{z}/{x}/{y}.mvt", 200),
        ("POST", "/v1/events", 201),
    ]
    before = [_counted(*t) for t in templates]
    with client_for(demo_engine, demo_db, middleware=[(Marker, {"seen": seen})]) as c:
        for method, url, kwargs in requests:
            r = c.request(method, url, **kwargs)
            assert r.status_code in (200, 201), (url, r.text)
            assert r.headers.get("x-marker") == "seen", url
        fast = list(seen)
        seen.clear()
        # the same requests signed in take the routes: the marker tells them apart
        for method, url, kwargs in requests:
            headers = {**kwargs.get("headers", {}), **token_for("dispatcher")}
            r = c.request(method, url, **{**kwargs, "headers": headers})
            assert r.status_code in (200, 201) and r.headers.get("x-marker") == "seen", (url, r.text)
    assert [routed for _, _, routed in fast] == [False, False, False], fast  # the fast paths answered
    assert [routed for _, _, routed in seen] == [True, True, True], seen
    assert [_counted(*t) - b for t, b in zip(templates, before)] == [2, 2, 2]  # fast, then routed
    assert (
        REGISTRY.get_sample_value("gridbranch_http_requests_total", {"method": "GET", "route": TILE, "status": "200"})
        is None
    )


# -- Rate limits ------------------------------------------------------------------------


def test_anonymous_writes_are_limited_per_address_and_recover_with_the_clock(demo_engine, demo_db, clock):
    limits = {"reports_per_address": 2, "tokens_per_address": 1, "locate_batches_per_address": 1}
    with client_for(demo_engine, demo_db, rate_limit=limits) as c:
        assert [c.post("/v1/events", json=REPORT).status_code for _ in range(2)] == [201, 201]
        r = c.post("/v1/events", json=REPORT)  # the fast path's request: limited in front of it
        assert r.status_code == 429 and r.headers["content-type"].startswith("application/problem+json")
        body = r.json()
        assert r.headers["retry-after"] == "30" and body["retry_after"] == 30  # 2 a minute: one every 30 s
        assert "30" in body["detail"] and body["detail_zh"] == "事件上报过于频繁，请 30 秒后再试"
        assert r.headers["x-content-type-options"] == "nosniff"  # security headers on a 429 too
        # Open311 shares the reports' bucket (its 429 is a problem detail, as its 401 and 503)
        o = c.post(
            "/open311/v2/requests.json",
            data={"service_code": "xfyh", "lat": POINT[1], "long": POINT[0], "description": "井盖缺失"},
        )
        assert o.status_code == 429 and o.headers["retry-after"] == "30" and o.json() == body
        # a signed-in caller is not anonymous: not limited here
        assert c.post("/v1/events", json=REPORT, headers=token_for("dispatcher")).status_code == 201
        # sign-in attempts and locate batches have buckets of their own
        creds = {"username": "nobody", "password": "wrong-password-1A"}
        assert c.post("/v1/auth/token", data=creds).status_code == 401
        t = c.post("/v1/auth/token", data=creds)
        assert t.status_code == 429 and t.json()["detail_zh"].startswith("登录尝试过于频繁")
        batch = [{"id": 1, "lon": POINT[0], "lat": POINT[1]}]
        assert c.post("/v1/locate/batch", json=batch).status_code == 200
        assert c.post("/v1/locate/batch", json=batch).status_code == 429
        assert c.get("/v1/locate", params={"lon": POINT[0], "lat": POINT[1]}).status_code == 200  # reads: never
        clock.advance(timedelta(seconds=29))
        assert c.post("/v1/events", json=REPORT).status_code == 429
        assert c.post("/v1/events", json=REPORT).headers["retry-after"] == "1"
        clock.advance(timedelta(seconds=1))
        assert c.post("/v1/events", json=REPORT).status_code == 201
        assert c.post("/v1/events", json=REPORT).status_code == 429


def test_addresses_come_from_trusted_proxies_and_the_overall_limit_holds(demo_engine, demo_db):
    limits = {"reports_per_address": 1, "reports_overall": 3, "exempt": ("192.0.2.0/24",)}
    proxy = ("10.0.0.2", 40000)
    with client_for(
        demo_engine, demo_db, rate_limit=limits, security={"trusted_proxies": ("10.0.0.2",)}, client=proxy
    ) as c:

        def report(address: str) -> int:
            return c.post("/v1/events", json=REPORT, headers={"X-Forwarded-For": address}).status_code

        assert report("198.51.100.1") == 201
        assert report("198.51.100.1") == 429  # that resident's own bucket
        assert report("198.51.100.2") == 201  # another address behind the same proxy
        assert [report("192.0.2.7") for _ in range(3)] == [201] * 3  # exempt: counted nowhere
        assert report("198.51.100.3") == 201
        assert report("198.51.100.4") == 429  # three a minute in all
    with client_for(demo_engine, demo_db, rate_limit={"reports_per_address": 1}, client=("203.0.113.9", 1)) as c:
        # not a trusted proxy: X-Forwarded-For is not believed, the connection's address counts
        assert c.post("/v1/events", json=REPORT, headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 201
        assert c.post("/v1/events", json=REPORT, headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 429


def test_sign_in_guards_count_the_address_a_trusted_proxy_gives(demo_engine, demo_db):
    """The sign-in slowdown and its log see the same client address as the rate limits:
    the one a trusted proxy forwards, not the proxy's own."""
    proxy = ("10.0.0.2", 40000)
    with client_for(
        demo_engine,
        demo_db,
        security={"trusted_proxies": ("10.0.0.2",)},
        auth={"signin_address_failures": 2},
        client=proxy,
    ) as c:

        def sign_in(name: str, address: str) -> int:
            creds = {"username": name, "password": "wrong-Password-1"}
            return c.post("/v1/auth/token", data=creds, headers={"X-Forwarded-For": address}).status_code

        assert [sign_in(f"t_fwd{i}", "198.51.100.7") for i in range(3)] == [401, 401, 429]
        assert sign_in("t_fwd9", "198.51.100.8") == 401  # another resident behind the same proxy
    logged = demo_db.execute(text("SELECT address, outcome FROM signin_log WHERE name LIKE 't_fwd%' ORDER BY id")).all()
    assert [tuple(r) for r in logged] == [
        ("198.51.100.7", "failed"),
        ("198.51.100.7", "failed"),
        ("198.51.100.7", "throttled"),
        ("198.51.100.8", "failed"),
    ]


# -- Security headers and CORS ----------------------------------------------------------


def test_security_headers_on_every_answer_and_the_maps_policy(demo_engine, demo_db):
    security = {"embed_origins": (PORTAL,), "trusted_proxies": ("10.0.0.2",)}
    with client_for(demo_engine, demo_db, security=security, client=("10.0.0.2", 40000)) as c:
        answers = {
            "locate (fast path)": c.get("/v1/locate", params={"lon": POINT[0], "lat": POINT[1]}),
            "tile (fast path)": c.get(TILE),
            "report (fast path)": c.post("/v1/events", json=REPORT),
            "route": c.get("/v1/events/categories"),
            "404": c.get("/v1/nothing-here"),
            "422": c.get("/v1/locate", params={"lon": "x"}),
            "NUL": c.get("/v1/grids", params={"q": "\x00"}),
            "docs": c.get("/docs"),
        }
        for what, r in answers.items():
            assert r.headers["x-content-type-options"] == "nosniff", what
            assert r.headers["referrer-policy"] == "same-origin", what
            assert r.headers["content-security-policy"] == "frame-ancestors 'none'", what
            assert "strict-transport-security" not in r.headers, what
        page = c.get("/map")
        policy = dict(p.strip().split(" ", 1) for p in page.headers["content-security-policy"].split(";") if p.strip())
        assert policy["default-src"] == policy["script-src"] == policy["connect-src"] == "'self'"
        assert policy["worker-src"] == "'self' blob:" and policy["frame-ancestors"] == "'none'"
        assert page.headers["x-frame-options"] == "DENY"
        assert c.head("/map").headers["content-security-policy"] == page.headers["content-security-policy"]
        embed = c.get("/map", params={"embed": "1"})
        assert f"frame-ancestors 'self' {PORTAL}" in embed.headers["content-security-policy"]
        assert "x-frame-options" not in embed.headers
        # over HTTPS, as the trusted proxy says: HSTS; a forged header from elsewhere: none
        secure = c.get(TILE, headers={"X-Forwarded-Proto": "https"})
        assert secure.headers["strict-transport-security"] == "max-age=31536000"
    with client_for(demo_engine, demo_db, client=("203.0.113.9", 1)) as c:
        assert "strict-transport-security" not in c.get(TILE, headers={"X-Forwarded-Proto": "https"}).headers


def test_cors_for_the_configured_origins_fast_paths_included(demo_engine, demo_db):
    with client_for(demo_engine, demo_db, security={"cors_origins": (PORTAL,)}) as c:
        pre = c.options(
            "/v1/events",
            headers={
                "Origin": PORTAL,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == PORTAL
        assert "POST" in pre.headers["access-control-allow-methods"]
        for r in (
            c.get(TILE, headers={"Origin": PORTAL}),
            c.get("/v1/locate", params={"lon": POINT[0], "lat": POINT[1]}, headers={"Origin": PORTAL}),
            c.post("/v1/events", json=REPORT, headers={"Origin": PORTAL}),
        ):
            assert r.headers["access-control-allow-origin"] == PORTAL
            assert "x-tile-truncated" in r.headers["access-control-expose-headers"].lower()
        other = c.get(
            "/v1/locate", params={"lon": POINT[0], "lat": POINT[1]}, headers={"Origin": "https://elsewhere.example"}
        )
        assert "access-control-allow-origin" not in other.headers
        # public tiles are anyone's to draw (their own "*", tiles.service), whoever asks
        assert (
            c.get(TILE, headers={"Origin": "https://elsewhere.example"}).headers["access-control-allow-origin"] == "*"
        )
        refused = c.options(
            "/v1/events", headers={"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
        )
        assert refused.status_code == 400
    with client_for(demo_engine, demo_db) as c:  # no origins configured: no CORS at all
        r = c.get("/v1/locate", params={"lon": POINT[0], "lat": POINT[1]}, headers={"Origin": PORTAL})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers

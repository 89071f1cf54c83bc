"""Fixtures for the browser tests of the web map: the API served by uvicorn on a free
local port (on the Jinshui demo database) and Debian's chromium driven by Playwright.

Playwright never downloads a browser here: the system chromium is launched by path,
headless, with WebGL rendered in software by SwiftShader (through ANGLE).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.error import HTTPError
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest

from tests.conftest import make_settings

CHROMIUM = os.environ.get("GRIDBRANCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",  # we run as root
    "--disable-gpu",
    "--use-angle=swiftshader",  # WebGL in software, so MapLibre renders without a GPU
    "--enable-unsafe-swiftshader",  # newer chromium refuses the SwiftShader fallback without it
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
VIEWPORT = {"width": 1400, "height": 900}


@contextmanager
def serving(app) -> Iterator[str]:
    """``app`` served by uvicorn in a background thread on 127.0.0.1 (a free port);
    yields its base URL without a trailing slash."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="session")
def live_server(demo_engine) -> Iterator[str]:
    """The API with the web map, on the demo data (see :func:`serving`)."""
    from geo_api.app import create_app

    with serving(create_app(browser_settings(), engine=demo_engine)) as url:
        yield url


def browser_settings():
    """Settings of an app the browser tests drive: every browser test of the session
    signs in and reports from loopback while the tests' clock stands still, so no bucket
    would ever refill — the rate limits are tested on their own
    (tests/geo_api/test_middleware.py), not through the browser."""
    settings = make_settings()
    settings.rate_limit.exempt = ("127.0.0.1",)
    return settings


PROXY_PREFIX = "/behind/a-proxy"


class _PrefixProxy(BaseHTTPRequestHandler):
    """A minimal reverse proxy serving the live server under PROXY_PREFIX (GET only),
    like a portal publishing the service at a sub-path. It rewrites nothing, so links
    the API builds from the URL it sees still name the upstream host and no prefix."""

    upstream = ""

    def do_GET(self) -> None:
        if not self.path.startswith(PROXY_PREFIX + "/"):
            self.send_error(404)
            return
        try:
            with urlopen(self.upstream + self.path[len(PROXY_PREFIX) :], timeout=30) as r:
                status, content_type, body = r.status, r.headers.get("Content-Type"), r.read()
        except HTTPError as e:
            status, content_type, body = e.code, e.headers.get("Content-Type"), e.read()
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:
        pass


@pytest.fixture(scope="session")
def prefixed_server(live_server) -> Iterator[str]:
    """The live server behind a path-prefix reverse proxy; yields the prefixed base URL."""
    handler = type("Proxy", (_PrefixProxy,), {"upstream": live_server})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="prefix-proxy", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}{PROXY_PREFIX}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.fail(
            f"no chromium at {CHROMIUM}: scripts/test.sh installs it (apt-get install chromium); "
            "Playwright must not download one"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@dataclass
class PageLog:
    """What a page did: console messages, uncaught errors, requests and their fates."""

    allowed: set[str]  # the host:port the page may talk to
    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    bad_status: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def errors(self) -> list[str]:
        return [text for kind, text in self.console if kind == "error"]


def _cancelled_tile(request) -> bool:
    """A tile request MapLibre aborted itself because the map moved on before it came
    back: the page's own doing, not a failure."""
    return "/tiles/" in request.url and request.url.endswith(".mvt") and request.failure == "net::ERR_ABORTED"


@pytest.fixture
def page_log(live_server) -> PageLog:
    return PageLog(allowed={urlsplit(live_server).netloc})


@pytest.fixture
def page(browser, page_log: PageLog) -> Iterator:
    """A fresh browser context and page that records what happens and blocks (and
    records) any request to a host other than the test servers."""
    # bypass_csp: Playwright's wait_for_function evaluates its predicate with eval, which
    # the map's policy refuses; test_the_map_runs_under_its_content_security_policy
    # drives the page with the policy in force
    context = browser.new_context(
        viewport=VIEWPORT, device_scale_factor=1, locale="zh-CN", service_workers="block", bypass_csp=True
    )

    def guard(route):
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https", "ws", "wss") and url.netloc not in page_log.allowed:
            page_log.foreign.append(route.request.url)
            route.abort("blockedbyclient")
        else:
            route.continue_()

    context.route("**/*", guard)
    pg = context.new_page()
    pg.on("console", lambda m: page_log.console.append((m.type, m.text)))
    pg.on("pageerror", lambda e: page_log.page_errors.append(str(e)))
    pg.on("request", lambda r: page_log.requests.append(r.url))
    pg.on("requestfailed", lambda r: _cancelled_tile(r) or page_log.failed.append(f"{r.url}: {r.failure}"))
    pg.on("response", lambda r: r.status >= 400 and page_log.bad_status.append(f"{r.status} {r.url}"))
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        context.close()

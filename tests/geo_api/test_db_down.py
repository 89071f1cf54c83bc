"""While PostgreSQL is down, requests answer 503 with ``Retry-After`` and a problem detail
— routes and fast paths (locate, tiles, event reports) alike, never a 500 or a dropped
connection — and the service recovers by itself once the database is back.

The test starts a throwaway cluster of its own (a temporary directory, a free port) and
stops and restarts that one: never the shared test server."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from geo_api.app import create_app
from layers import cluster as pg
from layers import db, migrate
from tests.conftest import clocked, make_settings, token_for
from tests.factories import add_user, small_layout
from tiles.tms import lonlat_to_tile

X, Y = 113.60, 34.70
INSIDE = (X + 0.02, Y + 0.03)  # well inside grid A


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def own_cluster():
    """A cluster of this test's own, with a migrated database holding the small layout."""
    root = Path(tempfile.mkdtemp(prefix="gridbranch-dbdown-"))
    root.chmod(0o755)  # the postgres user runs the cluster
    cluster = pg.Cluster(root=root, port=_free_port())
    try:
        pg.start(cluster)
        engine = clocked(db.make_engine(pg.ensure_database(cluster, "gridbranch"), 2))
        migrate.upgrade(engine)
        with Session(engine) as s:
            small_layout(s, X, Y)
            add_user(s, "cadmin", "admin", area_code="410105001000")
            s.commit()
        yield cluster, engine
        engine.dispose()
    finally:
        pg.stop(cluster)
        shutil.rmtree(cluster.root, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


def _tile_url(z: int = 14) -> str:
    t = lonlat_to_tile(*INSIDE, z)
    return f"/tiles/grids/{t.z}/{t.x}/{t.y}.mvt"


def _requests():
    """(what, method, url, keyword arguments): a route, a signed-in route, the fast
    paths (single locate, public tile, anonymous report) and the batch locate."""
    lon, lat = INSIDE
    return [
        ("route", "GET", "/v1/areas", {}),
        ("readiness", "GET", "/readyz", {}),
        ("signed-in route", "GET", "/v1/auth/me", {"headers": token_for("cadmin")}),
        ("locate fast path", "GET", f"/v1/locate?lon={lon}&lat={lat}", {}),
        ("locate route", "GET", f"/v1/locate?lon={lon}&lat={lat}&crs=EPSG:4326", {}),
        ("tile fast path", "GET", _tile_url(), {}),
        ("signed-in tile", "GET", _tile_url(15), {"headers": token_for("cadmin")}),
        ("batch", "POST", "/v1/locate/batch", {"json": [{"id": 1, "lon": lon, "lat": lat}]}),
        (
            "report fast path",
            "POST",
            "/v1/events",
            {"json": {"lon": lon, "lat": lat, "category": "xfyh", "description": "积水"}},
        ),
    ]


def _down_and_back(cluster, client) -> None:
    before = {what: client.request(method, url, **kw) for what, method, url, kw in _requests()}
    for what in (
        "route",
        "readiness",
        "signed-in route",
        "locate fast path",
        "locate route",
        "tile fast path",
        "batch",
    ):
        assert before[what].status_code == 200, (what, before[what].text)
    pg.stop(cluster)
    try:
        for what, method, url, kw in _requests():
            for attempt in range(2):  # the pools' connections are gone: a first and a later request
                r = client.request(method, url, **kw)
                assert r.status_code == 503, (what, attempt, r.status_code, r.text[:300])
                assert r.headers["content-type"].startswith("application/problem+json"), (what, r.headers)
                assert int(r.headers["retry-after"]) > 0, what
                problem = r.json()
                assert problem["status"] == 503 and "database" in problem["detail"], (what, problem)
        live = client.get("/livez")  # alive all the same: a supervisor must not restart it for this
        assert live.status_code == 200 and live.json() == {"status": "live"}
    finally:
        pg.start(cluster)
    for what, method, url, kw in _requests():
        statuses = []
        for _ in range(3):  # a stale pooled connection may cost one more 503, never a 500
            r = client.request(method, url, **kw)
            statuses.append(r.status_code)
            if r.status_code != 503:
                break
        assert statuses[-1] == before[what].status_code, (what, statuses, r.text[:300])
        assert statuses.count(503) <= 1, (what, statuses)
    r = client.get(f"/v1/locate?lon={INSIDE[0]}&lat={INSIDE[1]}")
    assert r.json()["grid"]["code"].endswith("001")


def test_in_process_requests_answer_503_while_the_database_is_down_and_recover(own_cluster):
    cluster, engine = own_cluster
    # default raise_server_exceptions: an exception reaching the server (what drops the
    # connection, or the catch-all's logged 500) fails the test
    with TestClient(create_app(make_settings(), engine=engine)) as client:
        _down_and_back(cluster, client)


def test_a_served_app_answers_503_on_its_connections_and_recovers(own_cluster):
    """The same through uvicorn on a socket: every request gets an answer (no reset)."""
    cluster, engine = own_cluster
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(make_settings(), engine=engine),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(300):
            if server.started:
                break
            time.sleep(0.05)
        assert server.started
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            _down_and_back(cluster, client)
    finally:
        server.should_exit = True
        thread.join(30)

"""``gridbranch serve`` as run for real: several worker processes, and the fast paths in
front of FastAPI's stack (``geo_api.app.GridbranchAPI``)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

from fastapi.testclient import TestClient
from sqlalchemy import text

from geo_api.app import create_app
from tests.conftest import TEST_PASSWORD, make_settings

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port: int, method: str, path: str, body: bytes | None = None, headers=None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)  # a new connection: any worker may take it
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def test_workers_share_one_secret_and_each_answers(demo_engine):
    """Two worker processes in demo mode with no GRIDBRANCH_AUTH_SECRET: a token issued by
    one is accepted by the other (the parent generates one secret for all), and both
    answer locates."""
    port = _free_port()
    url = demo_engine.url.render_as_string(hide_password=False)
    env = {
        **os.environ,
        "GRIDBRANCH_DATABASE_URL": url,
        "GRIDBRANCH_DEMO": "true",
        "GRIDBRANCH_ACCESS_LOG": "false",
        "GRIDBRANCH_POOL_SIZE": "2",
    }
    env.pop("GRIDBRANCH_AUTH_SECRET", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "geo_api.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "gridbranch serve did not start"
                time.sleep(0.2)
        status, token = _request(
            port,
            "POST",
            "/v1/auth/token",
            urlencode({"username": "admin", "password": TEST_PASSWORD}).encode(),
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200, token
        auth = {"Authorization": f"Bearer {token['access_token']}"}
        for _ in range(40):  # new connections, spread over the workers by the kernel
            status, me = _request(port, "GET", "/v1/auth/me", headers=auth)
            assert status == 200 and me["username"] == "admin", me
        status, located = _request(port, "GET", "/v1/locate?lon=113.6849&lat=34.7979")
        assert status == 200 and located["match"] == "inside" and len(located["grid"]["code"]) == 15
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "with 2 worker processes" in out


def test_a_fast_path_failing_past_its_hand_over_answers_the_stacks_500(demo_engine, monkeypatch):
    """An anonymous public report whose group write fails unexpectedly (the report may have
    been stored, so it is not handed to the route again) gets the same problem-details 500
    as any failure inside FastAPI's stack."""
    from geo_api import event_reports

    class Broken:
        async def submit(self, pending):
            raise RuntimeError("disk on fire")

    monkeypatch.setattr(event_reports, "report_batcher", lambda app: Broken())
    with TestClient(create_app(make_settings(), engine=demo_engine), raise_server_exceptions=False) as c:
        r = c.post(
            "/v1/events",
            json={"lon": 113.6849, "lat": 34.7979, "category": "xfyh", "channel": "public", "description": "井盖缺失"},
        )
    assert r.status_code == 500, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["title"] == "Internal error" and "fire" not in r.text


def test_serve_warns_when_the_workers_could_run_out_of_connections(demo_engine):
    from layers.db import connection_shortfall, connections_per_worker

    assert connections_per_worker(10) == 32 and connections_per_worker(1) == 5
    assert connection_shortfall(demo_engine, 1, 1) is None
    with demo_engine.connect() as conn:
        allowed = int(conn.execute(text("SHOW max_connections")).scalar())
    workers = allowed // connections_per_worker(10) + 1  # one worker more than fits even on an idle server
    why = connection_shortfall(demo_engine, 10, workers)
    assert why and f"may open {workers * 32} database connections" in why and f"max_connections {allowed}" in why

"""The stack (``gridbranch stack``, geo_api/stack.py) as it runs: Debian's nginx in front of
two real worker processes on a database of its own, on loopback. Tiles go through nginx's
cache and are never stale; signed-in and private tiles are never kept; the web map's files
come from nginx itself; the workers' metrics add up; ``down`` stops only what ``up`` started.

One stack for the module (starting it takes seconds), in one test process (xdist_group)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import mapbox_vector_tile
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from tests.conftest import TEST_CLOCK, TEST_SECRET, _demo_template, _fresh_database, _worker, token_for
from tiles.tms import lonlat_to_tile
from web_map import STATIC

pytestmark = [pytest.mark.stack, pytest.mark.xdist_group("stack")]

POINT = (113.6849, 34.7979)  # inside a demo grid
REPORT = {"lon": POINT[0], "lat": POINT[1], "category": "xfyh", "channel": "public", "description": "井盖缺失"}


def _tile(layer: str, z: int) -> str:
    t = lonlat_to_tile(*POINT, z)
    return f"/tiles/{layer}/{t.z}/{t.x}/{t.y}.mvt"


def _free_ports(n: int) -> int:
    """A port p with p .. p+n-1 free on loopback (nginx, then the workers)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


def gridbranch(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geo_api.cli", *args], env=env, capture_output=True, text=True, timeout=180
    )


@pytest.fixture(scope="module")
def stack(server_url):
    name = f"gridbranch_stack_{_worker()}"
    url = _fresh_database(server_url, name, template=_demo_template(server_url))
    # nginx's workers (www-data under root) must reach it: not pytest's private tmp_path
    root = Path(tempfile.mkdtemp(prefix="gridbranch-stack-"))
    root.chmod(0o755)
    port = _free_ports(3)
    env = {
        **os.environ,
        "GRIDBRANCH_DATABASE_URL": url,
        "GRIDBRANCH_AUTH_SECRET": TEST_SECRET,
        "GRIDBRANCH_CLOCK_AT": TEST_CLOCK.now().isoformat(),  # the workers see the tests' present
        "GRIDBRANCH_POOL_SIZE": "3",
        "GRIDBRANCH_STACK_DIR": str(root),
    }
    up = gridbranch(env, "stack", "up", "--port", str(port), "--workers", "2")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=30) as client:
            yield {"env": env, "root": root, "port": port, "client": client, "url": url}
    finally:
        gridbranch(env, "stack", "down")
        from layers import cluster as pg

        pg.drop_database(server_url, name)
        shutil.rmtree(root, ignore_errors=True)


def _state(stack) -> dict:
    return json.loads((stack["root"] / "state.json").read_text())


def _events(body: bytes) -> int:
    layers = mapbox_vector_tile.decode(body)
    return len(layers["events"]["features"]) if "events" in layers else 0


def test_up_is_idempotent_and_status_tells(stack):
    state = _state(stack)
    assert len(state["workers"]) == 2 and state["nginx_pid"] and not state["cluster_started"]
    again = gridbranch(stack["env"], "stack", "up", "--port", str(stack["port"]), "--workers", "2")
    assert again.returncode == 0, again.stderr
    assert _state(stack)["workers"] == state["workers"] and _state(stack)["nginx_pid"] == state["nginx_pid"]
    status = gridbranch(stack["env"], "stack", "status")
    assert status.returncode == 0, status.stdout
    lines = status.stdout.splitlines()
    assert lines[0].startswith("database") and "external" in lines[0]
    assert [line.split()[:2] for line in lines[1:]] == [
        ["nginx", "running"],
        ["worker", str(state["workers"][0]["port"])],
        ["worker", str(state["workers"][1]["port"])],
    ]
    assert all(" running " in line for line in lines)
    # the nginx running is the stack's own instance: its pid file and config in the stack's directory
    nginx = Path(f"/proc/{state['nginx_pid']}/cmdline").read_bytes().decode()
    assert str(stack["root"] / "nginx" / "nginx.conf") in nginx


def test_the_web_maps_files_come_from_nginx_the_api_from_the_workers(stack):
    c = stack["client"]
    asset = c.get("/static/map/map.js")
    assert asset.status_code == 200 and asset.content == (STATIC / "map.js").read_bytes()
    assert "x-request-id" not in asset.headers  # no worker answered it
    assert asset.headers["x-content-type-options"] == "nosniff"
    assert asset.headers["content-security-policy"] == "frame-ancestors 'none'"
    page = c.get("/map")
    assert page.status_code == 200 and "x-request-id" in page.headers  # a worker's, with its own policy
    assert "default-src 'self'" in page.headers["content-security-policy"]
    live = c.get("/livez")
    assert live.json() == {"status": "live"} and c.get("/readyz").json() == {"status": "ready"}


def test_tiles_are_kept_revalidated_and_a_write_shows_in_the_very_next_request(stack):
    c = stack["client"]
    url = _tile("events", 14)
    first = c.get(url, headers={"Accept-Encoding": "gzip"})
    assert first.status_code == 200, first.text
    assert first.headers["x-cache-status"] in ("MISS", "EXPIRED", "REVALIDATED")
    etag = first.headers["etag"]
    assert etag.startswith('"') and etag.endswith('-gz"')  # strong, through nginx
    assert first.headers["cache-control"] == "public, no-cache" and "x-accel-expires" not in first.headers
    again = c.get(url, headers={"Accept-Encoding": "gzip, deflate, br"})  # another list, the same copy
    assert again.headers["x-cache-status"] == "REVALIDATED" and again.headers["etag"] == etag
    assert again.content == first.content
    weak = c.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": f"W/{etag}"})
    assert weak.status_code == 304  # a weak ETag (what nginx's own gzip makes of one) matches
    before = _events(first.content)
    for n in range(1, 3):
        report = c.post("/v1/events", json=REPORT)
        assert report.status_code == 201, report.text
        after = c.get(url, headers={"Accept-Encoding": "gzip"})  # the very next request, either worker
        assert after.status_code == 200 and after.headers["etag"] != etag, n
        assert after.headers["x-cache-status"] == "EXPIRED"  # asked again, answered anew
        assert _events(after.content) == before + n
        etag = after.headers["etag"]
    identity = c.get(url, headers={"Accept-Encoding": "identity"})  # no gzip: the other copy, the same tile
    assert identity.headers.get("content-encoding") is None and _events(identity.content) == before + 2


def test_signed_in_and_private_tiles_are_never_kept(stack):
    c = stack["client"]
    url = _tile("grids", 15)  # asked by no other test
    signed = c.get(url, headers=token_for("dispatcher"))
    assert signed.status_code == 200 and signed.headers["x-cache-status"] == "BYPASS"
    anonymous = c.get(url)
    assert anonymous.headers["x-cache-status"] == "MISS"  # the signed-in answer was not kept
    members = _tile("members", 15)
    for _ in range(2):
        r = c.get(members, headers=token_for("admin"))
        assert r.status_code in (200, 204), r.text
        assert r.headers["cache-control"] == "private, no-store" and r.headers["x-cache-status"] == "BYPASS"
    refused = c.get(members)
    assert refused.status_code == 404 and refused.headers["x-cache-status"] == "BYPASS"
    cache = stack["root"] / "nginx" / "cache"
    kept = [p.read_bytes() for p in cache.rglob("*") if p.is_file()]
    assert kept and not any(b"KEY: /tiles/members" in k for k in kept)
    assert not any(b"private" in k.split(b"\r\n\r\n", 1)[0] for k in kept)


def _requests_total(c, route: str) -> float:
    r = c.get("/metrics")
    assert r.status_code == 200, r.text
    return sum(
        s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
        if s.name == "gridbranch_http_requests_total" and s.labels["route"] == route
    )


def test_metrics_add_up_over_the_workers_and_request_ids_pass_through(stack):
    c = stack["client"]
    before = _requests_total(c, "/readyz")
    ids = [c.get("/readyz").headers["x-request-id"] for _ in range(6)]
    assert _requests_total(c, "/readyz") - before == 6
    logs = stack["root"] / "logs"
    access = [json.loads(line) for line in (logs / "nginx-access.log").read_text().splitlines()]
    by_id = {entry["request_id"]: entry for entry in access}
    assert all(i in by_id for i in ids)  # nginx's $request_id is the one the worker answered with
    assert len({by_id[i]["upstream"] for i in ids}) == 2  # both workers answered
    worker_lines = "".join(p.read_text() for p in logs.glob("worker-*.log"))
    assert all(f'"request_id": "{i}"' in worker_lines for i in ids)
    # the public behind nginx: the address nginx saw counts, whatever a client claims
    assert c.get("/metrics", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 200  # loopback still


def test_a_worker_killed_loses_no_request_and_up_brings_it_back(stack):
    c = stack["client"]
    state = _state(stack)
    victim = state["workers"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    for _ in range(30):  # reaped by init, not by us: wait until its port is closed
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", victim["port"])) != 0:
                break
        time.sleep(0.1)
    answers = [c.get(u).status_code for u in ["/readyz", _tile("grids", 14), "/v1/areas"] * 4]
    assert answers == [200] * 12  # nginx tried the other worker
    status = gridbranch(stack["env"], "stack", "status")
    assert status.returncode == 3 and re.search(rf"worker {victim['port']}\s+stopped", status.stdout)
    up = gridbranch(stack["env"], "stack", "up", "--port", str(stack["port"]), "--workers", "2")
    assert up.returncode == 0, up.stderr
    after = _state(stack)
    assert after["workers"][1] == state["workers"][1]  # the living one kept
    assert after["workers"][0]["port"] == victim["port"] and after["workers"][0]["pid"] != victim["pid"]
    assert gridbranch(stack["env"], "stack", "status").returncode == 0


def test_down_stops_only_what_up_started(stack):
    state = _state(stack)
    down = gridbranch(stack["env"], "stack", "down")
    assert down.returncode == 0, down.stderr
    assert "nginx" in down.stdout and down.stdout.count("worker on port") == 2
    for pid in [state["nginx_pid"], *(w["pid"] for w in state["workers"])]:
        assert not Path(f"/proc/{pid}").exists() or b"geo_api" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    with pytest.raises(httpx.TransportError):
        stack["client"].get("/livez")
    status = gridbranch(stack["env"], "stack", "status")
    assert status.returncode == 3 and "stopped" in status.stdout
    engine = create_engine(stack["url"])  # the database it did not start is still there
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1
    engine.dispose()
    assert gridbranch(stack["env"], "stack", "down").stdout.startswith("nothing")

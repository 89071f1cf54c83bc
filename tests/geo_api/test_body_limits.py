"""Request bodies are bounded before they are read (``geo_api.asgi.BodyLimit``): a declared
``Content-Length`` over the limit is a 413 problem detail naming the limit with not a byte
read; a body streamed without one is refused as soon as it passes the limit — on every
write route (walked from the app), the fast paths included. Anonymous batches are capped
lower than signed-in ones, and the batch answer is made part by part: the same bytes as
made at once, in memory bounded by a part rather than by the batch."""

from __future__ import annotations

import csv
import io
import tracemalloc

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from geo_api.app import create_app
from tests.conftest import make_settings, token_for
from tests.factories import small_layout
from tests.factories.api import api_routes, real_values, route_url, walkable

LIMIT, BATCH_ANON, BATCH_SIGNED, ANON_ROWS = 4096, 8192, 65536, 50
IMPORTS = 16384  # uploads for import (signed in): their own limit
PHOTOS = 12288  # photos of public reports: theirs
CHUNK = 1024
PROBLEM = "application/problem+json"


def _settings():
    settings = make_settings()
    settings.service.max_body_bytes = LIMIT
    settings.locate.batch_max_bytes_anonymous = BATCH_ANON
    settings.locate.batch_max_bytes = BATCH_SIGNED
    settings.locate.batch_max_rows_anonymous = ANON_ROWS
    settings.imports.max_bytes = IMPORTS
    settings.photos.max_bytes = PHOTOS
    return settings


@pytest.fixture
def limited(demo_engine, demo_db):
    app = create_app(_settings(), engine=demo_engine)
    app.state.bound_session = demo_db  # geo_api.deps.bound_session
    with TestClient(app) as client:
        yield client


def _asgi(client, method: str, path: str, chunks: list[bytes], headers: dict[str, str]):
    """Send a request straight to the app, its body in ``chunks`` (ASGI messages); returns
    the status, the decoded answer and how many body bytes the app pulled."""
    pulled = 0

    async def run():
        pending = list(chunks)
        messages = []

        async def receive():
            nonlocal pulled
            if pending:
                chunk = pending.pop(0)
                pulled += len(chunk)
                return {"type": "http.request", "body": chunk, "more_body": bool(pending)}
            return {"type": "http.disconnect"}

        async def send(message):
            messages.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
        }
        await client.app(scope, receive, send)
        return messages

    messages = client.portal.call(run)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    head = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], head, body, pulled


def _write_routes(app, real):
    for route in api_routes(app.routes):
        for method in sorted(route.methods & {"POST", "PUT", "PATCH"}):
            if walkable(route, method):
                yield method, route_url(route, None, real)


def _limit_for(method: str, path: str, signed: bool) -> tuple[int, str]:
    if method == "POST" and path == "/v1/locate/batch":
        return (
            (BATCH_SIGNED, "GRIDBRANCH_LOCATE_BATCH_MAX_BYTES")
            if signed
            else (BATCH_ANON, "GRIDBRANCH_LOCATE_BATCH_MAX_BYTES_ANONYMOUS")
        )
    if method == "POST" and path == "/v1/imports" and signed:
        return IMPORTS, "GRIDBRANCH_IMPORTS_MAX_BYTES"
    if method == "POST" and path == "/v1/photos":
        return PHOTOS, "GRIDBRANCH_PHOTOS_MAX_BYTES"
    return LIMIT, "GRIDBRANCH_MAX_BODY_BYTES"


def _oversized(limit: int) -> bytes:
    """A JSON body of ``limit`` × 4 bytes that would be read whole if nothing stopped it."""
    return b'{"description": "' + b"x" * (4 * limit) + b'"}'


@pytest.mark.parametrize("who", ["anonymous", "admin"])
def test_a_declared_length_over_the_limit_is_413_before_a_byte_is_read(limited, demo_engine, who):
    real = real_values(demo_engine)
    headers = token_for("admin") if who == "admin" else {}
    routes = list(_write_routes(limited.app, real))
    assert len(routes) >= 10
    for method, path in routes:
        limit, setting = _limit_for(method, path, who == "admin")
        body = _oversized(limit)
        status, head, answer, pulled = _asgi(
            limited,
            method,
            path,
            [body],
            {**headers, "Content-Type": "application/json", "Content-Length": str(len(body))},
        )
        assert status == 413, (method, path, status, answer[:200])
        assert pulled == 0, (method, path, pulled)
        assert head["content-type"].startswith(PROBLEM)
        problem = orjson.loads(answer)
        assert problem["limit_bytes"] == limit and problem["setting"] == setting, problem
        assert str(limit) in problem["detail"] and setting in problem["detail"] and problem["field"] == "body"


@pytest.mark.parametrize("who", ["anonymous", "admin"])
def test_a_streamed_body_is_refused_once_past_the_limit_never_read_whole(limited, demo_engine, who):
    """Without Content-Length (chunked): whatever reads the body — FastAPI's JSON or form
    parsing, a route's own ``request.body()``, the report fast path — stops at the limit."""
    real = real_values(demo_engine)
    headers = token_for("admin") if who == "admin" else {}
    refused = set()
    for method, path in _write_routes(limited.app, real):
        limit, setting = _limit_for(method, path, who == "admin")
        body = _oversized(limit)
        chunks = [body[k : k + CHUNK] for k in range(0, len(body), CHUNK)]
        for ctype in ("application/json", "text/csv", "application/x-www-form-urlencoded"):
            status, head, answer, pulled = _asgi(limited, method, path, chunks, {**headers, "Content-Type": ctype})
            assert status < 500, (method, path, ctype, status, answer[:200])
            assert pulled <= limit + CHUNK, (method, path, ctype, pulled)  # never the whole 4 × limit
            if status == 413:
                assert head["content-type"].startswith(PROBLEM)
                assert orjson.loads(answer)["setting"] == setting
                refused.add((method, path))
    # the readers of each kind met the limit (others refused the caller before reading)
    expected = {("POST", "/v1/locate/batch"), ("POST", "/open311/v2/requests.json"), ("POST", "/v1/auth/token")}
    expected.add(("POST", "/v1/events"))  # anonymous: the fast path; signed in: FastAPI's parsing
    if who == "admin":
        expected |= {("POST", "/v1/registrations"), ("POST", "/v1/branches")}
    assert expected <= refused, sorted(expected - refused)


def _csv(rows: int) -> bytes:
    return ("id,lon,lat\n" + "".join(f"{k},113.68,34.78\n" for k in range(rows))).encode()


def test_anonymous_batches_are_capped_lower_than_signed_in_ones(limited):
    for body, ctype in (
        (_csv(ANON_ROWS + 1), "text/csv"),
        (orjson.dumps([{"id": k, "lon": 113.68, "lat": 34.78} for k in range(ANON_ROWS + 1)]), "application/json"),
    ):
        assert len(body) < BATCH_ANON
        r = limited.post("/v1/locate/batch", content=body, headers={"Content-Type": ctype})
        assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM), r.text
        problem = r.json()
        assert problem["field"] == "body" and problem["max_rows"] == ANON_ROWS
        assert (
            problem["setting"] == "GRIDBRANCH_LOCATE_BATCH_MAX_ROWS_ANONYMOUS" and str(ANON_ROWS) in problem["detail"]
        )
        r = limited.post("/v1/locate/batch", content=body, headers={"Content-Type": ctype, **token_for("admin")})
        assert r.status_code == 200, r.text
        assert len(r.json()["results"]) == ANON_ROWS + 1
    r = limited.post("/v1/locate/batch", content=_csv(ANON_ROWS), headers={"Content-Type": "text/csv"})
    assert r.status_code == 200 and len(r.json()["results"]) == ANON_ROWS


# -- the answer, part by part ------------------------------------------------------------

X, Y = 113.60, 34.70


@pytest.fixture
def layout_client(empty_db, empty_client):
    small_layout(empty_db, X, Y)
    return empty_client


def _mixed_csv(n: int) -> bytes:
    """Rows of every kind: inside, boundary, gap, outside, bad numbers, quoted ids holding
    commas, quotes and line ends, blank lines, CRLF line ends."""
    rng = np.random.default_rng(7)
    lines = ["id,lon,lat"]
    for k in range(n):
        kind = k % 9
        if kind == 0:
            lines.append(f'"q{k},""x""\ny",{X + 0.02},{Y + 0.02}')
        elif kind == 1:
            lines.append(f"{k},{X + 0.05},{Y + 0.01}")
        elif kind == 2:
            lines.append(f"{k},oops,{Y}")
        elif kind == 3:
            lines.append("")
        elif kind == 4:
            lines.append(f"{k},{X + 0.3},{Y + 0.02}\r")
        else:
            lines.append(f"{k},{X + rng.uniform(0, 0.1)!r},{Y + rng.uniform(0, 0.1)!r}")
    return ("\n".join(lines) + "\n").encode()


def _clean_csv(n: int) -> bytes:
    rng = np.random.default_rng(3)
    return (
        "id,lon,lat\n"
        + "".join(f"{k},{X + rng.uniform(-0.01, 0.11):.6f},{Y + rng.uniform(0, 0.1):.6f}\n" for k in range(n))
    ).encode()


@pytest.mark.parametrize("make", [_mixed_csv, _clean_csv])
@pytest.mark.parametrize("accept", ["application/json", "text/csv"])
def test_an_answer_made_in_parts_is_the_answer_made_at_once(layout_client, monkeypatch, make, accept):
    import geo_api.routers.locate as route

    body = make(200)
    headers = {"Content-Type": "text/csv", "Accept": accept}
    whole = layout_client.post("/v1/locate/batch", content=body, headers=headers)
    assert whole.status_code == 200
    for part_rows in (1, 7, 64):
        monkeypatch.setattr(route, "BATCH_PART_ROWS", part_rows)
        parts = layout_client.post("/v1/locate/batch", content=body, headers=headers)
        assert parts.status_code == 200 and parts.content == whole.content, part_rows
        rows = body.decode().replace("\r", "")
        json_body = orjson.dumps(
            [{"id": r["id"], "lon": r["lon"], "lat": r["lat"]} for r in csv.DictReader(io.StringIO(rows))]
        )
        a = layout_client.post(
            "/v1/locate/batch", content=json_body, headers={**headers, "Content-Type": "application/json"}
        )
        monkeypatch.setattr(route, "BATCH_PART_ROWS", 10**6)
        b = layout_client.post(
            "/v1/locate/batch", content=json_body, headers={**headers, "Content-Type": "application/json"}
        )
        assert a.status_code == 200 and a.content == b.content, part_rows
    if accept == "application/json":
        results = whole.json()["results"]
        assert len(results) == len(list(csv.DictReader(io.StringIO(body.decode().replace("\r", "")))))
        assert {r["match"] for r in results} >= {"inside", None} or make is _clean_csv


def test_the_batch_answer_is_made_in_memory_bounded_by_a_part(empty_db, monkeypatch):
    """Large clean batches, answered as the route answers them but with the pieces dropped
    as they are made (as the server sends them): five times the rows raise the peak of
    traced memory by little more than the larger body itself (the part's work stays the
    same), and the answer is several times that peak — made at once, the answer and its
    rows would all be held."""
    import geo_api.routers.locate as route
    from layers.locate import GridIndexCache, batch_document

    small_layout(empty_db, X, Y)
    index = GridIndexCache().get(empty_db)
    settings = make_settings().locate
    monkeypatch.setattr(route, "BATCH_PART_ROWS", 1000)
    route._answer_part(index, _clean_csv(10), settings, "json")  # the per-grid pieces, made once per index

    def answered(n: int) -> tuple[int, int, int]:
        body = _clean_csv(n)
        tracemalloc.start()
        try:
            batches = route._read_batch("text/csv", body, "wgs84", 10**6, "GRIDBRANCH_LOCATE_BATCH_MAX_ROWS")
            parts = (route._answer_part(index, b, settings, "json") for b in batches)
            size = sum(len(piece) for piece in batch_document(parts, "json"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return len(body), size, peak

    small_body, small_size, small_peak = answered(8_000)
    body, size, peak = answered(40_000)
    assert peak < small_peak + 2 * body, (small_peak, peak, body)
    assert size > 4 * peak, (size, peak)

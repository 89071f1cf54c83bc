"""Sweeps over every route of the API.

- Malformed input — garbage path parameters, each query parameter set to something
  unusable, broken or mistyped bodies, bad headers — anonymously and as the district
  admin: nothing may answer a 5xx, and every refusal is a problem+json naming what was
  wrong (non-negotiable: bad input gets a clear 4xx, never a 500).
- Personal data: anonymous callers and a member read every GET route, and no other
  member's name, phone or residence is in any answer.

Runs on the demo data with the test's writes rolled back; the anonymous events fast
path is off so that nothing could be stored outside that transaction."""

from __future__ import annotations

import itertools

import pytest
from fastapi.routing import APIRoute

from tests.conftest import token_for
from tests.factories.api import api_routes, real_values, route_url, send, walkable
from tests.zh import zh_fault

PATH_VALUES = ["x", "-1", "0", "99999999999999999999999", "1e309", "NaN", "%E4%B8%AD%00", "a" * 300]
QUERY_VALUES = [
    "",
    "NaN",
    "-inf",
    "1e400",
    "x" * 300,
    "-1",
    "a\x00b",
    "2026-13-45",
    "99999999999999999999",
    "2147483648",
    "-9223372036854775809",
    "0x1F",
    "1,2,3,4",
    "410105000000,410105001000",
]
BODIES = [
    (b"", "application/json"),
    (b"{", "application/json"),
    (b"null", "application/json"),
    (b"[]", "application/json"),
    (b"{}", "application/json"),
    (b'{"lon": "x", "lat": NaN, "id": [], "crs": 4, "points": {}}', "application/json"),
    (
        b'{"category": "a\\u0000", "description": "\\u0000", "reason": "\\u0000", "name": "\\u0000", '
        b'"lon": 113.68, "lat": 34.8, "role": "\\u0000", "department": "\\u0000", "status": "\\u0000"}',
        "application/json",
    ),
    (b'[{"id": 1, "lon": 1e999, "lat": -1e999}]', "application/json"),
    (b"[" * 5000 + b"]" * 5000, "application/json"),
    (b"\xff\xfe\x00garbage", "application/json"),
    (b"id,lon,lat\n1,abc,\n2,NaN,inf\n", "text/csv"),
    (b"\xff\xfe\x00\n,,,,\n", "text/csv"),
    (b"--x\r\nbroken", "multipart/form-data"),
    (
        b'{"lon": 113.68, "lat": 34.79, "role": "fuwu", "member_id": 99999999999999999999, "action": "accept", '
        b'"version": 9223372036854775808, "category": "x", "description": "y", "working": true}',
        "application/json",
    ),
    (
        b'{"lon": 113.68, "lat": 34.79, "role": "fuwu", "member_id": 2147483648, "action": "accept", '
        b'"version": 2147483648, "accuracy_m": 1e308, "move": "yes"}',
        "application/json",
    ),
    (b'{"lon": 1e308, "lat": -1e308, "crs": "EPSG:99999999999", "role": "fuwu"}', "application/json"),
    (
        b'{"lon": 113.68, "lat": 34.79, "crs": "' + b"EPSG:" + b"9" * 400 + b'", "role": "' + b"r" * 5000 + b'"}',
        "application/json",
    ),
    (b"username=&password=", "application/x-www-form-urlencoded"),
    (b"username=a%00&password=b%00", "application/x-www-form-urlencoded"),
    (
        b'{"reason": "\\u0000", "working": true, "note": "\\u0000", "action": "accept", "version": 1, '
        b'"photos": ["\\u0000"], "department": null}',
        "application/json",
    ),
]


def _routes(app):
    for route in api_routes(app.routes):
        for method in sorted(route.methods - {"HEAD"}):
            if walkable(route, method):
                yield route, method


def _requests(route: APIRoute, method: str, real: dict[str, str]):
    """(url, query, body, content type) of every malformed request tried on ``route``:
    garbage path parameters, then garbage queries and bodies on a path of real values."""
    queries = [p.alias for p in route.dependant.query_params]
    plain = route_url(route, None, real)
    for value in PATH_VALUES if route.dependant.path_params else []:
        yield route_url(route, value, real), {}, None, None
    for q, value in itertools.product(queries, QUERY_VALUES):
        yield plain, {q: value}, None, None
    if method in ("POST", "PUT", "PATCH"):
        for body, kind in BODIES:
            yield plain, {}, body, kind


def test_no_route_answers_malformed_input_with_a_server_error(sweep_client, demo_engine):
    app = sweep_client.app
    real = real_values(demo_engine)
    callers = {"anonymous": {}, "admin": token_for("admin")}
    failures, refused, tried = [], 0, 0
    untranslated: set[str] = set()  # refusals a zh-CN user would read without their own Chinese
    for route, method in _routes(app):
        for (url, query, body, kind), (who, headers) in itertools.product(
            list(_requests(route, method, real)), callers.items()
        ):
            h = dict(headers)
            if kind:
                h["Content-Type"] = kind
            r = send(sweep_client, method, url, params=query, content=body, headers=h)
            tried += 1
            what = f"{who} {method} {url} {query} {body[:40] if body else ''!r} {kind or ''}"
            if r.status_code >= 500:
                failures.append(f"{r.status_code} {what}: {r.text[:200]}")
            elif r.status_code >= 400:
                refused += 1
                body = r.json()
                if isinstance(body, list) and url.startswith("/open311/"):  # GeoReport v2's own error format
                    ok = bool(body and body[0].get("description"))
                else:
                    ok = r.headers.get("content-type", "").startswith("application/problem+json") and body.get("detail")
                if not ok:
                    failures.append(f"{r.status_code} without problem details: {what}: {r.text[:200]}")
                elif not isinstance(body, list) and (fault := zh_fault(body)):
                    untranslated.add(fault)
    assert tried > 1000 and refused > tried // 2, (tried, refused)
    assert not failures, f"{len(failures)} of {tried} malformed requests:\n" + "\n".join(failures[:40])
    assert not untranslated, f"{len(untranslated)} refusals without Chinese:\n" + "\n".join(sorted(untranslated)[:60])


@pytest.mark.parametrize(
    "url, field",
    [
        ("/v1/events?category=a%00b", "category"),
        ("/v1/locate?lon=113.68&lat=34.79&crs=wgs84%00", "crs"),
        ("/v1/branches/4101%00/unregistered", "path"),
        ("/open311/v2/services/a%00.json", "path"),
    ],
)
def test_a_nul_character_in_the_path_or_query_is_named(sweep_client, url, field):
    r = send(sweep_client, "GET", url, headers=token_for("admin"))
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == field and "NUL" in r.json()["detail"]


@pytest.mark.parametrize(
    "method, url, body, field",
    [
        ("PUT", "/v1/events/routes/{category}/{street}", {"department": "区\u0000"}, "department"),
        (
            "POST",
            "/v1/events",
            {
                "lon": 113.68,
                "lat": 34.79,
                "category": "{category}",
                "description": "积水",
                "photos": ["https://example.org/\u0000.jpg"],
            },
            "photos",
        ),
        ("POST", "/v1/registrations/{registration_id}/reject", {"reason": "搬\u0000家"}, "reason"),
        ("PUT", "/v1/events/calendar/2026-12-01", {"working": False, "note": "\u0000"}, "note"),
    ],
)
def test_a_nul_character_in_a_body_is_named(sweep_client, demo_engine, method, url, body, field):
    real = real_values(demo_engine)
    url = url.format(**real)
    body = {k: v.format(**real) if isinstance(v, str) else v for k, v in body.items()}
    r = send(sweep_client, method, url, json=body, headers=token_for("admin"))
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["field"].startswith(field) and "NUL" in problem["detail"], problem


def test_a_nul_character_in_a_username_is_named(sweep_client):
    r = send(sweep_client, "POST", "/v1/auth/token", data={"username": "admin\u0000", "password": "x"})
    assert r.status_code == 422 and r.json()["field"] == "username"


HEADERS = [
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer a.b.c"},
    {"Authorization": "Bearer " + "A" * 8000},
    {"Authorization": "Basic Zm9vOmJhcg=="},
    {"Authorization": "bearer    "},
    {"If-None-Match": '"unterminated, W/, *, "x"'},
    {"Accept-Encoding": "gzip;q=NaN, br;q=-1, *;q=x"},
    {"Accept": "text/csv;q=abc, */*"},
    {"X-Forwarded-Host": "evil host:abc", "X-Forwarded-Proto": "javascript", "X-Forwarded-Prefix": "../../x y"},
    {"Content-Length": "0", "Content-Type": "application/json; charset=latin-1"},
]


def test_no_route_answers_malformed_headers_with_a_server_error(sweep_client, demo_engine):
    real = real_values(demo_engine)
    failures, tried = [], 0
    for route, method in _routes(sweep_client.app):
        if method != "GET":
            continue
        url = route_url(route, None, real)
        for headers in HEADERS:
            r = send(sweep_client, method, url, headers=headers)
            tried += 1
            if r.status_code >= 500:
                failures.append(f"{r.status_code} GET {url} {headers}: {r.text[:200]}")
    assert tried > 200
    assert not failures, "\n".join(failures[:40])


def _strings(value):
    """Every string and number in a decoded JSON document, as text."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif value is not None:
        yield str(value)


def _pairs(value):
    """Every coordinate pair in a decoded JSON document: [x, y] lists and objects with
    lon/lat (or long/lat, x/y) members, rounded to 1e-6 degrees."""
    if isinstance(value, dict):
        for x, y in (("lon", "lat"), ("long", "lat"), ("x", "y")):
            if isinstance(value.get(x), (int, float)) and isinstance(value.get(y), (int, float)):
                yield round(value[x], 6), round(value[y], 6)
        for v in value.values():
            yield from _pairs(v)
    elif isinstance(value, list):
        if len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
            yield round(value[0], 6), round(value[1], 6)
        else:
            for v in value:
                yield from _pairs(v)


def _csv_pairs(text: str):
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        for a, b in zip(cells, cells[1:]):
            try:
                yield round(float(a), 6), round(float(b), 6)
            except ValueError:
                continue


@pytest.mark.parametrize("user", [None, "member"])
def test_no_get_route_shows_members_personal_data_to_the_public_or_another_member(sweep_client, demo_engine, user):
    """Anonymous callers and a member read every GET route (real path values, default
    queries, JSON and CSV): no other member's name or phone, nor a residence's
    coordinates, is in any answer. (Grid workers' names and phones are the grid's public
    contact — the locate answer's ``grid_worker`` — and are not counted where a member
    happens to share them.)"""
    from sqlalchemy import text

    with demo_engine.connect() as conn:
        own = (
            conn.execute(text("SELECT member_id FROM users WHERE username = :u"), {"u": user}).scalar()
            if user
            else None
        )
        rows = conn.execute(text("SELECT id, name, phone FROM members")).all()
        homes = conn.execute(text("SELECT member_id, ST_X(geom), ST_Y(geom) FROM residences")).all()
        public = set(conn.execute(text("SELECT worker_name FROM grids UNION SELECT worker_phone FROM grids")).scalars())
    mine = {v for mid, name, phone in rows if mid == own for v in (name, phone)}  # namesakes are not counted
    secrets = {v for mid, name, phone in rows if mid != own for v in (name, phone) if v} - public - mine
    places = {(round(x, 6), round(y, 6)) for mid, x, y in homes if mid != own}
    assert len(secrets) > 10_000 and len(places) > 10_000
    real = real_values(demo_engine)
    headers = token_for(user) if user else {}
    read = 0
    for route, method in _routes(sweep_client.app):
        if method != "GET" or route.path.endswith(".mvt"):  # tiles: tests/tiles decodes them
            continue
        for accept in ("application/json", "text/csv"):
            r = send(sweep_client, "GET", route_url(route, None, real), headers={**headers, "Accept": accept})
            if r.status_code != 200:
                continue
            read += 1
            if "json" in r.headers.get("content-type", ""):
                body = r.json()
                values, pairs = set(_strings(body)), set(_pairs(body))
            else:
                values = {cell.strip() for line in r.text.splitlines() for cell in line.split(",")}
                pairs = set(_csv_pairs(r.text))
            leaked, located = values & secrets, pairs & places
            assert not leaked and not located, (route.path, accept, sorted(leaked)[:5], sorted(located)[:5])
    assert read > 20

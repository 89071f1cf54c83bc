"""Bad input never reaches a 500, whatever the endpoint: a hostile corpus (lone
surrogates, NUL, overlong strings, wrong types, huge numbers, NaN/Infinity literals) in
every field of every JSON-body endpoint, and extreme or malformed values in every date
parameter. Endpoints are found by walking the app's routes and its OpenAPI document, so
a new endpoint is covered without touching this file. One bad report among concurrent
anonymous reports (grouped by the batch writer) fails alone."""

from __future__ import annotations

import json
import re
import threading
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.conftest import make_settings, token_for
from tests.factories.api import api_routes, real_values, route_url, send, walkable
from tests.zh import zh_fault

ROLES = (None, "admin", "dispatcher", "member")
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
PROBLEM = "application/problem+json"

#: Raw JSON texts (each a complete JSON value), sent as written: a client library would
#: refuse to encode some of them.
HOSTILE: dict[str, str] = {
    "lone_high_surrogate": '"\\ud800"',
    "lone_low_surrogate": '"abc\\udfffdef"',
    "nul": '"a\\u0000b"',
    "overlong": json.dumps("长" * 20_000),
    "object": '{"a": 1}',
    "list": '[1, "x"]',
    "huge_int": "1" + "0" * 400,
    "huge_float": "1e400",
    "nan": "NaN",
    "infinity": "Infinity",
    "minus_infinity": "-Infinity",
    "true": "true",
}
#: Values that no text field may take: refused with a 422 naming the field.
TEXT_POISON = ("lone_high_surrogate", "lone_low_surrogate", "nul")


def _resolve(spec: dict, schema: dict) -> dict:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = spec["components"]["schemas"][name]
    return schema


def _plain(spec: dict, schema: dict) -> dict:
    """The schema of a value, nullable unions reduced to their non-null branch."""
    schema = _resolve(spec, schema)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [_resolve(spec, s) for s in schema[key] if s.get("type") != "null"]
            if branches:
                return {**branches[0], **{k: v for k, v in schema.items() if k not in (key,)}}
    return schema


def _sample(spec: dict, schema: dict) -> Any:
    """A plausible value of ``schema``: the baseline every hostile value replaces one field of."""
    schema = _plain(spec, schema)
    if "default" in schema and schema["default"] is not None:
        return schema["default"]
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "string":
        return "2026-05-01" if schema.get("format") == "date" else "测试"[: schema.get("maxLength", 2)]
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return 113.66
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {name: _sample(spec, s) for name, s in schema.get("properties", {}).items()}
    return None


#: Values for fields by name, so that a baseline body passes the checks beyond its
#: schema (a point inside the demo district, a real category and role) and the one
#: hostile field is what the endpoint meets.
REALISTIC = {
    "lon": 113.6800,
    "long": 113.6800,
    "lat": 34.7800,
    "crs": "wgs84",
    "role": "法治建设宣传员",
    "description": "楼道堆放杂物",
    "channel": "public",
}


def _realistic(baseline: Any, real: dict[str, str]) -> Any:
    if isinstance(baseline, dict):
        return {
            k: REALISTIC.get(k, real.get(k, v)) if not isinstance(v, (dict, list)) else v for k, v in baseline.items()
        }
    return baseline


def _body_schema(spec: dict, route, method: str) -> dict | None:
    op = spec["paths"].get(route.path_format, {}).get(method.lower()) or {}
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    return _plain(spec, schema) if schema else None


def _operations(app, real: dict[str, str]):
    """(method, path with real values, baseline body, field names) of every route that
    takes a body. Routes reading their body themselves (no schema: the locate batch,
    Open311) get the field names the documented bodies use, and whole-body values."""
    spec = app.openapi()
    known_fields: set[str] = set()
    out = []
    for route in api_routes(app.routes):
        for method in sorted(route.methods & set(WRITE_METHODS)):
            if not walkable(route, method):
                continue
            schema = _body_schema(spec, route, method)
            if schema is None:
                out.append((method, route_url(route, None, real), None, None))
                continue
            fields = list(schema.get("properties", {}))
            known_fields.update(fields)
            out.append((method, route_url(route, None, real), _realistic(_sample(spec, schema), real), fields))
    generic = sorted(known_fields | {"id", "lon", "lat", "long", "crs", "service_code", "points"})
    return [(m, p, b if b is not None else {}, f if f is not None else generic) for m, p, b, f in out]


def _with(baseline: dict, field: str, raw: str) -> bytes:
    """``baseline`` with ``field`` set to the raw JSON text ``raw``."""
    marker = "\x01hostile\x01"
    text_ = json.dumps({**baseline, field: marker}, ensure_ascii=True)
    return text_.replace(json.dumps(marker), raw).encode("ascii")


def _check(r, what: str) -> None:
    """Never a 5xx; a refusal is a problem detail (Open311's routes answer GeoReport v2's
    own error list, as that standard requires)."""
    assert r.status_code < 500, f"{what}: {r.status_code} {r.text[:300]}"
    if r.status_code >= 400:
        if r.url.path.startswith("/open311/"):
            body = r.json()
            assert isinstance(body, list) and body[0]["description"], what
            return
        assert r.headers["content-type"].startswith(PROBLEM), f"{what}: {r.headers['content-type']} {r.text[:200]}"
        problem = r.json()
        assert problem["status"] == r.status_code and problem["detail"], what
        fault = zh_fault(problem)
        assert fault is None, f"{what}: {fault}"


@pytest.fixture(scope="module")
def tokens():
    return {role: token_for(role) if role else {} for role in ROLES}


@pytest.fixture(scope="module")
def real(demo_engine):
    return real_values(demo_engine)


def test_the_walk_finds_the_json_body_endpoints(sweep_client, real):
    found = {(m, p.split("/")[2]) for m, p, _, _ in _operations(sweep_client.app, real) if p.startswith("/v1/")}
    for expected in (
        ("POST", "events"),
        ("POST", "registrations"),
        ("POST", "locate"),
        ("PUT", "grids"),
        ("POST", "branches"),
        ("PATCH", "branches"),
    ):
        assert expected in found, (expected, sorted(found))


def _named(problem: dict) -> set[str]:
    """The fields a problem detail names: its ``field`` and those of its ``errors``."""
    names = {problem.get("field")} | {e.get("field") for e in problem.get("errors", [])}
    return {n.split(".")[0] for n in names if n}


def _callers(client, method: str, path: str, baseline: dict, tokens) -> list[str | None]:
    """Anonymous callers, and the first role that gets past the endpoint's access check
    with the baseline body: the corpus is sent as each."""
    for role in ROLES[1:]:
        r = send(client, method, path, json=baseline, headers=tokens[role])
        if r.status_code not in (401, 403):
            return [None, role]
    return [None]


def test_no_hostile_value_in_any_field_of_any_endpoint_answers_500(sweep_client, tokens, real):
    operations = _operations(sweep_client.app, real)
    refused: dict[tuple[str, str, str], set] = {}  # (method, path, field) → fields named for the text poisons
    for method, path, baseline, fields in operations:
        for role in _callers(sweep_client, method, path, baseline, tokens):
            headers = {**tokens[role], "Content-Type": "application/json"}
            for name, raw in HOSTILE.items():
                r = send(sweep_client, method, path, content=raw.encode(), headers=headers)
                _check(r, f"{role} {method} {path} whole body {name}")
                for field in fields:
                    r = send(sweep_client, method, path, content=_with(baseline, field, raw), headers=headers)
                    _check(r, f"{role} {method} {path} {field}={name}")
                    if name in TEXT_POISON and r.status_code == 422 and not path.startswith("/open311/"):
                        refused.setdefault((method, path, field), set()).update(_named(r.json()))
    # A lone surrogate or NUL in a documented text field, once past the caller checks, is
    # a 422 naming that field: the corpus really reached the validation.
    named = 0
    for method, path, baseline, fields in operations:
        for field in fields:
            if isinstance(baseline.get(field), str) and (method, path, field) in refused:
                assert field in refused[(method, path, field)], (method, path, field, refused[(method, path, field)])
                named += 1
    assert named >= 10, refused


def test_a_lone_surrogate_in_a_report_is_a_422_naming_the_field(sweep_client, tokens, real):
    for role in (None, "admin"):
        for field in ("description", "category", "contact", "crs"):
            body = {"lon": 113.6800, "lat": 34.7800, "category": real["category"], "description": "堵塞"}
            r = send(
                sweep_client,
                "POST",
                "/v1/events",
                content=_with(body, field, '"a\\ud800"'),
                headers={**tokens[role], "Content-Type": "application/json"},
            )
            assert r.status_code == 422, (role, field, r.text)
            assert r.headers["content-type"].startswith(PROBLEM)
            assert r.json()["field"] == field, r.json()


def test_a_lone_surrogate_in_a_query_or_path_is_never_a_500(sweep_client, tokens):
    for url in (
        "/v1/places?q=%ED%A0%80",
        "/v1/locate?lon=113.6&lat=34.7&crs=%ED%A0%80",
        "/v1/areas/%ED%A0%80",
        "/v1/grids?within=%ED%A0%80",
        "/v1/events?category=%ED%A0%80",
        "/v1/places?q=%F0%9F",
        "/v1/places?q=%5Cud800",
    ):
        r = send(sweep_client, "GET", url, headers=tokens["admin"])
        _check(r, url)


# -- dates ------------------------------------------------------------------------------

EXTREME_DATES = (
    "0001-01-01",
    "0001-01-05",
    "9999-12-31",
    "9999-12-30",
    "2026-02-30",
    "2026-13-01",
    "20260101x",
    "-2026-01-01",
    "+12026-01-01",
    "2026-01-01T25:00:00",
    "99999-01-01",
    "1e400",
    "",
)


def _date_parameters(app):
    """(method, route, parameter) of every date or date-time parameter (query or path),
    found by its schema's format or by its name."""
    spec = app.openapi()
    for route in api_routes(app.routes):
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            op = spec["paths"].get(route.path_format, {}).get(method.lower()) or {}
            for p in op.get("parameters", []):
                schema = _plain(spec, p["schema"])
                if (
                    schema.get("format") in ("date", "date-time")
                    or re.search(r"date|day|since|until", p["name"])
                    or p["name"] in ("from", "to")
                ):
                    yield method, route, p


def test_the_date_walk_finds_the_date_parameters(sweep_client):
    found = {(m, r.path, p["name"]) for m, r, p in _date_parameters(sweep_client.app)}
    for expected in (
        ("GET", "/v1/events", "to"),
        ("GET", "/v1/events/evaluation", "from"),
        ("GET", "/open311/v2/requests.json", "start_date"),
        ("PUT", "/v1/events/calendar/{day}", "day"),
    ):
        assert expected in found, sorted(found)


def test_extreme_and_malformed_dates_in_every_date_parameter_are_never_a_500(sweep_client, tokens, real):
    app = sweep_client.app
    spec = app.openapi()
    refused = {}
    for method, route, param in _date_parameters(app):
        schema = _body_schema(spec, route, method)
        body = _sample(spec, schema) if schema else None
        for value in EXTREME_DATES:
            if param["in"] == "path":
                if not value:
                    continue
                path, query = route_url(route, None, {**real, param["name"]: value}), {}
            else:
                path, query = route_url(route, None, real), {param["name"]: value}
            for role in ("dispatcher", "admin", None):
                r = send(sweep_client, method, path, params=query, json=body, headers=tokens[role])
                _check(r, f"{role} {method} {path} {param['name']}={value!r}")
                if r.status_code == 422:
                    refused[(method, route.path, param["name"], value)] = r.json().get("field")
    for (method, path, name, value), field in refused.items():
        if not path.startswith("/open311/"):
            assert field and field.startswith(name), (method, path, name, value, field)
    for path, name in (
        ("/v1/events", "to"),
        ("/v1/events", "from"),
        ("/v1/events/evaluation", "to"),
        ("/v1/events/evaluation", "from"),
    ):
        for value in ("0001-01-01", "0001-01-05", "9999-12-31"):
            assert ("GET", path, name, value) in refused, (path, name, value)


@pytest.mark.parametrize(
    "query",
    [
        "to=9999-12-31",
        "to=0001-01-05",
        "from=0001-01-01",
        "from=9999-12-31",
        "from=0001-01-01&to=9999-12-31",
        "from=9999-12-31&to=9999-12-31",
    ],
)
def test_out_of_range_days_are_422_naming_the_field(sweep_client, tokens, query):
    for path in ("/v1/events", "/v1/events/evaluation"):
        r = send(sweep_client, "GET", f"{path}?{query}", headers=tokens["dispatcher"])
        assert r.status_code == 422, (path, query, r.text)
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.json()["field"] in ("from", "to") and r.json()["field"] in query, r.json()


def test_days_at_the_edges_of_the_range_are_answered(sweep_client, tokens):
    from geo_api.params import FIRST_DAY, LAST_DAY

    for path in ("/v1/events", "/v1/events/evaluation"):
        r = send(
            sweep_client,
            "GET",
            path,
            params={"from": FIRST_DAY.isoformat(), "to": LAST_DAY.isoformat()},
            headers=tokens["dispatcher"],
        )
        assert r.status_code == 200, r.text
    r = send(
        sweep_client, "GET", "/v1/events/evaluation", params={"to": FIRST_DAY.isoformat()}, headers=tokens["dispatcher"]
    )
    assert r.status_code == 200 and r.json()["from"] == FIRST_DAY.isoformat(), r.text


# -- one bad report among concurrent ones -------------------------------------------------


@pytest.fixture(scope="module")
def committed_demo(server_url):
    """A committed copy of the demo (the batch writer commits on sessions of its own)."""
    from layers import cluster as pg
    from layers import db
    from tests.conftest import _demo_template, _fresh_database, _worker

    name = f"gridbranch_hostile_{_worker()}"
    engine = db.make_engine(_fresh_database(server_url, name, template=_demo_template(server_url)), 10)
    try:
        yield engine
    finally:
        engine.dispose()
        pg.drop_database(server_url, name)


def test_one_bad_report_among_concurrent_reports_fails_alone(committed_demo):
    from fastapi.testclient import TestClient

    from geo_api.app import create_app

    settings = make_settings()
    settings.events.report_batch_max = 64
    app = create_app(settings, engine=committed_demo)
    with committed_demo.connect() as c:
        before = c.execute(text("SELECT count(*) FROM events")).scalar()
    n, bad_at = 40, 17
    answers: list[Any] = [None] * n
    start = threading.Barrier(n)
    with TestClient(app) as client:

        def report(k: int) -> None:
            body = {"lon": 113.6800 + k * 1e-5, "lat": 34.7800, "category": "xfyh", "description": f"并发上报 {k}"}
            raw = _with(body, "description", '"\\ud800"') if k == bad_at else json.dumps(body).encode()
            start.wait()
            answers[k] = client.post("/v1/events", content=raw, headers={"Content-Type": "application/json"})

        threads = [threading.Thread(target=report, args=(k,)) for k in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for k, r in enumerate(answers):
        if k == bad_at:
            assert r.status_code == 422 and r.json()["field"] == "description", r.text
        else:
            assert r.status_code == 201, (k, r.text)
    with Session(committed_demo) as s:
        stored = s.execute(text("SELECT description FROM events WHERE description LIKE '并发上报 %'")).scalars().all()
        assert s.execute(text("SELECT count(*) FROM events")).scalar() == before + n - 1
    assert sorted(stored) == sorted(f"并发上报 {k}" for k in range(n) if k != bad_at)


def test_the_batch_writer_refuses_a_bad_report_alone_and_stores_the_rest(committed_demo):
    """Straight to the group writer, past every route check: text no column can hold
    (lone surrogate, NUL) is refused naming its field before the group's statement, and
    a value that fails the group's encoding (checked by nothing earlier) fails its own
    report only — the group is stored again report by report."""
    from layers.events_batch import Pending, Stored, store_reports
    from layers.locate import GridIndexCache

    def good(k):
        return Pending(113.6800 + k * 1e-5, 34.7800, "wgs84", "xfyh", "public", f"分组写入 {k}")

    reports = [
        good(0),
        Pending(113.68, 34.78, "wgs84", "xfyh", "public", "坏\ud800"),
        good(1),
        Pending(113.68, 34.78, "wgs84", "xfyh", "public", "好", contact="a\x00b"),
        good(2),
        Pending(113.68, 34.78, "wgs84", "xfyh", "public", "好", photos=(b"not text",)),
        good(3),
    ]
    with Session(committed_demo, expire_on_commit=False) as s:
        out = store_reports(
            s, GridIndexCache(), reports, tolerance_m=30, edge_m=0.05, duplicate_radius_m=100, duplicate_window_hours=72
        )
    assert [type(o).__name__ for o in out] == [
        "Stored",
        "InvalidInput",
        "Stored",
        "InvalidInput",
        "Stored",
        "TypeError",
        "Stored",
    ], out
    assert out[1].field == "description" and out[3].field == "contact"
    with Session(committed_demo) as s:
        stored = s.execute(text("SELECT id, description FROM events WHERE description LIKE '分组写入 %'")).all()
    assert sorted(d for _, d in stored) == [f"分组写入 {k}" for k in range(4)]
    assert sorted(i for i, _ in stored) == sorted(o.stored["id"] for o in out if isinstance(o, Stored))

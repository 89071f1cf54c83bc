"""Schemathesis against the service's own /openapi.json, anonymously and as the demo
``admin``: generated valid and invalid input (every parameter's boundaries and wrong
types — the coverage phase — then a few random examples), and every answer checked for
server errors and against what the document declares: statuses, content types, headers
and bodies. Anonymously only the public operations run (the others answer 401 to any
input; tests/geo_api/test_headers.py walks them); as ``admin``, every operation.
Bounded and reproducible: a fixed seed, derandomized, no example database, no
unexpected-method probes (test_headers checks every 405 and its Allow)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import token_for

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_headers_conformance,
    schemathesis.checks.response_schema_conformance,
]

CONFIG = schemathesis.Config.from_dict(
    {
        "seed": 18,
        "generation": {"mode": "all", "max-examples": 3, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}, "coverage": {"unexpected-methods": []}},
    }
)

BOUNDED = settings(
    max_examples=3, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def _openapi() -> dict:
    """The document /openapi.json serves (the app factory connects nothing). Loaded at
    import, so that each operation is a test of its own; schemathesis' fixture loader
    (``schemathesis.pytest.from_fixture``) does not run under pytest 9."""
    from geo_api.app import create_app
    from tests.conftest import make_settings

    return create_app(make_settings()).openapi()


def _personal() -> set[tuple[str, str]]:
    """(method, path) of the operations declared for signed-in roles."""
    from geo_api.app import create_app
    from geo_api.headers import declared_personal
    from tests.conftest import make_settings
    from tests.factories.api import api_routes

    return {
        (method, route.path)
        for route in api_routes(create_app(make_settings()).routes)
        if declared_personal(route)
        for method in route.methods
    }


schema = schemathesis.openapi.from_dict(_openapi(), config=CONFIG)
PERSONAL = _personal()
public_schema = schema.exclude(lambda ctx: (ctx.operation.method.upper(), ctx.operation.path) in PERSONAL)


def _sendable(value: str) -> bool:
    try:
        value.encode("ascii")
    except UnicodeEncodeError:
        return False
    return True


def call(client, case, headers: dict[str, str]):
    """Send ``case`` through the test client (the app with the test's rolled-back
    session) and check the answer."""
    sent = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
    if any(not _sendable(str(v)) for v in (sent.get("headers") or {}).values()):
        # a negative case with a header value no HTTP client can put on the wire (field
        # values are ASCII: RFC 9110 5.5): nothing the service could ever receive
        return
    request = {k: sent[k] for k in ("method", "url", "headers", "params", "cookies") if sent.get(k)}
    if "json" in sent:
        request["json"] = sent["json"]
    if "data" in sent:
        body = sent["data"]
        request["content" if isinstance(body, (bytes, str)) else "data"] = body
    if "files" in sent:
        request["files"] = sent["files"]
    response = client.request(**request)
    case.validate_response(response, checks=CHECKS, headers=headers)


@public_schema.parametrize()
@BOUNDED
def test_anonymous(client, case):
    call(client, case, {})


@schema.parametrize()
@BOUNDED
def test_as_admin(client, case):
    call(client, case, token_for("admin"))


# --- the document itself ------------------------------------------------------

DOC = _openapi()
OPERATIONS = [(method.upper(), path, op) for path, item in DOC["paths"].items() for method, op in item.items()]


def _problem(declared: dict) -> bool:
    return list(declared.get("content", {})) == ["application/problem+json"]


@pytest.mark.parametrize("method, path, op", OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_every_operation_declares_its_problems(method, path, op):
    """401 (a bad token, on any route), 422 and 503 everywhere; 403 wherever a role or
    an area is checked; 404 wherever a path names something — all problem details,
    except Open311's 4xx, which keep that specification's shape."""
    responses = op["responses"]
    open311 = path.startswith("/open311/")
    wanted = {"401", "413", "422", "503"} | ({"403"} if (method, path) in PERSONAL else set())
    if "{" in path:
        wanted.add("404")
    assert wanted <= set(responses), (method, path, sorted(responses))
    for status, declared in responses.items():
        if status.startswith(("4", "5")) and not (open311 and status in ("400", "404", "409")):
            assert _problem(declared), (method, path, status, declared.get("content"))
    assert "HTTPValidationError" not in str(op), "FastAPI's own 422 shape is not what the service answers"


@pytest.mark.parametrize(
    "method, path, types",
    [
        ("GET", "/v1/coverage/summary", {"application/json", "application/geo+json", "text/csv"}),
        ("GET", "/v1/coverage/issues", {"application/geo+json", "text/csv"}),
        ("GET", "/v1/coverage/h3", {"application/geo+json"}),
        ("GET", "/v1/events/evaluation", {"application/json", "text/csv"}),
        ("POST", "/v1/locate/batch", {"application/json", "text/csv"}),
        ("GET", "/tiles/{layers}/{z}/{x}/{y}.mvt", {"application/vnd.mapbox-vector-tile"}),
    ],
)
def test_success_media_types_are_the_ones_answered(method, path, types):
    op = DOC["paths"][path][method.lower()]
    success = next(s for s in op["responses"] if s.startswith("2"))
    assert set(op["responses"][success]["content"]) == types


# --- what the run found, pinned -------------------------------------------------

GOOD_ROW = {"id": "ok", "lon": 113.68, "lat": 34.79}


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"id": "b", "lon": 113.68, "lat": 34.79, "crs": ["wgs84"]}, "crs"),  # unhashable: a TypeError, a 500
        ({"id": "b", "lon": 113.68, "lat": 34.79, "crs": {"name": "wgs84"}}, "crs"),
        ({"id": "b", "lon": [113.68], "lat": 34.79}, "lon"),  # a 2-D column: an IndexError, a 500
        ({"id": "b", "lon": 113.68, "lat": [[34.79]]}, "lat"),
    ],
)
def test_batch_rows_holding_lists_or_objects_fail_in_place(client, bad, field):
    """A row whose coordinate or CRS is a list or an object is rejected in place, naming
    the field; the rows around it are still located."""
    r = client.post("/v1/locate/batch", json=[GOOD_ROW, bad, GOOD_ROW])
    assert r.status_code == 200, r.text
    first, refused, last = r.json()["results"]
    assert refused["error"]["field"] == field
    assert first["grid"]["code"] == last["grid"]["code"] and "error" not in first


def test_a_batch_whose_every_coordinate_is_a_list_fails_row_by_row(client):
    """Every lon a one-element list made numpy read the column as 2-D (an IndexError)."""
    rows = [{"id": i, "lon": [113.68], "lat": [34.79]} for i in range(3)]
    r = client.post("/v1/locate/batch", json=rows)
    assert r.status_code == 200, r.text
    assert [row["error"]["field"] for row in r.json()["results"]] == ["lon", "lon", "lon"]

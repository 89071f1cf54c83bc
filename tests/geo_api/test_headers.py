"""Headers every route shares, checked by walking every route of the app: answers that may
hold personal data are never stored by a cache (``Cache-Control: no-store``), and
``Allow`` — on a 405 and as the answer to OPTIONS — names every method of the path."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from geo_api.headers import declared_personal
from tests.conftest import token_for
from tests.factories.api import api_routes

STAFF = ("admin", "dispatcher", "gridworker", "member")


def routes():
    from geo_api.app import create_app
    from tests.conftest import make_settings

    return list(api_routes(create_app(make_settings()).routes))


ROUTES = routes()


@pytest.fixture
def values(demo_db) -> dict[str, str]:
    """A real value for each path parameter of the API, from the demo data, so that the
    walk reaches the answers themselves (with the people in them), not only 404s."""
    one = lambda sql: str(demo_db.execute(text(sql)).scalar_one())  # noqa: E731
    category = one("SELECT code FROM event_categories ORDER BY code LIMIT 1")
    event = one("SELECT min(id) FROM events")
    return {
        "registration_id": one("SELECT min(id) FROM registrations"),
        "event_id": event,
        "service_request_id": event,
        "service_code": category,
        "category": category,
        "street": one("SELECT code FROM admin_areas WHERE level = 'street' ORDER BY code LIMIT 1"),
        "day": "2024-10-01",
        "layers": "grids",
        "z": "14",
        "x": "13366",
        "y": "6495",
        "username": "gridworker",
        "import_id": "0" * 32,  # an import is its uploader's alone: here nobody's (404)
        "number": event,  # /report/{number}: a report's public page
        "name": "0" * 32 + ".jpg",  # /v1/photos/{name}: no such photo (404)
        # /ogc: a branch, whose secretary its community's admins see
        "collectionId": "branches",
        "featureId": one("SELECT code FROM branches WHERE active ORDER BY code LIMIT 1"),
        # {code} names a grid, an area or a branch, by the path it is in
        "/v1/grids/": one("SELECT code FROM grids ORDER BY code LIMIT 1"),
        "/v1/areas/": one("SELECT code FROM admin_areas WHERE level = 'community' ORDER BY code LIMIT 1"),
        "/v1/branches/": one("SELECT code FROM branches WHERE active ORDER BY code LIMIT 1"),
    }


def url_of(path: str, values: dict[str, str]) -> str:
    code = next((v for k, v in values.items() if k.startswith("/") and path.startswith(k)), None)
    return re.sub(r"\{(\w+)\}", lambda m: code if m.group(1) == "code" else values[m.group(1)], path)


def test_the_walk_covers_personal_and_public_routes():
    personal = [r.path for r in ROUTES if declared_personal(r)]
    public = [r.path for r in ROUTES if not declared_personal(r)]
    assert "/v1/registrations" in personal and "/v1/events/{event_id}/routing" in personal
    assert "/v1/upkeep" in personal and "/v1/branches/{code}" in personal
    assert "/v1/grids" in public and "/healthz" in public and "/tiles/{layers}/{z}/{x}/{y}.mvt" in public


@pytest.mark.parametrize("user", STAFF)
def test_every_signed_in_answer_is_kept_out_of_caches(client, values, user):
    """Whatever the route, its status or the role: an answer to a request carrying
    ``Authorization`` is ``no-store``, or keeps a policy of its own that no shared cache
    stores (``private``) or that a public route chose for any caller (public tiles)."""
    headers = token_for(user)
    answered = set()
    for route in ROUTES:
        url = url_of(route.path, values)
        for method in route.methods:
            r = client.request(method, url, headers=headers)
            answered.add(r.status_code)
            policy = r.headers.get("cache-control", "")
            if route.path.startswith("/tiles/") and r.status_code in (200, 204, 304):
                assert policy in ("public, no-cache", "private, no-store"), (method, url, policy)
                if "private" in policy:
                    assert "authorization" in r.headers["vary"].lower()
                continue
            assert policy == "no-store", (user, method, url, r.status_code, policy)
    assert 200 in answered  # the walk reached real answers


def test_personal_routes_are_no_store_for_anonymous_callers_too(client, values):
    for route in ROUTES:
        if not declared_personal(route):
            continue
        for method in route.methods:
            r = client.request(method, url_of(route.path, values))
            assert r.status_code == 401, (method, route.path, r.status_code)
            assert r.headers["cache-control"] == "no-store", (method, route.path)


def test_public_answers_to_anonymous_callers_keep_their_caching(client, values):
    """no-store is not spread over public data: anonymous grids, areas and tiles keep the
    policies (or none) their routes give them."""
    assert "cache-control" not in client.get("/v1/grids", params={"limit": 2}).headers
    assert "cache-control" not in client.get("/v1/areas").headers
    tile = client.get("/tiles/grids/14/13366/6495.mvt")
    assert tile.headers["cache-control"] == "public, no-cache"


def test_members_tiles_are_private_and_never_stored(client, login):
    """The members layer (residences) for an entitled admin: private, never stored."""
    headers = login("admin")
    r = client.get("/tiles/members/15/26733/12988.mvt", headers=headers)
    assert r.status_code in (200, 204), r.text
    assert r.headers["cache-control"] == "private, no-store"
    assert "Authorization" in r.headers["vary"]


# --- Allow ----------------------------------------------------------------------


def methods_by_path() -> dict[str, set[str]]:
    paths: dict[str, set[str]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, set()).update(route.methods)
    return paths


def expected_allow(methods: set[str]) -> list[str]:
    methods = set(methods) | {"OPTIONS"} | ({"HEAD"} if "GET" in methods else set())
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [m for m in order if m in methods]


def allow_of(response) -> list[str]:
    return [m.strip() for m in response.headers["allow"].split(",")]


def test_paths_with_several_methods_are_walked():
    several = {p for p, m in methods_by_path().items() if len(m) > 1}
    assert {"/v1/events", "/v1/branches/{code}", "/open311/v2/requests.json"} <= several


@pytest.mark.parametrize("path, methods", sorted(methods_by_path().items()))
def test_options_and_405_name_every_method_of_the_path(client, values, path, methods):
    url = url_of(path, values)
    want = expected_allow(methods)
    options = client.options(url)
    assert options.status_code == 204 and options.content == b""
    assert allow_of(options) == want
    wrong = next(m for m in ("DELETE", "PATCH", "PUT", "POST") if m not in methods)
    refused = client.request(wrong, url)
    assert refused.status_code == 405, (wrong, url)
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert allow_of(refused) == want


@pytest.mark.parametrize("url", ["/static/map/map.js", "/openapi.json"])
def test_options_on_static_files_and_the_schema(client, url):
    assert allow_of(client.options(url)) == ["GET", "HEAD", "OPTIONS"]
    refused = client.post(url)
    assert refused.status_code == 405 and allow_of(refused) == ["GET", "HEAD", "OPTIONS"]


def test_options_on_an_unknown_path_is_a_404(client):
    r = client.options("/v1/nothing-here")
    assert r.status_code == 404 and "allow" not in r.headers

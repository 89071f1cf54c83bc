"""Walking the API: every route of an app, and real values for their path parameters
(the sweeps over every route, the hostile-input and body-limit walks)."""

from __future__ import annotations

from fastapi.routing import APIRoute


def api_routes(routes):
    """Every APIRoute, looking inside included routers."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from api_routes(inner.routes)
        elif isinstance(route, APIRoute):
            yield route


#: What a walk over every route sending one caller's token must leave out: signing out
#: ends every token of the caller's account (the rest of the walk would be 401s).
SIGN_OUT = ("POST", "/v1/auth/logout")


def walkable(route, method: str) -> bool:
    return (method, route.path) != SIGN_OUT


def send(client, method: str, url: str, **kw):
    try:
        return client.request(method, url, **kw)
    finally:
        client.session.rollback()


# A real value for each path parameter, so malformed queries and bodies reach past the lookup.
REAL_SQL = {
    "code": None,  # by route, below
    "registration_id": "SELECT id::text FROM registrations ORDER BY id LIMIT 1",
    "event_id": "SELECT id::text FROM events ORDER BY id LIMIT 1",
    "service_request_id": "SELECT id::text FROM events ORDER BY id LIMIT 1",
    "category": "SELECT code FROM event_categories ORDER BY code LIMIT 1",
    "service_code": "SELECT code FROM event_categories ORDER BY code LIMIT 1",
    "street": "SELECT code FROM admin_areas WHERE level = 'street' ORDER BY code LIMIT 1",
    "featureId": "SELECT code FROM grids ORDER BY code LIMIT 1",  # /ogc: of collectionId grids
    "number": "SELECT id::text FROM events ORDER BY id LIMIT 1",  # /report/{number}
}


CODE_SQL = {
    "/v1/areas/": "SELECT code FROM admin_areas WHERE level = 'district' LIMIT 1",
    "/v1/grids/": "SELECT code FROM grids ORDER BY code LIMIT 1",
    "/v1/branches/": "SELECT code FROM branches WHERE kind = 'work_unit' ORDER BY code LIMIT 1",
}


REAL_FIXED = {
    "name": "0" * 32 + ".jpg",  # /v1/photos/{name}: no such photo
    "collectionId": "grids",
    "day": "2026-12-01",
    "layers": "grids",
    "z": "15",
    "x": "26701",
    "y": "13041",
}


def real_values(engine) -> dict[str, str]:
    from sqlalchemy import text

    with engine.connect() as conn:
        out = {k: conn.execute(text(q)).scalar_one() for k, q in REAL_SQL.items() if q}
        out.update({prefix: conn.execute(text(q)).scalar_one() for prefix, q in CODE_SQL.items()})
    return {**out, **REAL_FIXED}


def route_url(route: APIRoute, value: str | None, real: dict[str, str]) -> str:
    """``route``'s path with every parameter set to ``value``, or to a real value (None)."""
    out = route.path
    for p in route.dependant.path_params:
        if value is not None:
            v = value
        elif p.name == "code":
            v = next(real[prefix] for prefix in CODE_SQL if route.path.startswith(prefix))
        else:
            v = real[p.name]
        out = out.replace("{" + p.name + "}", v)
    return out

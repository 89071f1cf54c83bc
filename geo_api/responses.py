"""What the OpenAPI document declares the routes answer besides their success: the
problem details of :mod:`geo_api.errors` (``application/problem+json``) by status, and
the other media types some routes answer in (GeoJSON, CSV, vector tiles).

Used as FastAPI's ``responses=`` (the app's, a router's or a route's) and
``response_class=``, so the document is generated, never edited by hand. The app
declares what any route may answer (401 for a bad token even on a public route, 422
for bad input, 503 while the database is away); routers and routes add theirs.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from geo_api.errors import PROBLEM

GEOJSON = "application/geo+json"
CSV = "text/csv"
MVT = "application/vnd.mapbox-vector-tile"


class Problem(BaseModel):
    """A problem detail (RFC 9457); the project's errors add members such as
    ``nearest_grid``."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="always about:blank")
    title: str
    status: int
    detail: str = Field(description="what went wrong, in English (stable: clients may match on it)")
    title_zh: str | None = Field(None, description="the title in Simplified Chinese")
    detail_zh: str | None = Field(
        None, description="the detail in Simplified Chinese, for people (the web map shows it)"
    )
    field: str | None = Field(None, description="the parameter or body member at fault")
    detail_zh: str | None = Field(None, description="the detail in Chinese, where it is for people (429)")
    errors: list[dict[str, Any]] | None = Field(None, description="422 from validation: every invalid member")


_PROBLEM_SCHEMA = Problem.model_json_schema()

_WHY = {
    400: "The request body cannot be read (JSON that is not UTF-8)",
    401: "Not signed in where the route needs it, or the token is invalid, expired or its account disabled",
    403: "The caller's role or area may not do this",
    404: "No such thing (the `field` names which)",
    409: "The change conflicts with the current state (stale version, already decided, taken): reload and retry",
    413: "The request body is too large",
    415: "A file of a kind the route does not take (a photo that is no JPEG, PNG or WebP image)",
    422: "Invalid input; `field` names the offending parameter",
    429: "Too many requests: retry after `Retry-After` seconds",
    503: "The database is unavailable: retry after `Retry-After` seconds",
}

_HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}, "required": True}},
    429: {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}},
    503: {"Retry-After": {"description": "seconds", "schema": {"type": "string"}}},
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` declaring ``statuses`` as problem details."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        declared: dict[str, Any] = {"description": _WHY[status], "content": {PROBLEM: {"schema": _PROBLEM_SCHEMA}}}
        if status in _HEADERS:
            declared["headers"] = _HEADERS[status]
        out[status] = declared
    return out


def open311_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` declaring ``statuses`` in Open311 GeoReport v2's own error shape
    (``[{"code": 404, "description": "..."}]``, ``application/json``)."""
    schema = {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["code", "description"],
            "properties": {"code": {"type": "integer"}, "description": {"type": "string"}},
        },
    }
    return {
        status: {
            "description": f"Open311 error ({_WHY.get(status, 'invalid input')})",
            "content": {"application/json": {"schema": schema}},
        }
        for status in statuses
    }


def media(*types: str, status: int = 200, description: str = "Successful Response") -> dict[int | str, dict]:
    """``responses=`` declaring that the ``status`` answer comes in any of ``types``
    (besides the route's own ``response_class``)."""
    return {status: {"description": description, "content": {t: {} for t in types}}}


#: what any route may answer
EVERY_ROUTE = problems(401, 413, 422, 503)  # 413: any request with an oversized body
#: routes declared for signed-in roles (``require_roles``)
SIGNED_IN = problems(401, 403)


class GeoJSONResponse(JSONResponse):
    """Declares ``application/geo+json`` as a route's success type in the document (the
    routes build their own :class:`~fastapi.responses.Response`)."""

    media_type = GEOJSON

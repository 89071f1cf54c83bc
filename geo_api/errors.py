"""The one place where errors become HTTP responses: JSON problem details (RFC 9457)
naming the offending field."""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from layers.errors import GridbranchError

log = logging.getLogger("gridbranch")

PROBLEM = "application/problem+json"


def problem(status: int, title: str, detail: str, *, field: str | None = None, headers=None, **extra) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _field_of(loc) -> str:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header", "form")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(GridbranchError)
    async def _project(request: Request, exc: GridbranchError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status >= 500:
            log.error("%s: %s", exc.title, exc.detail)
        return problem(exc.status, exc.title, exc.detail, field=exc.field, headers=headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field_of(first.get("loc", ()))
        detail = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        invalid = [
            {"field": _field_of(e.get("loc", ())), "message": e.get("msg"), "type": e.get("type")} for e in errors
        ]
        return problem(422, "Invalid input", detail, field=field, errors=invalid)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return problem(exc.status_code, title, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return internal_error(request.method, request.url.path)


def nul_in_request(scope) -> JSONResponse:
    """The 422 for a request whose path or a query parameter holds a NUL character, which
    no text column can store (PostgreSQL refuses it); answered before any route runs."""
    if "\x00" in scope["path"]:
        field = "path"
    else:
        query = scope.get("query_string", b"").decode("latin-1")
        field = next((k for k, v in parse_qsl(query, keep_blank_values=True) if "\x00" in k + v), "query")
    return problem(422, "Invalid input", f"{field}: contains a NUL character (%00)", field=field)


def internal_error(method: str, path: str) -> JSONResponse:
    """Log the exception being handled and answer a 500 that says nothing of it."""
    log.exception("unhandled error on %s %s", method, path)
    return problem(500, "Internal error", "An unexpected error occurred; it has been logged.")

"""The one place where errors become HTTP responses: JSON problem details (RFC 9457)
naming the offending field."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException

from layers.db import database_unavailable
from layers.errors import GridbranchError, Unavailable
from layers.messages_zh import detail_zh, title_zh, validation_zh

log = logging.getLogger("gridbranch")

PROBLEM = "application/problem+json"

#: Seconds a client is asked to wait before trying again while the database is out of
#: reach (a restart takes a few seconds; the pools reconnect by themselves).
RETRY_AFTER_S = 5


def problem(status: int, title: str, detail: str, *, field: str | None = None, headers=None, **extra) -> JSONResponse:
    body = problem_body(status, title, detail, field=field, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def problem_body(status: int, title: str, detail: str, *, field: str | None = None, **extra) -> dict:
    """A problem's JSON: the stable English ``title``/``detail`` and their Chinese
    (``title_zh``/``detail_zh``, which the web map shows; layers.messages_zh)."""
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "title_zh": title_zh(status),
        "detail_zh": detail_zh(detail, status=status, field=field),
    }
    if field is not None:
        body["field"] = field
    body.update(extra)
    return body


def _field_of(loc) -> str:
    parts = [str(p) for p in loc if p not in ("query", "path", "body", "header", "form")]
    return ".".join(parts) or ".".join(str(p) for p in loc)


def install(app: FastAPI) -> None:
    @app.exception_handler(GridbranchError)
    async def _project(request: Request, exc: GridbranchError):
        return project_error(exc)

    @app.exception_handler(Open311Error)
    async def _open311(request: Request, exc: Open311Error):
        return open311_error(exc.error)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        field = _field_of(first.get("loc", ()))
        detail = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        invalid = [
            {
                "field": _field_of(e.get("loc", ())),
                "message": e.get("msg"),
                "type": e.get("type"),
                "message_zh": validation_zh(e, _field_of(e.get("loc", ()))),
            }
            for e in errors
        ]
        body = problem_body(422, "Invalid input", detail, field=field, errors=invalid)
        body["detail_zh"] = invalid[0]["message_zh"] if invalid else body["detail_zh"]
        return JSONResponse(body, status_code=422, media_type=PROBLEM)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if isinstance(exc, ContentTooLarge):
            return exc.response()
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Error")
        return problem(exc.status_code, title, str(exc.detail), headers=getattr(exc, "headers", None))

    # The database out of reach is not the caller's fault nor a bug: 503, with Retry-After.
    # Handled here (Starlette's ExceptionMiddleware) rather than by the catch-all below,
    # which re-raises to the server after answering.
    async def _database(request: Request, exc: Exception):
        if not database_unavailable(exc):
            raise exc  # a failing statement is a bug: the catch-all's logged 500
        return unexpected_error(request.method, request.url.path, exc)

    for kind in _DATABASE_ERRORS:
        app.add_exception_handler(kind, _database)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return unexpected_error(request.method, request.url.path, exc)


def _database_errors() -> tuple[type[Exception], ...]:
    import psycopg2
    from sqlalchemy import exc as sa

    return sa.DBAPIError, sa.TimeoutError, sa.InvalidRequestError, psycopg2.Error, TimeoutError


_DATABASE_ERRORS = _database_errors()


def project_error(exc: GridbranchError) -> JSONResponse:
    """A project error as its problem detail (``Retry-After`` on a 503, and on a 429 that
    says when: ``retry_after`` in its extra)."""
    headers = None
    if exc.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif exc.status == 503:
        headers = {"Retry-After": str(exc.extra.get("retry_after", RETRY_AFTER_S))}
    elif exc.status == 429 and "retry_after" in exc.extra:
        headers = {"Retry-After": str(exc.extra["retry_after"])}
    if exc.status >= 500:
        log.error("%s: %s", exc.title, exc.detail)
    return problem(exc.status, exc.title, exc.detail, field=exc.field, headers=headers, **exc.extra)


class Open311Error(Exception):
    """A project error raised by an Open311 endpoint (:class:`Open311Route`), to be
    answered in GeoReport v2's own shape rather than as a problem detail."""

    def __init__(self, error: GridbranchError):
        super().__init__(error.detail)
        self.error = error


def open311_error(exc: GridbranchError) -> Response:
    """A project error in Open311 GeoReport v2's shape, ``[{"code": 400, "description":
    "..."}]``, with that HTTP status; invalid input is 400 there, as the specification
    has it."""
    status = 400 if exc.status == 422 else exc.status
    body = orjson.dumps([{"code": status, "description": exc.detail}])
    return Response(body, status_code=status, media_type="application/json; charset=utf-8")


def _open311_endpoint(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` raising :class:`Open311Error` for the project errors it raises. Only
    the endpoint's own: its dependencies' (the token, the access rules: 401, 403) stay
    problem details, statuses Open311's vocabulary does not have. Sync stays sync (run in
    the thread pool), async stays async; the signature is the endpoint's (``wraps``)."""
    if inspect.iscoroutinefunction(endpoint):

        @functools.wraps(endpoint)
        async def answered_async(*args, **kwargs):
            try:
                return await endpoint(*args, **kwargs)
            except GridbranchError as exc:
                raise Open311Error(exc) from exc

        return answered_async

    @functools.wraps(endpoint)
    def answered(*args, **kwargs):
        try:
            return endpoint(*args, **kwargs)
        except GridbranchError as exc:
            raise Open311Error(exc) from exc

    return answered


class Open311Route(APIRoute):
    """The route class of the Open311 router: its endpoints raise project errors like
    every other route, and the app's :class:`Open311Error` handler answers them in
    Open311's shape — no route builds an error response itself."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any):
        super().__init__(path, _open311_endpoint(endpoint), **kwargs)


class ContentTooLarge(StarletteHTTPException):
    """A request body over its limit (:class:`geo_api.asgi.BodyLimit`). An HTTP exception,
    so that FastAPI's body reading passes it on as it is rather than as a parsing error."""

    def __init__(self, limit: int, setting: str):
        super().__init__(413, f"the request body exceeds {limit} bytes ({setting})")
        self.limit = limit
        self.setting = setting

    def response(self) -> JSONResponse:
        return problem(
            413, "Content too large", str(self.detail), field="body", limit_bytes=self.limit, setting=self.setting
        )


def nul_in_request(scope) -> JSONResponse:
    """The 422 for a request whose path or a query parameter holds a NUL character, which
    no text column can store (PostgreSQL refuses it); answered before any route runs."""
    if "\x00" in scope["path"]:
        field = "path"
    else:
        query = scope.get("query_string", b"").decode("latin-1")
        field = next((k for k, v in parse_qsl(query, keep_blank_values=True) if "\x00" in k + v), "query")
    return problem(422, "Invalid input", f"{field}: contains a NUL character (%00)", field=field)


def unexpected_error(method: str, path: str, exc: BaseException) -> JSONResponse:
    """The answer to an exception nothing else handled, on a route or a fast path alike:
    a 503 with ``Retry-After`` when the database is out of reach
    (:func:`layers.db.database_unavailable`), otherwise the logged 500 of
    :func:`internal_error`."""
    if database_unavailable(exc):
        log.warning(
            "database unavailable on %s %s: %s",
            method,
            path,
            str(exc).strip().splitlines()[0] if str(exc) else type(exc).__name__,
        )
        return project_error(Unavailable("the database is unavailable (down or restarting); try again shortly"))
    return internal_error(method, path)


def internal_error(method: str, path: str) -> JSONResponse:
    """Log the exception being handled and answer a 500 that says nothing of it."""
    log.exception("unhandled error on %s %s", method, path)
    return problem(500, "Internal error", "An unexpected error occurred; it has been logged.")

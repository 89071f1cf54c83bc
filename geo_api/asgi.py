"""What the fast-path ASGI middlewares (locate, tiles, event reports) share."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def route_path(scope: Scope, method: str) -> str | None:
    """The request's path below the app's ``root_path`` when ``scope`` is an HTTP request
    with ``method``; ``None`` otherwise (the middleware then hands the request on)."""
    if scope["type"] != "http" or scope["method"] != method:
        return None
    path = scope["path"]
    root = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root):]
    return path


def as_get(scope: Scope, send: Send) -> tuple[Scope, Send]:
    """A HEAD request as the GET it asks about: the scope with method GET, and a send
    that passes the status and headers (Content-Length, ETag … as GET's) and drops the
    body — RFC 9110 §9.3.2, for every route and fast path alike. The server's own scope
    is left as it was (uvicorn also drops HEAD bodies by it)."""

    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": b""}
        await send(message)

    return {**scope, "method": "GET"}, send_head


def body_limit(scope: Scope, settings) -> tuple[int, str]:
    """The most bytes a request's body may hold, and the setting that says so: the locate
    batch's own limits (signed-in callers — any ``Authorization`` header, checked by the
    route before it reads a byte — and anonymous ones), an upload's (``/v1/imports``,
    signed in), else ``GRIDBRANCH_MAX_BODY_BYTES``."""
    if route_path(scope, "POST") == "/v1/locate/batch":
        if any(name == b"authorization" for name, _ in scope["headers"]):
            return settings.locate.batch_max_bytes, "GRIDBRANCH_LOCATE_BATCH_MAX_BYTES"
        return settings.locate.batch_max_bytes_anonymous, "GRIDBRANCH_LOCATE_BATCH_MAX_BYTES_ANONYMOUS"
    if route_path(scope, "POST") == "/v1/imports" and any(name == b"authorization" for name, _ in scope["headers"]):
        # an upload, streamed to disk by the route (geo_api.imports) after it checked the caller
        return settings.imports.max_bytes, "GRIDBRANCH_IMPORTS_MAX_BYTES"
    return settings.service.max_body_bytes, "GRIDBRANCH_MAX_BODY_BYTES"


#: Methods whose requests carry no body unless they are chunked (RFC 9112 6.3: without
#: Content-Length or Transfer-Encoding a request has none).
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class BodyLimit:
    """ASGI middleware bounding request bodies before they are read, for the routes and
    the fast paths alike (put in front of them by ``geo_api.app.GridbranchAPI``): a
    declared ``Content-Length`` over the limit is answered 413 at once, without reading;
    a body streamed without one (chunked) is counted as it is received and refused the
    moment it passes the limit (:class:`geo_api.errors.ContentTooLarge`), so no reader —
    FastAPI's JSON parsing, a route's ``request.body()``, a fast path — ever holds more
    than the limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from geo_api.errors import ContentTooLarge

        app = scope.get("app")
        settings = getattr(getattr(app, "state", None), "settings", None)
        if scope["type"] != "http" or settings is None:
            await self.app(scope, receive, send)
            return
        limit, setting = body_limit(scope, settings)
        declared = chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = 0  # the server refuses malformed lengths itself
                if length > limit:
                    await ContentTooLarge(limit, setting).response()(scope, receive, send)
                    return
                declared = True
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked and (declared or scope["method"] in _BODYLESS):
            # the HTTP framing bounds the body already (the declared length, or none at
            # all): nothing to count, and the hot GETs keep their receive and send
            await self.app(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise ContentTooLarge(limit, setting)
            return message

        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except ContentTooLarge as exc:  # raised outside a route (a fast path reading the body)
            if started:
                raise
            await exc.response()(scope, receive, send)

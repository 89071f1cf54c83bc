"""What the fast paths (locate, tiles, event reports) and the app's own ASGI layers share:
the one prelude of the fast paths (:class:`FastPaths`), the HEAD-as-GET rule and the
request body limit."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from layers.errors import GridbranchError

log = logging.getLogger("gridbranch")


def route_path(scope: Scope, method: str) -> str | None:
    """The request's path below the app's ``root_path`` when ``scope`` is an HTTP request
    with ``method``; ``None`` otherwise (the middleware then hands the request on)."""
    if scope["type"] != "http" or scope["method"] != method:
        return None
    path = scope["path"]
    root = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root) :]
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
    signed in), a photo's (``/v1/photos``), else ``GRIDBRANCH_MAX_BODY_BYTES``."""
    if route_path(scope, "POST") == "/v1/locate/batch":
        if any(name == b"authorization" for name, _ in scope["headers"]):
            return settings.locate.batch_max_bytes, "GRIDBRANCH_LOCATE_BATCH_MAX_BYTES"
        return settings.locate.batch_max_bytes_anonymous, "GRIDBRANCH_LOCATE_BATCH_MAX_BYTES_ANONYMOUS"
    if route_path(scope, "POST") == "/v1/imports" and any(name == b"authorization" for name, _ in scope["headers"]):
        # an upload, streamed to disk by the route (geo_api.imports) after it checked the caller
        return settings.imports.max_bytes, "GRIDBRANCH_IMPORTS_MAX_BYTES"
    if route_path(scope, "POST") == "/v1/photos":
        return settings.photos.max_bytes, "GRIDBRANCH_PHOTOS_MAX_BYTES"
    return settings.service.max_body_bytes, "GRIDBRANCH_MAX_BODY_BYTES"


class RejectNul:
    """ASGI middleware answering a request whose path or query holds a NUL character with
    the 422 of :func:`geo_api.errors.nul_in_request`, before any fast path or route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and ("\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")):
            from geo_api.errors import nul_in_request

            await nul_in_request(scope)(scope, receive, send)
            return
        await self.app(scope, receive, send)


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


# -- The fast paths ----------------------------------------------------------------------


@dataclass
class Reply:
    """A fast path's answer, sent as ``starlette.responses.Response`` sends it (the same
    headers in the same order: its own, then Content-Length except on 204 and 304, then
    Content-Type), so that it is byte for byte the route's."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    content_type: bytes | None = None

    async def send(self, send: Send) -> None:
        headers = list(self.headers)
        if self.status not in (204, 304):
            headers.append((b"content-length", str(len(self.body)).encode()))
        if self.content_type is not None:
            headers.append((b"content-type", self.content_type))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


class Asked:
    """What the prelude read of a request a fast path may take: the path below the
    ``root_path``, the headers the fast path asked for (``None`` when absent), the query
    string, and the body on demand — read once, replayed to the route on a hand-over."""

    __slots__ = ("scope", "path", "headers", "_receive", "_body", "_complete")

    def __init__(self, scope: Scope, path: str, headers: dict[bytes, bytes], receive: Receive) -> None:
        self.scope = scope
        self.path = path
        self.headers = headers
        self._receive = receive
        self._body: bytes | None = None
        self._complete = True

    @property
    def query(self) -> bytes:
        return self.scope.get("query_string", b"")

    async def body(self, limit: int) -> bytes | None:
        """The whole body, or None when it is longer than ``limit`` or the client left
        (what was read is replayed to the route all the same)."""
        chunks, size, more = [], 0, True
        while more:
            message = await self._receive()
            if message["type"] != "http.request":  # the client went away
                self._body, self._complete = b"".join(chunks), False
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
            if size > limit:
                break
        self._body, self._complete = b"".join(chunks), not more
        return None if more else self._body

    @property
    def receive(self) -> Receive:
        """The request's receive for the route: the body read so far first, if any."""
        if self._body is None:
            return self._receive
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": self._body, "more_body": not self._complete}
            return await self._receive()

        return replay


class FastPath:
    """One fast path: an anonymous request answered ahead of FastAPI's routing and
    dependencies, byte for byte as its route would answer it (see :class:`FastPaths`).

    A subclass names its ``method``, the request ``headers`` it reads, and implements
    :meth:`match` (the path: a match object, or None), :meth:`enabled` (the app's
    settings) and :meth:`answer` (a :class:`Reply`, or None to hand over to the route)."""

    method: str = "GET"
    headers: frozenset[bytes] = frozenset()
    #: The template of the route it answers for (the metrics' label); None when
    #: :meth:`match` admits one fixed path only, which is then its own template.
    route: str | None = None
    #: Whether a failure in :meth:`answer` may be handed over to the route (False where
    #: the request may have had its effect already: the route must not run it twice).
    retry_on_failure: bool = True

    def match(self, path: str):
        raise NotImplementedError

    def enabled(self, app) -> bool:
        raise NotImplementedError

    async def answer(self, app, match, asked: Asked) -> Reply | None:
        raise NotImplementedError


class FastPaths:
    """ASGI middleware: the one prelude of every fast path. It takes only an HTTP request
    whose method and path a fast path matches, that fast path being enabled, and that
    carries no ``Authorization`` header (signed-in callers always take the routes, whose
    dependencies check them); reads the headers that fast path asks for in the same pass;
    and hands the request to the routes (``app``) whenever the fast path answers None or
    raises a project error (bad input: the route answers with its problem details, so
    errors keep their one format). Any other failure is logged and handed over too,
    unless the fast path says the request may have had its effect already
    (:attr:`FastPath.retry_on_failure`): then it is the app's 500 (or 503).

    It sits inside the app's middleware (``geo_api.app.GridbranchAPI``), so that every
    middleware added to the app sees the fast paths' requests and answers too."""

    def __init__(self, app: ASGIApp, paths) -> None:
        self.app = app
        self.paths = tuple(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path = None
        for fast in self.paths:
            if fast.method != method:
                continue
            if path is None:
                path = route_path(scope, method)
            match = fast.match(path)
            if match is not None:
                break
        else:
            await self.app(scope, receive, send)
            return
        app = scope.get("app")
        if app is None or not fast.enabled(app):
            await self.app(scope, receive, send)
            return
        wanted, headers = fast.headers, {}
        for name, value in scope["headers"]:
            if name == b"authorization":
                await self.app(scope, receive, send)
                return
            if name in wanted:
                headers[name] = value
        asked = Asked(scope, path, headers, receive)
        await self._serve(fast, app, match, asked, scope, send)

    async def _serve(self, fast: FastPath, app, match, asked: Asked, scope: Scope, send: Send) -> None:
        try:
            reply = await fast.answer(app, match, asked)
        except GridbranchError:
            reply = None  # nothing done: the route answers with the problem details
        except HTTPException:
            raise  # the body limit's 413 (geo_api.asgi.BodyLimit answers it)
        except Exception as exc:  # noqa: BLE001 - the route answers (and logs) whatever went wrong
            if not fast.retry_on_failure:
                from geo_api.errors import unexpected_error

                await unexpected_error(scope["method"], asked.path, exc)(scope, asked.receive, send)
                return
            log.warning(
                "fast path %s failed on %s; handing over to the route", type(fast).__name__, asked.path, exc_info=True
            )
            reply = None
        if reply is None:
            await self.app(scope, asked.receive, send)
            return
        # the route it answered for, for the metrics (geo_api.telemetry): never the raw path
        scope["gridbranch.route"] = fast.route or asked.path
        await reply.send(send)

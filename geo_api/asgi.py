"""What the fast-path ASGI middlewares (locate, tiles, event reports) share."""

from __future__ import annotations

from starlette.types import Message, Scope, Send


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

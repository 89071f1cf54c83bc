"""What the fast-path ASGI middlewares (locate, tiles, event reports) share."""

from __future__ import annotations

from starlette.types import Scope


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

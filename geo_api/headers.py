"""Response headers: the security headers on every answer, fast paths included
(:class:`SecurityHeaders`); and for the routes, ``Cache-Control: no-store`` on answers
that may hold personal data, and ``Allow`` (on a 405, and as the answer to OPTIONS)
naming every method of the path, not only those of the first route matching it
(:class:`ResponseHeaders`).

:class:`SecurityHeaders` is middleware added to the app (``geo_api.app.create_app``), in
front of everything; :class:`ResponseHeaders` is applied by
:class:`geo_api.app.GridbranchAPI` around FastAPI's own stack, behind the fast paths —
which answer only anonymous requests to public routes with public data, so they need it
not.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from geo_api.asgi import route_path
from geo_api.deps import Access

NO_STORE = (b"cache-control", b"no-store")
#: The order methods are listed in ``Allow``.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
_PROBED = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(routes, scope: Scope) -> tuple[str, ...]:
    """The methods answered at the request's path, HEAD wherever GET is (every route
    answers HEAD as its GET) and OPTIONS; empty when no route takes the path at all.

    Each method is matched as the router would match it, since a path may be served by
    several routes (``GET`` and ``POST /v1/events``), of which Starlette's own 405 names
    only the first. A mount (static files) answers GET and HEAD."""
    found: set[str] = set()
    for method in _PROBED:
        probe = {
            "type": "http",
            "path": scope["path"],
            "root_path": scope.get("root_path", ""),
            "method": method,
            "headers": [],
            "query_string": b"",
        }
        for route in routes:
            match, _ = route.matches(probe)
            if match is Match.FULL:
                found.add("GET" if isinstance(route, Mount) else method)
                break
    if not found:
        return ()
    if "GET" in found:
        found.add("HEAD")
    found.add("OPTIONS")
    return tuple(m for m in METHODS if m in found)


def declared_personal(route) -> bool:
    """Whether ``route`` is declared for signed-in roles only (``require_roles``), i.e.
    may answer with personal data. Remembered on the route: routes are built once."""
    personal = getattr(route, "_gridbranch_personal", None)
    if personal is None:
        dependant = getattr(route, "dependant", None)
        calls = [d.call for d in dependant.dependencies] if dependant is not None else []
        personal = any(isinstance(c, Access) and c.roles for c in calls)
        try:
            route._gridbranch_personal = personal
        except AttributeError:  # a route type that takes no attributes: not one of ours
            return False
    return personal


def _keeps_own_policy(value: bytes, personal_route: bool) -> bool:
    """A Cache-Control a response set itself stands when it keeps the answer out of
    shared caches (``private``, ``no-store``); on a public route any policy it set stands,
    since such a route chose it for this caller (the tiles: ``public`` only for tiles
    without personal layers, whoever asks)."""
    value = value.lower()
    return not personal_route or b"private" in value or b"no-store" in value


class ResponseHeaders:
    """ASGI middleware: answers OPTIONS itself; completes ``Allow`` on a 405; adds
    ``Cache-Control: no-store`` to every answer to a request carrying ``Authorization``
    and to every answer of a route declared for signed-in roles, unless the answer set a
    policy of its own that :func:`_keeps_own_policy` lets stand.

    ``no-store`` keeps member names, phones and residences out of browser and proxy
    caches (a shared office computer's disk, an nginx in front): a signed-in answer is
    never stored, whatever the route."""

    def __init__(self, app: ASGIApp, router) -> None:
        self.app = app
        self.router = router  # its routes are read per request: they are added after this is built

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            allow = allowed_methods(self.router.routes, scope)
            if allow:
                await send(
                    {"type": "http.response.start", "status": 204, "headers": [(b"allow", ", ".join(allow).encode())]}
                )
                await send({"type": "http.response.body", "body": b""})
                return
        signed_in = any(name == b"authorization" for name, _ in scope["headers"])
        # routing rewrites the scope in place (a mount extends root_path): keep what was asked
        asked = {"path": scope["path"], "root_path": scope.get("root_path", "")}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = self._complete(scope, asked, message, signed_in)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _complete(self, scope: Scope, asked: Scope, message: Message, signed_in: bool) -> Message:
        status = message["status"]
        route = scope.get("route")
        personal_route = route is not None and declared_personal(route)
        headers = list(message.get("headers", ()))
        changed = False
        if status == 405:
            allow = allowed_methods(self.router.routes, asked)
            if allow:
                headers = [(k, v) for k, v in headers if k.lower() != b"allow"]
                headers.append((b"allow", ", ".join(allow).encode()))
                changed = True
        if signed_in or personal_route:
            own = next((v for k, v in headers if k.lower() == b"cache-control"), None)
            if own is None or not _keeps_own_policy(own, personal_route):
                headers = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                headers.append(NO_STORE)
                changed = True
        return {**message, "headers": headers} if changed else message


# -- Security headers ------------------------------------------------------------------

#: The web map's Content-Security-Policy: everything from the service's own origin only.
#: Beyond plain same-origin files (MapLibre 6 starts its worker from its own module URL):
#: blob: workers, MapLibre's fallback where the page's origin is opaque (a portal's
#: sandboxed iframe of /map?embed=1); blob: and data: images, which MapLibre decodes
#: images through and the page's icon is; styles only from files and through the CSSOM
#: (no 'unsafe-inline'). tests/web_map/test_map_browser.py runs the map under it.
MAP_POLICY = (
    "default-src 'self'; script-src 'self'; worker-src 'self' blob:; child-src 'self' blob:; "
    "img-src 'self' data: blob:; style-src 'self'; font-src 'self'; connect-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; "
)
_CSP = b"content-security-policy"


def _embedded(scope: Scope) -> bool:
    """Whether the request asks for the embeddable map (``/map?embed=1``, as map.js reads it)."""
    query = scope.get("query_string", b"")
    return b"embed" in query and ("embed", "1") in parse_qsl(query.decode("latin-1"))


class SecurityHeaders:
    """ASGI middleware adding the security headers to every answer:

    * ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: same-origin`` (no URL of
      ours — a grid, an event id in a path — leaves for another site);
    * on ``/map`` and the report form (``/report``, ``/report/{number}``) the page's
      policy (:data:`MAP_POLICY`) with ``frame-ancestors 'none'`` and
      ``X-Frame-Options: DENY``; on ``/map?embed=1`` ``frame-ancestors 'self'`` and
      the portal origins of ``GRIDBRANCH_EMBED_ORIGINS`` instead; on every other answer
      ``frame-ancestors 'none'`` alone (Swagger UI's page has an inline script; the API's
      answers are not documents);
    * ``Strict-Transport-Security`` when the request came over HTTPS — directly, or
      through a trusted proxy that says so (``X-Forwarded-Proto: https``, read by
      uvicorn's ``ProxyHeadersMiddleware`` in front of this one).

    Answers made in front of it (the proxy-header middleware makes none) are the only
    ones without them."""

    def __init__(self, app: ASGIApp, settings) -> None:
        self.app = app
        base = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin")]
        ancestors = " ".join(("'self'", *settings.embed_origins))
        self.plain = [*base, (_CSP, b"frame-ancestors 'none'")]
        self.map = [*base, (_CSP, (MAP_POLICY + "frame-ancestors 'none'").encode()), (b"x-frame-options", b"DENY")]
        self.embed = [*base, (_CSP, (MAP_POLICY + f"frame-ancestors {ancestors}").encode("latin-1"))]
        self.hsts = (
            [(b"strict-transport-security", f"max-age={settings.hsts_max_age}".encode())]
            if settings.hsts_max_age
            else []
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.plain
        path = route_path(scope, "GET")  # HEAD too: it is a GET by now (geo_api.asgi.as_get)
        if path == "/map":
            extra = self.embed if _embedded(scope) else self.map
        elif path is not None and (path == "/report" or path.startswith("/report/")):
            extra = self.map  # the report form: the map page's policy, never framed
        if self.hsts and scope.get("scheme") == "https":
            extra = extra + self.hsts

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, sending)

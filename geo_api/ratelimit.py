"""Rate limits of anonymous writes: event reports (``POST /v1/events``, the Open311
``POST /open311/v2/requests.json``), locate batches (``POST /v1/locate/batch``) and
sign-in attempts (``POST /v1/auth/token``), each per client address and overall.

An ASGI middleware added to the app like any other (``geo_api.app.create_app``), so it
stands in front of the fast paths as well as the routes. A caller over a limit gets 429
with ``Retry-After`` (seconds) and a Chinese ``detail_zh``, a problem detail like every
answer not in Open311's own vocabulary (401, 413, 503). A request carrying ``Authorization`` is not anonymous and is
not limited here (the route checks its token before it does any work) — except a
sign-in attempt, which is always counted.

Why token buckets written here, not the ``limits`` library: its storages read the
system time themselves (its own tests freeze time by patching), while ours must run on
the app's clock (``app.state.clock``, :mod:`layers.clock`) so that tests move time
instead of sleeping; and a bucket is a few lines. ``pyrate-limiter`` takes a clock but
keeps a timestamp per request per key. In-process: each worker process has its own
buckets, so with several workers the limits hold per worker — a shared store is
issue 19's.

The client address is the connection's, or — behind a trusted proxy — the one
``X-Forwarded-For`` names (``GRIDBRANCH_TRUSTED_PROXIES``; uvicorn's
``ProxyHeadersMiddleware`` sets it before this runs).
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from geo_api.asgi import route_path
from geo_api.errors import project_error
from layers.errors import TooManyRequests

#: Kinds of anonymous write, by path; their limits are settings (``RateLimitSettings``).
KINDS = {
    "/v1/events": "reports",
    "/open311/v2/requests.json": "reports",
    "/v1/locate/batch": "locate_batches",
    "/v1/auth/token": "tokens",
    "/v1/photos": "photos",
}
#: Kinds counted whatever the request carries (a sign-in attempt has no token to check).
ALWAYS = frozenset({"tokens"})
_WHAT_ZH = {"reports": "事件上报", "locate_batches": "批量定位", "tokens": "登录尝试", "photos": "照片上传"}
_WHAT = {
    "reports": "event reports",
    "locate_batches": "locate batches",
    "tokens": "sign-in attempts",
    "photos": "photo uploads",
}
#: Buckets kept per kind; the least recently used address is forgotten past it (it
#: starts afresh: a full bucket), so that a flood of addresses cannot exhaust memory.
MAX_ADDRESSES = 100_000


class Bucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` tokens a second."""

    __slots__ = ("capacity", "rate", "tokens", "at")

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity, self.rate, self.tokens, self.at = capacity, rate, capacity, now

    def level(self, now: float) -> float:
        """The tokens at ``now`` (refilled since the last look; a clock set back refills nothing)."""
        if now > self.at:
            self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
            self.at = now
        return self.tokens

    def wait(self, now: float) -> float:
        """Seconds until one token is there (0: there is one now)."""
        short = 1.0 - self.level(now)
        return 0.0 if short <= 0 else short / self.rate


@dataclass(frozen=True)
class Limit:
    per_address: int  # a minute
    overall: int  # a minute


class Limiter:
    """Per-address and overall buckets for each kind, on ``clock`` (a :class:`layers.clock.Clock`)."""

    def __init__(self, limits: dict[str, Limit], clock, exempt=()) -> None:
        self.limits = limits
        self.clock = clock
        self.exempt = tuple(ipaddress.ip_network(n, strict=False) for n in exempt)
        self._overall: dict[str, Bucket] = {}
        self._addresses: dict[str, OrderedDict[str, Bucket]] = {kind: OrderedDict() for kind in limits}

    @classmethod
    def from_settings(cls, settings, clock) -> Limiter:
        s = settings
        return cls(
            {
                "reports": Limit(s.reports_per_address, s.reports_overall),
                "locate_batches": Limit(s.locate_batches_per_address, s.locate_batches_overall),
                "tokens": Limit(s.tokens_per_address, s.tokens_overall),
                "photos": Limit(s.photos_per_address, s.photos_overall),
            },
            clock,
            s.exempt,
        )

    def exempted(self, address: str | None) -> bool:
        if not self.exempt or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.exempt)

    def take(self, kind: str, address: str | None) -> int:
        """Count one request of ``kind`` from ``address``: 0 when it may go on, else the
        whole seconds to wait (nothing is taken from either bucket then, so a refused
        caller does not use up the others' share)."""
        if self.exempted(address):
            return 0
        limit = self.limits[kind]
        now = self.clock.now().timestamp()
        overall = self._overall.get(kind)
        if overall is None:
            overall = self._overall[kind] = Bucket(limit.overall, limit.overall / 60, now)
        buckets = self._addresses[kind]
        key = address or "?"
        own = buckets.get(key)
        if own is None:
            own = buckets[key] = Bucket(limit.per_address, limit.per_address / 60, now)
            if len(buckets) > MAX_ADDRESSES:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
        wait = max(own.wait(now), overall.wait(now))
        if wait > 0:
            return max(1, math.ceil(wait))
        own.tokens -= 1
        overall.tokens -= 1
        return 0


def refusal(kind: str, retry_after: int) -> TooManyRequests:
    return TooManyRequests(
        f"too many anonymous {_WHAT[kind]}; try again in {retry_after} s",
        retry_after=retry_after,
        detail_zh=f"{_WHAT_ZH[kind]}过于频繁，请 {retry_after} 秒后再试",
    )


class RateLimit:
    """ASGI middleware counting anonymous writes with ``limiter`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        kind = KINDS.get(route_path(scope, "POST"))
        if kind is None or (kind not in ALWAYS and any(n == b"authorization" for n, _ in scope["headers"])):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.limiter.take(kind, client[0] if client else None)
        if not wait:
            await self.app(scope, receive, send)
            return
        await project_error(refusal(kind, wait))(scope, receive, send)

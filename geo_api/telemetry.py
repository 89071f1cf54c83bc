"""What the service tells its operators: Prometheus metrics, request ids and structured
(JSON) logs.

One ASGI middleware (:class:`Telemetry`), outermost among the app's own, sees every
request — the fast paths' as the routes' (``geo_api.app.GridbranchAPI``) — and

- counts it and times it by **route template** (``/tiles/{layers}/{z}/{x}/{y}.mvt``, never
  the raw path: a path or query may carry codes, coordinates of a home or a member
  number, and a label per raw path would grow without bound);
- gives it a request id: the ``X-Request-ID`` a trusted proxy (``GRIDBRANCH_TRUSTED_PROXIES``,
  nginx in the stack) passes on — sent back in ``X-Request-ID`` — else a new one, only
  logged; it is in every JSON log line written while the request runs;
- copies what the service's parts count themselves — the tile cache's hits and misses,
  the data-version reads, the pools' connections in use — into this process's metrics.
  They are copied as requests end (at most once a second) rather than read when scraped because with
  several workers (``PROMETHEUS_MULTIPROC_DIR``) the scraped worker can only report
  values the others wrote to the shared directory.

prometheus-client decides between one process and multiprocess mode when it is first
imported, from ``PROMETHEUS_MULTIPROC_DIR``: ``gridbranch serve --workers N`` and the
stack set it before the worker processes start.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import os
import re
import secrets
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.routing import Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "Telemetry", "JsonFormatter", "exposition", "metrics_allowed", "request_id"]

#: The registry of this process's metrics (one process; with several, the shared
#: directory is read instead: :func:`exposition`).
REGISTRY = CollectorRegistry(auto_describe=True)

#: Latency buckets from a cached tile (~0.2 ms) to a slow analysis (seconds).
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "gridbranch_http_requests",
    "HTTP requests answered, by route template",
    ("method", "route", "status"),
    registry=REGISTRY,
)
LATENCY = Histogram(
    "gridbranch_http_request_duration_seconds",
    "Time from the request's arrival to the end of its answer, by route template",
    ("method", "route"),
    buckets=BUCKETS,
    registry=REGISTRY,
)
TILE_CACHE = Counter(
    "gridbranch_tile_cache_lookups",
    "In-process tile cache lookups, by result (hit or miss)",
    ("result",),
    registry=REGISTRY,
)
VERSION_READS = Counter(
    "gridbranch_data_version_reads",
    "Reads of the data versions (layer_versions) by the coalescing readers, by reader",
    ("reader",),
    registry=REGISTRY,
)
POOL = Gauge(
    "gridbranch_db_pool_connections",
    "Database connections of the pools, by pool and state (in_use, idle, size)",
    ("pool", "state"),
    multiprocess_mode="livesum",
    registry=REGISTRY,
)

#: The metrics' children by label values (``labels()`` costs microseconds per call).
_COUNTED: dict[tuple, Any] = {}
_TIMED: dict[tuple, Any] = {}

#: How often a worker copies the counts of the tile cache, readers and pools into its
#: metrics (at most; /metrics copies its own process's before it answers).
SAMPLE_EVERY_S = 1.0

#: The route label of a request that no route or mount matched (a 404): one label for
#: all of them, whatever was asked.
UNMATCHED = "<unmatched>"

#: The request id of the request being answered ("-" outside one), for the log lines.
request_id: ContextVar[str] = ContextVar("gridbranch_request_id", default="-")

#: What a request id passed on by a proxy may look like (nginx's $request_id is 32 hex
#: digits); anything else is replaced, so that a log line cannot be forged through it.
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

access_log = logging.getLogger("gridbranch.access")

#: Request ids made here: a random prefix per process and a counter (32 hex digits, as
#: nginx's), unique across the workers without a system call per request.
_ID_PREFIX = secrets.token_hex(8)
_ids = itertools.count(1)


def _new_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):016x}"


def _networks(entries) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _within(host: str | None, networks) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name, not an address (a test client): never trusted
    return any(address in network for network in networks)


def metrics_allowed(host: str | None, settings) -> bool:
    """Whether a client at ``host`` (as the trusted proxies tell it) may read ``/metrics``:
    only the addresses of ``GRIDBRANCH_METRICS_ALLOW`` (default loopback), so that a
    service bound to a public address does not publish its traffic and pool figures."""
    return _within(host, _networks(settings.service.metrics_allow))


class _Sampler:
    """Copies the counts the service's parts keep themselves into the metrics: each
    copy adds what changed since the last one (counters) or sets what is now (gauges)."""

    def __init__(self) -> None:
        self.last: dict[tuple, int] = {}

    def _add(self, counter, label: str, key: tuple, now: int) -> None:
        before = self.last.get(key, now if key in self.last else 0)
        if now != before:
            if now > before:
                counter.labels(label).inc(now - before)
            self.last[key] = now  # a smaller count: a new cache or reader began from zero
        else:
            self.last.setdefault(key, now)

    def _set(self, pool: str, state: str, now: int) -> None:
        key = ("pool", pool, state)
        if self.last.get(key) != now:
            POOL.labels(pool, state).set(now)
            self.last[key] = now

    def sample(self, state) -> None:
        tiles = getattr(state, "tiles", None)
        if tiles is not None:
            # per service: a new app in this process (tests) brings a new cache from zero
            self._add(TILE_CACHE, "hit", ("hit", id(tiles.cache)), tiles.cache.hits)
            self._add(TILE_CACHE, "miss", ("miss", id(tiles.cache)), tiles.cache.misses)
            self._add(VERSION_READS, "tiles", ("tiles", id(tiles.reader)), tiles.reader.reads)
            pool = tiles.pool
            idle = len(pool._idle)  # the tile renderer's own pool (layers.pg.AsyncPool)
            self._set("tiles", "in_use", max(0, pool._open - idle))
            self._set("tiles", "idle", idle)
            self._set("tiles", "size", pool.size)
        locate = getattr(state, "locate_versions", None)
        if locate is not None:
            self._add(VERSION_READS, "locate", ("locate", id(locate)), locate.reads)
        engine = getattr(state, "engine", None)
        queue = getattr(engine, "pool", None)
        if queue is not None and hasattr(queue, "checkedout"):
            self._set("engine", "in_use", queue.checkedout())
            self._set("engine", "idle", queue.checkedin())
            self._set("engine", "size", queue.size())


def exposition(state) -> bytes:
    """The metrics in Prometheus' text format: this process's, or with several worker
    processes (``PROMETHEUS_MULTIPROC_DIR``) all of theirs, read from the shared directory."""
    sampler = getattr(state, "telemetry_sampler", None)
    if sampler is not None:
        sampler.sample(state)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def process_gone() -> None:
    """At a worker's shutdown: its live gauges (pool connections) leave the sums."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())


class Telemetry:
    """ASGI middleware: metrics, request ids and the access log (see the module docstring).

    It goes outermost among the app's middleware (``geo_api.app.add_middleware``), so
    that it sees the connection's own address — a request id is believed only from a
    trusted proxy — and measures the time of everything inside it, rate limits included."""

    def __init__(self, app: ASGIApp, *, settings, clock) -> None:
        self.app = app
        self.clock = clock
        self.proxies = _networks(settings.security.trusted_proxies)
        self.log_access = settings.service.access_log and settings.service.log_format == "json"
        self.sampler = _Sampler()
        self.sampled_at = -SAMPLE_EVERY_S
        self.trusted: dict[str, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        app = scope.get("app")
        if app is not None and getattr(app.state, "telemetry_sampler", None) is None:
            app.state.telemetry_sampler = self.sampler  # /metrics samples before it answers
        rid, given = self._request_id(scope)
        token = request_id.set(rid)
        echo = [(b"x-request-id", rid.encode())] if given else None
        status = 500  # what the server answers when the app fails before its answer
        t0 = time.perf_counter()  # a duration, not the present: the clock's business is the latter

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if echo:  # the proxy's id goes back with the answer, through the proxy to the client
                    message = {**message, "headers": [*message.get("headers", ()), *echo]}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            end = time.perf_counter()
            elapsed = end - t0
            route = self.route_of(scope, app)
            method = scope["method"]
            counted = _COUNTED.get((method, route, status))
            if counted is None:  # labels() takes a lock and builds its key: once per label set
                counted = _COUNTED[(method, route, status)] = REQUESTS.labels(method, route, str(status))
            counted.inc()
            timed = _TIMED.get((method, route))
            if timed is None:
                timed = _TIMED[(method, route)] = LATENCY.labels(method, route)
            timed.observe(elapsed)
            if app is not None and end - self.sampled_at >= SAMPLE_EVERY_S:
                self.sampled_at = end
                self.sampler.sample(app.state)
            if self.log_access:
                access_log.info(
                    "%s %s %s",
                    method,
                    route,
                    status,
                    extra={
                        "at": self.clock.now(),
                        "request_id": rid,
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
            request_id.reset(token)

    def _trusted(self, host: str) -> bool:
        known = self.trusted.get(host)
        if known is None:  # parsing the address costs more than the rest: once per peer
            if len(self.trusted) > 1024:
                self.trusted.clear()
            known = self.trusted[host] = _within(host, self.proxies)
        return known

    def _request_id(self, scope: Scope) -> tuple[str, bool]:
        """The request's id, and whether a trusted proxy gave it (it is then sent back in
        ``X-Request-ID``; an id made here is only logged, so that a direct answer is byte
        for byte the same whoever asks)."""
        client = scope.get("client")
        if client and self.proxies and self._trusted(client[0]):
            for name, value in scope["headers"]:
                if name == b"x-request-id":
                    if _REQUEST_ID.fullmatch(value):
                        return value.decode("ascii"), True
                    break
        return _new_id(), False

    def route_of(self, scope: Scope, app) -> str:
        """The template of the route that answered (or would have answered) the request."""
        route = scope.get("route")
        if route is not None:
            return getattr(route, "path", UNMATCHED)
        fast = scope.get("gridbranch.route")  # a fast path answers as its route would
        if fast is not None:
            return fast
        return _mount_of(scope, app)


def _mount_of(scope: Scope, app) -> str:
    """The template of the mount (static files) serving the request, else :data:`UNMATCHED`."""
    for candidate in getattr(app, "routes", ()):
        if isinstance(candidate, Mount) and candidate.matches(scope)[0] is Match.FULL:
            return f"{candidate.path}/{{path}}"
    return UNMATCHED


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the request id, and the
    fields a log call passes in ``extra`` (the access log's route, status, duration)."""

    FIELDS = ("method", "route", "status", "duration_ms")

    def format(self, record: logging.LogRecord) -> str:
        at = getattr(record, "at", None)
        if not isinstance(at, datetime):
            at = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "ts": at.isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get(),
        }
        for name in self.FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def log_config(level: str = "info") -> dict:
    """uvicorn's ``log_config`` for JSON lines on stderr (its loggers and ours)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    loggers = {
        name: {"handlers": ["json"], "level": level.upper(), "propagate": False} for name in ("uvicorn", "gridbranch")
    }
    loggers["uvicorn.error"] = {"level": level.upper()}
    loggers["uvicorn.access"] = {"handlers": ["json"], "level": "WARNING", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"json": handler},
        "loggers": loggers,
    }

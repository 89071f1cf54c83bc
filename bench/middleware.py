"""What the app's middleware costs the fast paths (issue 20 item 2, issue 17 item 7).

The fast paths now sit behind the middleware added to the app (the proxy headers, the
security headers, the rate limits; CORS when origins are configured). This drives two
apps on the Jinshui demo database through their ASGI interface in one process, one
request at a time on one event loop (uvloop, as uvicorn runs it) — no HTTP, no load
client, so the few microseconds are not lost in the noise of a shared machine:

- ``with``: the app as ``create_app`` builds it;
- ``without`` (the baseline): the same app with its added middleware removed before
  it starts, i.e. the fast paths in front of everything, as before.

Requests: anonymous single locates (``GET /v1/locate``) and warm public tiles
(``GET /tiles/grids/...``, the tile cache on), both answered by the fast paths — each
reads the data versions from PostgreSQL, a round trip that a loaded machine stretches
far beyond the middleware's cost; so also the middleware alone: the app's added
middleware around an ASGI app that answers at once, against that app bare. Blocks of
requests alternate between the two sides; the median block is reported, in
microseconds per request, and the ratio with/without.

Usage: .venv/bin/python bench/middleware.py [--blocks 30] [--per-block 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import demo_engine  # noqa: E402


def build(engine, middleware: bool):
    from geo_api.app import create_app
    from geo_api.settings import Settings

    settings = Settings.from_env(demo=True, gc_freeze=False)
    app = create_app(settings, engine=engine)
    if not middleware:
        app.user_middleware = []
    return app


def scope_of(path: str, query: bytes = b"") -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"accept-encoding", b"gzip"), (b"user-agent", b"bench")],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}


async def call(app, scope: dict) -> int:
    status = []

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(dict(scope, headers=list(scope["headers"])), receive, send)
    return status[0]


async def started(app):
    """Start ``app``'s lifespan; returns the coroutine function that ends it."""
    events: asyncio.Queue = asyncio.Queue()
    replies: asyncio.Queue = asyncio.Queue()
    await events.put({"type": "lifespan.startup"})
    task = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, events.get, replies.put)
    )
    reply = await replies.get()
    assert reply["type"] == "lifespan.startup.complete", reply

    async def stop():
        await events.put({"type": "lifespan.shutdown"})
        await replies.get()
        await task

    return stop


async def instant(scope, receive, send):
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", b"2"), (b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


def wrapped(app, inner):
    """``inner`` inside ``app``'s added middleware, as GridbranchAPI stacks it."""
    for cls, args, kwargs in reversed(app.user_middleware):
        inner = cls(inner, *args, **kwargs)
    return inner


async def measure(apps: dict, scopes: list[dict], blocks: int, per_block: int) -> dict[str, list[float]]:
    for app in apps.values():  # warm-up: indexes, cached tiles, prepared statements
        for scope in scopes:
            assert await call(app, scope) == 200, scope["path"]
    times = {name: [] for name in apps}
    clock = time.perf_counter
    for b in range(blocks):
        order = list(apps.items()) if b % 2 == 0 else list(reversed(apps.items()))
        for name, app in order:
            t0 = clock()
            for k in range(per_block):
                await call(app, scopes[k % len(scopes)])
            times[name].append((clock() - t0) / per_block * 1e6)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--per-block", type=int, default=200)
    args = parser.parse_args()
    import uvloop

    from tiles.tms import lonlat_to_tile

    engine = demo_engine()
    points = [(113.6849, 34.7979), (113.70, 34.78), (113.66, 34.80), (113.72, 34.81)]
    locates = [scope_of("/v1/locate", f"lon={x}&lat={y}".encode()) for x, y in points]
    tiles = []
    for x, y in points:
        t = lonlat_to_tile(x, y, 14)
        tiles.append(scope_of(f"/tiles/grids/{t.z}/{t.x}/{t.y}.mvt"))

    async def run():
        apps = {"with": build(engine, True), "without": build(engine, False)}
        stops = [await started(app) for app in apps.values()]
        out = {}
        for what, scopes in (("single locate (fast path)", locates), ("warm public tile (fast path)", tiles)):
            out[what] = await measure(apps, scopes, args.blocks, args.per_block)
        alone = {"with": wrapped(apps["with"], instant), "without": instant}
        out["the middleware alone"] = await measure(alone, locates + tiles, args.blocks, args.per_block * 10)
        for stop in stops:
            await stop()
        return out

    results = uvloop.run(run())
    print(
        f"in process, one request at a time, {args.blocks} alternating blocks of {args.per_block} requests; "
        "median block, µs per request"
    )
    print(f"  {'':<30} {'without':>9} {'with':>9} {'ratio':>7} {'added':>8}")
    for what, times in results.items():
        bare, full = statistics.median(times["without"]), statistics.median(times["with"])
        print(f"  {what:<30} {bare:9.1f} {full:9.1f} {full / bare:7.3f} {full - bare:+8.1f}")
    print(
        "without: the same app with its added middleware removed (the fast paths in front of everything); "
        "with: as create_app builds it (proxy headers, security headers, rate limits)"
    )
    engine.dispose()


if __name__ == "__main__":
    main()

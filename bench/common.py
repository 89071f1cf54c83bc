"""Shared pieces of the benchmarks: the demo database, a served app, a tiny HTTP client.

The benchmarks run against the Jinshui demo database (``gridbranch demo --no-serve``
loads it; ``GRIDBRANCH_DATABASE_URL`` points elsewhere) and serve the real app with
uvicorn in a child process (one worker unless asked for more) on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def demo_engine():
    """Engine on the demo database, loading the demo first if it is missing."""
    from geo_api.cli import _engine, load_demo_if_missing
    from geo_api.settings import Settings

    engine = _engine(Settings.from_env())
    load_demo_if_missing(engine)
    return engine


def server_url() -> str:
    """A URL on the server's maintenance database: ``GRIDBRANCH_TEST_DATABASE_URL``'s, else
    the private cluster's (started)."""
    from geo_api.settings import DatabaseSettings
    from layers import cluster as pg
    from layers import db

    given = os.environ.get("GRIDBRANCH_TEST_DATABASE_URL")
    if given:
        return db.database_url(DatabaseSettings(database_url=given), start=False)
    settings = DatabaseSettings()
    c = pg.Cluster(root=settings.db_dir, port=settings.db_port)
    pg.start(c)
    return c.url("postgres")


def scratch_database(server: str, name: str, pool: int = 2):
    """An engine on database ``name`` of ``server``, made afresh and migrated to head."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from layers import cluster as pg
    from layers import db, migrate

    pg.drop_database(server, name)
    admin = db.make_engine(server, 1)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = db.make_engine(make_url(server).set(database=name).render_as_string(hide_password=False), pool)
    migrate.upgrade(engine)
    return engine


def ensure_accounts(engine) -> None:
    """The demo accounts, made (with a random password) if the demo has none yet."""
    import secrets

    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from geo_api.accounts import ensure_demo_accounts

    with Session(engine) as s:
        if s.execute(text("SELECT 1 FROM users WHERE username = 'admin'")).first() is None:
            ensure_demo_accounts(s, secrets.token_urlsafe(16) + "-Aa1")
            s.commit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def listening(proc: subprocess.Popen, port: int, what: str, seconds: float = 90):
    """Wait until ``proc`` accepts connections on ``port`` (raise if it dies or times
    out), yield the port, and terminate ``proc`` on the way out."""
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{what} did not start") from None
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextmanager
def served(extra_env: dict[str, str] | None = None, workers: int = 1):
    """The real app served by ``gridbranch serve`` (``workers`` uvicorn processes) in a
    child process, demo settings, access log off (as behind a reverse proxy that logs);
    yields its port."""
    port = free_port()
    # the load comes from loopback, thousands of anonymous writes a second: exempt from
    # the rate limits (GRIDBRANCH_RATE_LIMIT_EXEMPT), which the benchmarks do not measure
    env = {
        **os.environ,
        "GRIDBRANCH_DEMO": "true",
        "GRIDBRANCH_ACCESS_LOG": "false",
        "PYTHONPATH": str(ROOT),
        "GRIDBRANCH_RATE_LIMIT_EXEMPT": '["127.0.0.1"]',
        **(extra_env or {}),
    }
    code = (
        "import sys; from geo_api.cli import main; "
        f"sys.exit(main(['serve', '--host', '127.0.0.1', '--port', '{port}', '--workers', '{workers}']))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    with listening(proc, port, "the app"):
        yield port


async def _request(reader, writer, raw: bytes) -> tuple[int, bytes]:
    writer.write(raw)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        k = k.strip().lower()
        if k == b"content-length":
            length = int(v)
        elif k == b"transfer-encoding" and b"chunked" in v.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        return status, body
    return status, await reader.readexactly(length)


async def _client(port: int, requests: list[bytes], latencies: list[float], statuses: list[int]):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for raw in requests:
            t0 = time.perf_counter()
            status, _ = await _request(reader, writer, raw)
            latencies.append(time.perf_counter() - t0)
            statuses.append(status)
    finally:
        writer.close()


def get_request(path: str, headers: dict[str, str] | None = None) -> bytes:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode()


def load(port: int, requests: list[bytes], clients: int) -> dict[str, float]:
    """Send ``requests`` over ``clients`` keep-alive connections (closed loop);
    returns throughput and latency percentiles in milliseconds."""
    per = [requests[i::clients] for i in range(clients)]
    latencies: list[float] = []
    statuses: list[int] = []

    async def run():
        await asyncio.gather(*(_client(port, p, latencies, statuses) for p in per))

    t0 = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - t0
    return summary(latencies, elapsed, statuses)


def summary(latencies: list[float], elapsed: float, statuses: list[int] | None = None) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)

    def pct(p):
        return ms[min(len(ms) - 1, int(round(p / 100 * (len(ms) - 1))))]

    out = {
        "n": len(ms),
        "per_s": len(ms) / elapsed if elapsed else float("inf"),
        "p50_ms": pct(50),
        "p95_ms": pct(95),
        "p99_ms": pct(99),
        "mean_ms": statistics.fmean(ms) if ms else 0.0,
    }
    if statuses is not None:
        out["non_2xx"] = sum(1 for s in statuses if not 200 <= s < 300)
    return out


def fmt(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v:,}" for k, v in d.items())


# wrk (Debian package ``wrk``): a load client in C, so that at thousands of requests a
# second the client does not take the CPU the server is measured on. Each thread cycles
# through the paths from its own offset; the ``done`` hook prints the figures.
_WRK_SCRIPT = """
local paths = {}
for line in io.lines(os.getenv("GRIDBRANCH_WRK_PATHS")) do paths[#paths + 1] = line end
local i = 0
local threads = 0
function setup(thread)
  thread:set("offset", threads * 7919)
  threads = threads + 1
end
function init(args)
  i = offset or 0
end
function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
function done(summary, latency, requests)
  io.write(string.format("WRK %d %d %d %d %d %d %d %f\\n", summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean))
end
"""


def wrk_available() -> bool:
    import shutil

    return shutil.which("wrk") is not None


def wrk_load(
    port: int, paths: list[str], clients: int, seconds: float, headers: dict[str, str] | None = None
) -> dict[str, float]:
    """``clients`` keep-alive connections (closed loop) on wrk's threads (at most 2) for
    ``seconds``, cycling through ``paths`` (with ``headers``); the same keys as :func:`load`."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        script, listing = Path(tmp) / "paths.lua", Path(tmp) / "paths.txt"
        script.write_text(_WRK_SCRIPT)
        listing.write_text("\n".join(paths) + "\n")
        out = subprocess.run(
            [
                "wrk",
                "-t",
                str(min(2, clients)),
                "-c",
                str(clients),
                "-d",
                f"{seconds:g}s",
                "-s",
                str(script),
                *(a for k, v in (headers or {}).items() for a in ("-H", f"{k}: {v}")),
                f"http://127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "GRIDBRANCH_WRK_PATHS": str(listing)},
        ).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK "))
    n, duration_us, non_2xx, errors, p50, p95, p99, mean = line.split()[1:]
    return {
        "n": int(n),
        "per_s": int(n) / (int(duration_us) / 1e6),
        "p50_ms": int(p50) / 1000,
        "p95_ms": int(p95) / 1000,
        "p99_ms": int(p99) / 1000,
        "mean_ms": float(mean) / 1000,
        "non_2xx": int(non_2xx) + int(errors),
    }


_BARE_APP = """
import os
BODY = open(os.environ["GRIDBRANCH_BARE_BODY"], "rb").read()
HEADERS = [(b"content-length", str(len(BODY)).encode()), (b"content-type", b"application/json")]
async def app(scope, receive, send):
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": BODY})
"""


@contextmanager
def bare_served(body: bytes, workers: int = 1):
    """uvicorn (as ``gridbranch serve`` runs it: httptools, uvloop, no access log)
    answering every request with ``body`` and no app at all: the HTTP stack's own
    ceiling on this machine. Yields its port."""
    import tempfile

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "bare_app.py").write_text(_BARE_APP)
        (Path(tmp) / "body").write_bytes(body)
        code = (
            "import uvicorn; uvicorn.run('bare_app:app', host='127.0.0.1', "
            f"port={port}, log_level='warning', access_log=False, workers={workers})"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code], cwd=tmp, env={**os.environ, "GRIDBRANCH_BARE_BODY": str(Path(tmp) / "body")}
        )
        with listening(proc, port, "the bare server"):
            yield port

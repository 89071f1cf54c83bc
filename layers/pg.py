"""PostgreSQL from the event loop: psycopg2 connections in asynchronous mode, pooled, so
that serving a tile needs no thread.

:class:`AsyncPool` hands out up to ``size`` connections (opened on demand, set up with
``setup`` — the tile statements are prepared there) and runs one statement at a time on
each. :class:`VersionReader` reads ``data_versions`` on a connection of its own and
shares reads among the requests that wait at the same time, while guaranteeing each
request a read that *started after it arrived*: a write committed before a request is
always seen by it. Under load that is one round trip per batch of requests.

psycopg2 asynchronous connections are in autocommit mode: every statement sees the data
committed when it starts.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import psycopg2
import psycopg2.extensions as pgx

from layers.clock import SETTING, SYSTEM

log = logging.getLogger("gridbranch.tiles")


class Connection(pgx.connection):
    """A psycopg2 connection that remembers how the event loop watches it: the reader
    stays registered between statements (registering and unregistering it around every
    statement costs more than a small tile's whole Python side)."""

    _loop: asyncio.AbstractEventLoop | None = None
    _fd: int = -1
    _waiter: asyncio.Future | None = None
    #: a clock other than the wall clock (layers.clock): every statement sets
    #: ``gridbranch.now`` first, as a bound engine's transactions do
    clock = None


def _readable(conn: Connection) -> None:
    waiter = conn._waiter
    if waiter is not None:
        conn._waiter = None
        if not waiter.done():
            waiter.set_result(None)
    else:  # nothing in flight (a notice, or the server closing an idle connection): stop
        _unwatch(conn)  # watching; the next statement watches again


def _unwatch(conn: Connection) -> None:
    loop, conn._loop = conn._loop, None
    if loop is not None and not loop.is_closed():
        try:
            loop.remove_reader(conn._fd)
        except Exception:  # noqa: BLE001 - the loop is going away
            pass


def close(conn) -> None:
    """Close ``conn``, unwatching it first (its descriptor may be reused at once)."""
    if isinstance(conn, Connection):
        _unwatch(conn)
        conn._waiter = None
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass


async def _wait(conn: Connection) -> None:
    """Drive ``conn`` until its current operation completes (poll / readiness)."""
    loop = asyncio.get_running_loop()
    while True:
        state = conn.poll()
        if state == pgx.POLL_OK:
            return
        if state == pgx.POLL_READ:
            if conn._loop is not loop:
                _unwatch(conn)
                conn._fd = conn.fileno()
                loop.add_reader(conn._fd, _readable, conn)
                conn._loop = loop
            ready = conn._waiter = loop.create_future()
            try:
                await ready
            finally:
                conn._waiter = None
        elif state == pgx.POLL_WRITE:
            ready = loop.create_future()
            fd = conn.fileno()
            loop.add_writer(fd, _set, ready)
            try:
                await ready
            finally:
                loop.remove_writer(fd)
        else:  # pragma: no cover - psycopg2 documents no other state
            raise psycopg2.OperationalError(f"unexpected poll state {state}")


def _set(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


async def connect(dsn: str, setup: Callable[[], list[str]] | None = None, clock=None):
    conn = psycopg2.connect(dsn, async_=True, connection_factory=Connection)
    conn.clock = None if clock is None or clock is SYSTEM else clock
    try:
        await _wait(conn)
        for sql in setup() if setup else ():
            await execute(conn, sql)
    except BaseException:
        close(conn)
        raise
    return conn


async def execute(conn, sql: str, params=None, fetch: str | None = None):
    """Run one statement; ``fetch`` "one" or "all" returns its rows."""
    cur = conn.cursor()
    clock = getattr(conn, "clock", None)
    if clock is not None:  # an ISO 8601 instant needs no quoting; the last result is the statement's
        sql = f"SELECT set_config('{SETTING}', '{clock.now().isoformat()}', false); " + sql
    try:
        cur.execute(sql, params)
        try:
            await _wait(conn)
        except asyncio.CancelledError:
            conn.cancel()  # do not leave the statement running; the connection is dropped
            raise
        if fetch == "one":
            return cur.fetchone()
        if fetch == "all":
            return cur.fetchall()
        return None
    finally:
        cur.close()


class AsyncPool:
    def __init__(self, dsn: str, size: int, setup: Callable[[], list[str]] | None = None, clock=None):
        self.dsn = dsn
        self.clock = clock
        self.size = max(1, size)
        self.setup = setup
        self._idle: list = []
        self._open = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or the app now runs on another loop
            self.close()
            self._loop = loop

    async def acquire(self):
        self._check_loop()
        if self._idle:
            return self._idle.pop()
        if self._open < self.size:
            self._open += 1
            try:
                return await connect(self.dsn, self.setup, self.clock)
            except BaseException:
                self._open -= 1
                self._wake()
                raise
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release(waiter.result())  # handed over just as we gave up
            raise
        if conn is None:  # a slot was freed: open a connection in it
            self._open += 1
            try:
                return await connect(self.dsn, self.setup, self.clock)
            except BaseException:
                self._open -= 1
                self._wake()
                raise
        return conn

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def release(self, conn, *, broken: bool = False) -> None:
        if broken or conn.closed:
            close(conn)
            self._open = max(0, self._open - 1)
            self._wake()
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    async def run(self, work):
        """``await work(conn)`` on a pooled connection; a connection that fails is dropped,
        and the work is tried once more on a new one if the first had gone bad."""
        for attempt in (1, 2):
            conn = await self.acquire()
            try:
                result = await work(conn)
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                self.release(conn, broken=True)
                if attempt == 2:
                    raise
                log.warning("tile connection lost, retrying on a new one: %s", exc)
                continue
            except BaseException:
                self.release(conn, broken=True)
                raise
            self.release(conn)
            return result

    def close(self) -> None:
        """Close the idle connections and forget the rest (at shutdown, or when the app
        moves to another event loop)."""
        for conn in self._idle:
            close(conn)
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.cancel()
        self._waiters.clear()
        self._open = 0
        self._loop = None


VERSIONS_SQL = "SELECT layer, version FROM layer_versions"


class VersionReader:
    """Coalesced reads of ``data_versions`` (see the module docstring).

    A request arriving while a read is in flight joins the next read, which starts when
    the current one ends; each request waits on a future of its own (a request that gives
    up cancels only its own wait). A read is bounded by ``timeout_s``; one whose
    connection had gone bad (a server restart) is made again once on a new connection,
    and a read that fails reaches every request waiting on it."""

    def __init__(self, dsn: str, timeout_s: float = 10.0, clock=None):
        self.dsn = dsn
        self.clock = clock
        self.timeout_s = timeout_s
        self._conn = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._current: list[asyncio.Future] | None = None
        self._next: list[asyncio.Future] | None = None
        self.reads = 0

    async def read(self) -> dict[str, int]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self.close()
            self._loop = loop
        waiter = loop.create_future()
        if self._current is None:
            self._current = [waiter]
            loop.create_task(self._run(self._current))
        elif self._next is None:
            self._next = [waiter]
        else:
            self._next.append(waiter)
        return await waiter

    async def _run(self, waiters: list[asyncio.Future]) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await self._query()
        except BaseException as exc:  # noqa: BLE001 - handed to every waiter
            self._drop()
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
                    waiter.exception()  # retrieved: the waiter may have gone
        else:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(result)
        finally:
            following, self._next = self._next, None
            self._current = following
            if following is not None:
                asyncio.get_running_loop().create_task(self._run(following))

    async def _query(self) -> dict[str, int]:
        while True:
            fresh = self._conn is None
            if fresh:
                self._conn = await connect(self.dsn, clock=self.clock)
            try:
                rows = await execute(self._conn, VERSIONS_SQL, fetch="all")
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                self._drop()
                if fresh:
                    raise
                log.warning("version reader's connection lost, reading on a new one: %s", exc)
                continue
            self.reads += 1
            return dict(rows)

    def _drop(self) -> None:
        if self._conn is not None:
            close(self._conn)
            self._conn = None

    def close(self) -> None:
        self._drop()
        self._current = self._next = None

"""The coalesced data-version reader (layers.pg.VersionReader) against a real PostgreSQL:
reads shared by the requests waiting together, each answered by a read that started
after it arrived, cancellation of one wait only, timeouts and lost connections."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg2
import pytest

from layers.db import libpq_dsn
from layers.pg import VersionReader
from tests.conftest import scratch_engine


@pytest.fixture(scope="module")
def dsn(server_url) -> Iterator[str]:
    with scratch_engine(server_url, "versions", migrated=True) as engine:
        yield libpq_dsn(engine.url)


def _sql(dsn: str, sql: str):
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def with_reader(check, *args, **kwargs) -> None:
    """``await check(reader)`` with a new VersionReader(*args, **kwargs), closed after."""

    async def main():
        reader = VersionReader(*args, **kwargs)
        try:
            await check(reader)
        finally:
            reader.close()

    asyncio.run(main())


def _bump(dsn: str) -> None:
    _sql(dsn, "UPDATE data_versions SET version = version + 1 WHERE layer = 'grids'")


def test_waiting_requests_share_reads_and_see_writes_committed_before_they_arrived(dsn):
    async def check(reader):
        before = (await reader.read())["grids"]
        reads = reader.reads
        first = asyncio.ensure_future(reader.read())
        await asyncio.sleep(0)  # its statement is sent; the write below commits after it
        _bump(dsn)
        # arrived after the commit, while the first read is in flight: answered by the next read
        second = await reader.read()
        assert second["grids"] == before + 1
        assert (await first)["grids"] in (before, before + 1)
        assert reader.reads == reads + 2
        # fifty requests at once: one read in flight, the other 49 share the next
        reads = reader.reads
        many = await asyncio.gather(*(reader.read() for _ in range(50)))
        assert all(v == second for v in many)
        assert reader.reads == reads + 2

    with_reader(check, dsn)


def test_a_request_that_gives_up_does_not_cancel_the_others(dsn):
    async def check(reader):
        expected = await reader.read()
        gone, staying = asyncio.ensure_future(reader.read()), asyncio.ensure_future(reader.read())
        later = asyncio.ensure_future(reader.read())  # joins the next read
        await asyncio.sleep(0)
        gone.cancel()
        assert await staying == expected and await later == expected
        assert gone.cancelled()

    with_reader(check, dsn)


def test_a_read_that_times_out_fails_its_waiters_and_the_next_read_works(dsn):
    async def check(reader):
        expected = await reader.read()
        locker = psycopg2.connect(dsn)
        try:
            with locker.cursor() as cur:  # holds the lock until rolled back
                cur.execute("LOCK TABLE data_versions IN ACCESS EXCLUSIVE MODE")
            waiters = [asyncio.ensure_future(reader.read()) for _ in range(3)]
            outcomes = await asyncio.gather(*waiters, return_exceptions=True)
            assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
        finally:
            locker.rollback()
            locker.close()
        assert await reader.read() == expected

    with_reader(check, dsn, timeout_s=0.3)


def test_a_lost_connection_is_replaced_within_the_same_read(dsn):
    async def check(reader):
        expected = await reader.read()
        pid = reader._conn.get_backend_pid()
        _sql(dsn, f"SELECT pg_terminate_backend({pid})")
        assert await reader.read() == expected  # no error reaches the request
        assert reader._conn.get_backend_pid() != pid

    with_reader(check, dsn)


def test_a_read_that_cannot_connect_fails_every_waiter(dsn):
    async def check(reader):
        outcomes = await asyncio.gather(*(reader.read() for _ in range(3)), return_exceptions=True)
        assert all(isinstance(o, psycopg2.OperationalError) for o in outcomes), outcomes

    with_reader(check, dsn.rsplit("/", 1)[0] + "/no_such_database")

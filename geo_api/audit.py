"""Recording the answers that carry personal data (:mod:`layers.audit`).

A route whose answer holds a member's name, phone or residence, or an event reporter's
contact, calls :func:`record` (sync routes) or :func:`record_async` (async ones) with
the records it answers; refusals never reach it (they are raised before), and anonymous
callers never get such answers. A route does so by declaring the dependency
:data:`Audited` (tests/geo_api/test_audit.py holds every route that can carry personal
data to it).

Rows are written by one :class:`AuditWriter` per app: a thread that takes whatever rows
are waiting and appends them in one statement and one transaction, so a request pays for
putting its row on a queue, not for a write of its own. ``GRIDBRANCH_AUDIT_WAIT`` makes
each request wait until its row is committed (group commit: the rows of concurrent
requests still share one transaction) — no answer then leaves before its row is
durable; bench/audit.py measures both.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from concurrent.futures import Future
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo_api.deps import Caller, get_caller
from layers import audit as audit_log
from layers.audit import Entry
from layers.caches import Caches
from tiles.layers import member_ids_sql

log = logging.getLogger("gridbranch.audit")


class AuditWriter:
    """Appends :class:`layers.audit.Entry` rows in groups on a thread of its own.

    ``submit`` queues a row and returns a future done once the row is committed (or
    failed: then it is logged, loudly, with the rows lost). ``flush`` waits for every row
    queued so far; ``close`` flushes and stops the thread."""

    def __init__(self, engine, *, batch_max: int = 500, linger_s: float = 0.0):
        self.engine = engine
        self.batch_max = batch_max
        #: how long the first row of a group waits for others (none: written at once); a
        #: waiting request or a flush cuts it short
        self.linger_s = linger_s
        self._hurry = 0
        self._queue: deque[tuple[Entry, Future]] = deque()
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._busy = 0  # rows taken from the queue and not yet committed
        self.written = 0
        self.failed = 0

    def submit(self, entry: Entry) -> Future:
        future: Future = Future()
        with self._ready:
            if self._closed:
                raise RuntimeError("the audit writer is closed")
            self._queue.append((entry, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="gridbranch-audit", daemon=True)
                self._thread.start()
            if len(self._queue) == 1 or len(self._queue) >= self.batch_max:
                self._ready.notify_all()  # the first of a group, or a full one: others need no wake-up
        return future

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closed:
                    self._ready.wait()
                if not self._queue:
                    return  # closed and drained
                if self.linger_s > 0:
                    # fewer, larger groups: fewer transactions, and fewer hand-offs of
                    # the interpreter lock between this thread and the requests'
                    self._ready.wait_for(
                        lambda: self._closed or self._hurry or len(self._queue) >= self.batch_max, timeout=self.linger_s
                    )
                group = [self._queue.popleft() for _ in range(min(self.batch_max, len(self._queue)))]
                self._busy = len(group)
            try:
                with Session(self.engine) as session:
                    audit_log.write(session, [e for e, _ in group])
                    session.commit()
                outcome: BaseException | None = None
                self.written += len(group)
            except Exception as exc:  # noqa: BLE001 - the thread must live on; the loss is logged
                log.error("audit: %d rows could not be written: %s", len(group), exc)
                self.failed += len(group)
                outcome = exc
            for _, future in group:
                if outcome is None:
                    future.set_result(None)
                else:
                    future.set_exception(outcome)
            with self._ready:
                self._busy = 0
                self._ready.notify_all()

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until every row queued so far is written (or failed)."""
        with self._ready:
            self._hurry += 1
            self._ready.notify_all()
            try:
                self._ready.wait_for(lambda: not self._queue and not self._busy, timeout=timeout)
            finally:
                self._hurry -= 1

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)


def writer_of(app) -> AuditWriter | None:
    """The app's audit writer (None with ``GRIDBRANCH_AUDIT_ENABLED=false``), created
    on first use on the app's engine."""
    settings = app.state.settings.audit
    if not settings.enabled:
        return None
    writer = getattr(app.state, "audit_writer", None)
    if writer is None:
        writer = app.state.audit_writer = AuditWriter(
            app.state.engine, batch_max=settings.batch_max, linger_s=0.0 if settings.wait else settings.linger_ms / 1000
        )
    return writer


class Auditor:
    """What a route records its personal answer through (the :data:`Audited`
    dependency): the caller, the route and the request, ready for :meth:`record`."""

    def __init__(self, request: Request, caller):
        self.request = request
        self.caller = caller

    def entry(self, fields, *, members=(), events=(), detail=None, status: int = 200, resolve=None) -> Entry | None:
        caller = self.caller
        if caller is None or caller.anonymous or not fields:
            return None
        request = self.request
        route = request.scope.get("route")
        query = request.url.query
        return Entry(
            actor=caller.username,
            role=caller.role,
            area=caller.area_code,
            method=request.method,
            endpoint=getattr(route, "path", request.url.path),
            path=request.url.path + (f"?{query}" if query else ""),
            status=status,
            fields=tuple(f for f in audit_log.FIELDS if f in set(fields)),
            member_ids=[int(m) for m in members if m is not None],
            event_ids=[int(e) for e in events if e is not None],
            detail=detail,
            resolve=resolve,
            at=request.app.state.clock.now(),
        )  # when answered, not when written

    def _submit(self, entry: Entry | None) -> Future | None:
        if entry is None:
            return None
        writer = writer_of(self.request.app)
        return writer.submit(entry) if writer is not None else None

    def record(self, fields, *, members=(), events=(), detail=None, status: int = 200) -> None:
        """Record that the answer carries ``fields`` of ``members`` / ``events`` (from a
        sync route: waits for the write only with ``GRIDBRANCH_AUDIT_WAIT``)."""
        future = self._submit(self.entry(fields, members=members, events=events, detail=detail, status=status))
        if future is not None and self.request.app.state.settings.audit.wait:
            future.result()

    async def record_async(
        self, fields, *, members=(), events=(), detail=None, status: int = 200, resolve=None
    ) -> None:
        future = self._submit(
            self.entry(fields, members=members, events=events, detail=detail, status=status, resolve=resolve)
        )
        if future is not None and self.request.app.state.settings.audit.wait:
            await asyncio.wrap_future(future)


_TILE_MEMBERS_SQL = text(member_ids_sql())


def tile_members(caches: Caches, tile, limit: int, scope: str, etag: str | None):
    """A resolver (layers.audit.Entry.resolve) of the members whose residences a
    ``members`` tile at ``tile`` (z/x/y) for area ``scope`` holds. Kept by the tile's
    ETag (``caches.tile_members``; a tile's content is a function of its ETag: the data
    versions, the caller's area, the settings), so that a tile served again from the
    cache is not looked into again."""
    key = (etag or "").strip('"').removesuffix("-gz")

    def resolve(session: Session) -> list[int]:
        def read() -> list[int]:
            return list(
                session.execute(
                    _TILE_MEMBERS_SQL, {"p1": tile.z, "p2": tile.x, "p3": tile.y, "p4": limit, "p6": scope}
                ).scalar()
            )

        return caches.tile_members.memo(key, read) if etag else read()

    return resolve


async def _auditor(request: Request, caller: Annotated[Caller, Depends(get_caller)]) -> Auditor:
    # the caller as the route's access resolved it (FastAPI caches it per request); async,
    # so that it costs no thread hand-off (the tile route is async throughout)
    return Auditor(request, caller)


#: A route's auditor; declare it to say the route can answer personal data.
Audited = Annotated[Auditor, Depends(_auditor)]

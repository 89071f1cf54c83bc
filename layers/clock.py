"""The one clock the service reads time from.

Everything that depends on the present — the events' time limits and their warning and
overdue flags, the tiles and ETags drawn from them, default date ranges, token expiry,
the timestamps that writes record — reads it from the :class:`Clock` bound to the
database engine it works on. Production binds nothing and gets :data:`SYSTEM`, the
wall clock, at no cost. Tests bind a :class:`FrozenClock`, so that the suite gives the
same answer at whatever instant it runs.

PostgreSQL sees the same clock through ``gridbranch_now()`` (migration 0010), which the
queries and the columns' defaults use instead of ``now()``: it answers the transaction's
``gridbranch.now`` setting when one is set and ``now()`` otherwise. An engine bound to a
clock other than the wall clock sets ``gridbranch.now`` at the start of every
transaction and savepoint (:func:`bind`).
"""

from __future__ import annotations

import threading
import weakref
from datetime import UTC, datetime, timedelta
from typing import Protocol

from sqlalchemy import event

#: The PostgreSQL setting ``gridbranch_now()`` reads (transaction-local).
SETTING = "gridbranch.now"


class Clock(Protocol):
    def now(self) -> datetime:
        """The present, timezone-aware."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM = SystemClock()


class FrozenClock:
    """A clock that stands at one instant until it is moved (tests, simulations)."""

    def __init__(self, at: datetime):
        self._lock = threading.Lock()
        self._at = _aware(at)

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def set(self, at: datetime) -> None:
        with self._lock:
            self._at = _aware(at)

    def advance(self, delta: timedelta | None = None, **kwargs) -> datetime:
        """Move the clock on by ``delta`` (or ``timedelta(**kwargs)``); returns the new instant."""
        with self._lock:
            self._at = self._at + (delta if delta is not None else timedelta(**kwargs))
            return self._at

    def __repr__(self) -> str:
        return f"FrozenClock({self._at.isoformat()})"


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"a clock needs a timezone-aware instant, not {at!r}")
    return at


_bound: weakref.WeakKeyDictionary[object, Clock] = weakref.WeakKeyDictionary()


def bind(engine, clock: Clock) -> None:
    """Make ``clock`` the clock of ``engine``: what :func:`clock_of` answers for it, and,
    unless it is the wall clock, what ``gridbranch_now()`` answers in every transaction
    begun on it. Binding an engine twice replaces its clock."""
    engine = getattr(engine, "sync_engine", engine)
    first = engine not in _bound
    _bound[engine] = clock
    if first:
        event.listen(engine, "begin", _set_transaction_clock)
        # a savepoint reads the clock again: tests hold one outer transaction open and
        # move the clock between the savepoints their sessions commit
        event.listen(engine, "savepoint", lambda conn, name: _set_transaction_clock(conn))


def _set_transaction_clock(conn) -> None:
    clock = _bound.get(conn.engine, SYSTEM)
    if clock is SYSTEM:
        return
    conn.exec_driver_sql(
        "SELECT set_config(%(name)s, %(at)s, true)",
        {"name": SETTING, "at": clock.now().isoformat()},
    )


def clock_of(bind_) -> Clock:
    """The clock of an engine, connection or session (the wall clock unless one was bound)."""
    if bind_ is None:
        return SYSTEM
    get_bind = getattr(bind_, "get_bind", None)
    if get_bind is not None:  # a Session
        bind_ = get_bind()
    engine = getattr(bind_, "engine", bind_)
    engine = getattr(engine, "sync_engine", engine)
    try:
        return _bound.get(engine, SYSTEM)
    except TypeError:  # not weak-referenceable: nothing can be bound to it
        return SYSTEM


def now_of(bind_) -> datetime:
    """The present by the clock of an engine, connection or session."""
    return clock_of(bind_).now()


#: SQL for the present as the database sees it for this transaction.
NOW_SQL = "gridbranch_now()"

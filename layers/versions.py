"""Per-layer data versions (migration 0002) as caches key on them: ``layer_versions``
(migration 0018), the write counters plus what the clock brought into force; and
:class:`VersionedCache`, the one cache of values computed from the database."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from sqlalchemy import text
from sqlalchemy.orm import Session


def data_versions(session: Session, layers: list[str] | None = None) -> dict[str, int]:
    """Current version of each layer (all layers when ``layers`` is None)."""
    if layers is None:
        return dict(session.execute(text("SELECT layer, version FROM layer_versions")).all())
    return dict(
        session.execute(
            text("SELECT layer, version FROM layer_versions WHERE layer = ANY(:l)"), {"l": list(layers)}
        ).all()
    )


def database_url(session: Session) -> str:
    """The URL (password hidden) of the database ``session`` talks to: with the database's
    oid and data versions, what caches that may see several databases key on."""
    return session.get_bind().engine.url.render_as_string(hide_password=True)  # an Engine's engine is itself


V = TypeVar("V")


class VersionedCache(Generic[V]):
    """Values filed under a key (what they are of: thresholds, a metric, a cell…) and the
    versions they were computed at (the database and the data versions of ``layers``),
    the ``keep`` most recently used of them.

    Every hand-written cache of the service is one of these, held by the app's
    :class:`layers.caches.Caches` (no module-level cache: two apps, or two databases,
    never share one by accident):

    - :meth:`get` reads the versions itself — the database's URL and oid (a database
      dropped and created again under the same name has another oid; data versions
      come from a sequence and never repeat within one) and the versions of ``layers``
      — before the value and again after it: a value is filed only when no write came
      between, so it is never filed under versions older than its data; one read across
      a write is served to its caller but not kept (or read again, ``tries`` times);
    - :meth:`lookup`, :meth:`put` and :meth:`newest` serve callers that read the
      versions their own way (a version reader of the fast paths, an epoch of history);
    - :meth:`memo` holds values that depend on no data (``layers`` empty: the boundary
      of an H3 cell, a polygon's label point by its WKB digest), bounded all the same.

    With ``exclusive`` one value is computed at a time (what is costly to build — a grid
    index, the coverage model — is built once while the requests asking for it wait)."""

    def __init__(self, *layers: str, keep: int = 4, exclusive: bool = False) -> None:
        self.layers = layers
        self.keep = keep
        self._key_sql = text(
            "SELECT (SELECT oid FROM pg_database WHERE datname = current_database())"
            + "".join(f", (SELECT version FROM layer_versions WHERE layer = '{k}')" for k in layers)
        )
        #: (key, versions) → (filing number, value), least recently used first
        self._entries: OrderedDict[tuple[Hashable, tuple], tuple[int, V]] = OrderedDict()
        self._filed = 0
        self._lock = threading.Lock()
        self._build_lock = threading.Lock() if exclusive else None
        #: values computed by :meth:`get` and :meth:`memo` (what tests and benches count)
        self.computed = 0

    def __len__(self) -> int:
        return len(self._entries)

    def read_versions(self, session: Session) -> tuple:
        """(database URL, database oid, the version of each of ``layers``) as seen now."""
        return (database_url(session), *session.execute(self._key_sql).one())

    def lookup(self, key: Hashable, versions: tuple) -> V | None:
        """The value filed under ``key`` at exactly ``versions``, or None."""
        with self._lock:
            found = self._entries.get((key, versions))
            if found is None:
                return None
            self._entries.move_to_end((key, versions))
            return found[1]

    def put(self, key: Hashable, versions: tuple, value: V) -> None:
        """File ``value`` under ``key`` at ``versions`` (not when a version is unknown)."""
        if None in versions:
            return
        with self._lock:
            self._filed += 1
            self._entries.pop((key, versions), None)
            self._entries[(key, versions)] = (self._filed, value)
            while len(self._entries) > self.keep:
                self._entries.popitem(last=False)

    def newest(self, key: Hashable, at_least: tuple | None = None) -> V | None:
        """The value last filed under ``key`` whose versions are each at least
        ``at_least`` (versions only grow: such a value is as fresh as asked for, or
        fresher), at any versions when ``at_least`` is None; None when there is none."""
        if at_least is not None and None in at_least:
            return None
        best: tuple[int, V] | None = None
        with self._lock:
            for (k, versions), filed in self._entries.items():
                if k != key or (best is not None and filed[0] < best[0]):
                    continue
                if at_least is None or all(a >= v for a, v in zip(versions, at_least)):
                    best = filed
        return None if best is None else best[1]

    def get(
        self,
        session: Session,
        compute: Callable[[Session], V],
        key: Hashable = (),
        *,
        versions: Callable[[Session], tuple] | None = None,
        tries: int = 1,
    ) -> V:
        """The value of ``key`` at the versions ``session`` sees (:meth:`read_versions`,
        or ``versions``), computed by ``compute(session)`` when not held (see the class
        docstring)."""
        read = versions or self.read_versions
        at = read(session)
        found = self.lookup(key, at)
        if found is not None:
            return found
        if self._build_lock is None:
            return self._compute(session, compute, key, read, at, tries)
        with self._build_lock:
            at = read(session)
            found = self.lookup(key, at)
            if found is not None:
                return found
            return self._compute(session, compute, key, read, at, tries)

    def _compute(self, session, compute, key, read, at: tuple, tries: int) -> V:
        for _ in range(tries):
            value = compute(session)
            self.computed += 1
            after = read(session)
            if after == at:
                self.put(key, at, value)
                return value
            at = after  # a write landed while reading: read again (or serve it unfiled)
        return value

    def memo(self, key: Hashable, compute: Callable[[], V]) -> V:
        """The value of ``key`` (one that depends on no data version), computed by
        ``compute()`` when not held."""
        found = self.lookup(key, ())
        if found is None:
            found = compute()
            self.computed += 1
            self.put(key, (), found)
        return found

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

"""Per-layer data versions (migration 0002) as caches key on them: ``layer_versions``
(migration 0018), the write counters plus what the clock brought into force."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

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
    oid and data versions, what process-level caches of several databases key on."""
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    return engine.url.render_as_string(hide_password=True)


T = TypeVar("T")


class VersionedCache:
    """Values computed from the database, kept per database and the data versions of the
    ``layers`` they are computed from (the ``keep`` latest filed). The versions are read
    before the value and again after it: a value is filed only when no write came
    between, so it is never filed under versions older than its data; one read across a
    write is simply not kept."""

    keep = 4

    def __init__(self, *layers: str) -> None:
        self.layers = layers
        self._key_sql = text(
            "SELECT (SELECT oid FROM pg_database WHERE datname = current_database())"
            + "".join(f", (SELECT version FROM layer_versions WHERE layer = '{k}')" for k in layers)
        )
        self._entries: dict[tuple, object] = {}
        self._lock = threading.Lock()
        self.computed = 0

    def get(self, session: Session, compute: Callable[[Session], T]) -> T:
        key = (database_url(session), *session.execute(self._key_sql).one())
        found = self._entries.get(key)
        if found is not None:
            return found  # type: ignore[return-value]
        value = compute(session)
        self.computed += 1
        if None not in key and (database_url(session), *session.execute(self._key_sql).one()) == key:
            with self._lock:
                self._entries.pop(key, None)
                self._entries[key] = value
                while len(self._entries) > self.keep:
                    self._entries.pop(next(iter(self._entries)))
        return value

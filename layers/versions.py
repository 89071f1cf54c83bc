"""Per-layer data versions (see migration 0002): what caches key on."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from layers.models import DataVersion


def data_versions(session: Session, layers: list[str] | None = None) -> dict[str, int]:
    """Current version of each layer (all layers when ``layers`` is None)."""
    stmt = select(DataVersion.layer, DataVersion.version)
    if layers is not None:
        stmt = stmt.where(DataVersion.layer.in_(layers))
    return dict(session.execute(stmt).all())


def database_url(session: Session) -> str:
    """The URL (password hidden) of the database ``session`` talks to: with the database's
    oid and data versions, what process-level caches of several databases key on."""
    bind = session.get_bind()
    engine = getattr(bind, "engine", bind)
    return engine.url.render_as_string(hide_password=True)

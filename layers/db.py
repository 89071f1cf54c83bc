"""Engines and the database URL: the given ``GRIDBRANCH_DATABASE_URL`` or the private cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

from layers import cluster as pgcluster

if TYPE_CHECKING:
    from geo_api.settings import DatabaseSettings


def private_cluster(db: "DatabaseSettings") -> pgcluster.Cluster:
    return pgcluster.Cluster(root=db.db_dir, port=db.db_port)


def database_url(db: "DatabaseSettings", *, start: bool = True) -> str:
    """The URL to use. With no ``database_url`` set, starts the private cluster (if
    ``start``) and creates the database in it."""
    if db.database_url:
        url = db.database_url
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            url = "postgresql+psycopg2://" + url.split("://", 1)[1]
        return url
    c = private_cluster(db)
    if start:
        pgcluster.start(c)
    return pgcluster.ensure_database(c, db.db_name)


def make_engine(url: str, pool_size: int = 10) -> Engine:
    # no pre-ping (a round trip per checkout); connections are recycled instead
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800)

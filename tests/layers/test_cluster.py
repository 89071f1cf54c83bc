"""The private cluster: started by the project, loopback only, idempotent."""

import os

import pytest
from sqlalchemy import text

from geo_api.settings import DatabaseSettings
from layers import cluster as pg
from layers import db

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("GRIDBRANCH_TEST_DATABASE_URL")), reason="an external PostGIS is given; no private cluster"
)


def test_start_is_idempotent_and_loopback_only(server_url):
    settings = DatabaseSettings()
    c = db.private_cluster(settings)
    assert pg.is_running(c)
    assert pg.start(c).startswith("already running")
    engine = db.make_engine(server_url, 1)
    with engine.connect() as conn:
        assert conn.execute(text("SHOW listen_addresses")).scalar() == "127.0.0.1"
        assert conn.execute(text("SHOW password_encryption")).scalar() == "scram-sha-256"
    engine.dispose()
    assert oct(c.password_file.stat().st_mode)[-3:] == "600"


def test_given_url_starts_nothing():
    url = db.database_url(DatabaseSettings(database_url="postgresql://u:p@db.example:5432/x"))
    assert url == "postgresql+psycopg2://u:p@db.example:5432/x"

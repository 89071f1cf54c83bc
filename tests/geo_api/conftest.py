"""Fixtures shared by the API tests (their helpers are in tests/factories)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from geo_api.app import create_app
from tests.conftest import make_settings
from tests.factories.events import events_api_world


@pytest.fixture
def events_world(empty_db, empty_client):
    """The events world over HTTP (:func:`tests.factories.events.events_api_world`)."""
    return events_api_world(empty_db, empty_client)


@pytest.fixture(scope="module")
def sweep_client(demo_engine):
    """An app on the demo data in one transaction rolled back at the end; its session is
    rolled back to its savepoint after every request (:func:`tests.factories.api.send`), so a request that
    fails in PostgreSQL leaves the next one unharmed, as a session per request would."""
    from sqlalchemy.orm import Session

    conn = demo_engine.connect()
    outer = conn.begin()
    session = Session(bind=conn, join_transaction_mode="create_savepoint", expire_on_commit=False)
    settings = make_settings()
    settings.events.fast_path = False
    # hundreds of anonymous writes in one app while the tests' clock stands still: no
    # bucket would refill, and the sweep is for what the routes do with hostile input
    # (the rate limits have their own tests, tests/geo_api/test_middleware.py)
    settings.rate_limit.enabled = False
    app = create_app(settings, engine=demo_engine)
    app.state.bound_session = session  # geo_api.deps.bound_session
    try:
        with TestClient(app, raise_server_exceptions=False) as c:
            c.session = session
            yield c
    finally:
        session.close()
        outer.rollback()
        conn.close()

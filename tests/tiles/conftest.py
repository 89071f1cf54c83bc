"""Tile test fixtures: one app per module on the demo database (tiles only read, so no
rollback is needed; tests that write commit and undo their writes). The helpers that
decode tiles back to WGS84 are in tests/factories/tiles.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.factories.tiles import make_client


@pytest.fixture(scope="module")
def tiles_client(demo_engine) -> Iterator[TestClient]:
    with make_client(demo_engine) as c:
        yield c

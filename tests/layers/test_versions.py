"""The cache of values computed from the database per data versions (layers.versions)."""

from __future__ import annotations

from sqlalchemy import text

from layers.versions import VersionedCache


def bump(session, layer: str) -> None:
    session.execute(
        text("UPDATE data_versions SET version = nextval('data_version_seq') WHERE layer = :l"), {"l": layer}
    )


def test_values_are_kept_per_versions_of_their_layers(empty_db):
    cache = VersionedCache("grids", "residences")
    computed = []

    def compute(session):
        computed.append(1)
        return len(computed)

    assert cache.get(empty_db, compute) == 1
    assert cache.get(empty_db, compute) == 1  # kept
    bump(empty_db, "members")  # another layer: kept
    assert cache.get(empty_db, compute) == 1
    bump(empty_db, "residences")  # one of its layers: computed again
    assert cache.get(empty_db, compute) == 2 and cache.get(empty_db, compute) == 2


def test_a_value_read_across_a_write_is_not_kept(empty_db):
    cache = VersionedCache("grids")
    computed = []

    def compute_while_written(session):
        computed.append(1)
        if len(computed) == 1:
            bump(session, "grids")  # a write lands while the value is read
        return len(computed)

    assert cache.get(empty_db, compute_while_written) == 1  # served to its caller …
    assert cache.get(empty_db, compute_while_written) == 2  # … but not filed
    assert cache.get(empty_db, compute_while_written) == 2 and cache.computed == 2


def test_databases_do_not_share_values(empty_db, demo_db):
    cache = VersionedCache("grids")
    assert cache.get(empty_db, lambda s: "empty") == "empty"
    assert cache.get(demo_db, lambda s: "demo") == "demo"
    assert cache.get(empty_db, lambda s: "not asked") == "empty" and cache.get(demo_db, lambda s: "no") == "demo"

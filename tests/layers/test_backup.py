"""Backups and point-in-time restores of a private cluster (layers.backup), on a cluster
of the test's own: every write acknowledged before the chosen point is in the restored
cluster, none after it; the source runs on untouched; bad targets and a non-empty
destination are refused."""

from __future__ import annotations

import shutil
from datetime import datetime

import psycopg2
import pytest

from layers import backup
from layers import cluster as pg
from layers.errors import InvalidInput


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _connect(c: pg.Cluster, dbname: str = "shop"):
    conn = psycopg2.connect(
        host="127.0.0.1", port=c.port, user="postgres", password=c.password_file.read_text().strip(), dbname=dbname
    )
    conn.autocommit = True
    return conn


def _ids(c: pg.Cluster) -> list[int]:
    with _connect(c) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM acknowledged ORDER BY id")
        return [r[0] for r in cur.fetchall()]


def _write(c: pg.Cluster, ids) -> None:
    conn = _connect(c)
    try:
        with conn.cursor() as cur:
            for i in ids:  # each its own transaction, committed: acknowledged
                cur.execute("INSERT INTO acknowledged (id) VALUES (%s)", (i,))
    finally:
        conn.close()


@pytest.fixture
def clusters(tmp_path):
    made: list[pg.Cluster] = []

    def make(name: str) -> pg.Cluster:
        c = pg.Cluster(root=tmp_path / name, port=_free_port())
        made.append(c)
        return c

    yield make
    for c in made:
        pg.stop(c)
        shutil.rmtree(c.root, ignore_errors=True)


def _cli(monkeypatch, c: pg.Cluster, *argv: str) -> str:
    import contextlib
    import io

    from geo_api.cli import main

    monkeypatch.delenv("GRIDBRANCH_DATABASE_URL", raising=False)
    monkeypatch.setenv("GRIDBRANCH_DB_DIR", str(c.root))
    monkeypatch.setenv("GRIDBRANCH_DB_PORT", str(c.port))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0
    return out.getvalue()


def test_a_backup_restores_to_a_named_point_and_to_the_end(clusters, monkeypatch):
    source = clusters("source")
    pg.start(source)
    assert not backup.archiving(source)  # off until a backup asks for it
    pg.ensure_database(source, "shop")
    with _connect(source) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE acknowledged (id integer PRIMARY KEY)")
    _write(source, range(1, 4))

    assert "verified" in _cli(monkeypatch, source, "backup")
    (taken,) = backup.list_backups(source)
    assert backup.archiving(source) and taken.bytes > 1_000_000 and taken.start_lsn
    assert taken.label in _cli(monkeypatch, source, "backup", "--list")
    _write(source, range(4, 7))
    assert "restore point before-7 at " in _cli(monkeypatch, source, "backup", "--mark", "before-7")
    _write(source, range(7, 10))
    backup.wait_archived(source)

    at_point = clusters("at-point")
    out = _cli(
        monkeypatch,
        source,
        "restore",
        "--into",
        str(at_point.root),
        "--port",
        str(at_point.port),
        "--to-point",
        "before-7",
    )
    assert "running" in out
    assert _ids(at_point) == [1, 2, 3, 4, 5, 6]
    with _connect(at_point) as conn, conn.cursor() as cur:  # promoted: it takes writes
        cur.execute("INSERT INTO acknowledged (id) VALUES (100)")
        cur.execute("SHOW archive_mode")
        assert cur.fetchone()[0] == "off"  # a restored copy never writes into the source's archive

    at_end = clusters("at-end")
    backup.restore(source, taken, at_end, backup.Target())
    assert _ids(at_end) == list(range(1, 10))
    assert _ids(source) == list(range(1, 10))  # the source ran on, untouched

    with pytest.raises(InvalidInput):  # never over an existing cluster
        backup.restore(source, taken, at_end, backup.Target())


def test_targets_and_names_are_checked():
    with pytest.raises(InvalidInput, match="UTC offset"):
        backup.Target(time=datetime(2026, 12, 4, 10, 0)).settings()
    with pytest.raises(InvalidInput, match="one recovery target"):
        backup.Target(name="a", lsn="0/1").settings()
    with pytest.raises(InvalidInput, match="LSN"):
        backup.Target(lsn="12345").settings()
    assert backup.Target(lsn="0/16B3748").settings() == ["recovery_target_lsn = '0/16B3748'"]
    with pytest.raises(InvalidInput):
        backup.mark(pg.Cluster(root="/nonexistent", port=1), "x'; DROP")

"""Backups of the private cluster and restores to a point in time, with PostgreSQL's own
tools: continuous WAL archiving (``archive_command``), base backups by ``pg_basebackup``
checked by ``pg_verifybackup``, and recovery (``restore_command``, ``recovery_target_*``)
into a new data directory, never over the running cluster.

Archiving is off until the first backup asks for it: turning it on needs a restart of
the cluster, and a cluster that is never backed up (tests, the demo) should not collect
WAL. Named restore points (``pg_create_restore_point``) make a target that needs no
clock; a target time is a commit timestamp of the server's.

A database given by ``GRIDBRANCH_DATABASE_URL`` is its operator's to back up: these
functions work on a :class:`~layers.cluster.Cluster` only.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from layers import cluster as pg
from layers.clock import SYSTEM
from layers.errors import ConfigError, InvalidInput

_CONF = "gridbranch-archive.conf"
_INCLUDE = f"include_if_exists = '{_CONF}'"


def archive_dir(cluster: pg.Cluster) -> Path:
    return cluster.root / "wal-archive"


def backups_dir(cluster: pg.Cluster) -> Path:
    return cluster.root / "backups"


def _postgres_dir(path: Path, mode: int = 0o700) -> Path:
    """``path`` created (with its parents) and owned by the cluster's owner."""
    uid, gid = pg._owner_ids()
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def _query(cluster: pg.Cluster, sql: str) -> str:
    import psycopg2

    password = cluster.password_file.read_text().strip()
    conn = psycopg2.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=password, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
            return "" if row is None or row[0] is None else str(row[0])
    finally:
        conn.close()


def archiving(cluster: pg.Cluster) -> bool:
    """Whether the running cluster archives its WAL."""
    return _query(cluster, "SHOW archive_mode") == "on"


def enable_archiving(cluster: pg.Cluster) -> bool:
    """Turn WAL archiving on (into :func:`archive_dir`), restarting the cluster when it
    was off; True when it changed anything."""
    pg.start(cluster)
    archive = _postgres_dir(archive_dir(cluster))
    conf = cluster.data_dir / _CONF
    # cp refuses to overwrite: an archived segment is never replaced by another
    wanted = (
        "# gridbranch: continuous archiving (gridbranch backup)\n"
        "archive_mode = on\n"
        f'archive_command = \'test ! -f "{archive}/%f" && cp "%p" "{archive}/%f"\'\n'
        "archive_timeout = 300\n"
    )
    main_conf = cluster.data_dir / "postgresql.conf"
    changed = not conf.exists() or conf.read_text() != wanted or _INCLUDE not in main_conf.read_text()
    if changed:
        conf.write_text(wanted)
        uid, gid = pg._owner_ids()
        os.chown(conf, uid, gid)
        if _INCLUDE not in main_conf.read_text():
            with open(main_conf, "a") as handle:
                handle.write(f"\n{_INCLUDE}\n")
    if not archiving(cluster):
        pg.stop(cluster)
        pg.start(cluster)
        changed = True
    return changed


@dataclass(frozen=True)
class Backup:
    label: str
    path: Path
    bytes: int
    start_lsn: str


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def take_backup(cluster: pg.Cluster, folder: Path | None = None) -> Backup:
    """A base backup of the whole cluster (plain format, its WAL streamed with it, so it
    restores on its own too), verified against its manifest; archiving turned on first."""
    enable_archiving(cluster)
    bindir = pg.find_bindir()
    root = _postgres_dir(folder or backups_dir(cluster))
    # a label of the wall clock's: the backup's files and WAL carry its time, not the service's
    label = SYSTEM.now().strftime("%Y%m%dT%H%M%S%fZ")
    target = root / label
    env = {**os.environ, "PGPASSWORD": cluster.password_file.read_text().strip()}
    command = [
        str(bindir / "pg_basebackup"),
        "-h",
        "127.0.0.1",
        "-p",
        str(cluster.port),
        "-U",
        "postgres",
        "-D",
        str(target),
        "-Fp",
        "-X",
        "stream",
        "--checkpoint=fast",
        "-l",
        f"gridbranch {label}",
    ]
    _checked(pg._as_postgres() + command, "pg_basebackup", env=env)
    _checked(pg._as_postgres() + [str(bindir / "pg_verifybackup"), "-q", str(target)], "pg_verifybackup")
    text = (target / "backup_label").read_text()
    lsn = re.search(r"START WAL LOCATION: (\S+)", text)
    return Backup(label, target, _size(target), lsn.group(1) if lsn else "")


def _checked(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    import subprocess

    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise ConfigError(f"{what} failed: {(result.stderr or result.stdout).strip()}")


def list_backups(cluster: pg.Cluster, folder: Path | None = None) -> list[Backup]:
    root = folder or backups_dir(cluster)
    out = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        label_file = path / "backup_label"
        if label_file.exists():
            lsn = re.search(r"START WAL LOCATION: (\S+)", label_file.read_text())
            out.append(Backup(path.name, path, _size(path), lsn.group(1) if lsn else ""))
    return out


def mark(cluster: pg.Cluster, name: str) -> str:
    """A named restore point at this instant, its WAL segment switched out to the
    archive at once; the point's LSN."""
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,60}", name):
        raise InvalidInput(
            f"a restore point's name is 1–60 letters, digits or _ . : -, got {name!r}",
            field="name",
            detail_zh="恢复点名称须为 1–60 位字母、数字或 _ . : -",
        )
    enable_archiving(cluster)
    lsn = _query(cluster, f"SELECT pg_create_restore_point('{name}')")
    _query(cluster, "SELECT pg_switch_wal()")
    return lsn


def wait_archived(cluster: pg.Cluster, timeout: float = 60.0) -> None:
    """Until the WAL written so far is in the archive: what a restore can reach."""
    _query(cluster, "SELECT pg_switch_wal()")
    wanted = _query(cluster, "SELECT pg_walfile_name(pg_current_wal_lsn())")
    deadline = time.monotonic() + timeout
    while True:
        last = _query(cluster, "SELECT last_archived_wal FROM pg_stat_archiver")
        # segment names sort as their order; the current one is still being written
        if last and last[:24] >= _previous_segment(wanted):
            return
        if time.monotonic() > deadline:
            raise ConfigError(f"WAL not archived within {timeout:g} s (last archived: {last or 'none'})")
        time.sleep(0.2)


def _previous_segment(name: str) -> str:
    timeline, log, seg = name[:8], int(name[8:16], 16), int(name[16:24], 16)
    if seg == 0:
        log, seg = log - 1, 0xFF
    else:
        seg -= 1
    return f"{timeline}{log:08X}{seg:08X}"


@dataclass(frozen=True)
class Target:
    """Where a recovery stops: a restore point's name, an instant, an LSN, or (all None)
    the end of the archive."""

    name: str | None = None
    time: datetime | None = None
    lsn: str | None = None

    def settings(self) -> list[str]:
        given = [x for x in (self.name, self.time, self.lsn) if x is not None]
        if len(given) > 1:
            raise InvalidInput("give one recovery target: a restore point, a time or an LSN", field="target")
        if self.name is not None:
            return [f"recovery_target_name = '{self.name}'"]
        if self.time is not None:
            if self.time.tzinfo is None:
                raise InvalidInput(
                    "a recovery target time needs its UTC offset (2026-12-04T10:00:00+08:00)",
                    field="time",
                    detail_zh="恢复目标时间须带时区偏移，例如 2026-12-04T10:00:00+08:00",
                )
            return [f"recovery_target_time = '{self.time.isoformat()}'"]
        if self.lsn is not None:
            if not re.fullmatch(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", self.lsn):
                raise InvalidInput(f"an LSN looks like 0/16B3748, got {self.lsn!r}", field="lsn")
            return [f"recovery_target_lsn = '{self.lsn}'"]
        return []


def restore(source: pg.Cluster, backup: Backup, into: pg.Cluster, target: Target, timeout: float = 300.0) -> str:
    """A new cluster ``into`` from ``backup`` of ``source``, its archived WAL replayed up
    to ``target``, then promoted and left running; returns a status line. ``into`` must
    not hold a data directory yet."""
    recovery = target.settings()
    if into.data_dir.exists() and any(into.data_dir.iterdir()):
        raise InvalidInput(
            f"{into.data_dir} is not empty: a restore makes a new cluster, it never overwrites one",
            field="into",
            detail_zh="恢复只能写入新的空目录，不会覆盖现有数据库",
        )
    if into.port == source.port:
        raise InvalidInput("restore onto another port than the source cluster's", field="port")
    _postgres_dir(into.root, 0o755)
    shutil.copytree(backup.path, into.data_dir, dirs_exist_ok=True)
    uid, gid = pg._owner_ids()
    for path in [into.data_dir, *into.data_dir.rglob("*")]:
        os.chown(path, uid, gid)
    os.chmod(into.data_dir, 0o700)
    _postgres_dir(into.log_file.parent)
    shutil.copyfile(source.password_file, into.password_file)
    os.chmod(into.password_file, 0o600)
    for stale in ("postmaster.pid", "postmaster.opts", _CONF):
        (into.data_dir / stale).unlink(missing_ok=True)
    archive = archive_dir(source)
    with open(into.data_dir / "postgresql.auto.conf", "a") as handle:
        handle.write(
            "\n# gridbranch restore\n"
            f'restore_command = \'cp "{archive}/%f" "%p"\'\n'
            + "".join(f"{line}\n" for line in recovery)
            + "recovery_target_action = 'promote'\n"
            "archive_mode = off\n"
        )
    (into.data_dir / "recovery.signal").write_text("")
    os.chown(into.data_dir / "recovery.signal", uid, gid)
    pg.start(into)
    deadline = time.monotonic() + timeout
    while _query(into, "SELECT pg_is_in_recovery()") == "True":
        if time.monotonic() > deadline:
            raise ConfigError(f"the restored cluster is still recovering after {timeout:g} s (log: {into.log_file})")
        time.sleep(0.2)
    return f"restored {backup.label} into {into.data_dir}, running on 127.0.0.1:{into.port}"

"""A private PostgreSQL + PostGIS cluster owned by the project.

The cluster lives in a git-ignored directory of the project (``GRIDBRANCH_DB_DIR``),
listens on 127.0.0.1 only, and is run as the ``postgres`` user when invoked as root
(PostgreSQL refuses to run as root). The superuser password is generated once and
kept beside the data directory, readable by the owner only.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import secrets
import shutil
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from layers.errors import ConfigError


@dataclass(frozen=True)
class Cluster:
    """A private cluster rooted at ``root`` listening on ``port`` (127.0.0.1).

    When invoked as root and the ``postgres`` user cannot reach ``root`` (a checkout in a
    private home directory, say), the cluster lives instead in
    ``/var/tmp/gridbranch-pg-<hash of root>``, which it can."""

    root: Path
    port: int

    def __post_init__(self):
        object.__setattr__(self, "root", _reachable_root(Path(self.root)))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "log" / "postgresql.log"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL of database ``dbname`` in this cluster."""
        password = quote(self.password_file.read_text().strip(), safe="")
        return f"postgresql+psycopg2://postgres:{password}@127.0.0.1:{self.port}/{dbname}"


def find_bindir() -> Path:
    """The bin directory of the newest installed PostgreSQL that has PostGIS."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), reverse=True)
    for postgres in candidates:
        version = postgres.parent.parent.name
        if Path(f"/usr/share/postgresql/{version}/extension/postgis.control").exists():
            return postgres.parent
    raise ConfigError(
        "No PostgreSQL with PostGIS found. On Debian 12 install it with "
        "`apt-get install postgresql-15-postgis-3` (the setup script does this), "
        "or set GRIDBRANCH_DATABASE_URL to an existing PostGIS database."
    )


def _reachable_root(root: Path) -> Path:
    if os.geteuid() != 0:
        return root
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return root
    probe = root
    while not probe.exists():
        probe = probe.parent
    if (
        subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(probe)], capture_output=True).returncode
        == 0
    ):
        return root
    import hashlib

    return Path("/var/tmp") / f"gridbranch-pg-{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]}"


def _as_postgres() -> list[str]:
    """Command prefix that runs a program as the cluster's owner."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def _owner_ids() -> tuple[int, int]:
    if os.geteuid() != 0:
        return os.geteuid(), os.getegid()
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(_as_postgres() + args, capture_output=True, text=True, check=check)


@contextmanager
def _locked(root: Path):
    """Serialise cluster management between processes (test workers, CLI)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _init(cluster: Cluster, bindir: Path) -> None:
    uid, gid = _owner_ids()
    root = cluster.root
    os.chmod(root, 0o755)
    for path in (cluster.data_dir, cluster.log_file.parent):
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, uid, gid)
    os.chmod(cluster.data_dir, 0o700)
    if not cluster.password_file.exists():
        cluster.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        os.chmod(cluster.password_file, 0o600)
    pwfile = root / ".initpw"
    shutil.copyfile(cluster.password_file, pwfile)
    os.chown(pwfile, uid, gid)
    os.chmod(pwfile, 0o600)
    try:
        result = _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(cluster.data_dir),
                "-U",
                "postgres",
                "--pwfile",
                str(pwfile),
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ],
            check=False,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise ConfigError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
    conf = cluster.data_dir / "postgresql.conf"
    with open(conf, "a") as handle:
        handle.write(
            "\n# gridbranch private cluster\n"
            "listen_addresses = '127.0.0.1'\n"
            "unix_socket_directories = ''\n"  # TCP on loopback only; no socket path-length limits
            "shared_buffers = '256MB'\n"
            "work_mem = '32MB'\n"
            "max_connections = 200\n"
            "jit = off\n"
        )


def is_running(cluster: Cluster) -> bool:
    if not (cluster.data_dir / "PG_VERSION").exists():
        return False
    bindir = find_bindir()
    return _run([str(bindir / "pg_ctl"), "-D", str(cluster.data_dir), "status"], check=False).returncode == 0


def start(cluster: Cluster) -> str:
    """Initialise (first time) and start the cluster; idempotent. Returns a status line."""
    bindir = find_bindir()
    with _locked(cluster.root):
        if not (cluster.data_dir / "PG_VERSION").exists():
            if cluster.data_dir.exists() and any(cluster.data_dir.iterdir()):
                raise ConfigError(f"{cluster.data_dir} exists but is not a PostgreSQL data directory")
            _init(cluster, bindir)
        if is_running(cluster):
            return f"already running on 127.0.0.1:{cluster.port}"
        result = _run(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(cluster.data_dir),
                "-l",
                str(cluster.log_file),
                "-o",
                f"-p {cluster.port}",
                "-w",
                "-t",
                "60",
                "start",
            ],
            check=False,
        )
        if result.returncode != 0:
            tail = ""
            if cluster.log_file.exists():
                tail = "\n".join(cluster.log_file.read_text(errors="replace").splitlines()[-5:])
            raise ConfigError(f"could not start PostgreSQL on port {cluster.port}: {result.stderr.strip()}\n{tail}")
        _wait_ready(cluster)
        return f"started on 127.0.0.1:{cluster.port}"


def _wait_ready(cluster: Cluster, timeout: float = 30.0) -> None:
    import psycopg2

    deadline = time.monotonic() + timeout
    password = cluster.password_file.read_text().strip()
    while True:
        try:
            psycopg2.connect(
                host="127.0.0.1", port=cluster.port, user="postgres", password=password, dbname="postgres"
            ).close()
            return
        except psycopg2.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop(cluster: Cluster) -> str:
    """Stop the cluster if it runs; idempotent."""
    with _locked(cluster.root):
        if not is_running(cluster):
            return "not running"
        bindir = find_bindir()
        _run([str(bindir / "pg_ctl"), "-D", str(cluster.data_dir), "-m", "fast", "-w", "stop"])
        return "stopped"


def ensure_database(cluster: Cluster, dbname: str) -> str:
    """Create database ``dbname`` if missing; returns its URL. The cluster must run."""
    import psycopg2
    from psycopg2 import sql

    password = cluster.password_file.read_text().strip()
    conn = psycopg2.connect(host="127.0.0.1", port=cluster.port, user="postgres", password=password, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    finally:
        conn.close()
    return cluster.url(dbname)


def drop_database(url: str, dbname: str) -> None:
    """Drop ``dbname`` (terminating its sessions) using the server at ``url``."""
    import psycopg2
    from psycopg2 import sql
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = psycopg2.connect(host=u.host, port=u.port, user=u.username, password=u.password, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
    finally:
        conn.close()

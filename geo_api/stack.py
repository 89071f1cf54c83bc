"""``gridbranch stack up|down|status``: the service as several processes on this machine,
from existing engines — the private PostgreSQL cluster (as ``gridbranch db``), N uvicorn
worker processes (``gridbranch serve`` each, on its own loopback port) and Debian's nginx in
front of them, run as a private instance (its own configuration, pid file, logs, cache and
temporary directories under the stack's directory, never the system service).

nginx serves the web map's static files itself and proxies the rest to the workers
(round robin, keep-alive, an idempotent request retried on another worker when one is
down). Public tiles go through its ``proxy_cache`` and are revalidated on every request
(:func:`nginx_conf` says how), so that a write shows in the very next tile request.

Everything the stack starts is recorded in ``state.json`` in its directory: ``down``
stops exactly that (a cluster that was running before ``up`` is left running), ``up``
again starts only what is not running, and ``status`` tells which is which.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from geo_api.settings import Settings
from layers.errors import ConfigError

NGINX = "/usr/sbin/nginx"

#: How long a worker may take to answer /livez after it was started (migrations ran already).
START_TIMEOUT_S = 90.0


@dataclass
class Worker:
    port: int
    pid: int | None = None


@dataclass
class State:
    """What the stack started (``state.json``)."""

    port: int
    workers: list[Worker] = field(default_factory=list)
    nginx_pid: int | None = None
    cluster_started: bool = False  # whether ``up`` started the private cluster (``down`` stops it then)

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        raw["workers"] = [Worker(**w) for w in raw.get("workers", [])]
        return cls(**raw)

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        tmp.replace(path)


@dataclass(frozen=True)
class Layout:
    """Where the stack keeps its files."""

    root: Path

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def nginx(self) -> Path:
        return self.root / "nginx"

    @property
    def conf(self) -> Path:
        return self.nginx / "nginx.conf"

    @property
    def pid(self) -> Path:
        return self.nginx / "nginx.pid"

    @property
    def cache(self) -> Path:
        return self.nginx / "cache"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics"


def default_dir() -> Path:
    return Path(os.environ.get("GRIDBRANCH_STACK_DIR", ".gridbranch/stack")).absolute()


# -- processes ----------------------------------------------------------------------------


def alive(pid: int | None, marker: str) -> bool:
    """Whether ``pid`` is a running process whose command line holds ``marker`` (so that a
    pid reused by another program after a reboot is never taken for ours)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False  # exited, not yet reaped
    except (OSError, IndexError):
        return False
    return marker in cmdline


def _stop(pid: int, marker: str, timeout_s: float = 20.0) -> None:
    """SIGTERM ``pid`` (its process group: uvicorn and what it runs), SIGKILL after ``timeout_s``."""
    if not alive(pid, marker):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid, marker):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _worker_marker(port: int) -> str:
    return f"--port {port} --workers 1"


#: No proxy from the environment: the stack's URLs are on loopback.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with _DIRECT.open(url, timeout=timeout) as r:
            return r.status
    except OSError:
        return 0


def _wait_live(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if _get(f"http://127.0.0.1:{port}/livez") == 200:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        _stop(proc.pid, _worker_marker(port))
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    raise ConfigError(f"the worker on port {port} did not start; its log ({log}) ends:\n{tail}")


def worker_env(settings: Settings, layout: Layout) -> dict[str, str]:
    """The environment of the worker processes: this one's, the secret they share, their
    metrics directory, JSON logs, and the trust of the nginx in front (loopback)."""
    from geo_api.cli import _worker_env

    env = dict(os.environ)
    env.update(_worker_env(settings))
    env["PROMETHEUS_MULTIPROC_DIR"] = str(layout.metrics)
    env.setdefault("GRIDBRANCH_LOG_FORMAT", "json")
    env.setdefault("GRIDBRANCH_TRUSTED_PROXIES", '["127.0.0.1"]')
    # nginx keeps public tiles and revalidates each (tiles.service: X-Accel-Expires)
    env["GRIDBRANCH_TILES_PROXY_REVALIDATE"] = "true"
    return env


def _start_workers(ports: list[int], env: dict[str, str], layout: Layout) -> dict[int, int]:
    """Start a worker on each of ``ports``, all at once (each takes seconds to import and
    build its app), and wait until each answers ``/livez``; their pids by port."""
    started: dict[int, subprocess.Popen] = {}
    try:
        for port in ports:
            with open(layout.logs / f"worker-{port}.log", "ab") as out:
                started[port] = subprocess.Popen(
                    [sys.executable, "-m", "geo_api.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
                    + ["--workers", "1"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    start_new_session=True,  # its own process group: `down` stops it and nothing else
                )
        for port, proc in started.items():
            _wait_live(port, proc, layout.logs / f"worker-{port}.log")
    except BaseException:
        for port, proc in started.items():
            if proc.poll() is None:
                _stop(proc.pid, _worker_marker(port))
        raise
    return {port: proc.pid for port, proc in started.items()}


# -- nginx --------------------------------------------------------------------------------


def nginx_user() -> str | None:
    """The user nginx's worker processes run as when started by root (Debian's own); none
    otherwise (they run as whoever starts it)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("www-data")
    except KeyError:
        return "nobody"
    return "www-data"


def nginx_conf(layout: Layout, port: int, worker_ports: list[int], static: dict[str, Path]) -> str:
    """The private nginx's configuration.

    Public tiles are kept in ``proxy_cache`` and **revalidated on every request**: the
    workers mark them ``X-Accel-Expires: @1`` (expired since 1970, yet cacheable), so
    nginx asks with ``If-None-Match`` each time (``proxy_cache_revalidate``); a 304 — the
    data versions have not moved — keeps its copy, a write gives a new ETag and a new
    tile at once. nginx ignores the tiles' ``Cache-Control`` (``public, no-cache`` would
    make it keep nothing) and keeps only what carries ``X-Accel-Expires``: private tiles
    (``private, no-store``, no such header), anything asked with ``Authorization``, and the
    ``members`` layer are never kept. ``Accept-Encoding`` is reduced to gzip or nothing, so
    that there are two copies of a tile at most; the workers compress, and the ETags they
    give stay strong (nginx's own gzip, for the other answers, makes theirs weak — the
    workers accept weak ones in ``If-None-Match``)."""
    user = nginx_user()
    upstream = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in worker_ports)
    security = (
        '        add_header X-Content-Type-Options "nosniff" always;\n'
        '        add_header Referrer-Policy "same-origin" always;\n'
        "        add_header Content-Security-Policy \"frame-ancestors 'none'\" always;\n"
    )
    statics = "\n".join(
        f"    location {prefix} {{\n        alias {folder}/;\n        expires 1h;\n{security}    }}"
        for prefix, folder in static.items()
    )
    n = layout.nginx
    return f"""# Written by `gridbranch stack up` (geo_api/stack.py); rewritten at every `up`.
{f"user {user};" if user else ""}
worker_processes auto;
pid {layout.pid};
error_log {layout.logs}/nginx-error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    include /etc/nginx/mime.types;
    types {{ application/vnd.mapbox-vector-tile mvt; }}
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    server_tokens off;
    client_body_temp_path {n}/tmp/body;
    proxy_temp_path {n}/tmp/proxy;
    fastcgi_temp_path {n}/tmp/fastcgi;
    uwsgi_temp_path {n}/tmp/uwsgi;
    scgi_temp_path {n}/tmp/scgi;
    client_max_body_size 300m;  # the workers refuse what is too large, naming their limit

    log_format gridbranch escape=json '{{"ts":"$time_iso8601","request_id":"$request_id",'
        '"method":"$request_method","status":$status,"bytes":$body_bytes_sent,'
        '"duration_s":$request_time,"upstream":"$upstream_addr","cache":"$upstream_cache_status"}}';
    access_log {layout.logs}/nginx-access.log gridbranch;

    gzip on;
    gzip_comp_level 1;
    gzip_types application/json application/geo+json application/problem+json text/css
        application/javascript text/javascript text/csv;
    gzip_vary on;
    gzip_proxied any;

    proxy_cache_path {layout.cache} levels=1:2 keys_zone=tiles:16m max_size=1g inactive=1h use_temp_path=off;

    upstream gridbranch {{
{upstream}
        keepalive 32;
    }}

    # what nginx asks the workers for: gzip or nothing, whatever the client's list says
    map $http_accept_encoding $tile_encoding {{
        default "";
        "~*gzip" "gzip";
    }}
    # tiles nginx never keeps: a signed-in caller's, the members layer's, and any a worker
    # did not mark as cacheable (X-Accel-Expires)
    map $http_authorization $signed_in {{
        default 1;
        "" 0;
    }}
    map $uri $private_layer {{
        default 0;
        "~^/tiles/[^/]*members" 1;
    }}
    map $upstream_http_x_accel_expires $unmarked {{
        default 0;
        "" 1;
    }}

    server {{
        listen 127.0.0.1:{port};
        server_name _;

        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        # nginx is the edge: the address it saw, not one a client claims
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Request-ID $request_id;
        # a worker gone: idempotent requests go to the next one (nginx never retries a POST)
        proxy_next_upstream error timeout http_502;
        proxy_next_upstream_tries 2;

{statics}

        location ~ ^/tiles/[^/]+/[0-9]+/[0-9]+/[0-9]+\\.mvt$ {{
            proxy_pass http://gridbranch;
            proxy_set_header Accept-Encoding $tile_encoding;
            proxy_cache tiles;
            proxy_cache_key "$uri|$tile_encoding";
            proxy_cache_revalidate on;
            proxy_ignore_headers Cache-Control Expires Vary;  # the key holds the encoding already
            proxy_cache_bypass $signed_in $private_layer;
            proxy_no_cache $signed_in $private_layer $unmarked;
            add_header X-Cache-Status $upstream_cache_status always;
        }}

        location = /metrics {{
            # the workers allow loopback only (GRIDBRANCH_METRICS_ALLOW); nginx says so first
            allow 127.0.0.1;
            deny all;
            proxy_pass http://gridbranch;
        }}

        location / {{
            proxy_pass http://gridbranch;
        }}
    }}
}}
"""


def _static_dirs() -> dict[str, Path]:
    """The web map's static files, by the URL prefix the app mounts them at (geo_api.routers.pages)."""
    from web_map import MAPLIBRE_DIST, STATIC, SWAGGER_UI_DIST

    return {
        "/static/map/": STATIC,
        "/static/vendor/maplibre-gl/": MAPLIBRE_DIST,
        "/static/vendor/swagger-ui/": SWAGGER_UI_DIST,
    }


def _prepare_nginx(layout: Layout, port: int, worker_ports: list[int]) -> None:
    if not Path(NGINX).exists():
        raise ConfigError("nginx is not installed: `apt-get install nginx` (scripts/setup.sh installs it)")
    for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi", "cache"):
        (layout.nginx / sub).mkdir(parents=True, exist_ok=True)
    user = nginx_user()
    if user:  # its workers write the cache and temporary files
        for folder in layout.nginx.parents:
            if not folder.stat().st_mode & 0o001:
                raise ConfigError(
                    f"nginx's workers (user {user}) cannot reach {layout.nginx}: {folder} is closed to others; "
                    "choose another --dir (GRIDBRANCH_STACK_DIR)"
                )
        entry = pwd.getpwnam(user)
        for folder in [layout.cache, *(layout.nginx / "tmp").rglob("*"), layout.nginx / "tmp"]:
            os.chown(folder, entry.pw_uid, entry.pw_gid)
    layout.conf.write_text(nginx_conf(layout, port, worker_ports, _static_dirs()), encoding="utf-8")
    test = subprocess.run([NGINX, "-t", "-q", "-p", str(layout.nginx), "-c", str(layout.conf)], capture_output=True)
    if test.returncode != 0:
        raise ConfigError(f"nginx refuses {layout.conf}: {test.stderr.decode(errors='replace').strip()}")


def _nginx_pid(layout: Layout) -> int | None:
    try:
        pid = int(layout.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if alive(pid, str(layout.conf)) else None


def _start_nginx(layout: Layout) -> int:
    running = _nginx_pid(layout)
    if running:  # the workers may have changed: the new configuration, without dropping a request
        subprocess.run(
            [NGINX, "-p", str(layout.nginx), "-c", str(layout.conf), "-s", "reload"], check=True, capture_output=True
        )
        return running
    subprocess.run([NGINX, "-p", str(layout.nginx), "-c", str(layout.conf)], check=True, capture_output=True)
    for _ in range(100):
        pid = _nginx_pid(layout)
        if pid:
            return pid
        time.sleep(0.05)
    raise ConfigError(f"nginx did not start; see {layout.logs}/nginx-error.log")


# -- the commands ---------------------------------------------------------------------------


def up(settings: Settings, root: Path, *, port: int, workers: int) -> State:
    """Start what is not running (idempotent); returns what runs."""
    from geo_api.cli import _engine
    from layers import cluster as pg
    from layers import db

    layout = Layout(root)
    for folder in (layout.root, layout.logs):
        folder.mkdir(parents=True, exist_ok=True)
    state = State.load(layout.state) or State(port=port)
    if state.port != port or len(state.workers) != workers:
        if any(alive(w.pid, _worker_marker(w.port)) for w in state.workers) or _nginx_pid(layout):
            raise ConfigError(
                f"the stack in {root} runs on port {state.port} with {len(state.workers)} workers: "
                "`gridbranch stack down` first to change them"
            )
        state = State(port=port, cluster_started=state.cluster_started)
    if not settings.database.database_url:
        cluster = db.private_cluster(settings.database)
        if not pg.is_running(cluster):
            pg.start(cluster)
            state.cluster_started = True
    engine = _engine(settings)  # the database exists and is migrated before any worker starts
    engine.dispose()
    ports = [port + 1 + i for i in range(workers)]
    running = {w.port: w.pid for w in state.workers if w.pid and alive(w.pid, _worker_marker(w.port))}
    if not running:  # no worker alive: the figures of earlier ones would be added in
        shutil.rmtree(layout.metrics, ignore_errors=True)
    layout.metrics.mkdir(parents=True, exist_ok=True)
    env = worker_env(settings, layout)
    try:
        running.update(_start_workers([p for p in ports if p not in running], env, layout))
        state.workers = [Worker(port=p, pid=running[p]) for p in ports]
        state.save(layout.state)
        _prepare_nginx(layout, port, ports)
        state.nginx_pid = _start_nginx(layout)
    finally:
        state.save(layout.state)
    return state


def down(settings: Settings, root: Path) -> list[str]:
    """Stop what ``up`` started, and nothing else; returns what was stopped."""
    from layers import cluster as pg
    from layers import db

    layout = Layout(root)
    state = State.load(layout.state)
    if state is None:
        return []
    stopped = []
    pid = _nginx_pid(layout)
    if pid:
        subprocess.run([NGINX, "-p", str(layout.nginx), "-c", str(layout.conf), "-s", "quit"], capture_output=True)
        for _ in range(200):
            if not alive(pid, str(layout.conf)):
                break
            time.sleep(0.05)
        _stop(pid, str(layout.conf))
        stopped.append(f"nginx (pid {pid})")
    for w in state.workers:
        if alive(w.pid, _worker_marker(w.port)):
            assert w.pid is not None
            _stop(w.pid, _worker_marker(w.port))
            stopped.append(f"worker on port {w.port} (pid {w.pid})")
    if state.cluster_started and not settings.database.database_url:
        cluster = db.private_cluster(settings.database)
        if pg.is_running(cluster):
            pg.stop(cluster)
            stopped.append(f"PostgreSQL on port {cluster.port}")
    layout.state.unlink(missing_ok=True)
    return stopped


def status(settings: Settings, root: Path) -> list[tuple[str, bool, str]]:
    """(part, running, where) for each part of the stack."""
    from layers import cluster as pg
    from layers import db

    layout = Layout(root)
    state = State.load(layout.state)
    rows: list[tuple[str, bool, str]] = []
    if settings.database.database_url:
        rows.append(("database", True, "external (GRIDBRANCH_DATABASE_URL)"))
    else:
        cluster = db.private_cluster(settings.database)
        started = " (started by the stack)" if state and state.cluster_started else ""
        rows.append(("database", pg.is_running(cluster), f"127.0.0.1:{cluster.port}{started}"))
    if state is None:
        rows.append(("nginx", False, f"no stack in {root}"))
        return rows
    pid = _nginx_pid(layout)
    rows.append(("nginx", pid is not None, f"http://127.0.0.1:{state.port}/map" + (f" (pid {pid})" if pid else "")))
    for w in state.workers:
        up_ = alive(w.pid, _worker_marker(w.port))
        rows.append((f"worker {w.port}", up_, f"127.0.0.1:{w.port}" + (f" (pid {w.pid})" if up_ else "")))
    return rows

"""The ``gridbranch`` command."""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from datetime import datetime, timedelta, timezone

from geo_api.settings import Settings
from layers.errors import GridbranchError


def _cluster(settings: Settings):
    from layers import db

    return db.private_cluster(settings.database)


def cmd_db(args, settings: Settings) -> int:
    from layers import cluster as pg
    from layers import db

    if settings.database.database_url and args.action in ("start", "stop"):
        print(f"GRIDBRANCH_DATABASE_URL is set: using that database, nothing to {args.action}.")
        return 0
    c = _cluster(settings)
    if args.action == "start":
        print(f"PostgreSQL {pg.start(c)} (data: {c.data_dir})")
    elif args.action == "stop":
        print(f"PostgreSQL {pg.stop(c)}")
    elif args.action == "status":
        if settings.database.database_url:
            print("external database (GRIDBRANCH_DATABASE_URL)")
        else:
            print(f"{'running' if pg.is_running(c) else 'stopped'} on 127.0.0.1:{c.port} (data: {c.data_dir})")
    elif args.action == "url":
        print(db.database_url(settings.database, start=False))
    return 0


def _engine(settings: Settings):
    from layers import db, migrate

    engine = db.make_engine(db.database_url(settings.database), settings.database.pool_size)
    migrate.upgrade(engine)
    return engine


def cmd_migrate(args, settings: Settings) -> int:
    from layers import db, migrate

    engine = db.make_engine(db.database_url(settings.database))
    if args.down:
        migrate.downgrade(engine, args.revision or "base")
    else:
        migrate.upgrade(engine, args.revision or "head")
    print(f"database at revision {migrate.current_revision(engine)}")
    return 0


#: A loaded demo whose newest event is older than this gets a hint to reload it.
DEMO_STALE = timedelta(hours=24)


def load_demo_if_missing(engine, as_of: datetime | None = None) -> None:
    """Load the Jinshui demo district unless it is there, its timeline leading up to
    ``as_of`` (default the generator's fixed instant); prints counts and timings, or, for
    a demo loaded long ago, how to renew its timeline."""
    from sqlalchemy import text

    from ingest.demo import generate, load

    with engine.begin() as conn:
        if load.is_loaded(conn):
            print("Jinshui demo district already loaded.")
            newest = conn.execute(text("SELECT max(at) FROM event_log")).scalar()
            hint = demo_staleness(newest, datetime.now(timezone.utc))
            if hint:
                print(hint)
            return
    t0 = time.perf_counter()
    district = generate.build_demo(as_of=as_of or generate.AS_OF)
    t1 = time.perf_counter()
    with engine.begin() as conn:
        counts = load.load_demo(conn, district)
        problems = load.check_invariants(conn, district)
        if problems:
            raise GridbranchError("demo invariants failed:\n  " + "\n  ".join(problems))
    t2 = time.perf_counter()
    print(load.format_counts(counts))
    print(f"timeline up to {district.as_of:%Y-%m-%d %H:%M} (UTC+8); built in {t1 - t0:.1f} s, loaded and checked "
          f"in {t2 - t1:.1f} s; invariants hold.")


def demo_staleness(newest: datetime | None, now: datetime) -> str | None:
    """The hint for a loaded demo whose newest event (``newest``) is long past: its open
    events have all run over their time limits since it was loaded."""
    if newest is None or now - newest <= DEMO_STALE:
        return None
    days = (now - newest) / timedelta(days=1)
    return (f"The demo's newest event is from {newest.astimezone(timezone(timedelta(hours=8))):%Y-%m-%d %H:%M} "
            f"(UTC+8), {days:.1f} days ago, so its open events now look overdue. `gridbranch demo --reload` "
            "loads it afresh with a timeline up to now (changes made to the demo are lost).")


def demo_now() -> datetime:
    """The present in UTC+8, to the minute: the instant a freshly loaded demo leads up to."""
    return datetime.now(timezone(timedelta(hours=8))).replace(second=0, microsecond=0)


def _demo_password(settings: Settings) -> tuple[str, bool]:
    if settings.service.demo_password is not None:
        return settings.service.demo_password.get_secret_value(), False
    return secrets.token_urlsafe(9), True


def cmd_demo(args, settings: Settings) -> int:
    from sqlalchemy.orm import Session

    from geo_api.accounts import ensure_demo_accounts

    settings.service.demo = True
    if args.reload:
        if settings.database.database_url:
            print("--reload drops and recreates the database: it is only for the private cluster, not for "
                  "GRIDBRANCH_DATABASE_URL", file=sys.stderr)
            return 2
        from layers import db
        from layers import cluster as pgcluster

        c = db.private_cluster(settings.database)
        pgcluster.start(c)
        pgcluster.drop_database(c.url(), settings.database.db_name)
        print(f"database {settings.database.db_name} dropped; loading the demo afresh")
    engine = _engine(settings)
    load_demo_if_missing(engine, demo_now())
    password, generated = _demo_password(settings)
    with Session(engine) as session:
        accounts = ensure_demo_accounts(session, password)
        session.commit()
    engine.dispose()
    names = ", ".join(a["username"] for a in accounts)
    how = "generated (set GRIDBRANCH_DEMO_PASSWORD to choose one)" if generated else "from GRIDBRANCH_DEMO_PASSWORD"
    print(f"Demo accounts {names}; password {how}: {password}")
    if args.no_serve:
        return 0
    return cmd_serve(args, settings)


def worker_app():
    """The app of one worker process when ``gridbranch serve`` runs several (uvicorn
    imports this factory in each): settings from the environment ``cmd_serve`` prepared."""
    from geo_api.app import create_app

    return create_app(Settings.from_env())


def _worker_env(settings: Settings) -> dict[str, str]:
    """What the worker processes must share with this one: demo mode, and one JWT secret
    (a token signed by one worker is checked by another; the demo's is the one it keeps
    beside its database, see :func:`geo_api.app.demo_secret_path`)."""
    from geo_api.app import _auth_secret

    env = {"GRIDBRANCH_DEMO": "true" if settings.service.demo else "false"}
    if settings.auth.auth_secret is None and settings.service.demo:
        env["GRIDBRANCH_AUTH_SECRET"] = _auth_secret(settings)
    return env


def cmd_serve(args, settings: Settings) -> int:
    import os

    import uvicorn

    from geo_api.app import create_app

    host = args.host or settings.service.host
    port = args.port or settings.service.port
    workers = args.workers or settings.service.workers
    options = {"host": host, "port": port, "log_level": "info", "access_log": settings.service.access_log,
               "proxy_headers": True}
    from layers.db import connection_shortfall

    engine = _engine(settings)  # start the database and migrate once, not in every worker
    shortfall = connection_shortfall(engine, settings.database.pool_size, workers)
    if shortfall:
        print(f"gridbranch: warning: {shortfall}", file=sys.stderr, flush=True)
    if workers == 1:
        app = create_app(settings, engine=engine)  # migrated already: the app uses it as it is
    else:
        engine.dispose()
        os.environ.update(_worker_env(settings))
    print(f"gridbranch serving at http://{host}:{port}/map (API docs at http://{host}:{port}/docs)"
          f"{f' with {workers} worker processes' if workers > 1 else ''}", flush=True)
    if workers == 1:
        uvicorn.run(app, **options)
    else:
        uvicorn.run("geo_api.cli:worker_app", factory=True, workers=workers, **options)
    return 0


def cmd_ingest_registrations(args, settings: Settings) -> int:
    """Exit status 0 when the file was read (and, with --commit, written); 1 when the file
    cannot be read or the write failed (nothing written). The rejects file is written
    whatever happens, dry run included."""
    from pathlib import Path

    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import Session

    from ingest import registrations as bulk
    from layers.locate import build_grid_index

    path = Path(args.file)
    rejects = Path(args.rejects) if args.rejects else path.with_name(path.stem + ".rejects.csv")

    def write_rejects(plan) -> bool:
        try:
            n = bulk.write_rejects(rejects, plan)
        except OSError as exc:
            print(f"gridbranch: cannot write the rejects file {rejects}: {exc.strerror or exc}", file=sys.stderr)
            return False
        print(f"the reason is written to {rejects}" if plan.file_error else f"{n} rejected rows written to {rejects}")
        return True

    try:
        data = path.read_bytes()
    except OSError as exc:
        data, plan = None, bulk.ImportPlan([], [], file_error=f"cannot read {path}: {exc.strerror or exc}")
    failed = None
    if data is not None:
        engine = _engine(settings)
        loc = settings.locate
        with Session(engine) as session:
            index = build_grid_index(session)
            plan = bulk.plan_import(session, data, index, tolerance_m=loc.tolerance_m, edge_m=loc.edge_m,
                                    default_crs=args.crs, encoding=args.encoding)
            print(bulk.format_report(plan))
            if plan.file_error is None and args.commit:
                try:
                    counts = bulk.commit_import(session.connection(), plan, actor=f"import:{path.name}")
                    session.commit()
                    print("committed: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
                except DBAPIError as exc:  # nothing is written: the import is one transaction
                    session.rollback()
                    failed = str(exc.orig or exc).strip()
            elif plan.file_error is None:
                print("dry run: nothing written (add --commit to write the located and nearest rows)")
        engine.dispose()
    if plan.file_error is not None:
        print(f"gridbranch: {path}: the file cannot be read, nothing imported: {plan.file_error}", file=sys.stderr)
    if failed is not None:
        print(f"gridbranch: the import failed and wrote nothing: {failed}", file=sys.stderr)
    written = write_rejects(plan)
    return 0 if written and plan.file_error is None and failed is None else 1


def cmd_coverage_report(args, settings: Settings) -> int:
    from pathlib import Path

    from sqlalchemy.orm import Session

    from layers.coverage import coverage_model
    from layers.coverage_report import write_report

    engine = _engine(settings)
    thresholds = settings.coverage.thresholds()
    with Session(engine) as session:
        coverage_model(session, thresholds).check_code(args.within, "within")
        table, paths = write_report(session, within=args.within, out_dir=Path(args.out), level=args.level,
                                    thresholds=thresholds)
    engine.dispose()
    print(table)
    for path in paths:
        print(f"wrote {path}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridbranch", description="Spatial service for grid party branches (网格党支部)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("db", help="the private PostGIS cluster")
    p.add_argument("action", choices=["start", "stop", "status", "url"])
    p.set_defaults(func=cmd_db)

    p = sub.add_parser("migrate", help="apply (or revert) the database migrations")
    p.add_argument("--down", action="store_true", help="downgrade instead (to --revision, default base)")
    p.add_argument("--revision")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("ingest", help="load data from files")
    kinds = p.add_subparsers(dest="kind", required=True)
    q = kinds.add_parser("registrations", help="bulk registration CSV: member_id,name,phone,lon,lat,crs,role")
    q.add_argument("file")
    q.add_argument("--commit", action="store_true", help="write (default: a dry-run report only)")
    q.add_argument("--rejects", help="where to write rejected rows (default FILE.rejects.csv)")
    q.add_argument("--crs", default="wgs84", help="CRS of rows whose crs column is empty")
    q.add_argument("--encoding", default="utf-8", help="text encoding of the file (default UTF-8, with or "
                   "without BOM; gb18030 for GBK files saved by Chinese Excel)")
    q.set_defaults(func=cmd_ingest_registrations)

    p = sub.add_parser("coverage", help="coverage analysis: gaps, overlaps, branchless grids, metrics")
    kinds = p.add_subparsers(dest="action", required=True)
    q = kinds.add_parser("report", help="print the coverage table of an area and write its issues and summary files")
    q.add_argument("--within", required=True, help="area (or grid) code, e.g. 410105000000")
    q.add_argument("--level", choices=["district", "street", "community", "grid"],
                   help="units of the table (default: the level below --within)")
    q.add_argument("--out", default=".", help="directory for coverage_<code>_{issues.geojson,issues.csv,<level>_summary.csv}")
    q.set_defaults(func=cmd_coverage_report)

    for name, func, text in (
        ("serve", cmd_serve, "serve the API and web map"),
        ("demo", cmd_demo, "start the database, load the Jinshui demo if missing, and serve"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("--host")
        p.add_argument("--port", type=int)
        p.add_argument("--workers", type=_positive, help="worker processes (default GRIDBRANCH_WORKERS, 1)")
        p.set_defaults(func=func)
        if name == "demo":
            p.add_argument("--no-serve", action="store_true", help="prepare everything, do not serve")
            p.add_argument("--reload", action="store_true",
                           help="drop the private cluster's database and load the demo afresh, its timeline up to now")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        return args.func(args, settings) or 0
    except GridbranchError as exc:
        print(f"gridbranch: {exc.detail}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

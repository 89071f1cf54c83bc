"""The ``gridbranch`` command."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from geo_api.settings import Settings
from layers.accounts import CLI_ACTOR
from layers.errors import GridbranchError, InvalidInput


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
        url = db.database_url(settings.database, start=False)
        if args.reader:
            url = db.url_for_user(url, args.reader)
        print(url if args.sqlalchemy else db.libpq_dsn(url))
    return 0


def _own_cluster(settings: Settings, what: str):
    if settings.database.database_url:
        raise InvalidInput(
            f"GRIDBRANCH_DATABASE_URL is set: that database's operator {what} it (pg_basebackup, pgBackRest); "
            "gridbranch backs up its private cluster only",
            field="database",
        )
    return _cluster(settings)


def cmd_backup(args, settings: Settings) -> int:
    from pathlib import Path

    from layers import backup

    c = _own_cluster(settings, "backs up")
    folder = Path(args.dir) if args.dir else None
    if args.list:
        for b in backup.list_backups(c, folder):
            print(f"{b.label}  {b.bytes / 2**20:,.0f} MiB  from WAL {b.start_lsn}  {b.path}")
        return 0
    if args.mark:
        print(f"restore point {args.mark} at {backup.mark(c, args.mark)} (gridbranch restore --to-point {args.mark})")
        return 0
    b = backup.take_backup(c, folder)
    print(f"backup {b.label}: {b.bytes / 2**20:,.0f} MiB, verified, in {b.path}")
    print(f"WAL archive: {backup.archive_dir(c)} (restores reach any point after {b.start_lsn})")
    return 0


def cmd_restore(args, settings: Settings) -> int:
    from pathlib import Path

    from layers import backup
    from layers import cluster as pg

    c = _own_cluster(settings, "restores")
    found = backup.list_backups(c, Path(args.dir) if args.dir else None)
    chosen = [b for b in found if args.backup in (None, b.label)]
    if not chosen:
        raise InvalidInput(
            f"no base backup {args.backup}" if args.backup else "no base backup yet: gridbranch backup", field="backup"
        )
    when = None
    if args.to_time:
        try:
            when = datetime.fromisoformat(args.to_time)
        except ValueError:
            raise InvalidInput(f"not an ISO 8601 instant: {args.to_time!r}", field="to_time") from None
    target = backup.Target(name=args.to_point, time=when, lsn=args.to_lsn)
    print(backup.restore(c, chosen[-1], pg.Cluster(root=Path(args.into), port=args.port), target))
    return 0


def cmd_report(args, settings: Settings) -> int:
    from pathlib import Path

    from sqlalchemy.orm import Session

    from geo_api import report
    from layers.caches import Caches
    from layers.clock import now_of

    out = Path(args.out)
    if out.suffix.lower() not in (".pdf", ".html"):
        raise InvalidInput(f"--out must end in .pdf or .html, got {out.name}", field="out")
    engine = _engine(settings)
    with Session(engine) as session:
        r = report.build(session, Caches(), settings, args.within, args.month, now_of(session))
    if out.suffix.lower() == ".pdf":
        out.write_bytes(report.pdf(r))
    else:
        out.write_text(report.html(r), encoding="utf-8")
    print(f"wrote {out}: {r['name']} {r['month']}")
    return 0


def cmd_reader(args, settings: Settings) -> int:
    import os

    from layers import db, gis_reader

    engine = db.make_engine(db.database_url(settings.database))
    with engine.begin() as conn:
        if args.action == "revoke-reader":
            done = gis_reader.revoke_reader(conn, args.name)
            print(f"reader {args.name} {'dropped' if done else 'did not exist'}")
            return 0
        given = os.environ.get("GRIDBRANCH_READER_PASSWORD")
        password = given or secrets.token_urlsafe(18)
        created = gis_reader.grant_reader(conn, args.name, password)
    print(f"reader {args.name} {'created' if created else 'updated'}: reads the gis views only")
    if not given:
        print(f"password: {password}")
    print(f"connect: {db.libpq_dsn(db.url_for_user(db.database_url(settings.database, start=False), args.name))}")
    return 0


def cmd_qgis(args, settings: Settings) -> int:
    from pathlib import Path

    from geo_api.qgis import layer_definition
    from layers import db

    out = Path(args.out)
    out.write_bytes(layer_definition(db.database_url(settings.database, start=False), args.reader))
    print(f"wrote {out}: open it in QGIS (图层 → 添加图层定义文件 / Layer → Add from Layer Definition File)")
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
            hint = demo_staleness(newest, datetime.now(UTC))
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
    print(
        f"timeline up to {district.as_of:%Y-%m-%d %H:%M} (UTC+8); built in {t1 - t0:.1f} s, loaded and checked "
        f"in {t2 - t1:.1f} s; invariants hold."
    )


def demo_staleness(newest: datetime | None, now: datetime) -> str | None:
    """The hint for a loaded demo whose newest event (``newest``) is long past: its open
    events have all run over their time limits since it was loaded."""
    if newest is None or now - newest <= DEMO_STALE:
        return None
    days = (now - newest) / timedelta(days=1)
    return (
        f"The demo's newest event is from {newest.astimezone(timezone(timedelta(hours=8))):%Y-%m-%d %H:%M} "
        f"(UTC+8), {days:.1f} days ago, so its open events now look overdue. `gridbranch demo --reload` "
        "loads it afresh with a timeline up to now (changes made to the demo are lost)."
    )


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
            print(
                "--reload drops and recreates the database: it is only for the private cluster, not for "
                "GRIDBRANCH_DATABASE_URL",
                file=sys.stderr,
            )
            return 2
        from layers import cluster as pgcluster
        from layers import db

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

    settings = Settings.from_env()
    return create_app(settings, clock=_clock(settings))


def _clock(settings: Settings):
    """The clock of ``GRIDBRANCH_CLOCK_AT`` (standing still), or None: the wall clock."""
    from layers.clock import FrozenClock

    return FrozenClock(settings.service.clock_at) if settings.service.clock_at is not None else None


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
    # the app reads the proxy headers itself, from GRIDBRANCH_TRUSTED_PROXIES (geo_api.app.add_middleware)
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": "info",
        "access_log": settings.service.access_log,
        "proxy_headers": False,
    }
    if settings.service.log_format == "json":
        from geo_api.telemetry import log_config

        # JSON lines; the access log is the app's own, by route template (uvicorn's shows raw paths)
        options.update(log_config=log_config(), access_log=False)
    from layers.db import connection_shortfall

    metrics_dir = None
    engine = _engine(settings)  # start the database and migrate once, not in every worker
    shortfall = connection_shortfall(engine, settings.database.pool_size, workers)
    if shortfall:
        print(f"gridbranch: warning: {shortfall}", file=sys.stderr, flush=True)
    if workers == 1:
        app = create_app(settings, engine=engine, clock=_clock(settings))  # migrated already: used as it is
    else:
        engine.dispose()
        os.environ.update(_worker_env(settings))
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            # where the worker processes keep their metrics (prometheus-client's multiprocess
            # mode): fresh, so that no earlier run's counts are added in, and gone at the end
            import shutil
            import tempfile

            metrics_dir = tempfile.mkdtemp(prefix="gridbranch-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    print(
        f"gridbranch serving at http://{host}:{port}/map (API docs at http://{host}:{port}/docs)"
        f"{f' with {workers} worker processes' if workers > 1 else ''}",
        flush=True,
    )
    if workers == 1:
        uvicorn.run(app, **options)
        return 0
    try:
        uvicorn.run("geo_api.cli:worker_app", factory=True, workers=workers, **options)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def cmd_stack(args, settings: Settings) -> int:
    from geo_api import stack

    root = args.dir.absolute() if args.dir else stack.default_dir()
    if args.action == "up":
        state = stack.up(settings, root, port=args.port, workers=args.workers or os.cpu_count() or 1)
        print(
            f"gridbranch stack serving at http://127.0.0.1:{state.port}/map: nginx (pid {state.nginx_pid}) in front of "
            f"{len(state.workers)} workers on ports {', '.join(str(w.port) for w in state.workers)}; files in {root}"
        )
    elif args.action == "down":
        stopped = stack.down(settings, root)
        print("stopped " + ", ".join(stopped) if stopped else f"nothing of a stack in {root} was running")
    else:
        rows = stack.status(settings, root)
        for part, running, where in rows:
            print(f"{part:<14} {'running' if running else 'stopped':<8} {where}")
        return 0 if all(running for _, running, _ in rows) else 3
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
            plan = bulk.plan_import(
                session,
                data,
                index,
                tolerance_m=loc.tolerance_m,
                edge_m=loc.edge_m,
                default_crs=args.crs,
                encoding=args.encoding,
            )
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


def cmd_ingest_table(args, settings: Settings) -> int:
    """Members, branches, departments or categories from a CSV or XLSX. Exit status 0
    when the file was read (and, with --commit, written); 1 when it cannot be read or the
    write failed (nothing written). The rejects file is written whatever happens."""
    from pathlib import Path

    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.orm import Session

    from ingest import roster, tables

    path = Path(args.file)
    rejects = Path(args.rejects) if args.rejects else path.with_name(path.stem + ".rejects.csv")
    failed = None
    try:
        mapping = tables.parse_mapping(args.map, roster.SPECS[args.kind].candidates)
        table = roster.read(path, args.kind, encoding=args.encoding, sheet=args.sheet)
    except GridbranchError as exc:
        plan = tables.TablePlan(args.kind, path.name, file_error=exc.detail)
    else:
        engine = _engine(settings)
        try:
            with Session(engine) as session:
                plan = roster.plan(session, args.kind, table, mapping=mapping, default_crs=args.crs)
                if plan.file_error is None:
                    try:
                        counts = roster.changes(
                            session.connection(), plan, write=args.commit, actor=f"import:{path.name}"
                        )
                        if args.commit:
                            session.commit()
                        else:
                            session.rollback()  # the dry run wrote temporary tables only
                    except DBAPIError as exc:  # nothing is written: the import is one transaction
                        session.rollback()
                        failed = str(exc.orig or exc).strip()
                print(tables.format_report(plan))
                if plan.file_error is None and failed is None:
                    if args.commit:
                        print("committed: " + roster.format_counts(counts))
                    else:
                        print(
                            "dry run, nothing written; it would write: "
                            + roster.format_counts(counts)
                            + " (add --commit to write it)"
                        )
        finally:
            engine.dispose()
    if plan.file_error is not None:
        print(f"gridbranch: {path}: the file cannot be read, nothing imported: {plan.file_error}", file=sys.stderr)
    if failed is not None:
        print(f"gridbranch: the import failed and wrote nothing: {failed}", file=sys.stderr)
    try:
        n = tables.write_rejects(rejects, plan)
        print(f"the reason is written to {rejects}" if plan.file_error else f"{n} rejected rows written to {rejects}")
    except OSError as exc:
        print(f"gridbranch: cannot write the rejects file {rejects}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0 if plan.file_error is None and failed is None else 1


def _admin_password(username: str, policy) -> str:
    """The first admin's password: GRIDBRANCH_INIT_ADMIN_PASSWORD (for scripts), else
    asked twice on the terminal; held to the password policy as every account's is."""
    from layers.accounts import check_password

    password = _given_password("GRIDBRANCH_INIT_ADMIN_PASSWORD", f"the district admin {username!r}")
    return check_password(password, username, policy)


def _given_password(variable: str, whose: str, hint: str = "") -> str:
    """A password from the environment ``variable`` (for scripts), else asked twice on
    the terminal; :class:`GridbranchError` without a terminal or when the two differ."""
    import getpass
    import os

    password = os.environ.get(variable)
    if password:
        return password
    if not sys.stdin.isatty():
        raise GridbranchError(f"no terminal to ask the password of {whose} on: set {variable}{hint}", field="password")
    password = getpass.getpass(f"password of {whose}: ")
    if getpass.getpass("the same password again: ") != password:
        raise GridbranchError("the two passwords differ", field="password")
    return password


def cmd_init(args, settings: Settings) -> int:
    from pathlib import Path

    from sqlalchemy.orm import Session

    from geo_api.security import hash_password
    from ingest.district import check_empty, start_district
    from ingest.files import read_features

    boundary = read_features(Path(args.boundary), layer=args.layer, encoding=args.encoding)
    engine = _engine(settings)
    try:
        with Session(engine) as session:
            check_empty(session)  # before asking for a password
            hashed = hash_password(_admin_password(args.admin, settings.auth.password_policy()))
            done = start_district(
                session,
                code=args.district,
                boundary=boundary,
                crs=args.crs,
                name=args.name,
                admin_username=args.admin,
                admin_password_hash=hashed,
            )
            session.commit()
    finally:
        engine.dispose()
    for note in done["notes"]:
        print(f"note: {note}")
    print(f"district {done['code']} {done['name']}: {done['area_km2']:,.1f} km² in {done['parts']} part(s)")
    print(f"service roles: {', '.join(done['roles'])}")
    print(f"national calendar: {done['calendar_days']} days added")
    print(f"district admin account: {done['admin']}")
    print("next: gridbranch ingest areas FILE, then gridbranch ingest grids FILE (dry runs until --commit)")
    return 0


def cmd_ingest_boundaries(args, settings: Settings) -> int:
    import json
    from pathlib import Path

    from sqlalchemy.orm import Session

    from ingest import boundaries
    from ingest.files import read_features
    from layers.boundaries import day, parse_instant

    mapping = boundaries.parse_mapping(args.map)
    effective = parse_instant(args.effective) if getattr(args, "effective", None) else None
    src = read_features(
        Path(args.file), layer=args.layer, encoding=args.encoding, geometry_field=mapping.get("geometry")
    )
    engine = _engine(settings)
    try:
        with Session(engine) as session:
            plan = boundaries.plan_import(
                session,
                args.kind,
                src,
                crs=args.crs,
                mapping=mapping,
                do_repair=args.repair,
                tolerance_m2=args.tolerance,
                thresholds=settings.coverage.thresholds(),
                effective=effective,
                retire_missing=getattr(args, "retire_missing", False),
            )
            print(boundaries.format_report(plan))
            if args.report:
                Path(args.report).write_text(json.dumps(plan.as_dict(), ensure_ascii=False, indent=1), "utf-8")
            if not plan.ok:
                print(f"nothing written: {len(plan.errors)} error(s) above", file=sys.stderr)
                return 1
            if not args.commit:
                print("dry run: nothing written (add --commit to write it)")
                return 0
            counts = boundaries.commit_plan(session, plan)
            session.commit()
            if "generation" in counts:
                print(
                    f"committed: generation {counts['generation']}, taking effect "
                    + (f"on {day(plan.effective)}" if plan.effective else "now")
                    + ": "
                    + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if k != "generation")
                )
                _print_moved(session, plan.district["code"], plan.effective)
                return 0
    finally:
        engine.dispose()
    if counts["unchanged"] == len(plan.outcomes) and not counts.get("retired"):
        print("nothing to write: every feature is as stored")
    else:
        print("committed: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
    return 0


def _print_moved(session, within: str, at) -> None:
    """The registrations whose residence the grid layer in force at ``at`` (default now)
    puts outside their grid: listed for the admins, never moved silently."""
    from layers.boundaries import day
    from layers.registrations import moved_registrations

    moved = moved_registrations(session, within, at=at)
    when = f"from {day(at)}" if at else "now"
    if not moved:
        print(f"registrations: every active registration's residence lies in its grid {when}")
        return
    print(
        f"registrations whose residence lies in another grid {when} ({len(moved)}; not moved: the member "
        "re-registers, or an admin on their behalf):"
    )
    for m in moved:
        now_in = f"{m['now_in']['code']} {m['now_in']['name']}" if m["now_in"] else "no grid (a gap)"
        print(
            f"  registration {m['id']} member {m['member_number'] or m['member_id']} ({m['status']}): "
            f"{m['grid']['code']} v{m['grid']['version']} → {now_in}"
        )


def cmd_ingest_generations(args, settings: Settings) -> int:
    """List the boundary generations (and, with --moved, the registrations to look at)."""
    from sqlalchemy.orm import Session

    from layers.boundaries import day, districts, generations, parse_instant
    from layers.clock import now_of

    engine = _engine(settings)
    try:
        with Session(engine) as session:
            rows = generations(session.connection())
            if not rows:
                print("no generations yet: every grids import that writes makes one")
            for g in rows:
                state = "in force" if g.in_force else ("pending" if g.effective_at > now_of(session) else "past")
                counts = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in g.counts.items())
                print(
                    f"generation {g.id}: takes effect {day(g.effective_at)} ({state}), imported "
                    f"{day(g.created_at)} from {g.source or '-'}"
                    + (", retiring missing grids" if g.retire_missing else "")
                    + f": {counts}"
                )
            if args.moved:
                within = args.within or next((c for c, _ in districts(session.connection())), "")
                _print_moved(session, within, parse_instant(args.at, "at") if args.at else None)
    finally:
        engine.dispose()
    return 0


def cmd_coverage_report(args, settings: Settings) -> int:
    from pathlib import Path

    from sqlalchemy.orm import Session

    from layers.caches import Caches
    from layers.coverage import coverage_model
    from layers.coverage.report import write_report

    engine = _engine(settings)
    thresholds = settings.coverage.thresholds()
    caches = Caches()  # the run's own: the report reads the model once, then from here
    with Session(engine) as session:
        coverage_model(session, caches, thresholds).check_code(args.within, "within")
        table, paths = write_report(
            session, caches, within=args.within, out_dir=Path(args.out), level=args.level, thresholds=thresholds
        )
    engine.dispose()
    print(table)
    for path in paths:
        print(f"wrote {path}")
    return 0


def cmd_audit_purge(args, settings: Settings) -> int:
    from sqlalchemy.orm import Session

    from layers import audit as audit_log
    from layers import users

    keep = args.keep_days if args.keep_days is not None else settings.audit.retention_days
    if keep < 1:
        raise InvalidInput("--keep-days must be at least 1 (a day of audit is always kept)", field="keep_days")
    engine = _engine(settings)
    with Session(engine) as session:
        n = audit_log.purge(session, keep)
        logs, guards = users.purge_signins(session, keep)
        session.commit()
    engine.dispose()
    print(f"audit: {n} rows older than {keep:g} days purged")
    print(f"sign-ins: {logs} log rows older than {keep:g} days and {guards} idle name guards purged")
    return 0


def _user_password(username: str, generate: bool, policy) -> tuple[str | None, str]:
    """(the password to print once, its hash) for ``username``: generated with
    ``--generate``, else GRIDBRANCH_USER_PASSWORD (scripts), else asked twice on the
    terminal; checked against the password policy."""
    from geo_api.accounts import password_for

    if generate:
        return password_for(policy, username, None)
    password = _given_password("GRIDBRANCH_USER_PASSWORD", repr(username), " or use --generate")
    return password_for(policy, username, password)


def _add_users_arguments(parser: argparse.ArgumentParser) -> None:
    from layers.accounts import ROLES

    actions = parser.add_subparsers(dest="action", required=True)
    q = actions.add_parser("add", help="create an account (the first admin, scripts): no scope applies here")
    q.add_argument("username")
    q.add_argument("--role", required=True, choices=ROLES)
    q.add_argument("--area", help="admins, grid workers: the 12-digit area or 15-digit grid code")
    q.add_argument("--department", help="department staff: the department's code")
    q.add_argument("--member-id", type=int, help="members: the member record's id")
    q.add_argument("--name", help="display name")
    q.add_argument("--generate", action="store_true", help="generate the password and print it once")
    q = actions.add_parser("list", help="accounts of an area")
    q.add_argument("--within", help="area or grid code (default: the district)")
    q.add_argument("--role", choices=ROLES)
    q.add_argument("--active", choices=["true", "false"])
    for action, text in (
        ("disable", "disable an account (its tokens stop working at once)"),
        ("enable", "re-enable a disabled account"),
        ("reset-password", "give an account a new password"),
    ):
        q = actions.add_parser(action, help=text)
        q.add_argument("username")
        if action == "reset-password":
            q.add_argument("--generate", action="store_true", help="generate the password and print it once")


def _users_run(session, args, policy) -> int:
    from sqlalchemy import text

    from layers import accounts

    if args.action == "add":
        shown, hashed = _user_password(args.username, args.generate, policy)
        account = accounts.create_account(
            session,
            actor=CLI_ACTOR,
            username=args.username,
            password_hash=hashed,
            role=args.role,
            area_code=args.area,
            department=args.department,
            member_id=args.member_id,
            display_name=args.name,
        )
        session.commit()
        print(f"created {account['username']} ({account['kind']})")
    elif args.action == "list":
        within = (
            args.within
            or session.execute(
                text("SELECT code FROM admin_areas WHERE level = 'district' ORDER BY code LIMIT 1")
            ).scalar()
        )
        if within is None:
            raise GridbranchError("no district is loaded: name --within", field="within")
        active = None if args.active is None else args.active == "true"
        items, total = accounts.accounts_within(session, within, role=args.role, active=active, limit=10**9)
        for a in items:
            bound = a["area_code"] or a["department"] or (f"member {a['member_id']}" if a["member_id"] else "-")
            print(
                f"{a['username']}\t{a['kind']}\t{bound}\t{'active' if a['active'] else 'disabled'}\t"
                f"{a['display_name'] or ''}"
            )
        print(f"{total} account(s) in {within}")
        return 0
    elif args.action in ("disable", "enable"):
        account = accounts.set_account_active(
            session, actor=CLI_ACTOR, username=args.username, active=args.action == "enable"
        )
        session.commit()
        print(f"{account['username']}: {'active' if account['active'] else 'disabled'}")
    else:
        accounts.account(session, args.username)  # a clear error before asking for a password
        shown, hashed = _user_password(args.username, args.generate, policy)
        accounts.reset_password(session, actor=CLI_ACTOR, username=args.username, password_hash=hashed)
        session.commit()
        print(f"{args.username}: password reset")
    if args.action in ("add", "reset-password") and shown:
        print(f"password: {shown}  (shown this once)")
    return 0


def users_command(session, argv: list[str], settings: Settings | None = None) -> int:
    """``gridbranch users ARGV`` on ``session`` (tests; :func:`cmd_users` opens one)."""
    parser = argparse.ArgumentParser(prog="gridbranch users")
    _add_users_arguments(parser)
    policy = (settings or Settings()).auth.password_policy()
    return _users_run(session, parser.parse_args(argv), policy)


def cmd_users(args, settings: Settings) -> int:
    from sqlalchemy.orm import Session

    engine = _engine(settings)
    try:
        with Session(engine) as session:
            return _users_run(session, args, settings.auth.password_policy())
    finally:
        engine.dispose()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridbranch", description="Spatial service for grid party branches (网格党支部)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("db", help="the private PostGIS cluster, its URL, read-only accounts for GIS clients")
    actions = p.add_subparsers(dest="action", required=True)
    for action, text in (("start", "start the private cluster"), ("stop", "stop it"), ("status", "is it running")):
        actions.add_parser(action, help=text).set_defaults(func=cmd_db)
    q = actions.add_parser("url", help="the database's URL, as psql and QGIS take it (postgresql://…)")
    q.add_argument("--sqlalchemy", action="store_true", help="as SQLAlchemy takes it (postgresql+psycopg2://…)")
    q.add_argument("--reader", help="for this read-only account (grant-reader), without a password")
    q.set_defaults(func=cmd_db)
    q = actions.add_parser(
        "grant-reader",
        help="a read-only login for QGIS/GDAL: the gis views, no personal data "
        "(password from GRIDBRANCH_READER_PASSWORD, else generated and printed)",
    )
    q.add_argument("name")
    q.set_defaults(func=cmd_reader)
    q = actions.add_parser("revoke-reader", help="drop a read-only login made by grant-reader")
    q.add_argument("name")
    q.set_defaults(func=cmd_reader)
    q = actions.add_parser("qgis", help="write a QGIS layer definition (.qlr) of the gis views, styled as the map")
    q.add_argument("--reader", required=True, help="the read-only account QGIS signs in as")
    q.add_argument("--out", required=True, help="the .qlr file to write")
    q.set_defaults(func=cmd_qgis)

    p = sub.add_parser(
        "backup", help="the private cluster: a verified base backup, WAL archiving on (a restart the first time)"
    )
    p.add_argument("--dir", help="where base backups go (default: backups beside the cluster's data)")
    p.add_argument("--list", action="store_true", help="list the base backups instead")
    p.add_argument("--mark", metavar="NAME", help="create a named restore point instead (restore --to-point NAME)")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", help="a new cluster from a base backup and the WAL archive, to a point in time")
    p.add_argument("--into", required=True, help="the new cluster's directory (must not hold one)")
    p.add_argument("--port", type=int, required=True, help="the new cluster's port")
    p.add_argument("--dir", help="where the base backups are (as backup --dir)")
    p.add_argument("--backup", help="the base backup's label (default: the newest)")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--to-point", help="a restore point made by backup --mark")
    target.add_argument("--to-time", help="an instant with its offset (2026-12-04T10:00:00+08:00)")
    target.add_argument("--to-lsn", help="a WAL location (0/16B3748)")
    p.set_defaults(func=cmd_restore)

    p = sub.add_parser("report", help="an area's monthly report (月度报告) as PDF or print-ready HTML")
    p.add_argument("--within", required=True, help="a district, street or community code")
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument("--out", required=True, help="the file to write: .pdf or .html")
    p.set_defaults(func=cmd_report)

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
    q.add_argument(
        "--encoding",
        default="utf-8",
        help="text encoding of the file (default UTF-8, with or "
        "without BOM; gb18030 for GBK files saved by Chinese Excel)",
    )
    q.set_defaults(func=cmd_ingest_registrations)
    for kind, text in (
        ("areas", "streets and communities (12-digit codes) from a boundary file"),
        ("grids", "grids (15-digit codes) from a boundary file"),
    ):
        q = kinds.add_parser(
            kind,
            help=text + ": GeoPackage, Shapefile (folder or .zip), GeoJSON, KML/KMZ, "
            "FlatGeobuf, CSV/XLSX with a WKT column",
        )
        q.add_argument("file")
        q.add_argument("--commit", action="store_true", help="write it, in one transaction (default: a dry run)")
        q.add_argument("--crs", help="the file's CRS (wgs84, gcj02, bd09, cgcs2000, EPSG:n); overrides the file's")
        q.add_argument(
            "--map", help="attribute names, e.g. code=BM,name=MC,parent=SQBM (geometry=COL for a WKT column)"
        )
        q.add_argument("--layer", help="the layer (GeoPackage, KML), sheet (XLSX) or Shapefile (in a .zip) to read")
        q.add_argument("--encoding", help="attribute encoding (default: the .cpg, else detected: UTF-8 or GBK/GB18030)")
        q.add_argument("--repair", action="store_true", help="repair invalid geometries with make_valid")
        q.add_argument(
            "--tolerance", type=float, default=100.0, help="m² a unit may reach outside its parent (default 100)"
        )
        q.add_argument("--report", help="also write the report as JSON to this file")
        if kind == "grids":
            q.add_argument(
                "--effective",
                help="the day (2027-01-01, China Standard Time) or instant the new "
                "generation takes effect (default: when committed)",
            )
            q.add_argument(
                "--retire-missing",
                action="store_true",
                help="retire the stored grids of the file's communities that it does not hold (default: kept)",
            )
        q.set_defaults(func=cmd_ingest_boundaries, kind=kind)
    q = kinds.add_parser("generations", help="list the boundary generations (grids imports) and when each takes effect")
    q.add_argument(
        "--moved", action="store_true", help="also list the registrations whose residence lies outside their grid"
    )
    q.add_argument("--at", help="with --moved: at this day or instant (default now)")
    q.add_argument("--within", help="with --moved: inside this area or grid code (default the district)")
    q.set_defaults(func=cmd_ingest_generations)

    for kind, text in (
        ("members", "the member roster (党员花名册): number, name, phone, branch, status, residence lon/lat/crs"),
        ("branches", "branches: code, name, kind, secretary, secretary_phone, community, grids, site lon/lat/crs"),
        ("departments", "functional departments: code, name"),
        ("categories", "event categories: code, name, department, time_limit (working hours), role, warn_share"),
    ):
        q = kinds.add_parser(kind, help=text + " — from a CSV or XLSX")
        q.add_argument("file")
        q.add_argument("--commit", action="store_true", help="write it, in one transaction (default: a dry run)")
        q.add_argument("--map", help="column names, e.g. number=党员编号,name=姓名 (default: found by name)")
        q.add_argument("--rejects", help="where to write rejected rows (default FILE.rejects.csv)")
        q.add_argument("--encoding", help="CSV text encoding (default: UTF-8 with or without BOM, else GB18030)")
        q.add_argument("--sheet", help="the XLSX sheet to read when the workbook holds several")
        q.add_argument("--crs", default="wgs84", help="CRS of coordinates whose crs cell is empty (default wgs84)")
        q.set_defaults(func=cmd_ingest_table, kind=kind)

    p = sub.add_parser(
        "init",
        help="start an empty deployment: migrations, the district's boundary, roles, calendar, a first district admin",
    )
    p.add_argument("--district", required=True, help="the county-level division code, 6 or 12 digits (e.g. 410102)")
    p.add_argument("--boundary", required=True, help="the district's boundary file (any format ingest reads)")
    p.add_argument("--name", help="the district's name (default: from the boundary file)")
    p.add_argument("--crs", help="the boundary file's CRS (default: the file's)")
    p.add_argument("--layer", help="the layer to read when the file holds several")
    p.add_argument("--encoding", help="attribute encoding of the boundary file")
    p.add_argument(
        "--admin",
        default="admin",
        help="username of the first district admin (default admin); "
        "password from GRIDBRANCH_INIT_ADMIN_PASSWORD or asked",
    )
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("users", help="accounts: add, list, disable, enable, reset-password (logged as 'cli')")
    _add_users_arguments(p)
    p.set_defaults(func=cmd_users)

    p = sub.add_parser("coverage", help="coverage analysis: gaps, overlaps, branchless grids, metrics")
    kinds = p.add_subparsers(dest="action", required=True)
    q = kinds.add_parser("report", help="print the coverage table of an area and write its issues and summary files")
    q.add_argument("--within", required=True, help="area (or grid) code, e.g. 410105000000")
    q.add_argument(
        "--level",
        choices=["district", "street", "community", "grid"],
        help="units of the table (default: the level below --within)",
    )
    q.add_argument(
        "--out", default=".", help="directory for coverage_<code>_{issues.geojson,issues.csv,<level>_summary.csv}"
    )
    q.set_defaults(func=cmd_coverage_report)

    p = sub.add_parser("audit", help="the personal-data audit (audit_log)")
    kinds = p.add_subparsers(dest="action", required=True)
    q = kinds.add_parser("purge", help="delete the audit and sign-in rows older than the retention, by the clock")
    q.add_argument("--keep-days", type=float, help="keep this many days (default GRIDBRANCH_AUDIT_RETENTION_DAYS, 365)")
    q.set_defaults(func=cmd_audit_purge)

    p = sub.add_parser("stack", help="nginx in front of several workers and the private cluster, on loopback")
    p.add_argument("action", choices=["up", "down", "status"])
    p.add_argument("--port", type=_positive, default=8080, help="nginx's port (default 8080; workers take the next N)")
    p.add_argument("--workers", type=_positive, help="worker processes (default: the core count)")
    p.add_argument("--dir", type=Path, help="the stack's files (default GRIDBRANCH_STACK_DIR or .gridbranch/stack)")
    p.set_defaults(func=cmd_stack)

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
            p.add_argument(
                "--reload",
                action="store_true",
                help="drop the private cluster's database and load the demo afresh, its timeline up to now",
            )
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

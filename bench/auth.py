"""Authentication benchmark, in named sections (``--section NAME``, default all):

``signin``
    Sign-ins per second through ``POST /v1/auth/token`` with the Argon2id cost kept
    (argon2-cffi's defaults: 3 passes over 64 MiB, 4 lanes) — the guards, the sign-in log
    and the session row included — from 1 and 2 clients, against the baseline of bare
    Argon2 verifications in one process (what the hash alone allows).

``check``
    The cost of the revocation and idle check (the token's epoch compared with the
    account's, its idle and absolute lifetime judged by the service's clock) on every
    authenticated request: an authenticated members read (``GET /v1/registrations``), a
    private tile (``/tiles/members,grids/15/…``, as the district admin) and ``GET
    /v1/auth/me`` (the smallest signed-in answer, where the check weighs most), each
    against the same request served with the check off — ``get_caller`` replaced by the
    one before tokens were revocable (signature and expiry, and the account read every
    request made already to stop disabled accounts). Goal: ≤ 5 % slower.

Both serve the real app (uvicorn, one worker) on the demo database (``gridbranch demo
--no-serve`` loads it). Run: ``.venv/bin/python bench/auth.py [--section check]
[--requests 3000] [--clients 8]``. Another section (``audit``) is to join this file.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from bench.common import ROOT, demo_engine, ensure_accounts, fmt, free_port, get_request, listening, load  # noqa: E402

BENCH_USER, BENCH_PASSWORD = "bench_signin", "Bench-signin-2026"
GOAL_RATIO = 1.05


def _bare_get_caller():
    """``geo_api.deps.get_caller`` with the check off: the token's signature and expiry
    (its ``exp`` only) and the account read, as before tokens were revocable. (Its
    parameters are declared as get_caller's, for FastAPI to resolve.)"""
    from typing import Annotated

    import jwt
    from fastapi import Depends, Request
    from starlette.concurrency import run_in_threadpool

    from geo_api.deps import ANONYMOUS, Caller, SessionDep, oauth2
    from layers import users
    from layers.errors import Unauthorized

    async def bare_get_caller(
        request: Request, session: SessionDep, token: Annotated[str | None, Depends(oauth2)]
    ) -> Caller:
        if not token:
            return ANONYMOUS
        try:
            payload = jwt.decode(token, request.app.state.auth_secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        user = await run_in_threadpool(users.caller_account, session, payload["sub"])
        if user is None:
            raise Unauthorized("unknown or disabled account")
        return Caller(username=user.username, role=user.role, area_code=user.area_code, member_id=user.member_id)

    return bare_get_caller


_SERVE = """
import sys
sys.path.insert(0, {root!r})
import uvicorn
from geo_api.app import create_app
from geo_api.settings import Settings
from geo_api import deps
settings = Settings.from_env()
app = create_app(settings)
if {off}:
    from bench.auth import _bare_get_caller
    app.dependency_overrides[deps.get_caller] = _bare_get_caller()
uvicorn.run(app, host="127.0.0.1", port={port}, log_level="warning", access_log=False)
"""


def serve(off: bool):
    port = free_port()
    env = {**os.environ, "GRIDBRANCH_DEMO": "true", "GRIDBRANCH_ACCESS_LOG": "false", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE.format(root=str(ROOT), off=off, port=port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    return listening(proc, port, "the app")


def _token(engine, username: str) -> str:
    from datetime import timedelta

    from geo_api.app import _auth_secret
    from geo_api.security import issue_token
    from geo_api.settings import Settings
    from layers.clock import SYSTEM

    with engine.connect() as conn:
        epoch = conn.execute(text("SELECT token_epoch FROM users WHERE username = :u"), {"u": username}).scalar_one()
    now = SYSTEM.now()  # the served app's clock
    return issue_token(
        _auth_secret(Settings.from_env()),
        username,
        epoch=epoch,
        session_id="bench",
        started=now,
        session_end=now + timedelta(hours=12),
        idle_minutes=10**6,
        now=now,
    )


def _tile_paths(engine, n: int) -> list[str]:
    """z15 tiles over member residences (the private members layer with grids)."""
    import math

    with engine.connect() as conn:
        points = conn.execute(
            text("SELECT ST_X(geom), ST_Y(geom) FROM residences WHERE ended_at IS NULL ORDER BY id LIMIT :n"), {"n": n}
        ).all()
    paths = []
    for lon, lat in points:
        x = int((lon + 180) / 360 * 2**15)
        y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**15)
        paths.append(f"/tiles/members,grids/15/{x}/{y}.mvt")
    return paths


def section_check(args) -> None:
    engine = demo_engine()
    ensure_accounts(engine)
    with engine.connect() as conn:
        community = conn.execute(
            text("SELECT code FROM admin_areas WHERE level = 'community' ORDER BY code LIMIT 1")
        ).scalar_one()
    auth = {"Authorization": f"Bearer {_token(engine, 'admin')}"}
    tiles = _tile_paths(engine, 200)
    cases = {
        "members read (GET /v1/registrations)": [get_request(f"/v1/registrations?within={community}&limit=50", auth)]
        * args.requests,
        "private tile (members,grids z15)": [get_request(tiles[i % len(tiles)], auth) for i in range(args.requests)],
        "GET /v1/auth/me": [get_request("/v1/auth/me", auth)] * args.requests,
    }
    print(f"check: {args.requests} requests per case, {args.clients} clients, one worker; rounds alternate off/on")
    results: dict[tuple[str, bool], list[float]] = {}
    for rnd in range(args.rounds):
        for off in (True, False):
            with serve(off) as port:
                for name, requests in cases.items():
                    load(port, requests[: max(50, len(requests) // 10)], args.clients)  # warm up
                    r = load(port, requests, args.clients)
                    if r.get("non_2xx"):
                        raise SystemExit(f"{name}: {r['non_2xx']} answers were not 2xx")
                    results.setdefault((name, off), []).append(r["per_s"])
                    print(f"  round {rnd + 1} check {'off' if off else 'on '} {name}: {fmt(r)}")
    print("check: requests/s, best round of each (higher is better); ratio = off / on (goal ≤ 1.05)")
    for name in cases:
        off, on = max(results[(name, True)]), max(results[(name, False)])
        ratio = off / on
        print(
            f"  {name:40s} off {off:8.1f}/s  on {on:8.1f}/s  ratio {ratio:.3f}  "
            f"{'ok' if ratio <= GOAL_RATIO else 'ABOVE GOAL'}"
        )


def section_signin(args) -> None:
    from argon2 import PasswordHasher
    from sqlalchemy.orm import Session

    from geo_api.security import hash_password
    from layers.users import upsert_user

    engine = demo_engine()
    hasher = PasswordHasher()
    hashed = hash_password(BENCH_PASSWORD)
    n = args.signins
    t0 = time.perf_counter()
    for _ in range(n):
        hasher.verify(hashed, BENCH_PASSWORD)
    bare = n / (time.perf_counter() - t0)
    print(
        f"signin: baseline, bare Argon2id verifications in one process: {bare:.1f}/s "
        f"(time_cost {hasher.time_cost}, memory {hasher.memory_cost} KiB, parallelism {hasher.parallelism})"
    )
    with Session(engine) as s:
        upsert_user(s, BENCH_USER, hashed, "dispatcher")
        s.commit()
    body = f"username={BENCH_USER}&password={BENCH_PASSWORD}".encode()
    raw = (
        f"POST /v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    try:
        with serve(False) as port:
            load(port, [raw] * 4, 1)
            for clients in (1, 2):
                r = load(port, [raw] * n, clients)
                if r.get("non_2xx"):
                    raise SystemExit(f"sign-in: {r['non_2xx']} answers were not 2xx")
                print(
                    f"signin: POST /v1/auth/token, {clients} client(s): {fmt(r)}; "
                    f"{r['per_s'] / bare:.2f} × the bare verification rate"
                )
    finally:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM users WHERE username = :u"), {"u": BENCH_USER})
            conn.execute(text("DELETE FROM signin_guard WHERE name = :u"), {"u": BENCH_USER})
            conn.execute(text("DELETE FROM signin_log WHERE name = :u"), {"u": BENCH_USER})


SECTIONS = {"signin": section_signin, "check": section_check}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--section", choices=sorted(SECTIONS), action="append", help="run only this section (repeatable; default all)"
    )
    parser.add_argument("--requests", type=int, default=3000, help="check: requests per case and round")
    parser.add_argument("--rounds", type=int, default=2, help="check: rounds (off and on alternate)")
    parser.add_argument("--clients", type=int, default=8, help="check: concurrent keep-alive clients")
    parser.add_argument("--signins", type=int, default=40, help="signin: sign-ins per run")
    args = parser.parse_args()
    os.environ["GRIDBRANCH_DEMO"] = "true"  # the demo's kept signing secret, as served
    for name in args.section or list(SECTIONS):
        SECTIONS[name](args)


if __name__ == "__main__":
    main()

"""Accounts as sign-in sees them: lookup and upsert, sessions, and the guards against
guessing (the lock of a name tried too often, the throttle of an address failing too
often). Passwords arrive hashed; hashing and tokens live in geo_api.security.

Times are the service's clock (``gridbranch_now()``); the caller commits.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import CursorResult, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from layers.models import User


def active_user(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username, User.active.is_(True)))


_CALLER = select(
    User.username,
    User.role,
    User.area_code,
    User.member_id,
    User.department_id,
    User.token_epoch,
    User.must_change_password,
)


def caller_account(session: Session, username: str):
    """What every authenticated request reads of its account (active ones only): the
    columns of the caller and the token epoch its token must carry. One primary-key-like
    lookup (the unique username), as before tokens were revocable."""
    return session.execute(_CALLER.where(User.username == username, User.active.is_(True))).first()


def upsert_user(
    session: Session,
    username: str,
    password_hash: str,
    role: str,
    area_code: str | None = None,
    member_id: int | None = None,
    display_name: str | None = None,
    department_id: int | None = None,
) -> None:
    """Create the account or reset its password, role and scope (department staff: their
    department's id)."""
    values = dict(
        username=username,
        password_hash=password_hash,
        role=role,
        area_code=area_code,
        member_id=member_id,
        department_id=department_id,
        display_name=display_name,
        active=True,
    )
    stmt = insert(User).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[User.username], set_={k: v for k, v in values.items() if k != "username"}
    )
    session.execute(stmt)


def set_password(session: Session, username: str, password_hash: str, *, must_change: bool = False) -> int:
    """Give ``username`` a new password hash (the trigger of migration 0015 bumps its
    token epoch: every token issued before stops) and end its sessions; its new epoch."""
    epoch = session.execute(
        text(
            "UPDATE users SET password_hash = :h, must_change_password = :m WHERE username = :u RETURNING token_epoch"
        ),
        {"h": password_hash, "m": must_change, "u": username},
    ).scalar_one()
    end_sessions(session, username)
    return epoch


# -- sessions ---------------------------------------------------------------------------


def start_session(session: Session, *, session_id: str, username: str, refresh_hash: str, lifetime: timedelta) -> dict:
    """A new session of ``username`` lasting at most ``lifetime``: its id, the account's
    epoch, when it began and when it ends."""
    row = session.execute(
        text(
            """INSERT INTO auth_sessions (id, user_id, epoch, refresh_hash, expires_at)
           SELECT :id, u.id, u.token_epoch, :h, gridbranch_now() + :life FROM users u WHERE u.username = :u
           RETURNING id, epoch, created_at, expires_at"""
        ),
        {"id": session_id, "h": refresh_hash, "life": lifetime, "u": username},
    ).one()
    return dict(row._mapping)


def renew_session(session: Session, refresh_hash: str, *, idle: timedelta) -> tuple[dict | None, str | None]:
    """The session whose refresh secret hashes to ``refresh_hash``, renewed now — (its
    id, epoch, start, end and the account's username and must-change flag, None) — or
    (None, why not: ``invalid`` unknown, ``expired`` past its end, ``idle`` not renewed
    within ``idle``, ``revoked`` ended or of an older epoch, ``disabled``)."""
    row = session.execute(
        text(
            """SELECT s.id, s.epoch, s.created_at, s.expires_at, u.username, u.must_change_password,
                  CASE WHEN s.ended_at IS NOT NULL OR s.epoch <> u.token_epoch THEN 'revoked'
                       WHEN NOT u.active THEN 'disabled'
                       WHEN s.expires_at <= gridbranch_now() THEN 'expired'
                       WHEN s.renewed_at <= gridbranch_now() - :idle THEN 'idle' END AS refused
           FROM auth_sessions s JOIN users u ON u.id = s.user_id WHERE s.refresh_hash = :h FOR UPDATE OF s"""
        ),
        {"h": refresh_hash, "idle": idle},
    ).first()
    if row is None:
        return None, "invalid"
    if row.refused:
        return None, row.refused
    session.execute(text("UPDATE auth_sessions SET renewed_at = gridbranch_now() WHERE id = :id"), {"id": row.id})
    return {k: v for k, v in row._mapping.items() if k != "refused"}, None


def end_sessions(session: Session, username: str) -> None:
    """End every session of ``username`` (their refresh cookies stop working)."""
    session.execute(
        text(
            "UPDATE auth_sessions s SET ended_at = gridbranch_now() FROM users u "
            "WHERE u.id = s.user_id AND u.username = :u AND s.ended_at IS NULL"
        ),
        {"u": username},
    )


def session_account(session: Session, refresh_hash: str) -> str | None:
    """The username of the session whose refresh secret hashes to ``refresh_hash``, if it
    has not ended."""
    return session.execute(
        text(
            "SELECT u.username FROM auth_sessions s JOIN users u ON u.id = s.user_id "
            "WHERE s.refresh_hash = :h AND s.ended_at IS NULL"
        ),
        {"h": refresh_hash},
    ).scalar()


def revoke_tokens(session: Session, username: str) -> None:
    """Every token and session of ``username`` ends now (a sign-out)."""
    session.execute(text("UPDATE users SET token_epoch = token_epoch + 1 WHERE username = :u"), {"u": username})
    end_sessions(session, username)


# -- guards -----------------------------------------------------------------------------


def name_lock(session: Session, name: str) -> datetime | None:
    """Until when ``name`` (a username as typed, or a member number being activated) is
    locked, or None. Its guard row is created if missing — for unknown names too, so a
    lock looks the same whether an account exists or not — and stays locked to this
    transaction: attempts on one name run one after the other."""
    session.execute(text("INSERT INTO signin_guard (name) VALUES (:n) ON CONFLICT DO NOTHING"), {"n": name})
    return session.execute(
        text(
            "SELECT CASE WHEN locked_until > gridbranch_now() THEN locked_until END "
            "FROM signin_guard WHERE name = :n FOR UPDATE"
        ),
        {"n": name},
    ).scalar()


def name_failed(session: Session, name: str, *, lock_after: int, lock_for: timedelta) -> datetime | None:
    """Count a failure of ``name``; the ``lock_after``-th in a row locks it for
    ``lock_for`` (and starts the count afresh). Until when it is now locked, or None."""
    return session.execute(
        text(
            """UPDATE signin_guard SET
               locked_until = CASE WHEN failures + 1 >= :n THEN gridbranch_now() + :lock END,
               failures = CASE WHEN failures + 1 >= :n THEN 0 ELSE failures + 1 END,
               last_failed_at = gridbranch_now()
           WHERE name = :name RETURNING locked_until"""
        ),
        {"n": lock_after, "lock": lock_for, "name": name},
    ).scalar()


def name_succeeded(session: Session, name: str) -> None:
    session.execute(text("UPDATE signin_guard SET failures = 0, locked_until = NULL WHERE name = :n"), {"n": name})


def log_attempt(session: Session, name: str, address: str | None, outcome: str) -> None:
    """A row of the sign-in log: ``outcome`` ok, failed, locked (refused: the name is
    locked) or throttled (refused: the address is slowed)."""
    session.execute(
        text("INSERT INTO signin_log (name, address, outcome) VALUES (:n, :a, :o)"),
        {"n": name[:200], "a": address, "o": outcome},
    )


def purge_signins(session: Session, keep_days: float) -> tuple[int, int]:
    """Forget sign-in records older than ``keep_days`` before the clock: ``signin_log``
    rows, and the guard rows of names that are not locked and have not failed since
    (their streak goes with the log that showed it; a name tried again starts afresh).
    Returns (log rows, guard rows) deleted; the caller commits."""
    keep = timedelta(days=keep_days)
    # A DELETE's result is a cursor result; Session.execute is typed for SELECTs.
    logs = cast(
        CursorResult, session.execute(text("DELETE FROM signin_log WHERE at < gridbranch_now() - :k"), {"k": keep})
    ).rowcount
    guards = cast(
        CursorResult,
        session.execute(
            text(
                """DELETE FROM signin_guard
           WHERE (locked_until IS NULL OR locked_until <= gridbranch_now())
             AND (last_failed_at IS NULL OR last_failed_at < gridbranch_now() - :k)"""
            ),
            {"k": keep},
        ),
    ).rowcount
    return logs, guards


def address_wait(session: Session, address: str | None, *, failures: int, window: timedelta, delay: timedelta) -> float:
    """Seconds ``address`` must still wait before its next attempt: 0 unless it failed
    ``failures`` times or more within ``window``; then one attempt per ``delay``."""
    if address is None:
        return 0.0
    row = session.execute(
        text(
            """SELECT count(*) FILTER (WHERE outcome IN ('failed', 'locked')) AS failed,
                  max(at) FILTER (WHERE outcome <> 'throttled') AS last, gridbranch_now() AS now
           FROM signin_log WHERE address = :a AND at > gridbranch_now() - :w"""
        ),
        {"a": address, "w": window},
    ).one()
    if row.failed < failures or row.last is None:
        return 0.0
    return max(0.0, (row.last + delay - row.now).total_seconds())

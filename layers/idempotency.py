"""Idempotency keys: a write request sent with a key (HTTP ``Idempotency-Key``) is done
once; a retry with the same key and the same request gets the first answer and writes
nothing, the same key with another request is refused.

The key is taken in the transaction of the write it answers and its answer recorded in
that transaction too, so a crash leaves both or neither. Taking a key is an insert into
a table whose primary key is (owner, key): a second transaction taking the same key
waits on the first one's uncommitted row (PostgreSQL's unique index does the waiting),
then finds the answer the first committed — or, if the first rolled back, takes the key
itself. Two writes under one key are impossible. A refused request (an error) records
nothing: its transaction is rolled back, key included.

Keys expire after a time (``ttl_s``); an expired key is taken afresh. Expired rows are
deleted a few at a time by the requests that take keys (never waiting on one another).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson
from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.errors import Conflict, InvalidInput

HEADER = "Idempotency-Key"
_PURGE = 20  # expired rows deleted per key taken, at most


@dataclass(frozen=True)
class Answer:
    """The answer recorded under a key."""

    status: int
    media_type: str
    body: bytes


def fingerprint(route: str, content) -> str:
    """What a key's request was: its route and body (any JSON-shaped value, compared
    canonically — key order and spacing do not matter)."""
    data = orjson.dumps([route, content], option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(data).hexdigest()


def claim(session: Session, owner: str, key: str, print_: str, *, ttl_s: float) -> Answer | None:
    """Take ``key`` for ``owner`` in the session's transaction. None: the caller holds it
    now, does its write and calls :func:`record` in this same transaction. Otherwise the
    answer recorded for the key (waiting, first, for a transaction holding it to end);
    :class:`InvalidInput` naming the header if the key was used for another request."""
    session.execute(
        text("""DELETE FROM idempotency_keys WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM idempotency_keys WHERE expires_at < gridbranch_now() AND NOT (owner = :o AND key = :k)
                    LIMIT :n FOR UPDATE SKIP LOCKED))"""),
        {"o": owner, "k": key, "n": _PURGE},
    )
    for _ in range(3):
        session.execute(
            text("DELETE FROM idempotency_keys WHERE owner = :o AND key = :k AND expires_at < gridbranch_now()"),
            {"o": owner, "k": key},
        )
        taken = session.execute(
            text("""INSERT INTO idempotency_keys (owner, key, fingerprint, expires_at)
                    VALUES (:o, :k, :f, gridbranch_now() + make_interval(secs => :ttl))
                    ON CONFLICT (owner, key) DO NOTHING RETURNING 1"""),
            {"o": owner, "k": key, "f": print_, "ttl": ttl_s},
        ).first()
        if taken is not None:
            return None
        row = session.execute(
            text("SELECT fingerprint, status, media_type, body FROM idempotency_keys WHERE owner = :o AND key = :k"),
            {"o": owner, "k": key},
        ).first()
        if row is None:
            continue  # it expired and went meanwhile: take it
        if row.fingerprint != print_:
            raise InvalidInput(
                f"the {HEADER} {key!r} was used for another request (another body or endpoint); "
                "send a new key for a new request",
                field=HEADER,
            )
        if row.body is None:
            # taken by a request whose transaction ended without an answer: nothing to
            # replay, and its write (if any) is not known to be whole
            raise Conflict(
                f"the {HEADER} {key!r} belongs to a request that gave no answer; send a new key", field=HEADER
            )
        return Answer(row.status, row.media_type, bytes(row.body))
    raise InvalidInput(f"the {HEADER} {key!r} keeps changing hands; send the request again", field=HEADER)


def record(session: Session, owner: str, key: str, answer: Answer) -> None:
    """Keep ``answer`` under the key taken by :func:`claim`, in the same transaction."""
    session.execute(
        text("UPDATE idempotency_keys SET status = :s, media_type = :m, body = :b WHERE owner = :o AND key = :k"),
        {"s": answer.status, "m": answer.media_type, "b": answer.body, "o": owner, "k": key},
    )

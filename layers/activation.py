"""Members' activation codes (激活码): a community admin hands each member of the
community a one-time code; the member activates their account with their member number
(党员编号), their phone as the roster holds it and the code, and sets a password.

A code is 12 characters of an alphabet without look-alikes (≈ 60 random bits), shown in
groups of four. Only its SHA-256, salted with the member's id, is stored: at 60 random
bits a slow hash adds nothing an attacker could not get by guessing online, which the
sign-in guards bound, and a community's list is hashed in a blink. A member has at most
one open code (issuing a new one voids the one before); a code is used once and expires
by the service's clock (``gridbranch_now()``).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import re
import secrets
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.codes import area_prefix
from layers.registrations import MEMBER_AREA_COLUMNS

ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
LENGTH = 12
#: most codes one request issues (a community has a few hundred members)
MAX_CODES = 5000


def new_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))
    return "-".join(raw[i : i + 4] for i in range(0, LENGTH, 4))


def normalise_code(code: str) -> str:
    """A code as typed (any case, with or without spaces and dashes) as issued, bare."""
    return re.sub(r"[\s\-]", "", code).upper()


def code_digest(member_id: int, code: str) -> str:
    return hashlib.sha256(f"{member_id}:{normalise_code(code)}".encode("utf-8", "surrogatepass")).hexdigest()


def phone_digits(phone: str | None) -> str:
    """A phone reduced to what identifies it: its digits, without a leading +86/0086."""
    digits = re.sub(r"\D", "", phone or "")
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) - len(prefix) == 11:
            return digits[len(prefix) :]
    return digits


def members_without_account(session: Session, within: str) -> list[int]:
    """The members belonging to area or grid ``within`` (as :func:`layers.registrations.member_area`
    decides) who have no account yet, by id."""
    return list(
        session.execute(
            text(
                f"""SELECT id FROM (SELECT m.id, COALESCE(ma.registered, ma.resident, ma.work_community) AS home
                            FROM members m
                            CROSS JOIN LATERAL (SELECT {MEMBER_AREA_COLUMNS}) ma
                            WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.member_id = m.id)) q
            WHERE home LIKE :p ORDER BY id"""
            ),
            {"p": area_prefix(within) + "%"},
        ).scalars()
    )


def issue_codes(session: Session, *, actor: str, member_ids: list[int], days: int) -> list[dict]:
    """New codes for ``member_ids`` (the caller has checked that ``actor`` may), valid
    ``days`` days; each member's open code before is void. One entry per member, by
    member number: its id, number, name, code (answered this once) and expiry."""
    if not member_ids:
        return []
    session.execute(
        text(
            "UPDATE activation_codes SET voided_at = gridbranch_now() "
            "WHERE member_id = ANY(:m) AND used_at IS NULL AND voided_at IS NULL"
        ),
        {"m": member_ids},
    )
    codes = {m: new_code() for m in member_ids}
    rows = session.execute(
        text(
            """INSERT INTO activation_codes (member_id, code_hash, issued_by, expires_at)
           SELECT m, h, :actor, gridbranch_now() + :life FROM unnest(CAST(:m AS integer[]), CAST(:h AS text[])) AS x(m, h)
           RETURNING member_id, expires_at"""
        ),
        {
            "m": list(codes),
            "h": [code_digest(m, c) for m, c in codes.items()],
            "actor": actor,
            "life": timedelta(days=days),
        },
    ).all()
    expires = {r.member_id: r.expires_at for r in rows}
    members = session.execute(text("SELECT id, number, name FROM members WHERE id = ANY(:m)"), {"m": member_ids}).all()
    out = [
        {"member_id": m.id, "number": m.number, "name": m.name, "code": codes[m.id], "expires_at": expires[m.id]}
        for m in members
    ]
    return sorted(out, key=lambda e: (e["number"] or "", e["member_id"]))


def redeem(session: Session, *, number: str, phone: str, code: str) -> int | None:
    """The member whose number, roster phone and open, unexpired code these are — the
    code now used — or None. Every refusal costs the same: one lookup and one digest."""
    row = session.execute(
        text(
            """SELECT m.id, m.phone, c.id AS code_id, c.code_hash FROM members m
           LEFT JOIN activation_codes c ON c.member_id = m.id AND c.used_at IS NULL AND c.voided_at IS NULL
                                        AND c.expires_at > gridbranch_now()
           WHERE m.number = :n FOR UPDATE OF m"""
        ),
        {"n": number},
    ).first()
    member_id = row.id if row is not None else 0
    digest = code_digest(member_id, code)
    ok = row is not None and row.code_id is not None and hmac.compare_digest(digest, row.code_hash)
    ok = ok and bool(row.phone) and hmac.compare_digest(phone_digits(phone), phone_digits(row.phone))
    if not ok:
        return None
    session.execute(text("UPDATE activation_codes SET used_at = gridbranch_now() WHERE id = :c"), {"c": row.code_id})
    return member_id


def as_csv(rows) -> str:
    """Rows as CSV for printing or a spreadsheet (names and numbers follow the text rules:
    nothing formula-like)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()

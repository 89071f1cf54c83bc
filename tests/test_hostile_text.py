"""One corpus of hostile text through every way text comes in: the upkeep endpoints
(grid worker, branch create and change), event reports (anonymous — the fast path in
front — and signed in), Open311 reports, registration decisions, and the bulk
registration import. Each bad value is refused by each entry point the same way: an
invalid-input answer naming the field, with the message of the one rule
(``layers.textfields``), and nothing stored. Good values with unusual but legitimate
text are taken everywhere, so the test fails if an entry point refuses too much."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import text

from ingest import registrations as bulk
from layers import textfields
from layers.errors import InvalidInput
from layers.locate import build_grid_index
from tests.conftest import token_for
from tests.factories import COMMUNITY, GRID_A, add_user
from tests.factories.events import P, X, Y, event_world

#: name fields: people's and branches' names
NAMES = [
    '=HYPERLINK("http://evil.example","点我")',
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1+1",
    "名" * 65,
    "名" * 5000,
    "张\x00三",
    "张\x1b[2J三",
    "张\x07三",
    "张\n三",
    "张\r三",
    "张\ud800三",
    "张\udfff三",
    "张\u202e三",
    "张\u2066三",
    "张\u200b三",
    "张\ufeff三",
    "张\ufffe三",
]
#: phone fields
PHONES = [
    "+1 234",
    "12345",
    "=13800000001",
    "１３８００００００００",
    "1" * 5000,
    "138\ud80000000001",
    "1380000\n0001",
    "13800000001\x00",
    "@13800000001",
]
#: free text of several lines (descriptions, reasons): line breaks and formulas are fine
TEXTS = [
    "坏\x00字",
    "坏\x1b]52;c;ZXZpbA==\x07字",
    "坏\x08字",
    "坏\ud800字",
    "坏\udc00字",
    "坏\u202e字",
    "坏\u2069字",
    "坏\ufffe字",
    "坏\x7f字",
]
#: one line of free text (contacts, URLs, names in a contact)
LINES = TEXTS + ["第一行\n第二行", "第一行\r第二行", "第一行\x0b第二行"]

GOOD_NAME, GOOD_PHONE = "欧阳·娜娜", "0371-66881234"
GOOD_TEXT = "楼道里有电动车充电\n\t=不是公式，是描述\n👨‍👩‍👧 一家人都看见了"
GOOD_LINE = "王先生 13711112222 wang@example.cn"


def expected(check, value) -> str:
    """The message of the rule for ``value``, without the field name it starts with."""
    with pytest.raises(InvalidInput) as caught:
        check(value, "FIELD")
    return caught.value.detail.removeprefix("FIELD ")


def send(client, method, url, body, headers=None):
    """JSON as a client sends it, escapes and all (a lone surrogate as \\ud800)."""
    return client.request(
        method, url, content=json.dumps(body).encode(), headers={"content-type": "application/json", **(headers or {})}
    )


def refused(r, field, message, *, open311=False):
    if open311:
        assert r.status_code == 400, r.text
        [error] = r.json()
        assert error["code"] == 400 and field[0] in error["description"] and message in error["description"], r.text
        return
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["field"] in field and message in body["detail"], (field, message, body)


@pytest.fixture
def world(empty_db, empty_client):
    w = event_world(empty_db)
    add_user(empty_db, "admin", "admin", area_code="410105000000")
    add_user(empty_db, "disp", "dispatcher")
    pending = empty_db.execute(text("SELECT id FROM registrations WHERE status = 'pending'")).scalar()
    admin = token_for("admin")
    r = send(
        empty_client,
        "POST",
        "/v1/branches",
        {"name": "测试社区党委", "kind": "community", "community": COMMUNITY, "grids": [GRID_A]},
        admin,
    )
    assert r.status_code == 201, r.text
    return {
        **w,
        "c": empty_client,
        "db": empty_db,
        "admin": admin,
        "disp": token_for("disp"),
        "pending": pending,
        "branch": r.json()["code"],
    }


def counts(db) -> tuple:
    return db.execute(
        text(
            """SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM upkeep_log), (SELECT count(*) FROM branches),
                  (SELECT count(*) FROM members), (SELECT count(*) FROM registrations WHERE status = 'pending'),
                  (SELECT string_agg(coalesce(worker_name, '') || coalesce(worker_phone, ''), ',' ORDER BY id)
                   FROM grids)"""
        )
    ).one()


# each entry point: corpus, rule, send(world, value) -> response, the names it may give the field (the body's,
# or the upkeep layer's own), Open311 shape, and a good value if the rule's is not one here
def worker(field):
    def go(w, value):
        body = {"name": GOOD_NAME, "phone": GOOD_PHONE, field: value}
        return send(w["c"], "PUT", f"/v1/grids/{GRID_A}/worker", body, w["admin"])

    return go


def branch_create(field):
    def go(w, value):
        body = {
            "name": "测试社区第二党委",
            "kind": "community",
            "community": COMMUNITY,
            "grids": [GRID_A],
            "secretary_name": GOOD_NAME,
            "secretary_phone": GOOD_PHONE,
            field: value,
        }
        return send(w["c"], "POST", "/v1/branches", body, w["admin"])

    return go


def branch_patch(field):
    def go(w, value):
        body = {"secretary_name": GOOD_NAME, "secretary_phone": GOOD_PHONE, field: value}
        return send(w["c"], "PATCH", f"/v1/branches/{w['branch']}", body, w["admin"])

    return go


def event(field, who=None):
    def go(w, value):
        body = {
            "lon": P[0],
            "lat": P[1],
            "category": "xfyh",
            "description": GOOD_TEXT,
            "contact": GOOD_LINE,
            "photos": ["https://example.cn/1.jpg"],
        }
        body[field] = [value] if field == "photos" else value
        return send(w["c"], "POST", "/v1/events", body, w[who] if who else None)

    return go


def open311(field):
    def go(w, value):
        body = {
            "service_code": "xfyh",
            "lat": P[1],
            "long": P[0],
            "description": GOOD_TEXT,
            "first_name": "小明",
            "phone": "13711112222",
            field: value,
        }
        return send(w["c"], "POST", "/open311/v2/requests.json", body)

    return go


def reject(w, value):
    return send(w["c"], "POST", f"/v1/registrations/{w['pending']}/reject", {"reason": value}, w["admin"])


ENTRY_POINTS = {
    "worker name": (NAMES, textfields.name, worker("name"), ("name", "worker_name"), False, None),
    "worker phone": (PHONES, textfields.phone, worker("phone"), ("phone", "worker_phone"), False, None),
    "branch name": (NAMES, textfields.name, branch_create("name"), ("name",), False, None),
    "branch secretary phone": (
        PHONES,
        textfields.phone,
        branch_create("secretary_phone"),
        ("secretary_phone",),
        False,
        None,
    ),
    "branch secretary renamed": (
        NAMES,
        textfields.name,
        branch_patch("secretary_name"),
        ("secretary_name",),
        False,
        None,
    ),
    "anonymous report description": (TEXTS, textfields.text, event("description"), ("description",), False, None),
    "anonymous report contact": (LINES, textfields.line, event("contact"), ("contact",), False, None),
    "anonymous report photo": (
        LINES,
        textfields.line,
        event("photos"),
        ("photos.0",),
        False,
        "https://example.cn/照片 1.jpg",
    ),
    "dispatcher report description": (
        TEXTS,
        textfields.text,
        event("description", "disp"),
        ("description",),
        False,
        None,
    ),
    "Open311 description": (TEXTS, textfields.text, open311("description"), ("description",), True, None),
    "Open311 first name": (LINES, textfields.line, open311("first_name"), ("first_name",), True, "欧阳"),
    "Open311 phone": (LINES, textfields.line, open311("phone"), ("phone",), True, "+86 371 6688 1234"),
    "registration rejection reason": (TEXTS, textfields.text, reject, ("reason",), False, None),
}


def message_for(check, value, field) -> str:
    message = expected(check, value)
    # a body field's own length bound (pydantic's) may speak first: the same refusal
    return "at most" if "characters; at most" in message else message


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_entry_point_refuses_the_corpus_the_same_way(world, entry):
    corpus, check, go, field, spec, good = ENTRY_POINTS[entry]
    before = counts(world["db"])
    for value in corpus:
        if spec and value.strip() != value:
            continue  # Open311 trims its form fields first
        refused(go(world, value), field, message_for(check, value, field), open311=spec)
    assert counts(world["db"]) == before  # nothing stored, nothing logged
    # and the same entry point takes good text (it refuses what is bad, not everything)
    good = (
        good
        or {
            textfields.name: GOOD_NAME,
            textfields.phone: GOOD_PHONE,
            textfields.text: GOOD_TEXT,
            textfields.line: GOOD_LINE,
        }[check]
    )
    r = go(world, good)
    assert r.status_code in (200, 201), r.text


def test_the_import_refuses_the_corpus_the_same_way(world):
    cases = list(
        enumerate(
            [("name", v, textfields.name) for v in NAMES] + [("phone", v, textfields.phone) for v in PHONES], start=1
        )
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(bulk.COLUMNS)
    good = {
        "member_id": "",
        "name": GOOD_NAME,
        "phone": GOOD_PHONE,
        "lon": X + 0.02,
        "lat": Y + 0.02,
        "crs": "wgs84",
        "role": "fuwu",
    }
    for k, (column, value, _) in cases:
        writer.writerow([{**good, "member_id": f"H{k:03d}", column: value}[c] for c in bulk.COLUMNS])
    writer.writerow([{**good, "member_id": "H999"}[c] for c in bulk.COLUMNS])
    # as bytes, a lone surrogate is not UTF-8: the file as a whole is refused, with the reason
    refused_file = bulk.plan_import(
        world["db"],
        out.getvalue().encode("utf-8", "surrogatepass"),
        build_grid_index(world["db"]),
        tolerance_m=30,
        edge_m=0.05,
    )
    assert "not utf-8" in refused_file.file_error.lower() and refused_file.outcomes == []
    # as text (how a reader of other formats hands it over), each row is checked on its own
    p = bulk.plan_import(world["db"], out.getvalue(), build_grid_index(world["db"]), tolerance_m=30, edge_m=0.05)
    by_number = {o.values.get("member_id"): o for o in p.outcomes}
    for k, (column, value, check) in cases:
        o = by_number[f"H{k:03d}"]
        if "\n" in value or "\r" in value:  # the row runs into the next: both are rejected, neither imported
            assert o.status == "invalid" and "line break" in o.reason, (column, value, o.reason)
            continue
        stripped = value.strip()
        assert o.status == "invalid", (column, value)
        message = expected(check, stripped) if stripped else "missing"
        assert column in o.reason and message.split(" (")[0] in o.reason, (column, value, o.reason)
    assert [g["number"] for g in p.good] == ["H999"]
    assert sorted(o.row for o in p.outcomes) == list(range(1, len(p.outcomes) + 1))

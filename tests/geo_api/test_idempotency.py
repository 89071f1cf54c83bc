"""Idempotency-Key on POST /v1/events, POST /v1/registrations and Open311 POST: a retry
gets the first answer and writes nothing; another body under the key is refused; keys
are per caller and expire; concurrent requests with one key write once.

Against a database of its own whose writes are committed (a real engine, several
connections), so that concurrent requests really meet in PostgreSQL."""

from __future__ import annotations

import threading
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo_api.app import create_app
from tests.conftest import make_settings, scratch_engine, token_for
from tests.factories import add_user
from tests.factories.events import P, east, event_world

KEY = "Idempotency-Key"


@pytest.fixture(scope="module")
def world(server_url):
    with scratch_engine(server_url, "test_idempotency", pool=12, migrated=True) as engine:
        with Session(engine) as session:
            w = event_world(session)
            add_user(session, "disp", "dispatcher")
            for k in range(1, 4):
                add_user(session, f"m{k}", "member", member_id=list(w["members"].values())[k - 1])
            session.commit()
        with TestClient(create_app(make_settings(idempotency_hours=2.5), engine=engine)) as client:
            yield {**w, "engine": engine, "c": client}


def scalar(world, sql, **params):
    with world["engine"].connect() as conn:
        return conn.execute(text(sql), params).scalar()


def event_body(description):
    return {"lon": P[0], "lat": P[1], "category": "xfyh", "description": description}


def events_described(world, description):
    return scalar(world, "SELECT count(*) FROM events WHERE description = :d", d=description)


def new_key():
    return str(uuid.uuid4())


@pytest.mark.parametrize("user", [None, "disp"])
def test_a_retried_report_gets_the_first_answer_and_is_stored_once(world, user):
    c, key, description = world["c"], new_key(), f"重试的上报 {uuid.uuid4()}"
    headers = {KEY: key, **(token_for(user) if user else {})}
    first = c.post("/v1/events", json=event_body(description), headers=headers)
    assert first.status_code == 201, first.text
    again = c.post("/v1/events", json=event_body(description), headers=headers)
    assert again.status_code == 201 and again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert events_described(world, description) == 1
    assert scalar(world, "SELECT count(*) FROM idempotency_keys WHERE key = :k", k=key) == 1
    # key order and spacing are not a different body
    reordered = dict(reversed(list(event_body(description).items())))
    assert c.post("/v1/events", json=reordered, headers=headers).content == first.content


def test_another_body_under_a_key_is_refused_naming_the_header(world):
    c, key = world["c"], new_key()
    assert c.post("/v1/events", json=event_body("第一份"), headers={KEY: key}).status_code == 201
    r = c.post("/v1/events", json=event_body("第二份"), headers={KEY: key})
    assert r.status_code == 422 and r.json()["field"] == KEY and "another request" in r.json()["detail"]
    assert r.headers["content-type"].startswith("application/problem+json")
    assert events_described(world, "第二份") == 0
    # nor may the key be spent on another endpoint
    r = c.post(
        "/open311/v2/requests.json",
        json={"service_code": "xfyh", "lat": P[1], "long": P[0], "description": "第一份"},
        headers={KEY: key},
    )
    assert r.status_code == 400 and KEY in r.json()[0]["description"]


def test_keys_are_per_caller(world):
    c, key, description = world["c"], new_key(), f"两个人同一个键 {uuid.uuid4()}"
    anonymous = c.post("/v1/events", json=event_body(description), headers={KEY: key})
    signed_in = c.post("/v1/events", json=event_body(description), headers={KEY: key, **token_for("disp")})
    assert anonymous.status_code == signed_in.status_code == 201
    assert anonymous.json()["id"] != signed_in.json()["id"]
    assert events_described(world, description) == 2


def test_a_refused_request_keeps_nothing_and_its_key_stays_usable(world):
    c, key, description = world["c"], new_key(), f"先错后对 {uuid.uuid4()}"
    outside = {**event_body(description), "lon": P[0] + 1.0}
    r = c.post("/v1/events", json=outside, headers={KEY: key})
    assert r.status_code == 422 and r.json()["field"] == "lon"
    assert scalar(world, "SELECT count(*) FROM idempotency_keys WHERE key = :k", k=key) == 0
    assert c.post("/v1/events", json=event_body(description), headers={KEY: key}).status_code == 201
    assert events_described(world, description) == 1


def test_a_key_expires_after_the_configured_time(world):
    c, key, description = world["c"], new_key(), f"过期的键 {uuid.uuid4()}"
    assert c.post("/v1/events", json=event_body(description), headers={KEY: key}).status_code == 201
    kept = scalar(
        world, "SELECT extract(epoch FROM expires_at - created_at) FROM idempotency_keys WHERE key = :k", k=key
    )
    assert float(kept) == 2.5 * 3600
    with world["engine"].begin() as conn:
        conn.execute(
            text("UPDATE idempotency_keys SET expires_at = gridbranch_now() - interval '1 second' WHERE key = :k"),
            {"k": key},
        )
    assert c.post("/v1/events", json=event_body(description), headers={KEY: key}).status_code == 201
    assert events_described(world, description) == 2  # an expired key is a new request


def test_a_malformed_key_is_refused(world):
    for bad in ("x" * 256, "含中文", "has space"):
        r = world["c"].post("/v1/events", json=event_body("坏键"), headers={KEY: bad.encode()})
        assert r.status_code == 422 and r.json()["field"] == KEY, (bad, r.text)
    assert events_described(world, "坏键") == 0


def test_a_retried_open311_request_gets_the_first_answer(world):
    c, key, description = world["c"], new_key(), f"Open311 重试 {uuid.uuid4()}"
    form = {"service_code": "xfyh", "lat": str(P[1]), "long": str(P[0]), "description": description}
    first = c.post("/open311/v2/requests.json", data=form, headers={KEY: key})
    assert first.status_code == 200, first.text
    again = c.post("/open311/v2/requests.json", data=form, headers={KEY: key})
    assert again.status_code == 200 and again.content == first.content
    assert events_described(world, description) == 1
    r = c.post("/open311/v2/requests.json", data={**form, "description": "别的"}, headers={KEY: key})
    assert r.status_code == 400 and KEY in r.json()[0]["description"]


def registrations_of(world, member_id):
    return scalar(world, "SELECT count(*) FROM registrations WHERE member_id = :m", m=member_id)


def test_a_retried_registration_gets_the_first_answer_and_registers_once(world):
    c, key, member = world["c"], new_key(), list(world["members"].values())[0]
    headers = {KEY: key, **token_for("m1")}
    body = {"lon": east(60)[0], "lat": east(60)[1], "role": "pingan", "move": True}
    before = registrations_of(world, member)
    first = c.post("/v1/registrations", json=body, headers=headers)
    assert first.status_code == 201, first.text
    again = c.post("/v1/registrations", json=body, headers=headers)
    assert again.status_code == 201 and again.content == first.content
    assert registrations_of(world, member) == before + 1
    r = c.post("/v1/registrations", json={**body, "role": "fuwu"}, headers=headers)
    assert r.status_code == 422 and r.json()["field"] == KEY
    assert registrations_of(world, member) == before + 1


def concurrently(n, call):
    barrier = threading.Barrier(n)
    out = [None] * n

    def run(k):
        barrier.wait()
        out[k] = call()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_concurrent_reports_with_one_key_store_one(world):
    c, key, description = world["c"], new_key(), f"并发同键 {uuid.uuid4()}"
    answers = concurrently(8, lambda: c.post("/v1/events", json=event_body(description), headers={KEY: key}))
    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers]
    assert len({a.content for a in answers}) == 1
    assert events_described(world, description) == 1


def test_concurrent_registrations_with_one_key_register_once(world):
    c, key, member = world["c"], new_key(), list(world["members"].values())[1]
    body = {"lon": east(70)[0], "lat": east(70)[1], "role": "pingan", "move": True}
    before = registrations_of(world, member)
    answers = concurrently(6, lambda: c.post("/v1/registrations", json=body, headers={KEY: key, **token_for("m2")}))
    assert [a.status_code for a in answers] == [201] * 6, [a.text for a in answers]
    assert len({a.content for a in answers}) == 1
    assert registrations_of(world, member) == before + 1

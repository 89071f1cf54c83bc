"""Reports stored in groups (layers.events_batch): a group gives what its reports give one
after another; a bad report in a group fails alone and leaves nothing behind; the events
data version is bumped in the writing transaction; the batcher gathers concurrent
reports and hands each its own outcome. Two committed scratch databases, since the
writes commit."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from layers import events as ev
from layers.crs import from_wgs84
from layers.errors import InvalidInput
from layers.events_batch import Pending, ReportBatcher, Stored, store_reports
from layers.locate import GridIndexCache
from tests.conftest import scratch_engine
from tests.factories import GRID_A, GRID_B
from tests.factories.events import P, X, Y, east, event_world

pytestmark = pytest.mark.clock  # depends on the present: run at every CLOCK_INSTANT

KW = dict(tolerance_m=30, edge_m=0.05, duplicate_radius_m=100, duplicate_window_hours=72)


@pytest.fixture(scope="module")
def worlds(server_url):
    """Two databases holding the same event world, committed."""
    with (
        scratch_engine(server_url, "evbatch1", pool=2, migrated=True) as one,
        scratch_engine(server_url, "evbatch2", pool=2, migrated=True) as two,
    ):
        for engine in (one, two):
            with Session(engine) as s:
                event_world(s)
                ev.set_route(s, "zdjy", "410105001000", "D03")
                s.commit()
        yield one, two


def counts(engine) -> tuple[int, int, int]:
    with engine.connect() as c:
        return (
            c.execute(text("SELECT count(*) FROM events")).scalar(),
            c.execute(text("SELECT count(*) FROM event_log")).scalar(),
            c.execute(text("SELECT version FROM data_versions WHERE layer = 'events'")).scalar(),
        )


def run(engine, reports, cache=None):
    with Session(engine, expire_on_commit=False) as s:
        return store_reports(s, cache or GridIndexCache(), reports, **KW)


def alone(engine, p: Pending) -> Stored:
    """``p`` stored on its own (a group of one: its own statement, its own transaction)."""
    (out,) = run(engine, [p])
    assert isinstance(out, Stored), out
    return out


def shape(outcomes, first_id: int | None = None):
    """Outcomes without what differs between databases: ids become their order in the
    run, times are dropped."""
    ids = {}
    for o in outcomes:
        if isinstance(o, Stored):
            ids[o.stored["id"]] = len(ids)
    out = []
    for o in outcomes:
        if not isinstance(o, Stored):
            out.append((type(o).__name__, getattr(o, "field", None)))
            continue
        s = dict(o.stored)
        s["id"] = ids[s["id"]]
        s.pop("reported_at")
        s["possible_duplicates"] = [
            {**d, "id": ids.get(d["id"], "old"), "reported_at": None} for d in s["possible_duplicates"]
        ]
        out.append((s, {k: v for k, v in o.grid.items()}, round(o.lon, 9), round(o.lat, 9), o.crs))
    return out


def reports():
    gx, gy = from_wgs84(east(40)[0], east(40)[1], "gcj02")
    return [
        Pending(P[0], P[1], "wgs84", "xfyh", "public", "楼道堆放杂物"),
        Pending(*east(30), "wgs84", "xfyh", "public", "同一处再报", photos=("https://img.example/1.jpg",)),
        Pending(*east(60), None, "zdjy", "grid_worker", "占道", reporter="gw", actor="gw", contact="王 137"),
        Pending(gx, gy, "gcj02", "xfyh", "hotline", "火险", reporter="disp", actor="disp"),
        Pending(X + 0.07, Y + 0.02, "wgs84", "qt", "public", "在B网格"),
        Pending(*east(5000), "wgs84", "xfyh", "public", "远处"),
    ]


def test_a_group_gives_what_its_reports_give_one_after_another(worlds):
    """The same reports, grouped in one database and one by one (each a group of its own)
    in the other: the same answers and rows."""
    one, two = worlds
    before_one, before_two = counts(one), counts(two)
    grouped = run(one, reports())
    single = [alone(two, r) for r in reports()]
    assert all(isinstance(o, Stored) for o in grouped + single)
    assert shape(grouped) == shape(single)
    # what was checked: routing (override for zdjy), CRS, grids, and duplicates within the group
    got = shape(grouped)
    assert got[2][0]["department"]["code"] == "D03" and got[2][0]["routing_override"]
    assert got[3][4] == "gcj02" and got[4][1]["code"] == GRID_B and got[0][1]["code"] == GRID_A
    assert [d["id"] for d in got[1][0]["possible_duplicates"]] == [0]
    assert [d["id"] for d in got[3][0]["possible_duplicates"]] == [1, 0]  # nearest first
    # the rows written are the same too, with their first log entry
    rows = []
    for engine, outs in ((one, grouped), (two, single)):
        with engine.connect() as c:
            ids = [o.stored["id"] for o in outs]
            assert ids == sorted(ids)  # ids in the order reports came
            rows.append(
                [
                    tuple(r)
                    for r in c.execute(
                        text(
                            "SELECT e.category_code, e.channel, e.description, e.photos, e.reporter, e.reporter_contact, "
                            "e.source_crs, e.source_x, e.source_y, ST_AsText(e.geom), e.grid_id, e.department_id, e.status, "
                            "l.actor, l.action, l.to_status, l.note, l.at = e.reported_at "
                            "FROM events e JOIN event_log l ON l.event_id = e.id WHERE e.id = ANY(:ids) ORDER BY e.id"
                        ),
                        {"ids": ids},
                    )
                ]
            )
    assert rows[0] == rows[1] and len(rows[0]) == len(reports())
    # one transaction, one bump of the events data version for the group; one each alone
    after_one, after_two = counts(one), counts(two)
    assert after_one[:2] == (before_one[0] + 6, before_one[1] + 6) and after_one[2] > before_one[2]
    assert after_two[:2] == (before_two[0] + 6, before_two[1] + 6) and after_two[2] > before_two[2]


def test_a_bad_report_fails_alone_and_leaves_nothing(worlds):
    one, _ = worlds
    before = counts(one)
    good = Pending(*east(200), "wgs84", "qt", "public", "好的")
    group = [
        good,
        Pending(P[0], P[1], "wgs84", "nope", "public", "未知类别"),
        Pending(X + 0.3, Y + 0.02, "wgs84", "xfyh", "public", "区外"),
        Pending(P[0], P[1], "EPSG:99999", "xfyh", "public", "坐标系"),
        Pending(P[0], 95.0, "wgs84", "xfyh", "public", "纬度"),
        Pending(P[0], P[1], "wgs84", "xfyh", "public", "含\x00字符"),
        Pending(*east(300), "wgs84", "zdjy", "public", "好的二"),
    ]
    out = run(one, group)
    assert isinstance(out[0], Stored) and isinstance(out[6], Stored)
    assert [(type(o).__name__, o.field) for o in out[1:6]] == [
        ("InvalidInput", "category"),
        ("InvalidInput", "lon"),
        ("InvalidInput", "crs"),
        ("InvalidInput", "lat"),
        ("InvalidInput", "description"),
    ]
    assert "xfyh" in out[1].detail and out[2].extra["nearest_grid"]["code"]
    after = counts(one)
    assert after[:2] == (before[0] + 2, before[1] + 2) and after[2] > before[2]

    # a report the statement itself refuses (a channel the table's CHECK does not know)
    # fails the group's statement: the group is rolled back and each report stored alone
    before = counts(one)
    group = [
        good,
        Pending(P[0], P[1], "wgs84", "xfyh", "pigeon", "信鸽"),
        Pending(*east(400), "wgs84", "qt", "public", "三"),
    ]
    out = run(one, group)
    assert isinstance(out[0], Stored) and isinstance(out[2], Stored) and isinstance(out[1], DBAPIError)
    after = counts(one)
    assert after[:2] == (before[0] + 2, before[1] + 2)
    with one.connect() as c:
        assert c.execute(text("SELECT count(*) FROM events WHERE description = '信鸽'")).scalar() == 0
        # stored alone, each in its own transaction: two bumps at least
        assert after[2] >= before[2] + 2
    # only refusals: nothing written
    before = counts(one)
    out = run(
        one, [Pending(P[0], P[1], "wgs84", "nope", "public", "x"), Pending(X + 0.3, Y, "wgs84", "qt", "public", "y")]
    )
    assert [o.field for o in out] == ["category", "lon"] and counts(one)[:2] == before[:2]


def test_a_changed_grid_layer_is_located_again(worlds):
    """The index the group was located with is checked in the statement: when the grid
    layer changed meanwhile, nothing is written and the group is located again."""
    one, _ = worlds

    class Stale(GridIndexCache):
        calls = 0

        def get(self, session):
            Stale.calls += 1
            if Stale.calls == 1:
                index = super().get(session)
                session.execute(text("UPDATE grids SET name = name WHERE code = :c"), {"c": GRID_A})  # a new version
                return index
            return super().get(session)

    before = counts(one)
    out = run(one, [Pending(P[0], P[1], "wgs84", "xfyh", "public", "换版后")], Stale())
    assert isinstance(out[0], Stored) and Stale.calls == 2 and out[0].grid["code"] == GRID_A
    assert counts(one)[:2] == (before[0] + 1, before[1] + 1)


def test_the_events_version_moves_with_the_write_in_one_transaction(worlds):
    """Nobody sees the new event with the old version: a reader between the statement and
    the commit sees neither; after the commit, both."""
    one, _ = worlds
    before = counts(one)
    with Session(one, expire_on_commit=False) as s:
        seen = {}
        real_commit = s.commit

        def commit():
            seen.update(zip(("events", "logs", "version"), counts(one)))  # another connection, before the commit
            real_commit()

        s.commit = commit
        out = store_reports(s, GridIndexCache(), [Pending(*east(500), "wgs84", "qt", "public", "版本")], **KW)
    assert isinstance(out[0], Stored)
    assert (seen["events"], seen["version"]) == (before[0], before[2])
    after = counts(one)
    assert after[0] == before[0] + 1 and after[2] > before[2]


def test_the_batcher_groups_concurrent_reports_and_answers_each_its_own():
    groups, release = [], threading.Event()

    def process(items):
        groups.append(list(items))
        if len(groups) == 1:
            release.wait(5)  # hold the first group while the others arrive
        return [
            InvalidInput("bad", field=str(i)) if i % 3 == 0 else Stored({"id": i}, {}, 0, 0, "wgs84") for i in items
        ]

    async def main():
        b = ReportBatcher(process, max_batch=4, writers=1)
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.05)
        rest = [asyncio.ensure_future(b.submit(i)) for i in range(2, 11)]
        await asyncio.sleep(0.05)
        release.set()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    got = asyncio.run(main())
    assert groups == [[1], [2, 3, 4, 5], [6, 7, 8, 9], [10]]
    for i, o in zip(range(1, 11), got):
        if i % 3 == 0:
            assert isinstance(o, InvalidInput) and o.field == str(i)
        else:
            assert o.stored == {"id": i}


def test_the_batcher_fails_a_whole_group_only_when_its_writer_fails():
    def process(items):
        if 2 in items:
            raise RuntimeError("database gone")
        return [Stored({"id": i}, {}, 0, 0, "wgs84") for i in items]

    async def main():
        b = ReportBatcher(process, max_batch=1, writers=2)
        return await asyncio.gather(*(b.submit(i) for i in (1, 2, 3)), return_exceptions=True)

    a, b_, c = asyncio.run(main())
    assert a.stored == {"id": 1} and isinstance(b_, RuntimeError) and c.stored == {"id": 3}


def test_a_category_change_bumps_the_events_version(empty_db):
    event_world(empty_db)
    v0 = empty_db.execute(text("SELECT version FROM data_versions WHERE layer = 'events'")).scalar()
    empty_db.execute(text("UPDATE event_categories SET time_limit_hours = 6 WHERE code = 'xfyh'"))
    v1 = empty_db.execute(text("SELECT version FROM data_versions WHERE layer = 'events'")).scalar()
    assert v1 > v0

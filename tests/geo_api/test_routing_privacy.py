"""Member suggestions cannot locate a member (issue 18, defect 2): never in a report's
answer; only at the routing endpoint, for callers of the event's area, of members
registered inside the caller's area, banded by the distance to the member's registered
grid; at most so many distinct events per account and hour."""

from __future__ import annotations

from sqlalchemy import text

from tests.conftest import token_for
from tests.factories import GRID_B, add_user
from tests.factories.events import X, Y, post

NAMES = ("近党员", "中党员", "远党员", "文明党员", "待确认党员", "忙党员")

#: Probe points a caller might report at: around and far from the members' residences
#: in grid A, and in grid B (≈ 0.9 km and ≈ 3.6 km east of A).
PROBES = [
    (X + 0.0205, Y + 0.0201),
    (X + 0.01, Y + 0.01),
    (X + 0.04, Y + 0.09),
    (X + 0.025, Y + 0.05),
    (X + 0.0215, Y + 0.0199),
    (X + 0.06, Y + 0.01),
    (X + 0.09, Y + 0.04),
]


def _routing(w, event_id, user="disp"):
    return w["c"].get(f"/v1/events/{event_id}/routing", headers=w["h"][user])


def _answers(w, events) -> list:
    """What the routing endpoint tells of every member, probe by probe."""
    out = []
    for e in events:
        r = _routing(w, e)
        assert r.status_code == 200, r.text
        out.append([(s["member_id"], s["distance_band"], s["open_tasks"]) for s in r.json()["suggestions"]])
    return out


def test_report_answers_carry_no_member_data(events_world):
    for user, channel in (("disp", "hotline"), ("cadmin", "hotline"), ("gw_a", "grid_worker"), (None, "public")):
        r = post(events_world, user, channel=channel)
        assert r.status_code == 201, r.text
        assert "suggestions" not in r.json()["routing"]
        assert not any(name in r.text for name in NAMES), user


def test_probe_reports_cannot_narrow_a_residence_below_its_grid(events_world):
    """A trilateration attempt: reports at chosen points around a member's residence and
    the suggestions of each. Moving the residence anywhere else inside its grid leaves
    every answer exactly as it was, so no set of probes tells the two places apart."""
    db = events_world["db"]
    events = [post(events_world, "disp", channel="hotline", lon=x, lat=y).json()["id"] for x, y in PROBES]
    first = _answers(events_world, events)
    near = events_world["members"]["near"]
    bands = [dict((m, b) for m, b, _ in answer).get(near) for answer in first]
    # inside grid A it is always the grid itself; from B the band of A's distance; far: nothing
    assert bands == ["本网格"] * 5 + ["500 m–1 km", None]
    # the residences move across their grid (50 m → ≈ 8 km away from the probes' centre)
    for member, (x, y) in ((near, (X + 0.045, Y + 0.095)), (events_world["members"]["mid"], (X + 0.001, Y + 0.001))):
        db.execute(
            text(
                "UPDATE residences SET geom = ST_SetSRID(ST_MakePoint(:x, :y), 4326), source_x = :x, "
                "source_y = :y WHERE member_id = :m AND ended_at IS NULL"
            ),
            {"m": member, "x": x, "y": y},
        )
    db.flush()
    assert _answers(events_world, events) == first
    # and neither the distance nor a coordinate is in any answer
    for e in events:
        body = _routing(events_world, e).text
        assert "distance_m" not in body and f"{X + 0.045:.4f}" not in body


def test_suggestions_are_of_members_inside_the_callers_area_only(events_world):
    """An admin of grid B asking about an event in B near A's edge hears of B's members
    only, though A's are nearer; admins of other areas and grid workers hear nothing."""
    add_user(events_world["db"], "badmin", "admin", area_code=GRID_B)
    events_world["h"]["badmin"] = token_for("badmin")
    event = post(events_world, "disp", channel="hotline", lon=X + 0.051, lat=Y + 0.02).json()["id"]
    everyone = {s["member_id"] for s in _routing(events_world, event).json()["suggestions"]}
    assert events_world["members"]["near"] in everyone and events_world["members"]["far"] in everyone
    r = _routing(events_world, event, "badmin")
    assert r.status_code == 200
    assert [s["member_id"] for s in r.json()["suggestions"]] == [events_world["members"]["far"]]
    for outsider in ("other", "gw_a", "gw_b", "m1"):
        r = _routing(events_world, event, outsider)
        assert r.status_code == 403, outsider
        assert not any(name in r.text for name in NAMES)


def test_distinct_probes_per_caller_and_hour_are_bounded(events_world):
    events_world["c"].app.state.settings.events.routing_probes_per_hour = 3
    events = [post(events_world, "disp", channel="hotline", lon=x, lat=y).json()["id"] for x, y in PROBES[:5]]
    for e in events[:3]:
        assert _routing(events_world, e).status_code == 200
    r = _routing(events_world, events[3])
    assert r.status_code == 429 and r.headers["content-type"].startswith("application/problem+json")
    assert 0 < int(r.headers["Retry-After"]) <= 3600 and r.json()["field"] == "event_id"
    assert not any(name in r.text for name in NAMES)
    # looking again at an event already counted is free; another account has its own count
    assert _routing(events_world, events[0]).status_code == 200
    assert _routing(events_world, events[3], "cadmin").status_code == 200
    # a refused look is not counted: once the hour has passed, the fourth event is the fourth
    events_world["db"].execute(
        text("UPDATE routing_probes SET at = at - interval '61 minutes' WHERE username = 'disp'")
    )
    for e in events[3:]:
        assert _routing(events_world, e).status_code == 200
    n = events_world["db"].execute(text("SELECT count(*) FROM routing_probes WHERE username = 'disp'")).scalar()
    assert n == 2  # the old looks are gone

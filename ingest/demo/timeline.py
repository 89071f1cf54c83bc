"""The timeline of the demo's events: about 3,000 events of the 12 months before
``as_of`` with a consistent lifecycle, time limits and log."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import shapely

from ingest.demo import names as N
from ingest.demo.model import CHANNEL_WEIGHTS, CHANNELS, N_EVENTS, Event, EventLogEntry
from ingest.demo.people import People
from ingest.demo.sampling import sample_in, sample_lonlat

# Event lifecycle: the share of each final status.
EVENT_STATUS_SHARES = {
    "closed": 0.845,
    "handled": 0.03,
    "in_progress": 0.035,
    "dispatched": 0.02,
    "registered": 0.01,
    "reported": 0.008,
    "rejected": 0.015,
    "duplicate": 0.017,
    "deferred": 0.01,
    "returned": 0.01,
}
DISPATCHER = "区指挥中心"
#: The statuses in which an event's time limit runs (layers.events.CLOCK).
CLOCK_STATUSES = ("dispatched", "in_progress", "handled", "returned")


def make_events(
    rng,
    people: People,
    grids,
    categories,
    departments,
    members,
    defects,
    district_m,
    district_ll,
    density,
    grid_at,
    as_of: datetime,
):
    n = N_EVENTS
    cat_w = np.array([c[5] for c in N.CATEGORIES], dtype=float)
    cat_idx = rng.choice(len(categories), size=n, p=cat_w / cat_w.sum())
    channel = rng.choice(len(CHANNELS), size=n, p=np.array(CHANNEL_WEIGHTS) / sum(CHANNEL_WEIGHTS))
    statuses = list(EVENT_STATUS_SHARES)
    shares = np.array(list(EVENT_STATUS_SHARES.values()))
    status_idx = rng.choice(len(statuses), size=n, p=shares / shares.sum())
    ll = sample_lonlat(rng, n, district_m, district_ll, density)
    # Two events deliberately reported inside the first gap (an event in no grid).
    gap = shapely.buffer(shapely.from_wkt(next(d["wkt"] for d in defects if d["kind"] == "gap")), -2e-6)
    ll[rng.choice(n, size=2, replace=False)] = sample_in(rng, 2, gap)
    dept_name = {d.code: d.name for d in departments}
    handler_names = people.names(200)
    member_names = [m.name for m in members]

    H = 3600.0
    records = []
    for i in range(n):
        cat = categories[cat_idx[i]]
        status = statuses[status_idx[i]]
        limit = cat.time_limit_hours
        u = rng.random(12)
        # Durations (seconds) of each step.
        t_register = (2 + 118 * u[0]) * 60
        t_dispatch = (5 + 175 * u[1]) * 60
        t_accept = (10 + 350 * u[2]) * 60
        overdue = u[3] < 0.12
        t_handle = limit * H * ((1.05 + 1.5 * u[4]) if overdue else (0.1 + 0.8 * u[4])) - t_accept
        t_handle = max(t_handle, 15 * 60)
        t_close = (1 + 23 * u[5]) * H
        returned_before = status == "closed" and u[6] < 0.03
        t_return = (1 + 10 * u[7]) * H
        steps: list[tuple[str, str, float]] = [("report", "reported", 0.0)]  # (action, to, offset)
        t = 0.0
        if status == "rejected":
            t += t_register
            steps.append(("reject", "rejected", t))
        elif status == "duplicate":
            t += t_register
            steps.append(("mark_duplicate", "duplicate", t))
        elif status != "reported":
            t += t_register
            steps.append(("register", "registered", t))
            if status != "registered":
                t += t_dispatch
                steps.append(("dispatch", "dispatched", t))
                if status == "returned" or returned_before:
                    t += t_return
                    steps.append(("return", "returned", t))
                    if returned_before:
                        t += t_dispatch
                        steps.append(("dispatch", "dispatched", t))
                if status in ("in_progress", "handled", "closed", "deferred"):
                    t += t_accept
                    steps.append(("accept", "in_progress", t))
                    if status == "deferred":
                        t += (4 + 60 * u[8]) * H
                        steps.append(("defer", "deferred", t))
                    elif status in ("handled", "closed"):
                        t += t_handle
                        steps.append(("handle", "handled", t))
                        if status == "closed":
                            t += t_close
                            steps.append(("close", "closed", t))
        # How long the event has rested in its final status before as_of. While its time
        # limit runs, most are still within it (a share of what was left of it, more often
        # early than late: about a fifth in warning at as_of); the late ones — the same
        # draw as a late handling, about one in nine — are past it by up to half the
        # limit again.
        rest = {
            "reported": (0.05 + 2.5 * u[9]) * H,
            "registered": (0.1 + 8 * u[9]) * H,
            "deferred": (1 + 45 * 24 * u[9]) * H,
        }
        if status in CLOCK_STATUSES:
            dispatched_at_offset = max(off for action, _, off in steps if action == "dispatch")
            left = limit * H - (t - dispatched_at_offset)
            if overdue or left <= 0:
                rest[status] = max(0.0, left) + (0.02 + 0.5 * u[9]) * limit * H
            else:
                rest[status] = left * (0.02 + 0.93 * u[9] ** 1.5)
        if status in rest:
            age = t + rest[status]
        else:
            age = t + (365 * 24 * H - t) * u[10] ** 1.1 + 60
        reported_at = (as_of - timedelta(seconds=age)).replace(microsecond=0)
        records.append((reported_at, i, cat, status, steps, returned_before, u[11]))

    records.sort(key=lambda r: (r[0], r[1]))
    events: list[Event] = []
    log: list[EventLogEntry] = []
    grid_idx = grid_at(ll)
    road_pick = rng.integers(0, len(N.ROADS), size=(n, 2))
    pos_pick = rng.integers(0, len(N.POSITIONS), size=n)
    tmpl_pick = rng.integers(0, 2, size=n)
    handler_pick = rng.integers(0, len(handler_names), size=n)
    member_pick = rng.integers(0, len(member_names), size=n)
    dup_jitter = rng.normal(0.0, 8e-5, size=(n, 2))
    recent_by_cat: dict[str, list[int]] = {}
    for key, (reported_at, i, cat, status, steps, _returned_before, uu) in enumerate(records):
        lon, lat = float(ll[i, 0]), float(ll[i, 1])
        g = int(grid_idx[i])
        duplicate_of = None
        if status == "duplicate":
            earlier = [e for e in recent_by_cat.get(cat.code, []) if events[e].status not in ("duplicate", "rejected")]
            if earlier:
                duplicate_of = earlier[-1 - int(uu * min(len(earlier), 5))]
                orig = events[duplicate_of]
                cand = (orig.lon + float(dup_jitter[key, 0]), orig.lat + float(dup_jitter[key, 1]))
                if shapely.contains_xy(district_ll, *cand):
                    lon, lat = cand
                else:
                    lon, lat = orig.lon, orig.lat
                g = int(grid_at(np.array([[lon, lat]]))[0])
            else:  # nothing to duplicate yet: it was rejected instead
                status = "rejected"
                steps = [("report", "reported", 0.0), ("reject", "rejected", steps[-1][2])]
        grid = grids[g] if g >= 0 else None
        ch = CHANNELS[channel[i]]
        if ch == "grid_worker":
            reporter = grid.worker_name if grid else handler_names[handler_pick[key]]
        elif ch == "member":
            reporter = member_names[member_pick[key]]
        elif ch == "hotline":
            reporter = "12345热线"
        elif ch == "video":
            reporter = "视频巡查"
        else:
            reporter = None
        tmpl = N.CATEGORIES[[c.code for c in categories].index(cat.code)][6][tmpl_pick[key]]
        road, road2 = N.ROADS[road_pick[key, 0]], N.ROADS[road_pick[key, 1]]
        if road2 == road:
            road2 = N.ROADS[(road_pick[key, 1] + 1) % len(N.ROADS)]
        pos = N.POSITIONS[pos_pick[key]].format(road2=road2)
        description = tmpl.format(road=road, pos=pos)

        times = [reported_at + timedelta(seconds=round(off)) for _, _, off in steps]
        dispatched_at = None
        for (action, _, _), at in zip(steps, times):
            if action == "dispatch":
                dispatched_at = at
        due_at = dispatched_at + timedelta(hours=cat.time_limit_hours) if dispatched_at else None
        closed_at = times[-1] if status in ("closed", "rejected", "duplicate") else None
        department = cat.department_code if dispatched_at else None
        handler = f"{dept_name[cat.department_code]}·{handler_names[handler_pick[key]]}"
        assignee = handler if any(a == "accept" for a, _, _ in steps) else None
        # rework only: a return after handling (the demo's returns come before it)
        return_count = sum(1 for (a, _, _), (b, _, _) in zip(steps[1:], steps) if a == "return" and b == "handle")

        prev = None
        with_department = None
        for (action, to, _), at in zip(steps, times):
            if action == "dispatch":
                with_department = cat.department_code
            if action == "report":
                actor, note = reporter or "群众", f"{ch}上报"
            elif action in ("register", "dispatch", "reject", "mark_duplicate"):
                actor = DISPATCHER
                note = {
                    "register": "受理",
                    "dispatch": f"派遣至{dept_name[cat.department_code]}",
                    "reject": "不属于受理范围，不予受理",
                    "mark_duplicate": "重复上报，已关联原事件",
                }[action]
            elif action == "close":
                actor = f"网格员{grid.worker_name}" if grid else DISPATCHER
                note = "核查属实，结案"
            else:
                actor = handler if action != "return" else dept_name[cat.department_code]
                note = {
                    "accept": "已签收，处置中",
                    "handle": "已处置完毕",
                    "defer": "需协调资金，申请缓办",
                    "return": "非本单位职责，退回指挥中心",
                }[action]
            log.append(EventLogEntry(key, at, actor, action, prev, to, note, with_department))
            prev = to
        events.append(
            Event(
                key=key,
                lon=lon,
                lat=lat,
                category_code=cat.code,
                channel=ch,
                description=description,
                reporter=reporter,
                grid_code=grid.code if grid else None,
                department_code=department,
                status=status,
                assignee=assignee,
                version=len(steps),
                return_count=return_count,
                duplicate_of=duplicate_of,
                reported_at=reported_at,
                dispatched_at=dispatched_at,
                due_at=due_at,
                closed_at=closed_at,
            )
        )
        recent_by_cat.setdefault(cat.code, []).append(key)
    return events, log

"""Reports stored in groups (group commit): many reports, one transaction, one statement.

Why: every write to ``events`` bumps the ``events`` data version (a statement trigger,
migration 0002) in the same transaction — the tile cache relies on that. The bump
updates one row, so concurrent report transactions queue on its lock from their insert
until their commit (fsync included): one report per commit at most. Storing the reports
that arrive while the previous group is being written together — one statement
(set-based multi-row inserts, one data-version bump), one commit — lifts that ceiling
and spreads the round trips, the planner and the fsync over the group. Durability is
unchanged: nobody is answered before the commit that stored their report.

Each report of a group is validated and located on its own, and has its own outcome:

* refused before writing (text that cannot be stored — NUL, a lone surrogate —, bad
  coordinates or CRS, outside the service area, unknown category): its own error, the
  others unaffected — the statement inserts only the rows that passed;
* the statement fails as a whole (a constraint the checks above did not foresee, a
  value that cannot be encoded): the transaction is rolled back (nothing of the group
  is written) and each report of the group is stored again alone, in its own
  transaction, so that only the culprit fails — unless the database is out of reach
  (:func:`layers.db.database_unavailable`), which every report of the group is told;
* the commit fails: the outcome is unknown (the server may have committed), so every
  report of the group gets the error — never retried, never written twice.

A group produces exactly what its reports would produce one after another, in order:
the same grid, routing and first log entry, and as possible duplicates the earlier
open events nearby (of the category, within the radius and the window) *plus* the earlier reports of
the same group (same category, within the radius; same ``reported_at``, as they share
the transaction — so with a duplicate window of zero they still count, where reports
committed one after another would not).

:class:`ReportBatcher` gathers the reports of concurrent requests (asyncio) and hands
each group to a worker thread: while one group is written, the next one gathers, so a
lone report is written at once and groups grow with the load.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import anyio
import numpy as np
import orjson
from sqlalchemy.orm import Session

from layers.crs import parse_crs
from layers.db import database_unavailable
from layers.errors import Conflict, InvalidInput
from layers.events.lifecycle import OPEN_SQL
from layers.events.report import CHANNEL_NAMES, category_codes, execute_prepared, positional, stored_report
from layers.locate import MATCH_NAMES, OUTSIDE, Describer, GridIndexCache
from layers.points import PointBatch, points_from_columns
from layers.textfields import text_fault


@dataclass(frozen=True)
class Pending:
    """A report as sent (checked for channel and size already): ``x``/``y`` in ``crs``."""

    x: float
    y: float
    crs: str | None
    category: str
    channel: str
    description: str
    photos: tuple[str, ...] = ()
    contact: str | None = None
    reporter: str | None = None
    actor: str = CHANNEL_NAMES["public"]


@dataclass(frozen=True)
class Stored:
    """A stored report: its answer's fields (``stored``, :func:`layers.events.stored_report`), the
    grid row it was located in (``grid``, with ``match`` and ``distance_m``), its WGS84
    point and the name of the CRS it was sent in."""

    stored: dict[str, Any]
    grid: dict[str, Any]
    lon: float
    lat: float
    crs: str


Outcome = Stored | BaseException

#: One statement for a whole group: check the grid layer is the one the points were
#: located in, resolve each category and department (street override first), draw the
#: ids in the group's order, insert the events and their first log entries, and find
#: each report's possible duplicates — earlier open events nearby and earlier reports of
#: the group. One row per report, in order; ``id`` is NULL where nothing was written.
_BATCH_SQL = f"""
    WITH i AS (
        SELECT * FROM json_to_recordset(CAST(:rows AS json)) AS t(
            ord int, lon float8, lat float8, crs text, x float8, y float8, category text, channel text,
            description text, photos jsonb, reporter text, contact text, grid_id int, grid_version_id int,
            street text, actor text, note text)
    ), v AS (
        SELECT (SELECT version FROM layer_versions WHERE layer = 'grids') AS grids_version,
               (SELECT version FROM layer_versions WHERE layer = 'areas') AS areas_version
    ), c0 AS (
        SELECT i.*, ST_SetSRID(ST_MakePoint(i.lon, i.lat), 4326) AS geom, c.name AS category_name,
               c.time_limit_hours, c.role_code, COALESCE(r.department_id, c.department_id) AS department_id,
               (r.department_id IS NOT NULL) AS overridden, row_number() OVER (ORDER BY i.ord) AS k
        FROM i CROSS JOIN v
        JOIN event_categories c ON c.code = i.category
        LEFT JOIN event_routes r ON r.category_code = c.code AND r.street_code = i.street
        WHERE v.grids_version = :grids_version AND v.areas_version = :areas_version
    ), ids AS MATERIALIZED (
        SELECT nextval('events_id_seq')::int AS id FROM c0
    ), c AS MATERIALIZED (
        -- the k-th report of the group gets the k-th id: ids in the order reports came
        SELECT c0.*, n.id FROM c0 JOIN (SELECT id, row_number() OVER (ORDER BY id) AS k FROM ids) n USING (k)
    ), e AS (
        INSERT INTO events (id, geom, source_crs, source_x, source_y, category_code, channel, description, photos,
                            reporter, reporter_contact, grid_id, grid_version_id, department_id, status)
        SELECT id, geom, crs, x, y, category, channel, description, photos, reporter, contact, grid_id,
               grid_version_id, department_id, 'reported'
        FROM c ORDER BY id
        RETURNING id, reported_at, version
    ), l AS (
        INSERT INTO event_log (event_id, at, actor, action, from_status, to_status, note)
        SELECT e.id, e.reported_at, c.actor, 'report', NULL, 'reported', c.note FROM e JOIN c USING (id) ORDER BY e.id
    )
    SELECT i.ord, v.grids_version, v.areas_version, e.id, e.reported_at, e.version, c.category_name,
           c.time_limit_hours, c.role_code, c.overridden, d.code AS department_code, d.name AS department_name,
           (SELECT COALESCE(json_agg(json_build_object('id', x.id, 'status', x.status,
                                                       'reported_at', x.reported_at,
                                                       'distance_m', round(x.distance_m::numeric, 1))
                                     ORDER BY x.distance_m, x.id), '[]'::json)
            FROM (SELECT y.* FROM (
                      SELECT o.id, o.status::text AS status, o.reported_at,
                             ST_Distance(o.geom::geography, c.geom::geography) AS distance_m
                      FROM (SELECT id, status, reported_at, category_code, geom FROM events
                            WHERE status IN ({OPEN_SQL})
                              AND ST_DWithin(geom::geography, c.geom::geography, :radius)
                            OFFSET 0) o  -- planned alone: the nearby open events, from the geography index
                      WHERE o.category_code = c.category
                        AND o.reported_at >= e.reported_at - make_interval(secs => :window_s)
                      UNION ALL  -- the earlier reports of this group
                      SELECT b.id, 'reported', e.reported_at, ST_Distance(b.geom::geography, c.geom::geography)
                      FROM c b
                      WHERE b.ord < c.ord AND b.category = c.category
                        AND ST_DWithin(b.geom::geography, c.geom::geography, :radius)
                  ) y ORDER BY y.distance_m, y.id LIMIT 20) x) AS duplicates
    FROM i CROSS JOIN v
    LEFT JOIN c ON c.ord = i.ord LEFT JOIN e ON e.id = c.id LEFT JOIN departments d ON d.id = c.department_id
    ORDER BY i.ord
"""
_BATCH_PREPARED, _BATCH_PARAMS = positional(_BATCH_SQL)
_BATCH_STATEMENT = "gridbranch_report_events_batch_v1"


def _text_error(p: Pending) -> InvalidInput | None:
    """A report whose text cannot be stored (:func:`layers.textfields.text_fault`: NUL, a lone
    surrogate) is refused here, naming the field, before it joins its group's statement:
    its encoding would otherwise fail the statement for every report of the group."""
    for field, value in (
        ("description", p.description),
        ("contact", p.contact),
        ("category", p.category),
        ("crs", p.crs),
        ("channel", p.channel),
        ("reporter", p.reporter),
        ("actor", p.actor),
    ):
        fault = text_fault(value) if isinstance(value, str) else None
        if fault:
            return InvalidInput(f"the {field} {fault}", field=field)
    for k, url in enumerate(p.photos):
        fault = text_fault(url) if isinstance(url, str) else None
        if fault:
            return InvalidInput(f"photo {k} {fault}", field=f"photos.{k}")
    return None


@lru_cache(maxsize=256)
def _crs_name(name: str) -> str:
    # a pure function of its text (parse_crs keeps its own bounded cache as well)
    return parse_crs(name).name


def _points(reports: Sequence[Pending]) -> PointBatch:
    """The reports' points in WGS84 (:func:`layers.points.points_from_columns`, whose
    checks and errors apply); plain in-range WGS84 floats are taken as they are."""
    if all(
        (p.crs is None or p.crs == "wgs84")
        and type(p.x) is float
        and type(p.y) is float
        and abs(p.x) <= 180
        and abs(p.y) <= 90
        for p in reports
    ):
        x = np.array([p.x for p in reports])
        y = np.array([p.y for p in reports])
        return PointBatch(list(range(len(reports))), x, y, ["wgs84"] * len(reports), x, y, {})
    return points_from_columns(
        list(range(len(reports))),
        [p.x for p in reports],
        [p.y for p in reports],
        [p.crs for p in reports],
        default_crs="wgs84",
    )


def store_reports(
    session: Session,
    cache: GridIndexCache,
    reports: Sequence[Pending],
    *,
    tolerance_m: float,
    edge_m: float,
    duplicate_radius_m: float,
    duplicate_window_hours: float,
) -> list[Outcome]:
    """Locate, route and store ``reports`` in one transaction (committed here); one outcome
    per report, in order: :class:`Stored`, or the exception that report alone raised
    (nothing of it written). See the module docstring for how failures are isolated."""
    n = len(reports)
    out: list[Outcome | None] = [None] * n
    for k, p in enumerate(reports):
        out[k] = _text_error(p)
    points = _points(reports)
    for k, err in points.errors.items():
        if out[k] is None:
            out[k] = InvalidInput(err["detail"], field=err["field"])
    crs_names: dict[str, str] = {}
    live = [k for k in range(n) if out[k] is None]
    if not live:
        return out  # type: ignore[return-value]
    for k in live:
        name = points.crs[k] or "wgs84"
        if name not in crs_names:
            crs_names[name] = _crs_name(name)
    index = cache.last  # optimistic: spares a round trip (the statement checks versions)
    try:
        for attempt in range(3):
            if index is None or attempt:
                index = cache.get(session)
            grids: dict[int, dict[str, Any]] = {}
            idx = np.asarray(live)
            lon, lat = points.lon[idx], points.lat[idx]
            located = index.locate(lon, lat, tolerance_m=tolerance_m, edge_m=edge_m)
            for j, k in enumerate(live):
                if located.match[j] == OUTSIDE:
                    described = Describer(index).describe(located, j, float(lon[j]), float(lat[j]), tolerance_m)
                    out[k] = InvalidInput(
                        f"the event is outside the service area: {described['message']}",
                        field="lon",
                        nearest_grid=described.get("nearest_grid"),
                        swapped=bool(described.get("swapped", False)),
                    )
                    continue
                out[k] = None
                grids[k] = {
                    **index.grids[int(located.grid[j])],
                    "match": MATCH_NAMES[int(located.match[j])],
                    "distance_m": round(float(located.distance_m[j]), 2),
                }
            if not grids:
                session.commit()  # nothing written (a rollback would also undo what the caller did before)
                return out  # type: ignore[return-value]
            rows = _insert(
                session,
                reports,
                grids,
                points,
                crs_names,
                index.version,
                duplicate_radius_m=duplicate_radius_m,
                duplicate_window_hours=duplicate_window_hours,
            )
            head = rows[0]
            if all(r.id is None for r in rows) and (head.grids_version, head.areas_version) != tuple(index.version):
                continue  # the grid layer changed since the index was built (nothing written): locate again
            cache.last = index
            break
        else:
            session.commit()  # nothing written
            for k in grids:
                out[k] = Conflict("the grid layer is changing: try again", field="lon")
            return out  # type: ignore[return-value]
    except Exception as exc:  # noqa: BLE001 - isolated below
        try:
            session.rollback()
        except Exception:  # noqa: BLE001 - a lost connection: the session starts afresh
            pass
        if len(live) == 1 or database_unavailable(exc):
            # alone already, or the database is out of reach: the same for every report
            # (storing each alone would only knock on a closed door once per report)
            for k in live:
                out[k] = exc
            return out  # type: ignore[return-value]
        # Something in the group failed the statement (or encoding it): nothing was
        # written. Store each report alone so that only the one at fault fails.
        for k in live:
            try:
                out[k] = store_reports(
                    session,
                    cache,
                    [reports[k]],
                    tolerance_m=tolerance_m,
                    edge_m=edge_m,
                    duplicate_radius_m=duplicate_radius_m,
                    duplicate_window_hours=duplicate_window_hours,
                )[0]
            except Exception as own:  # noqa: BLE001 - that report's own outcome
                out[k] = own
        return out  # type: ignore[return-value]
    unknown = [k for k, r in zip(grids, rows) if r.id is None]
    codes = ", ".join(category_codes(session)) if unknown else ""
    try:
        session.commit()
    except Exception as exc:  # noqa: BLE001 - the outcome is unknown (the server may have committed)
        for k in grids:
            out[k] = exc
        try:
            session.rollback()
        except Exception:  # noqa: BLE001
            pass
        return out  # type: ignore[return-value]
    for k, r in zip(grids, rows):
        if r.id is None:
            continue
        p = reports[k]
        out[k] = Stored(
            stored=stored_report(r, p.category),
            grid=grids[k],
            lon=float(points.lon[k]),
            lat=float(points.lat[k]),
            crs=crs_names[points.crs[k] or "wgs84"],
        )
    for k in unknown:
        out[k] = InvalidInput(f"unknown category {reports[k].category!r}; one of: {codes}", field="category")
    return out  # type: ignore[return-value]


def _insert(
    session: Session,
    reports: Sequence[Pending],
    grids: dict[int, dict[str, Any]],
    points,
    crs_names,
    version,
    *,
    duplicate_radius_m: float,
    duplicate_window_hours: float,
):
    """Run the group statement for the located reports ``grids`` (report index → grid
    row); returns its rows in the order of ``grids``."""
    rows = []
    for k, g in grids.items():
        p = reports[k]
        rows.append(
            {
                "ord": k,
                "lon": float(points.lon[k]),
                "lat": float(points.lat[k]),
                "crs": crs_names[points.crs[k] or "wgs84"],
                "x": float(points.x[k]),
                "y": float(points.y[k]),
                "category": p.category,
                "channel": p.channel,
                "description": p.description,
                "photos": list(p.photos),
                "reporter": p.reporter,
                "contact": p.contact,
                "grid_id": g["grid_id"],
                "grid_version_id": g["grid_version_id"],
                "street": g["street_code"],
                "actor": p.actor,
                "note": f"{CHANNEL_NAMES[p.channel]}上报" if p.channel in CHANNEL_NAMES else "上报",
            }
        )
    params = {
        "rows": orjson.dumps(rows).decode(),
        "grids_version": version[0],
        "areas_version": version[1],
        "radius": duplicate_radius_m,
        "window_s": duplicate_window_hours * 3600.0,
    }
    return execute_prepared(session, _BATCH_STATEMENT, _BATCH_PREPARED, _BATCH_PARAMS, params).all()


# --------------------------------------------------------------------------------------
# Gathering reports from concurrent requests
# --------------------------------------------------------------------------------------


class ReportBatcher:
    """Gathers reports from concurrent requests into groups for ``process`` (a blocking
    function: list of reports → list of outcomes, run in a worker thread).

    A report arriving while fewer than ``writers`` groups are being written starts a
    group at once; otherwise it waits for the next free writer, with every other report
    that arrived meanwhile (at most ``max_batch`` per group). ``submit`` returns the
    report's :class:`Stored` or raises its own error."""

    def __init__(self, process: Callable[[list[Any]], list[Outcome]], *, max_batch: int = 64, writers: int = 1):
        self.process = process
        self.max_batch = max_batch
        self.writers = writers
        self._queues: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # event loop → state
        self._last: tuple[Any, dict] | None = None  # (loop, state) of the last call, sparing a weak reference

    async def submit(self, report: Any) -> Stored:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop:
            state = last[1]
        else:
            state = self._queues.get(loop)
            if state is None:
                state = self._queues[loop] = {"queue": [], "running": 0}
            self._last = (loop, state)
        future = loop.create_future()
        state["queue"].append((report, future))
        if state["running"] < self.writers:
            state["running"] += 1
            loop.create_task(self._drain(state))
        return await future

    async def _drain(self, state: dict) -> None:
        try:
            while state["queue"]:
                group = state["queue"][: self.max_batch]
                del state["queue"][: self.max_batch]
                try:
                    outcomes = await anyio.to_thread.run_sync(self.process, [r for r, _ in group])
                except BaseException as exc:  # noqa: BLE001 - every report of the group gets it
                    outcomes = [exc] * len(group)
                for (_, future), outcome in zip(group, outcomes):
                    if future.done():
                        continue  # the request went away; its report is stored all the same
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            state["running"] -= 1

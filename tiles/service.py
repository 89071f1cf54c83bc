"""Serving tiles: layer selection and entitlement, the data-version read, the cache,
rendering through the prepared statements, ETags, gzip.

Everything runs on the event loop, with no thread in the way (:mod:`layers.pg`). A tile
is drawn on a pooled connection in one round trip — one layer by its prepared statement,
several by one composite statement holding each layer's (:class:`tiles.layers.Composite`,
prepared on the connection when first used) — and every layer also answers the data
versions it was drawn at, in the statement's snapshot (:mod:`tiles.layers`). A statement
starts after its request arrived, so a write committed before the request is in the
tile, with no separate version read. Derived parameters (grid figures, coverage
findings, H3 counts) are built at the versions last seen; a statement answering other
versions is run again with records at those.

A tile is filed under, and its ETag made of, what its content is a function of
(:func:`content_state`): the versions of the rows its statements read themselves and,
for a derived layer, a digest of the records it was given — so a registration confirmed
in one grid changes the grid figures of the tiles showing that grid only; every other
grids tile stays cached, with its ETag.

The in-process cache: a request for a key with a cached copy reads the data versions
(one round trip, shared by the requests waiting at the same moment), picks the records
of its derived layers at those versions, and serves the copy when the state still
matches; a request for a key with nothing cached is drawn at once.

Connections: ``GRIDBRANCH_POOL_SIZE`` in all — one reads the versions (cache lookups,
and once before the first derived build), the others draw tiles (prepared statements,
planned once, set up when a connection opens). Attributes computed per data version
(:mod:`tiles.derived`) are built in a worker thread on one more connection, opened only
for the build.

Entitlement: the ``members`` layer (individual residences) exists only for admins —
anyone else asking for it, alone or in a composite, gets 404. An admin gets it at zoom
15 and above, inside their own area only; such tiles carry ``Cache-Control: private``,
``Vary: Authorization``, and an ETag and cache key that include the admin's area.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import anyio.to_thread
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from layers.caches import Caches
from layers.clock import SYSTEM, Clock
from layers.clock import bind as bind_clock
from layers.db import libpq_dsn
from layers.errors import InvalidInput, NotFound
from layers.pg import AsyncPool, VersionReader, execute
from tiles import derived
from tiles.cache import CachedTile, TileCache, etag_for, gzip_body, if_none_match, make_etag
from tiles.layers import LAYERS, PUBLIC_LAYERS, TileLayer, composite, execute_sql, label_levels, setup_statements
from tiles.mvt import truncated_layer
from tiles.tms import MARGIN, Tile, check_tile, simplify_tolerance, tile_bounds

log = logging.getLogger("gridbranch.tiles")

MVT_TYPE = "application/vnd.mapbox-vector-tile"
#: H3 resolution of the members_h3 layer by zoom.
H3_RES = {10: 7, 11: 7, 12: 8, 13: 8, 14: 9, 15: 9, 16: 10}
ENTITLED_ROLES = frozenset({"admin"})
#: Degrees added around a tile when picking derived records by bounding box (~1 m): the
#: index compares single-precision boxes rounded outwards.
BOX_SLACK = 1e-5
#: Bodies larger than this are compressed in a worker thread rather than on the loop.
GZIP_INLINE_BYTES = 64 * 1024
#: Bodies smaller than this are sent as they are even to clients accepting gzip: they
#: fit in one TCP segment with their headers either way, and deflate's set-up costs more
#: than the tile's whole Python side (tipg and Starlette's GZipMiddleware draw the line
#: at 500 bytes). ETags stay per representation ("…-gz" only on gzip bodies).
GZIP_MIN_BYTES = 512
#: Draws of a tile whose derived parameters a concurrent write keeps making stale.
RENDER_ATTEMPTS = 3


@dataclass
class TileReply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (``gzip`` or ``*`` with q > 0)."""
    if not header:
        return False
    for part in header.split(","):
        token, _, params = part.strip().partition(";")
        token = token.strip().lower()
        if token in ("gzip", "x-gzip", "*"):
            q = re.search(r"q\s*=\s*([0-9.]+)", params)
            try:
                if q is None or float(q.group(1)) > 0:
                    return True
            except ValueError:
                continue
    return False


def entitled(role: str | None, area_code: str | None) -> bool:
    return role in ENTITLED_ROLES and bool(area_code)


def parse_layers(raw: str, *, role: str | None, area_code: str | None) -> tuple[TileLayer, ...]:
    """``grids`` or ``areas,grids,events``: the layers named, in order. Unknown names and
    ``members`` for callers not entitled to it are 404s; repeats and empty names 422s."""
    names = [n.strip() for n in raw.split(",")]
    if not all(names):
        raise InvalidInput(f"layers must be layer names separated by commas, got {raw!r}", field="layers")
    if len(set(names)) != len(names):
        raise InvalidInput(f"a layer is named twice in {raw!r}", field="layers")
    out = []
    for name in names:
        layer = LAYERS.get(name)
        if layer is None:
            raise NotFound(f"unknown layer {name!r}; layers: {', '.join(LAYERS)}", field="layers")
        if layer.personal and not entitled(role, area_code):
            raise NotFound(
                f"layer {name!r} is served only to signed-in admins (individual residences, inside the admin's area)",
                field="layers",
            )
        out.append(layer)
    return tuple(out)


def layers_at_zoom(layers: tuple[TileLayer, ...], z: int) -> tuple[TileLayer, ...]:
    """The layers drawn at zoom ``z``: a composite leaves out layers outside their zoom
    range; a 404 when none is left (or the single layer asked for is out of range)."""
    active = tuple(layer for layer in layers if layer.minzoom <= z <= layer.maxzoom)
    if not active:
        ranges = ", ".join(f"{layer.name} {layer.minzoom}–{layer.maxzoom}" for layer in layers)
        raise NotFound(f"zoom {z} is outside the zoom range of {ranges}", field="z")
    return active


def _cache_control(base: str, valid_until: datetime | None, now: datetime) -> str:
    """``base``, with any max-age/s-maxage capped at the time left until the tile's
    content changes with the clock."""
    if valid_until is None or "max-age" not in base:
        return base
    left = max(0, int((valid_until - now).total_seconds()))
    return re.sub(r"((?:s-)?max-age)=(\d+)", lambda m: f"{m.group(1)}={min(int(m.group(2)), left)}", base)


class TileService:
    """Tiles for one app. ``settings`` is the app's :class:`geo_api.settings.Settings`,
    ``url`` the database URL (SQLAlchemy form or libpq), ``clock`` the app's
    (:mod:`layers.clock`): the instant the events' flags are drawn at; ``caches`` the
    app's (:class:`layers.caches.Caches`; a service of its own without)."""

    def __init__(self, settings, url, clock: Clock = SYSTEM, caches: Caches | None = None):
        self.clock = clock
        self.caches = caches if caches is not None else Caches()
        self.settings = settings.tiles
        events = getattr(settings, "events", None)
        self.warn_share = float(getattr(events, "warn_share", 0.8))
        coverage = getattr(settings, "coverage", None)
        self.h3_min_count = int(getattr(coverage, "h3_min_count", 5))
        self.coverage_thresholds = coverage.thresholds() if hasattr(coverage, "thresholds") else None
        #: What else shapes a tile's content, for its ETag: a restart with other limits,
        #: warning share or suppression threshold must not revalidate old copies.
        self.config_tag = repr(
            (
                self.settings.feature_limit,
                sorted(self.settings.feature_limits.items()),
                self.warn_share,
                self.h3_min_count,
                repr(self.coverage_thresholds),
            )
        )
        self.url = url
        dsn = libpq_dsn(url)
        self.reader = VersionReader(dsn, clock=clock)
        self.pool = AsyncPool(dsn, settings.database.pool_size - 1, setup=setup_statements, clock=clock)
        # the tiles themselves: bounded in bytes, fresh by their own content state (a
        # digest of derived records, the clock's next flip), so not a VersionedCache
        self.cache = TileCache(self.settings.cache_mb * 1024 * 1024)
        self.derived = derived.DerivedCache()
        #: The data versions last seen (:meth:`observe`).
        self.known: dict[str, int] = {}
        self._build_engine = None

    def close(self) -> None:
        self.reader.close()
        self.pool.close()
        if self._build_engine is not None:
            self._build_engine.dispose()
            self._build_engine = None

    # -- derived records ---------------------------------------------------------------
    def _build(self, build) -> tuple[derived.FeatureRecords, dict[str, int]]:
        """(records, the data versions they are at) — in a worker thread, in one snapshot
        (REPEATABLE READ) whose versions are read first: the records are exactly those of
        the versions answered, whatever is written meanwhile."""
        if self._build_engine is None:
            self._build_engine = create_engine(self.url, poolclass=NullPool)
            bind_clock(self._build_engine, self.clock)
        with self._build_engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                at = dict(conn.execute(text("SELECT layer, version FROM layer_versions")).all())
                with Session(bind=conn) as session:
                    records = build(session)
        return records, at

    async def records(
        self, kind: str, depends: tuple[str, ...], versions: dict[str, int], build, *extra
    ) -> derived.FeatureRecords:
        """The derived records of ``kind`` at ``versions`` — or at later versions, when a
        build (or a write before it) has already gone past them: records as fresh as asked
        for, or fresher, never older. Built once per snapshot; the requests arriving during
        a build wait for it and share it."""
        wanted = tuple(versions.get(d) for d in depends)
        found = self.derived.at_least(kind, wanted, extra)
        if found is not None:
            return found
        async with self.derived.lock(kind):
            found = self.derived.at_least(kind, wanted, extra)
            if found is not None:
                return found
            records, at = await anyio.to_thread.run_sync(self._build, build)
            self.derived.put((kind, tuple(at.get(d, 0) for d in depends), *extra), records)
            self.observe(at)
            return records

    async def params(
        self, layer: TileLayer, tile: Tile, scope: str | None, versions: dict[str, int], now: datetime
    ) -> tuple:
        """The bound parameters of ``layer``'s statement for ``tile``."""
        limit = self.settings.feature_limits.get(layer.name, self.settings.feature_limit)
        params: tuple = (tile.z, tile.x, tile.y, limit, simplify_tolerance(tile) if layer.simplify else 0.0)
        name = layer.name
        if name == "events":
            return params + (now, self.warn_share)
        if name == "members":
            return params + (scope,)
        if name == "grids":  # public figures: small counts suppressed as the H3 counts are
            k = self.h3_min_count
            records = await self.records(
                "grids",
                layer.depends,
                versions,
                lambda s: derived.grid_records(s, self.caches, self.derived, suppress_below=k),
                k,
            )
        elif name == "coverage_issues":
            thresholds = self.coverage_thresholds
            records = await self.records(
                "coverage", layer.depends, versions, lambda s: derived.coverage_records(s, self.caches, thresholds)
            )
        elif name == "members_h3":
            res = H3_RES[min(max(tile.z, min(H3_RES)), max(H3_RES))]
            k = self.h3_min_count
            records = await self.records(
                "h3",
                layer.depends,
                versions,
                lambda s: derived.h3_records(s, self.caches, self.derived, res=res, suppress_below=k),
                res,
                k,
            )
        elif name == "labels":
            levels = label_levels(tile.z)
            records = await self.records(
                "labels",
                layer.depends,
                versions,
                lambda s: derived.label_records(s, self.caches, levels),
                levels,
            )
        else:
            return params
        minx, miny, maxx, maxy = tile_bounds(tile, MARGIN)
        bbox = (minx - BOX_SLACK, miny - BOX_SLACK, maxx + BOX_SLACK, maxy + BOX_SLACK)
        return params + (records.json_within(bbox),)

    # -- tiles -------------------------------------------------------------------------
    def observe(self, versions: dict[str, int]) -> None:
        """Remember data versions just seen (a version read, or a tile statement's own)."""
        self.known = {**self.known, **versions}

    async def assumed(self, layers: tuple[TileLayer, ...]) -> dict[str, int]:
        """The versions to build derived parameters at: the last seen (each statement
        checks them against its own snapshot), read afresh only when none are known."""
        if any(d not in self.known for layer in layers if layer.derived for d in layer.version_keys):
            self.observe(await self.reader.read())
        return self.known

    async def render(
        self, layers: tuple[TileLayer, ...], tile: Tile, scope: str | None, versions: dict[str, int], now: datetime
    ) -> CachedTile:
        """Draw the tile in one statement (one snapshot): the layers, joined, and the
        truncation layer.

        ``versions`` are the data versions to build derived parameters (``$6`` of the
        grids, coverage and H3 layers) at. The statement answers the versions each layer
        was drawn at; a derived layer whose records were built at other versions is drawn
        again with records at the versions answered (a write committed between the two),
        up to ``RENDER_ATTEMPTS`` times. The tile is filed under — and its ETag made of —
        the versions the statement answered; one whose data kept changing is served, with
        an ETag of what it holds, and not filed."""
        assumed = versions
        attempt = 0
        while True:
            attempt += 1
            bound = [(layer, await self.params(layer, tile, scope, assumed, now)) for layer in layers]
            rows = await self.pool.run(partial(_draw, bound))
            seen: dict[str, int] = {}  # one snapshot: a version is the same for every layer
            stale = []
            for (layer, _), row in zip(bound, rows):
                seen.update(zip(layer.version_keys, row[4]))
                if layer.derived and any(assumed.get(k, 0) != seen[k] for k in layer.version_keys):
                    stale.append(layer)
            self.observe(seen)
            if not stale:
                drawn = None
                break
            if attempt == RENDER_ATTEMPTS:
                log.warning("tile %s: data kept changing while it was drawn; served, not cached", tile)
                drawn = tuple(seen.items()) + tuple(
                    (f"assumed:{k}", assumed.get(k, 0)) for layer in stale for k in layer.version_keys
                )
                break
            assumed = {**assumed, **seen}
        parts, truncated, epochs = [], {}, []
        valid_until = None
        for (layer, p), (mvt, cut, epoch, next_change, _) in zip(bound, rows):
            if mvt:
                parts.append(mvt)
            if cut:
                truncated[layer.name] = p[3]
            if layer.timed:
                epochs.append(f"{layer.name}:{epoch}")
                if next_change is not None and (valid_until is None or next_change < valid_until):
                    valid_until = next_change
        body = b"".join(parts) + truncated_layer(truncated)
        used = content_state(bound, seen) if drawn is None else None
        etag = make_etag(
            tuple(layer.name for layer in layers),
            tile.z,
            tile.x,
            tile.y,
            used if used is not None else drawn,
            scope,
            tuple(epochs),
            self.config_tag,
        )
        return CachedTile(versions=used, etag=etag, body=body, truncated=truncated, valid_until=valid_until)

    def key(self, layers: tuple[TileLayer, ...], tile: Tile, scope: str | None) -> tuple:
        return (tuple(layer.name for layer in layers), tile.z, tile.x, tile.y, scope)

    async def tile(
        self,
        layers: tuple[TileLayer, ...],
        tile: Tile,
        *,
        scope: str | None,
        gzip: bool,
        if_none_match_header: str | None,
    ) -> TileReply:
        """The reply for a tile request (layers already checked for the caller and zoom).

        A cached copy is revalidated against data versions read after the request
        arrived (one round trip). Without one — cache off, or nothing cached under the
        key — the tile is drawn at once: its statements start after the request arrived
        and answer their own versions, so a write committed before the request is in it,
        in one round trip and no version read."""
        now = self.clock.now()
        key = self.key(layers, tile, scope)
        entry = None
        cache = self.settings.cache
        if cache and self.cache.holds(key):
            versions = await self.reader.read()
            self.observe(versions)
            now = self.clock.now()  # the clock after the read, as the versions
            # only the derived layers' records enter the state (the others' versions do)
            bound = [
                (layer, await self.params(layer, tile, scope, versions, now) if layer.derived else None)
                for layer in layers
            ]
            entry = self.cache.get(key, content_state(bound, versions), now)
        if entry is None:
            entry = await self.render(layers, tile, scope, await self.assumed(layers), now)
            if cache:
                self.cache.put(key, entry)
        return await self.reply(
            key, entry, gzip=gzip, if_none_match_header=if_none_match_header, private=scope is not None, now=now
        )

    async def reply(
        self,
        key: tuple,
        entry: CachedTile,
        *,
        gzip: bool,
        if_none_match_header: str | None,
        private: bool,
        now: datetime,
    ) -> TileReply:
        compressed = gzip and len(entry.body) >= GZIP_MIN_BYTES
        etag = etag_for(entry.etag, compressed)
        base = self.settings.cache_control_private if private else self.settings.cache_control
        headers = {
            "ETag": etag,
            "Cache-Control": _cache_control(base, entry.valid_until, now),
            "Vary": "Accept-Encoding, Authorization" if private else "Accept-Encoding",
        }
        if not private:
            headers["Access-Control-Allow-Origin"] = "*"
            if self.settings.proxy_revalidate:  # nginx keeps it, yet asks again every time (geo_api.stack)
                headers["X-Accel-Expires"] = "@1"
        if entry.truncated:
            headers["X-Tile-Truncated"] = ", ".join(f"{n};limit={v}" for n, v in sorted(entry.truncated.items()))
        if if_none_match(if_none_match_header, etag):
            return TileReply(304, b"", headers)
        if not entry.body:
            return TileReply(204, b"", headers)
        headers["Content-Type"] = MVT_TYPE
        if not compressed:
            return TileReply(200, entry.body, headers)
        if entry.gzipped is None:
            before = entry.size
            level = self.settings.gzip_level
            if len(entry.body) <= GZIP_INLINE_BYTES:
                entry.gzipped = gzip_body(entry.body, level)
            else:
                entry.gzipped = await anyio.to_thread.run_sync(gzip_body, entry.body, level)
            self.cache.grew(key, entry, before)
        headers["Content-Encoding"] = "gzip"
        return TileReply(200, entry.gzipped, headers)

    # -- metadata ----------------------------------------------------------------------
    async def extent(self) -> tuple[float, float, float, float] | None:
        """The WGS84 extent of the areas layer (None when there are no areas)."""
        versions = await self.reader.read()
        key = versions.get("areas")
        if getattr(self, "_extent_key", None) == key:
            return self._extent

        async def work(conn):
            return await execute(
                conn,
                "SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                "FROM (SELECT ST_Extent(geom) AS e FROM admin_areas) s",
                fetch="one",
            )

        row = await self.pool.run(work)
        value = None if row is None or row[0] is None else tuple(float(v) for v in row)
        self._extent_key, self._extent = key, value
        return value


#: Composite statements kept prepared on each tile connection (least recently used
#: deallocated beyond): the map's own composites and a few more.
COMPOSITES_PER_CONNECTION = 16


async def _draw(bound, conn) -> list[tuple]:
    """The bound layers' rows: one layer, its own prepared statement; several, one
    composite statement (:class:`tiles.layers.Composite`) — one round trip and one
    snapshot for the whole tile — prepared on ``conn`` when first used there."""
    if len(bound) == 1:
        layer, p = bound[0]
        return [await execute(conn, execute_sql(layer, len(p)), p, fetch="one")]
    c = composite(tuple(layer.name for layer, _ in bound))
    params = tuple(v for _, p in bound for v in p)
    if len(params) != len(c.param_types):
        raise ValueError(f"{len(params)} parameters bound for {len(c.param_types)} in {c.layers}")
    prepared = conn.__dict__.setdefault("gb_composites", OrderedDict())
    if c.statement in prepared:
        prepared.move_to_end(c.statement)
    else:
        while len(prepared) >= COMPOSITES_PER_CONNECTION:
            old, _ = prepared.popitem(last=False)
            await execute(conn, f"DEALLOCATE {old}")
        await execute(conn, f"PREPARE {c.statement} ({', '.join(c.param_types)}) AS {c.sql}")
        prepared[c.statement] = True
    row = await execute(conn, f"EXECUTE {c.statement} ({', '.join(['%s'] * len(params))})", params, fetch="one")
    return c.split(row)


def content_state(bound, versions: dict[str, int]) -> tuple[tuple[str, object], ...]:
    """What a tile's content is a function of, besides the tile, the caller's scope, the
    clock and the settings: the data versions its statements read themselves, and for
    each derived layer a digest of the records it is given (``$6``,
    :attr:`TileLayer.via_records`). Tiles are filed, looked up and given their ETags by
    it, so a write that changes no record a derived tile holds — a registration confirmed
    in another grid — leaves that tile, and its ETag, as they were."""
    direct = sorted({k for layer, _ in bound for k in layer.direct_keys})
    return tuple((k, versions.get(k, 0)) for k in direct) + tuple(
        (f"records:{layer.name}", hashlib.blake2b(p[5].encode(), digest_size=16).hexdigest())
        for layer, p in bound
        if layer.derived
    )


__all__ = [
    "TileService",
    "TileReply",
    "parse_layers",
    "layers_at_zoom",
    "accepts_gzip",
    "check_tile",
    "entitled",
    "PUBLIC_LAYERS",
    "MVT_TYPE",
]

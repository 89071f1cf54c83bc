"""The tile layers and their SQL, built once per layer and prepared once per connection.

Every layer is one prepared statement (``PREPARE gb_tile_<layer>``, see
:func:`setup_statements`; a tile of several layers runs them all as one statement,
:class:`Composite`) whose only inputs are bound parameters:

    $1 z, $2 x, $3 y — the tile; $4 the feature limit; $5 the polygon simplification
    tolerance (degrees, 0 for none; :func:`tiles.tms.simplify_tolerance`); $6, $7 —
    what the layer needs besides (below).

and which answers one row ``(mvt bytea, truncated boolean, epoch text, next_change
timestamptz, versions bigint[])``: the layer encoded by ST_AsMVT (ST_AsMVTGeom clips to
the tile plus a 64-unit buffer, at 4096 units per tile); whether the feature limit cut
it; for layers whose content moves with the clock, an epoch naming the current content
and the next instant it changes (:mod:`tiles.cache`); and the data versions the tile was
drawn at (:attr:`TileLayer.version_keys`, in that order).

Candidates are found in the storage SRID (EPSG:4326) with ``geom && <tile envelope with
its buffer, transformed to 4326>`` so that the GiST index answers; their geometries are
then simplified (polygons, by zoom), transformed to EPSG:3857 and encoded.

**Feature limits** keep the first N candidates in the layer's stated priority order
(:attr:`TileLayer.priority`), never an arbitrary subset. A cut layer is reported in the
tile's ``truncated`` layer and the ``X-Tile-Truncated`` header. Candidates are features
whose bounding box meets the buffered tile (the index compares single-precision boxes, so
this errs outwards by well under a metre); one that meets only the buffer's corner, or
its edge within that precision, may take a slot and then encode to nothing.

Attributes computed per data version rather than per tile (grid registration figures,
coverage findings, H3 counts) reach the statement as a JSON parameter ``$6`` holding the
records of the features whose bounding box meets the tile (:mod:`tiles.derived`).

Data versions: each layer names the ``data_versions`` layers it is drawn from
(:attr:`TileLayer.depends`), and its statement reads their versions itself: one
statement, one snapshot, so the versions it answers are exactly those of the rows it
encoded (the triggers bump a version in the writing transaction), and serving a tile
needs no separate round trip to learn them. A write to ``event_categories`` (a renamed
category, a changed warning share) bumps the ``events`` version (migration 0006).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from layers.events import CLOCK, TERMINAL
from tiles.tms import BUFFER, EXTENT, MARGIN

ENV_3857 = "ST_TileEnvelope($1, $2, $3)"
ENV_4326 = f"ST_Transform(ST_TileEnvelope($1, $2, $3, margin => {MARGIN}), 4326)"
BASE_TYPES = ("integer", "integer", "integer", "integer", "double precision")


def _mvt_geom(expr: str, *, simplify: bool) -> str:
    if simplify:
        expr = f"CASE WHEN $5 > 0 THEN ST_Simplify({expr}, $5, true) ELSE {expr} END"
    return f"ST_AsMVTGeom(ST_Transform({expr}, 3857), {ENV_3857}, {EXTENT}, {BUFFER}, true)"


def _quoted(values) -> str:
    return ", ".join(f"'{v}'" for v in values)


@dataclass(frozen=True)
class TileLayer:
    name: str
    title: str  # Simplified Chinese, for the TileJSON and the map
    description: str
    geometry: str  # "polygon" or "point"
    minzoom: int
    maxzoom: int
    depends: tuple[str, ...]  # data_versions layers whose change changes the tile
    fields: dict[str, str]  # attribute → TileJSON type (String, Number, Boolean)
    priority: str  # the order in which features are kept under the feature limit
    candidates: str  # SELECT … of candidates, columns fid, geom and the attributes
    order: str  # ORDER BY expression over the candidates' columns
    extra_types: tuple[str, ...] = ()  # types of $6, $7
    personal: bool = False  # served only to entitled callers, scoped to their area
    #: drawn on the map other portals embed (/map?embed=1): aggregates, organisation sites
    #: and names, not single reports or internal work lists
    embed: bool = True
    timed: bool = False  # content moves with the clock ($6 is now)
    simplify: bool = False
    derived: bool = False  # $6 holds records built at the layer's data versions (tiles.derived)
    #: of ``depends``, those the statement reads only through its records ($6): a derived
    #: tile is a function of its other versions and of the records it is given, so it is
    #: cached (and its ETag made) by those and a digest of the records, and a write that
    #: changes no record of the tile leaves it as it is (tiles.service)
    via_records: tuple[str, ...] = ()
    sql: str = field(default="", compare=False)

    @cached_property
    def version_keys(self) -> tuple[str, ...]:
        """The ``data_versions`` layers whose versions the statement answers, in order."""
        return tuple(sorted(set(self.depends)))

    @cached_property
    def direct_keys(self) -> tuple[str, ...]:
        """The ``data_versions`` layers the statement reads itself (not through records)."""
        return tuple(k for k in self.version_keys if k not in self.via_records)

    @property
    def statement(self) -> str:
        return f"gb_tile_{self.name}"

    @property
    def param_types(self) -> tuple[str, ...]:
        return BASE_TYPES + self.extra_types


def _statement(
    layer: TileLayer, epoch: str = "NULL::text", next_change: str = "NULL::timestamptz", limited: bool = True
) -> str:
    """The layer's statement: candidates (limited to $4 + 1 to learn whether the limit
    cuts, unless the clock needs them all), the first $4 encoded. The encoding sits in
    the subquery that holds the LIMIT, so that PostgreSQL neither flattens it nor pushes
    the ``geom IS NOT NULL`` test into it (which would encode every geometry twice)."""
    attrs = ", ".join(["fid", *layer.fields])
    limit = f" ORDER BY {layer.order} LIMIT $4 + 1" if limited else ""
    return f"""
WITH c AS MATERIALIZED ({layer.candidates}{limit})
SELECT (SELECT ST_AsMVT(t, '{layer.name}', {EXTENT}, 'geom', 'fid')
          FROM (SELECT {attrs}, {_mvt_geom("geom", simplify=layer.simplify)} AS geom
                  FROM c ORDER BY {layer.order} LIMIT $4) t
         WHERE t.geom IS NOT NULL) AS mvt,
       (SELECT count(*) > $4 FROM c) AS truncated,
       {epoch} AS epoch,
       {next_change} AS next_change,
       {_versions(layer)} AS versions"""


def _versions(layer: TileLayer) -> str:
    """The layer's data versions, read in the statement's own snapshot (0 for a layer
    without a row, as :func:`tiles.service` counts it)."""
    reads = ", ".join(
        f"COALESCE((SELECT version FROM layer_versions WHERE layer = '{k}'), 0)" for k in layer.version_keys
    )
    return f"ARRAY[{reads}]::bigint[]"


def _build(layer: TileLayer, **kw) -> TileLayer:
    object.__setattr__(layer, "sql", _statement(layer, **kw))
    return layer


AREAS = _build(
    TileLayer(
        name="areas",
        title="行政区划",
        description="District, street and community boundaries",
        geometry="polygon",
        minzoom=8,
        maxzoom=16,
        depends=("areas",),
        fields={"level": "String", "code": "String", "name": "String"},
        priority="district, then streets, then communities; by code",
        candidates=f"""
        SELECT a.id AS fid, a.level::text AS level, a.code::text AS code, a.name, a.geom,
               CASE a.level WHEN 'district' THEN 0 WHEN 'street' THEN 1 ELSE 2 END AS rank
          FROM admin_areas a
         WHERE a.geom && {ENV_4326}""",
        order="rank, code",
        simplify=True,
    )
)

GRIDS = _build(
    TileLayer(
        name="grids",
        title="网格",
        description=(
            "Current grids with their branch and registration figures: registered = confirmed "
            "registrations, rate = registered / members whose current residence lies in the grid, "
            "roles_missing = how many of the active service roles no confirmed member holds; "
            "suppressed = the figures are withheld (fewer registered than the configured minimum, "
            "or withheld with such a grid so that no area total minus the shown grids gives it away)"
        ),
        geometry="polygon",
        minzoom=9,
        maxzoom=16,
        depends=("grids", "areas", "members"),
        fields={
            "code": "String",
            "name": "String",
            "community": "String",
            "has_branch": "Boolean",
            "branch": "String",
            "registered": "Number",
            "rate": "Number",
            "roles_missing": "Number",
            "roles_missing_names": "String",
            "suppressed": "Boolean",
        },
        priority="grids without a branch first, then larger grids (area in m²) first, then by code",
        candidates=f"""
        SELECT a.*, gv.geom
          FROM grid_versions gv
          JOIN json_to_recordset($6) AS a(fid integer, code text, name text, community text, has_branch boolean,
                                           branch text, registered integer, rate double precision,
                                           roles_missing integer, roles_missing_names text,
                                           area_m2 double precision, suppressed boolean)
            ON a.fid = gv.grid_id
         WHERE gridbranch_in_force(gv.valid_from, gv.valid_to) AND gv.geom && {ENV_4326}""",
        order="has_branch, area_m2 DESC, code",
        extra_types=("json",),
        simplify=True,
        derived=True,
        via_records=("areas", "members"),  # names, community, branch and figures; geometry read directly
    )
)

BRANCHES = _build(
    TileLayer(
        name="branches",
        title="党支部活动阵地",
        description="Activity sites of active branches (no secretary names or phones)",
        geometry="point",
        minzoom=11,
        maxzoom=16,
        depends=("branches", "areas"),
        fields={"code": "String", "name": "String", "kind": "String", "community": "String", "grids": "Number"},
        priority="grid branches, then community branches, then work-unit branches; by code",
        candidates=f"""
        SELECT b.id AS fid, b.code::text AS code, b.name, b.kind::text AS kind, cm.code::text AS community,
               (SELECT count(*) FROM branch_grids bg WHERE bg.branch_id = b.id)::integer AS grids,
               b.site AS geom,
               CASE b.kind WHEN 'grid' THEN 0 WHEN 'community' THEN 1 ELSE 2 END AS rank
          FROM branches b
          LEFT JOIN admin_areas cm ON cm.id = b.community_id
         WHERE b.active AND b.site && {ENV_4326}""",
        order="rank, code",
    )
)

_CLOCK = _quoted(CLOCK)
_TERMINAL = _quoted(TERMINAL)

EVENTS = _build(
    TileLayer(
        name="events",
        title="事件",
        description=(
            "Reported events (no description, reporter or photos). warning/overdue follow the events "
            "module: while the time limit runs (statuses dispatched, in_progress, handled, returned) an "
            "event is overdue from due_at on and in warning from warn_at on (stored, or the category's "
            "or the configured share of the limit after dispatch); due_at is ISO 8601 UTC"
        ),
        embed=False,
        geometry="point",
        minzoom=11,
        maxzoom=16,
        depends=("events",),
        fields={
            "category": "String",
            "category_name": "String",
            "status": "String",
            "due_at": "String",
            "warning": "Boolean",
            "overdue": "Boolean",
        },
        priority="overdue first, then in warning, then not final (closed, rejected, duplicate), then soonest due, "
        "then by id",
        candidates=f"""
        SELECT f.*, f.clock AND $6 >= f.due_ts AS overdue,
               f.clock AND $6 < f.due_ts AND $6 >= f.warn_at AS warning,
               to_char(f.due_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS due_at
          FROM (SELECT e.id AS fid, e.category_code::text AS category, ec.name AS category_name,
                       e.status::text AS status, e.due_at AS due_ts, e.geom,
                       (e.status IN ({_CLOCK}) AND e.due_at IS NOT NULL) AS clock,
                       e.status NOT IN ({_TERMINAL}) AS live,
                       COALESCE(e.warn_at, e.dispatched_at
                                + (e.due_at - e.dispatched_at) * COALESCE(ec.warn_share, $7)) AS warn_at
                  FROM events e
                  JOIN event_categories ec ON ec.code = e.category_code
                 WHERE e.geom && {ENV_4326}) f""",
        order="overdue DESC, warning DESC, live DESC, due_ts NULLS LAST, fid",
        extra_types=("timestamptz", "double precision"),
        timed=True,
    )
)

MEMBERS = _build(
    TileLayer(
        name="members",
        title="党员居住地",
        description=(
            "Current residences of members inside the caller's area, with the status of their active "
            "registration (confirmed, pending or none); admins only, zoom 15 and above; no names or phones"
        ),
        geometry="point",
        minzoom=15,
        maxzoom=16,
        depends=("members", "areas", "grids"),
        fields={"status": "String"},
        priority="by member id",
        candidates=f"""
        SELECT r.member_id AS fid, COALESCE(reg.status, 'none')::text AS status, r.geom
          FROM residences r
          LEFT JOIN registrations reg ON reg.member_id = r.member_id AND reg.status IN ('pending', 'confirmed')
         WHERE r.ended_at IS NULL AND r.geom && {ENV_4326}
           AND ST_Intersects(r.geom, COALESCE(
                 (SELECT geom FROM admin_areas WHERE code = $6),
                 (SELECT gv.geom FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gridbranch_in_force(gv.valid_from, gv.valid_to)
                   WHERE g.code = $6)))""",
        order="fid",
        extra_types=("text",),
        personal=True,
    )
)

COVERAGE_ISSUES = _build(
    TileLayer(
        name="coverage_issues",
        title="覆盖问题",
        description=(
            "Topology findings of the current grid layer (layers.coverage.current_findings): gaps, "
            "overlaps, slivers (form gap or overlap), grids outside their community, invalid and stray parts; "
            "codes = the grids or areas involved, comma-separated; area_m2 in m²; message = the finding in "
            "Simplified Chinese (as /v1/coverage/issues says it)"
        ),
        embed=False,
        geometry="polygon",
        minzoom=8,
        maxzoom=16,
        depends=("grids", "areas"),
        fields={"kind": "String", "form": "String", "codes": "String", "area_m2": "Number", "message": "String"},
        priority="larger findings (area in m²) first, then in the order of the analysis",
        candidates=f"""
        SELECT f.fid, f.kind, f.form, f.codes, f.area_m2, f.message, ST_GeomFromWKB(decode(f.wkb, 'hex'), 4326) AS geom
          FROM json_to_recordset($6) AS f(fid integer, kind text, form text, codes text, area_m2 double precision,
                                          message text, wkb text)
         WHERE ST_GeomFromWKB(decode(f.wkb, 'hex'), 4326) && {ENV_4326}""",
        order="area_m2 DESC NULLS LAST, fid",
        extra_types=("json",),
        simplify=True,
        derived=True,
        via_records=("grids", "areas"),  # the findings, geometry included
    )
)

MEMBERS_H3 = _build(
    TileLayer(
        name="members_h3",
        title="党员分布（H3）",
        description=(
            "Members with an active registration counted per H3 cell at their registered residence; "
            "the resolution follows the zoom (z10–11: 7, z12–13: 8, z14–15: 9, z16: 10); the same counts "
            "as /v1/coverage/h3 (every cell the sum of its resolution-10 children): cells counting fewer "
            "than the configured minimum are left out, and so are the cells withheld with them so that no "
            "left-out count can be recovered by subtracting a parent's shown children"
        ),
        geometry="polygon",
        minzoom=10,
        maxzoom=16,
        depends=("members",),
        fields={"cell": "String", "count": "Number", "res": "Number"},
        priority="larger counts first, then by cell",
        candidates=f"""
        SELECT f.fid, f.cell, f.count, f.res, ST_GeomFromWKB(decode(f.wkb, 'hex'), 4326) AS geom
          FROM json_to_recordset($6) AS f(fid bigint, cell text, count integer, res integer, wkb text)
         WHERE ST_GeomFromWKB(decode(f.wkb, 'hex'), 4326) && {ENV_4326}""",
        order="count DESC, cell",
        extra_types=("json",),
        derived=True,
        via_records=("members",),  # the cells, geometry included
    )
)

#: The zooms at which each level's name is written (the ``labels`` layer): the district
#: on the whole-city views, streets and communities as they fill the screen, grids close in.
LABEL_ZOOMS = {"district": (8, 10), "street": (11, 13), "community": (13, 15), "grid": (15, 16)}


def label_levels(z: int) -> tuple[str, ...]:
    """The levels whose names are written at zoom ``z`` (:data:`LABEL_ZOOMS`)."""
    return tuple(level for level, (lo, hi) in LABEL_ZOOMS.items() if lo <= z <= hi)


LABELS = _build(
    TileLayer(
        name="labels",
        title="名称标注",
        description=(
            "One point per district, street, community and current grid at which to write its name — "
            "the inside point farthest from its boundary (layers.places.label_point), so a name is written "
            "once, not once per tile its polygon crosses; by zoom: "
            + ", ".join(f"{level} z{lo}–{hi}" for level, (lo, hi) in LABEL_ZOOMS.items())
            + " (level says which)"
        ),
        geometry="point",
        minzoom=8,
        maxzoom=16,
        depends=("areas", "grids"),
        fields={"level": "String", "code": "String", "name": "String"},
        priority="the district, then streets, then communities, then grids; by code",
        candidates=f"""
        SELECT f.fid, f.level, f.code, f.name, f.rank, ST_SetSRID(ST_MakePoint(f.lon, f.lat), 4326) AS geom
          FROM json_to_recordset($6) AS f(fid bigint, level text, code text, name text, rank integer,
                                          lon double precision, lat double precision)
         WHERE ST_SetSRID(ST_MakePoint(f.lon, f.lat), 4326) && {ENV_4326}""",
        order="rank, code",
        extra_types=("json",),
        derived=True,
        via_records=("areas", "grids"),  # the points and names
    )
)

# The events layer keeps every candidate until encoding: its epoch and next change are
# taken over all events of the tile, since the clock reorders them too.
object.__setattr__(
    EVENTS,
    "sql",
    _statement(
        EVENTS,
        limited=False,
        epoch="(SELECT count(*) FILTER (WHERE clock AND $6 >= warn_at) || '/' || "
        "count(*) FILTER (WHERE clock AND $6 >= due_ts) FROM c)",
        next_change="(SELECT LEAST(min(warn_at) FILTER (WHERE clock AND warn_at > $6), "
        "min(due_ts) FILTER (WHERE clock AND due_ts > $6)) FROM c)",
    ),
)

LAYERS: dict[str, TileLayer] = {
    layer.name: layer for layer in (AREAS, GRIDS, BRANCHES, EVENTS, COVERAGE_ISSUES, MEMBERS_H3, LABELS, MEMBERS)
}
#: Layers every caller may read, in drawing order (the style's and the default composite's).
PUBLIC_LAYERS = tuple(name for name, layer in LAYERS.items() if not layer.personal)
#: Of those, the layers the embedded map draws.
EMBED_LAYERS = tuple(name for name in PUBLIC_LAYERS if LAYERS[name].embed)

VERSIONS_STATEMENT = "gb_tile_versions"


def setup_statements() -> list[str]:
    """What a tile connection runs when it opens: generic plans (planned once; their
    index scans take the tile envelope at run time — custom plans would be re-planned at
    every tile, costing more than most tiles do), then PREPARE for every layer's
    statement and for the data-version read."""
    out = [
        "SET plan_cache_mode = force_generic_plan",
        f"PREPARE {VERSIONS_STATEMENT} AS SELECT layer, version FROM layer_versions",
    ]
    for layer in LAYERS.values():
        out.append(f"PREPARE {layer.statement} ({', '.join(layer.param_types)}) AS {layer.sql}")
    return out


@dataclass(frozen=True)
class Composite:
    """One statement drawing several layers in one round trip and one snapshot: each
    layer's statement as a one-row subquery, its parameters numbered after the previous
    layers' (``$1``–``$n`` of the first layer, then ``$n+1``… of the next), cross-joined
    into one row of five columns per layer. Prepared per connection when first used."""

    layers: tuple[str, ...]
    statement: str
    sql: str
    param_types: tuple[str, ...]

    def split(self, row: tuple) -> list[tuple]:
        """The composite's row as one five-column row per layer."""
        return [tuple(row[i : i + 5]) for i in range(0, len(row), 5)]


@lru_cache(maxsize=256)
def composite(names: tuple[str, ...]) -> Composite:
    parts, types = [], []
    for i, name in enumerate(names):
        layer = LAYERS[name]
        offset = len(types)
        sql = _PARAM.sub(lambda m: f"${int(m.group(1)) + offset}", layer.sql)  # noqa: B023 - used at once
        parts.append(f"({sql}) AS l{i}")
        types += layer.param_types
    digest = hashlib.sha1(",".join(names).encode()).hexdigest()[:16]
    return Composite(names, f"gb_tiles_{digest}", "SELECT * FROM " + ",\n".join(parts), tuple(types))


_PARAM = re.compile(r"\$(\d+)")


def member_ids_sql() -> str:
    """The ids of the members whose residences a ``members`` tile holds — the layer's
    own candidates, order and limit — with named parameters ``:p1``–``:p3`` (z/x/y),
    ``:p4`` (the feature limit) and ``:p6`` (the caller's area), for the audit of who
    received which residences (geo_api.audit)."""
    sql = (
        f"SELECT COALESCE(array_agg(fid ORDER BY fid), '{{}}') FROM ("
        f"{MEMBERS.candidates} ORDER BY {MEMBERS.order} LIMIT $4) c"
    )
    return _PARAM.sub(lambda m: f":p{m.group(1)}", sql)


def execute_sql(layer: TileLayer, n_params: int) -> str:
    """``EXECUTE gb_tile_<layer> (%s, …)`` for the driver to bind ``n_params`` values."""
    return f"EXECUTE {layer.statement} ({', '.join(['%s'] * n_params)})"


def prepare(cursor) -> None:
    """Set up a (synchronous) connection as :func:`setup_statements` says."""
    for sql in setup_statements():
        cursor.execute(sql)


def execute(cursor, layer: TileLayer, params: tuple) -> tuple[bytes, bool, str | None, object, tuple[int, ...]]:
    """Run the layer's prepared statement on a synchronous cursor: (mvt, truncated,
    epoch, next_change, versions)."""
    cursor.execute(execute_sql(layer, len(params)), params)
    mvt, truncated, epoch, next_change, versions = cursor.fetchone()
    return (bytes(mvt) if mvt is not None else b""), bool(truncated), epoch, next_change, tuple(versions)


def read_versions(cursor) -> dict[str, int]:
    cursor.execute(f"EXECUTE {VERSIONS_STATEMENT}")
    return dict(cursor.fetchall())

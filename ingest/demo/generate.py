"""Build the Jinshui demo district (金水区) in memory: deterministic and seeded, no database.

``build_demo(seed)`` returns a :class:`DemoDistrict` holding:

* the real district boundary (``data/410105.geojson``, GCJ-02, converted to WGS84 on
  load), code 410105000000;
* 14 streets and towns, 92 communities and 500 grids, each level an exact partition of
  its parent (seeded Voronoi cells of k-means centres of a population sample, noded
  together with every parent boundary and polygonized, so neighbours share their
  vertices exactly), denser and smaller near the old city centre in the south-west;
* a handful of deliberate grid-layer defects (gaps, overlaps, a sliver) listed in
  :attr:`DemoDistrict.defects`; nothing else in the grid layer is a defect;
* grid workers, 41 departments, 12 event categories, about 420 grid and community
  branches (about 5 % of the grids deliberately have none) and 60 work-unit branches;
* 15,000 in-service and 1,300 floating members with residences, most of them registered
  at the grid containing their residence, and about 3,000 events of the last 12 months
  with a consistent lifecycle and log.

Geometry is computed in EPSG:4547 (CGCS2000 / 3-degree Gauss-Krüger CM 114E, metres)
and stored in WGS84 lon/lat (EPSG:4326). Every random draw comes from one
``numpy.random.default_rng(seed)``; the timeline (registrations, events and their logs)
is relative to ``as_of`` — by default the fixed :data:`AS_OF`, so that a build is
reproducible; the demo command passes the present, so that its open events are as fresh
as designed whenever it is loaded.

The build is this module's :func:`build_demo`; its parts are their own modules:
:mod:`~ingest.demo.model` (records, constants, coordinates), :mod:`~ingest.demo.sampling`,
:mod:`~ingest.demo.partition` (streets, communities, grids), :mod:`~ingest.demo.defects`,
:mod:`~ingest.demo.people` (names, branches, members) and :mod:`~ingest.demo.timeline`
(events). Each draws from the build's one generator in the order the build calls them:
reordering the calls changes the district.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import shapely
from shapely.geometry import MultiPolygon
from shapely.strtree import STRtree

from ingest.demo import names as N
from ingest.demo.defects import make_defects
from ingest.demo.model import (
    AS_OF,
    BOUNDARY_FILE,
    DEFAULT_SEED,
    DISTRICT_CODE,
    DISTRICT_NAME,
    ROLE_CODES,
    Area,
    DemoDistrict,
    Department,
    EventCategory,
    Grid,
    as_multipolygon,
    district_boundary,
    to_lonlat,
    to_metric,
)
from ingest.demo.partition import partition
from ingest.demo.people import People, make_branches, make_members
from ingest.demo.sampling import Density
from ingest.demo.timeline import make_events

#: What callers take from here besides :func:`build_demo` (the records and constants
#: live in :mod:`ingest.demo.model`).
__all__ = [
    "AS_OF",
    "BOUNDARY_FILE",
    "DEFAULT_SEED",
    "DISTRICT_CODE",
    "ROLE_CODES",
    "DemoDistrict",
    "build_demo",
    "to_metric",
]


def build_demo(seed: int = DEFAULT_SEED, as_of: datetime = AS_OF) -> DemoDistrict:
    """Build the whole demo district in memory (deterministic for a given ``seed`` and
    ``as_of``, the instant its timeline leads up to)."""
    rng = np.random.default_rng(seed)
    density = Density()
    boundary_ll = district_boundary()
    district_m = shapely.make_valid(to_metric(boundary_ll))

    layout = partition(rng, district_m, density)
    defects_m = make_defects(rng, layout, density)

    # ---- areas and grids to WGS84 -----------------------------------------------------
    def area_ll(geom_m) -> MultiPolygon:
        g = to_lonlat(geom_m)
        if not g.is_valid:  # never seen; kept as a safety net
            g = shapely.make_valid(g)
        return as_multipolygon(g)

    district = Area(
        DISTRICT_CODE, DISTRICT_NAME, "district", None, area_ll(layout.district), round(float(layout.district.area), 1)
    )
    streets = [
        Area(code, name, "street", DISTRICT_CODE, area_ll(g), round(float(g.area), 1))
        for code, name, g in zip(layout.street_codes, layout.street_names, layout.streets)
    ]
    communities = [
        Area(code, name, "community", layout.street_codes[s], area_ll(g), round(float(g.area), 1))
        for code, name, s, g in zip(
            layout.community_codes, layout.community_names, layout.community_street, layout.communities
        )
    ]
    people = People(rng, 20_000)
    worker_names = people.names(len(layout.grids))
    worker_phones = people.phone_numbers(len(layout.grids))
    grids = [
        Grid(code, name, layout.community_codes[c], wn, wp, area_ll(g), round(float(g.area), 1))
        for code, name, c, g, wn, wp in zip(
            layout.grid_codes, layout.grid_names, layout.grid_community, layout.grids, worker_names, worker_phones
        )
    ]
    defects = []
    for d in defects_m:
        geom_ll = to_lonlat(d["geom"])
        rep = shapely.point_on_surface(geom_ll)
        defects.append(
            {
                "kind": d["kind"],
                "form": d["form"],
                "grid_codes": [layout.grid_codes[g] for g in d["grids"]],
                "community_code": layout.community_codes[d["community"]],
                "area_m2": round(float(d["geom"].area), 1),
                "lon": round(rep.x, 7),
                "lat": round(rep.y, 7),
                "wkt": shapely.to_wkt(geom_ll, rounding_precision=7),
                "note": d["note"],
            }
        )

    grid_tree = STRtree([g.geom for g in grids])
    for g in grids:
        shapely.prepare(g.geom)

    def grid_at(ll: np.ndarray) -> np.ndarray:
        """Index of the grid containing each point (lowest index if in an overlap), -1."""
        pi, gj = grid_tree.query(shapely.points(ll), predicate="within")
        out = np.full(len(ll), -1)
        for i, j in zip(pi[::-1], gj[::-1]):  # reversed: the lowest grid index wins
            out[i] = j
        return out

    # ---- departments and categories ---------------------------------------------------
    departments = [Department(f"D{i + 1:02d}", name) for i, name in enumerate(N.DEPARTMENTS)]
    categories = [
        EventCategory(code, name, departments[dept].code, float(limit), role)
        for code, name, dept, limit, role, _, _ in N.CATEGORIES
    ]

    # ---- branches ------------------------------------------------------------------
    branches, branchless = make_branches(rng, layout, grids, people, district_m, density, boundary_ll)

    # ---- members, residences, registrations -------------------------------------------
    members, residences, registrations = make_members(
        rng, people, grids, branches, defects, district_m, district.geom, density, grid_at, as_of
    )

    # ---- events -----------------------------------------------------------------------
    events, event_log = make_events(
        rng,
        people,
        grids,
        categories,
        departments,
        members,
        defects,
        district_m,
        district.geom,
        density,
        grid_at,
        as_of,
    )

    return DemoDistrict(
        seed=seed,
        as_of=as_of,
        district=district,
        streets=streets,
        communities=communities,
        grids=grids,
        departments=departments,
        categories=categories,
        branches=branches,
        members=members,
        residences=residences,
        registrations=registrations,
        events=events,
        event_log=event_log,
        defects=defects,
        branchless_grids=branchless,
    )

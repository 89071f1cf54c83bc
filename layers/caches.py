"""The caches of one app: :class:`Caches`, made with the app (``app.state.caches``) and
handed to the queries that keep values computed from the database.

Every cache is a :class:`layers.versions.VersionedCache` (the grid indexes wrap one
each): values filed under what they are of and the data versions they were computed at,
bounded in number. Owned by the app, not by a module: two apps in one process (tests,
benches) or one app's successive databases never share a value by accident, and what
a cache holds lives and dies with its app. A command-line run makes its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from layers.locate import GridIndexCache, HistoryIndexCache
from layers.versions import VersionedCache

if TYPE_CHECKING:
    import numpy as np

    from layers.coverage import CoverageModel, H3Counts, MemberCounts
    from layers.places import Place

#: Bound of the caches of values that never go stale (an H3 cell's boundary, a
#: polygon's label point by its WKB digest): the whole of a province's, and then some.
SHAPES_KEEP = 200_000


class Caches:
    """The app's caches (see the module docstring). ``public_grid_worker``: whether
    locate answers name the grid worker (GRIDBRANCH_AUDIT_PUBLIC_GRID_WORKER)."""

    def __init__(self, *, public_grid_worker: bool = True) -> None:
        # layers.coverage: the analysed grid layer per thresholds, built one at a time
        # (a concurrent write makes it read again, up to three times)
        self.coverage: VersionedCache[CoverageModel] = VersionedCache("grids", "areas", exclusive=True)
        # … and, per model, its member figures and the residents per grid and area
        self.member_counts: VersionedCache[MemberCounts] = VersionedCache("members")
        self.coverage_residents: VersionedCache[tuple[np.ndarray, dict[str, int]]] = VersionedCache("residences")
        # H3 counts per (metric, within), filed by h3_counts at the versions it reads
        # itself (the metric's layer; grids and areas for the boundary of ``within``)
        self.h3: VersionedCache[H3Counts] = VersionedCache(keep=64)
        self.h3_rings: VersionedCache[list[list[float]]] = VersionedCache(keep=SHAPES_KEEP)
        # the finest H3 cell of every residence (ids ascending, cells as integers)
        self.residence_cells: VersionedCache[tuple[np.ndarray, np.ndarray]] = VersionedCache("residences")
        # layers.registrations: residents per current grid (ids, counts)
        self.grid_residents: VersionedCache[tuple[list[int], list[int]]] = VersionedCache("grids", "residences")
        # layers.suppression: every current grid's registration figures by code
        self.grid_figures: VersionedCache[dict[str, dict[str, Any]]] = VersionedCache("grids", "areas", "members")
        # layers.places: every place, and label points by (level, code, WKB digest)
        self.places: VersionedCache[list[Place]] = VersionedCache("areas", "grids")
        self.label_points: VersionedCache[tuple[float, float]] = VersionedCache(keep=SHAPES_KEEP)
        # layers.locate: the current grid index (/v1/locate, reports) and past layers (?at=)
        self.grid_index = GridIndexCache(public_worker=public_grid_worker)
        self.history_index = HistoryIndexCache()
        # geo_api.audit: members a members tile holds, by its ETag (its content)
        self.tile_members: VersionedCache[list[int]] = VersionedCache(keep=4096)

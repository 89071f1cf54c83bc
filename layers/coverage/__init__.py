"""Coverage analysis (网格党支部"建在网格上"): topology of the grid layer inside every
parent area, branch coverage, metrics by level, H3 aggregation — and their exports.

Everything reads the grid layer in force (``gridbranch_in_force`` on grid versions,
``gridbranch_live`` on grids: migration 0018). Storage and output geometries are WGS84
(EPSG:4326); areas are m² on the WGS84 ellipsoid (see :mod:`layers.coverage.topology` for how),
distances m, densities per km².

**The model and its cache.** :func:`coverage_model` returns a :class:`CoverageModel`:
areas, grids, branches, the topology findings and the branch-coverage findings that
depend only on the ``grids`` and ``areas`` layers (branches and branch_grids bump the
``grids`` version too, migration 0002). It is kept in the app's caches
(``caches.coverage`` of :class:`layers.caches.Caches`, which every function here that
reads the model takes), keyed by thresholds and filed at (database URL, database OID,
``grids`` version, ``areas`` version): data versions come from a sequence and never
repeat, and the OID tells apart a database dropped and created again under the same
name. The versions are read before and after the model's reads; a model read across a
concurrent write is rebuilt (or, after three tries, returned uncached). Member figures
(residences, registrations, service roles) are read per call and kept per model under
the ``members`` version (``caches.member_counts``).

**Public functions for other packages (tiles):**

- :func:`current_findings` — topology findings as plain dicts with WKB geometry;
- :func:`h3_cells` — counts per H3 cell with their boundary rings (one hierarchy over
  resolutions 7–10; what unentitled callers get is described in the H3 section).

**Findings** (:func:`issues`): topology kinds ``gap``, ``overlap``, ``sliver`` (``form``
gap or overlap), ``outside_community``, ``invalid``, ``stray_part``; branch kinds
``no_branch`` (no active branch covers the grid), ``branch_without_grid`` (an active grid
or community branch covering no current grid; work-unit branches hold members'
organisational relationships and cover no grid by design), ``site_outside_grids`` (the
branch's activity site lies in none of the grids it covers), ``no_worker``,
``roles_missing`` (active service roles nobody among the grid's confirmed members holds).

**Rooms.** :mod:`.model` reads and analyses the layer (:mod:`.topology` does the
overlay); :mod:`.members` counts residents, registrations and roles on a model;
:mod:`.findings` lists and filters the findings; :mod:`.summary` gives the metrics by
level; :mod:`.h3` the H3 counts and their suppression; :mod:`.export` writes findings
and summaries as GeoJSON and CSV, and :mod:`.report` the command-line report. This
package re-exports what the other packages call.
"""

from __future__ import annotations

from layers.coverage.export import (
    ISSUE_COLUMNS,
    SUMMARY_COLUMNS,
    issues_csv,
    issues_geojson,
    summary_csv,
    summary_filename,
    summary_geojson,
)
from layers.coverage.findings import current_findings, issues, parse_kinds
from layers.coverage.h3 import (
    H3_FINEST,
    H3_METRICS,
    H3_RESOLUTIONS,
    H3Counts,
    cell_ring,
    check_h3,
    check_within_exists,
    h3_aggregate,
    h3_cells,
    h3_counts,
)
from layers.coverage.members import MemberCounts, member_counts
from layers.coverage.model import (
    BRANCH_KINDS,
    KIND_GROUPS,
    KINDS,
    LEVEL_NAMES,
    LEVELS,
    CoverageModel,
    coverage_model,
)
from layers.coverage.summary import RANKED, root_code, summary
from layers.coverage.topology import TOPOLOGY_KINDS, Thresholds

__all__ = [
    "BRANCH_KINDS",
    "H3_FINEST",
    "H3_METRICS",
    "H3_RESOLUTIONS",
    "ISSUE_COLUMNS",
    "KINDS",
    "KIND_GROUPS",
    "LEVELS",
    "LEVEL_NAMES",
    "RANKED",
    "SUMMARY_COLUMNS",
    "TOPOLOGY_KINDS",
    "CoverageModel",
    "H3Counts",
    "MemberCounts",
    "Thresholds",
    "cell_ring",
    "check_h3",
    "check_within_exists",
    "coverage_model",
    "current_findings",
    "h3_aggregate",
    "h3_cells",
    "h3_counts",
    "issues",
    "issues_csv",
    "issues_geojson",
    "member_counts",
    "parse_kinds",
    "root_code",
    "summary",
    "summary_csv",
    "summary_filename",
    "summary_geojson",
]

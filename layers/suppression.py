"""Small counts withheld from callers not entitled to member data, over a hierarchy of
units whose every count is the sum of its children's (H3 cells of resolutions 7–10;
district → street → community → grid).

The rule is the one of the H3 counts (layers/coverage/h3.py, its section comment), for both: a
unit counting fewer than k is suppressed; then top-down, under a published parent the
suppressed children must sum to 0 or ≥ k, under a suppressed parent counting ≥ k
(suppressed to protect a sibling) to ≥ k — otherwise the smallest published children
(then by code) are suppressed too, until they do (or all are). A parent's total minus
its published children therefore never gives away fewer than k people, whether that
total is published here or elsewhere (a street's figure in a report).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from layers.registrations import registration_stats

if TYPE_CHECKING:
    from layers.caches import Caches


def complementary_suppression(
    levels: dict[int, dict[str, int]], children: dict[int, dict[str, list[str]]], k: int
) -> set[str]:
    """The units to withhold: ``levels`` maps each depth (ascending: coarse to fine) to
    its units' counts, ``children[d][parent]`` lists the parent's children at the next
    depth (every unit of a depth below the top has a parent)."""
    out = {unit for counts in levels.values() for unit, n in counts.items() if n < k}  # primary
    depths = sorted(levels)
    for depth, finer in zip(depths, depths[1:]):  # top-down: a parent's children are settled before theirs
        counts, below = levels[depth], levels[finer]
        for parent in sorted(counts):
            hidden = parent in out
            if hidden and counts[parent] < k:
                continue  # its children all count < k: suppressed already
            kids = children[depth].get(parent, [])
            s = sum(below[c] for c in kids if c in out)
            # a published parent minus its published children gives s away: 0 or ≥ k;
            # a suppressed parent (≥ k) would be pinned down by its published children
            if (s < k) if hidden else (0 < s < k):
                for n, unit in sorted((below[c], c) for c in kids if c not in out):
                    out.add(unit)
                    s += n
                    if s >= k:
                        break
    return out


def _grid_parents(code: str) -> tuple[str, str, str]:
    """A grid's (district, street, community) codes (15 digits: the community's 12 and
    a sequence; the street's are its first 9, the district's its first 6)."""
    return code[:6], code[:9], code[:12]


def suppressed_grids(registered: dict[str, int], k: int) -> set[str]:
    """The grids (15-digit codes → registered count, every current grid) whose figures
    are withheld, by :func:`complementary_suppression` over district → street →
    community → grid."""
    levels: dict[int, dict[str, int]] = {0: {}, 1: {}, 2: {}, 3: dict(registered)}
    children: dict[int, dict[str, set[str]]] = {0: {}, 1: {}, 2: {}}
    for code, n in registered.items():
        units = _grid_parents(code)
        for depth, unit in enumerate(units):
            levels[depth][unit] = levels[depth].get(unit, 0) + n
        for depth, (parent, child) in enumerate(zip(units, units[1:] + (code,))):
            children[depth].setdefault(parent, set()).add(child)
    return complementary_suppression(levels, children, k) & set(registered)


def grid_stats(session: Session, caches: Caches) -> dict[str, dict[str, Any]]:
    """Registration figures of every current grid by code
    (:func:`layers.registrations.registration_stats`), kept per data versions
    (``caches.grid_figures``)."""

    def every_grid(s: Session) -> dict[str, dict[str, Any]]:
        stats: dict[str, dict[str, Any]] = {}
        districts = s.execute(text("SELECT code FROM admin_areas WHERE level = 'district' ORDER BY code")).scalars()
        for district in districts.all():
            for unit in registration_stats(s, caches, level="grid", within=district):
                stats[unit["code"]] = unit
        return stats

    return caches.grid_figures.get(session, every_grid)


def public_grid_figures(stats: dict[str, dict[str, Any]], grids: list[str], k: int) -> set[str]:
    """Of ``grids`` (every current grid's code), those whose figures are withheld from
    the public: registered counts from ``stats`` (0 for a grid without)."""
    return suppressed_grids({g: (stats[g]["registered"] if g in stats else 0) for g in grids}, k)

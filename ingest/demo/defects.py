"""The deliberate grid-layer defects of the demo (metric CRS): a hole, a bite off a
community boundary, two overlaps and a sliver — the only defects its grid layer has."""

from __future__ import annotations

import math

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

from ingest.demo.partition import Layout, shared_line
from ingest.demo.sampling import Density, sample_in


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, n: int = 11) -> Polygon:
    """An irregular star-shaped polygon of mean radius ``r`` around (cx, cy)."""
    ang = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False) + rng.uniform(-0.2, 0.2, n)
    rad = r * rng.uniform(0.8, 1.15, n)
    return Polygon(np.column_stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)]))


def _clean(geom):
    """``geom`` without float-noise shards (parts under 0.01 m²) that overlay can leave."""
    parts = shapely.get_parts(geom)
    keep = parts[shapely.area(parts) >= 0.01]
    return keep[0] if len(keep) == 1 else MultiPolygon(list(keep))


def _longest_segment(line) -> tuple[np.ndarray, np.ndarray, float]:
    best = (np.zeros(2), np.zeros(2), 0.0)  # no segment: length 0, which every caller skips
    for part in shapely.get_parts(line):
        xy = shapely.get_coordinates(part)
        if len(xy) < 2:
            continue
        seg = np.hypot(*(xy[1:] - xy[:-1]).T)
        i = int(seg.argmax())
        if seg[i] > best[2]:
            best = (xy[i], xy[i + 1], float(seg[i]))
    return best


def make_defects(rng: np.random.Generator, layout: Layout, density: Density) -> list[dict]:
    """Apply the deliberate defects to ``layout.grids`` in place; returns their records
    (metric ``geom``) in the order gap (hole), gap (bite), overlap, overlap, sliver."""
    grids = layout.grids
    comm_grids: dict[int, list[int]] = {}
    for g, c in enumerate(layout.grid_community):
        comm_grids.setdefault(c, []).append(g)
    cx, cy = density.centres[0][:2]
    n_urban = sum(1 for code in layout.street_codes if int(code[6:9]) < 100)
    urban = [c for c in comm_grids if layout.community_street[c] < n_urban and len(comm_grids[c]) >= 3]
    dist = {c: shapely.distance(layout.communities[c], Point(cx, cy)) for c in urban}
    urban.sort(key=lambda c: (dist[c], c))
    candidates = urban[:30]
    order = rng.permutation(len(candidates))
    pool = [candidates[i] for i in order]
    used: set[int] = set()
    defects: list[dict] = []

    def neighbours(g: int) -> list[tuple[float, int]]:
        out = []
        for h in comm_grids[layout.grid_community[g]]:
            if h != g:
                length = shapely.length(shared_line(grids[g], grids[h]))
                if length > 0:
                    out.append((length, h))
        return sorted(out, reverse=True)

    def take() -> int:
        for c in pool:
            if c not in used:
                used.add(c)
                return c
        raise RuntimeError("no community left for a defect")

    # 1. A hole: a chunk cut out of the middle of a grid.
    while True:
        c = take()
        g = max(comm_grids[c], key=lambda h: grids[h].area)
        geom = grids[g]
        pts = sample_in(rng, 200, geom)
        d = shapely.distance(geom.boundary, shapely.points(pts))
        if d.max() < 80:
            continue
        p = pts[int(d.argmax())]
        chunk = _blob(rng, p[0], p[1], 34.0)
        grids[g] = _clean(shapely.difference(geom, chunk))
        defects.append(
            {
                "kind": "gap",
                "grids": [g],
                "community": c,
                "geom": chunk,
                "note": "a chunk cut out of the grid: part of its community is in no grid",
            }
        )
        break

    # 2. A bite: a chunk removed from a grid's edge on its community boundary.
    while True:
        c = take()
        comm_boundary = layout.communities[c].boundary
        found = False
        for g in sorted(comm_grids[c], key=lambda h: -grids[h].area):
            edge = shapely.line_merge(shapely.intersection(grids[g].boundary, comm_boundary))
            a, b, length = _longest_segment(edge)
            if length < 120:
                continue
            m = (a + b) / 2.0
            chunk = _blob(rng, m[0], m[1], 42.0)
            bite = shapely.intersection(grids[g], chunk)
            rest = _clean(shapely.difference(grids[g], chunk))
            if bite.geom_type != "Polygon" or len(shapely.get_parts(rest)) != len(shapely.get_parts(grids[g])):
                continue
            grids[g] = rest
            defects.append(
                {
                    "kind": "gap",
                    "grids": [g],
                    "community": c,
                    "geom": bite,
                    "note": "grid drawn short of its community boundary: a strip of the community is in no grid",
                }
            )
            found = True
            break
        if found:
            break

    # 3./4. Overlaps: a grid grown into its neighbour in the same community.
    for radius in (40.0, 46.0):
        while True:
            c = take()
            g = max(comm_grids[c], key=lambda h: grids[h].area)
            nbrs = neighbours(g)
            if not nbrs or nbrs[0][0] < 150:
                continue
            h = nbrs[0][1]
            a, b, length = _longest_segment(shared_line(grids[g], grids[h]))
            if length < 120:
                continue
            m = (a + b) / 2.0
            blob = _blob(rng, m[0], m[1], radius)
            grow = shapely.intersection(grids[h], blob)
            if grow.geom_type != "Polygon":
                continue
            # (g ∪ h) − (h − blob) rather than g ∪ grow: the grown part's edge along the
            # border is computed, not shared, and could miss g by float noise.
            both = shapely.coverage_union(grids[g], grids[h])
            grown = _clean(shapely.difference(both, shapely.difference(grids[h], blob)))
            if len(shapely.get_parts(grown)) != len(shapely.get_parts(grids[g])):
                continue
            grids[g] = grown
            defects.append(
                {
                    "kind": "overlap",
                    "grids": [g, h],
                    "community": c,
                    "geom": grow,
                    "note": f"grid {layout.grid_codes[g]} drawn into its neighbour "
                    f"{layout.grid_codes[h]}: both claim this area",
                }
            )
            break

    # 5. A sliver: a 0.4 m wide strip along a shared border left in no grid.
    while True:
        c = take()
        found = False
        for g in sorted(comm_grids[c], key=lambda h: -grids[h].area):
            for _length, h in neighbours(g):
                a, b, seg = _longest_segment(shared_line(grids[g], grids[h]))
                if seg < 120:
                    continue
                u = (b - a) / seg
                mid = (a + b) / 2.0
                line = LineString([mid - 30.0 * u, mid + 30.0 * u])
                # Cut with the whole buffer (both sides of the border), not with its part
                # inside g: border vertices then lie strictly inside the cutter and go.
                cutter = shapely.buffer(line, 0.4, cap_style="flat")
                strip = shapely.intersection(grids[g], cutter)
                if strip.geom_type != "Polygon":
                    continue
                grids[g] = _clean(shapely.difference(grids[g], cutter))
                defects.append(
                    {
                        "kind": "sliver",
                        "form": "gap",
                        "grids": [g, h],
                        "community": c,
                        "geom": strip,
                        "note": f"a 0.4 m wide sliver between {layout.grid_codes[g]} and "
                        f"{layout.grid_codes[h]} is in no grid (digitising error)",
                    }
                )
                found = True
                break
            if found:
                break
        if found:
            break

    for d in defects:
        d.setdefault("form", d["kind"])
    return defects

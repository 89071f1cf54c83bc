"""Partitioning the district (metric CRS): streets and towns, communities and grids, each
level an exact partition of its parent — seeded Voronoi cells of k-means centres of a
population sample, noded together with every parent boundary and polygonized, so that
neighbours share their vertices exactly — with codes and names in reading order."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from shapely.strtree import STRtree

from ingest.demo import names as N
from ingest.demo.model import COUNTY, N_COMMUNITIES, N_GRIDS, N_STREETS, N_TOWNS, POPULATION_SAMPLE
from ingest.demo.sampling import Density, sample_in


def _kmeans(rng: np.random.Generator, pts: np.ndarray, k: int, iters: int = 40) -> np.ndarray:
    """k-means++ then Lloyd iterations; returns k centres."""
    n = len(pts)
    centres = np.empty((k, 2))
    centres[0] = pts[rng.integers(n)]
    d2 = ((pts - centres[0]) ** 2).sum(1)
    for j in range(1, k):
        centres[j] = pts[rng.choice(n, p=d2 / d2.sum())]
        d2 = np.minimum(d2, ((pts - centres[j]) ** 2).sum(1))
    for _ in range(iters):
        label = ((pts[:, None, :] - centres[None, :, :]) ** 2).sum(2).argmin(1)
        counts = np.bincount(label, minlength=k)
        sx = np.bincount(label, weights=pts[:, 0], minlength=k)
        sy = np.bincount(label, weights=pts[:, 1], minlength=k)
        new = centres.copy()
        nz = counts > 0
        new[nz, 0] = sx[nz] / counts[nz]
        new[nz, 1] = sy[nz] / counts[nz]
        if np.allclose(new, centres, atol=0.01):
            centres = new
            break
        centres = new
    return centres


def _seeds_inside(rng, pts: np.ndarray, k: int, parent) -> np.ndarray:
    """k seed points inside ``parent``: k-means centres of ``pts``, pulled inside."""
    if k == 1:
        return np.asarray(shapely.get_coordinates(shapely.point_on_surface(parent)))
    centres = _kmeans(rng, pts, k)
    inside = shapely.contains_xy(parent, centres[:, 0], centres[:, 1])
    for j in np.flatnonzero(~inside):
        d = ((pts - centres[j]) ** 2).sum(1)
        centres[j] = pts[int(d.argmin())]
    return centres


def _allocate(total: int, weights: np.ndarray, minimum: int) -> np.ndarray:
    """Integer shares of ``total`` proportional to ``weights`` (largest remainder), each
    at least ``minimum``."""
    n = len(weights)
    extra = total - minimum * n
    raw = weights / weights.sum() * extra
    alloc = np.floor(raw).astype(int)
    order = np.argsort(-(raw - alloc), kind="stable")
    alloc[order[: extra - alloc.sum()]] += 1
    return alloc + minimum


def _union(faces: np.ndarray):
    return shapely.coverage_union_all(faces)


def _subdivide(faces: np.ndarray, parents: list, seeds: list[np.ndarray]):
    """Split the partition ``faces`` (whose unions are ``parents``) by the Voronoi cells
    of each parent's ``seeds``. Everything is noded together and polygonized, so the
    result is an exact coverage. Returns (new faces, parent index, child index) with
    child indices numbered parent by parent in seed order."""
    lines = [shapely.boundary(faces)]
    for parent, pts in zip(parents, seeds):
        if len(pts) < 2:
            continue
        extent = shapely.buffer(shapely.envelope(parent), 200.0)
        cells = shapely.voronoi_polygons(shapely.multipoints(pts), extend_to=extent)
        edges = shapely.boundary(np.asarray(shapely.get_parts(cells)))
        # Overshoot the parent by 1 m so every cut crosses its boundary; the stubs
        # outside are dangles and vanish in polygonize.
        lines.append(shapely.intersection(edges, shapely.buffer(parent, 1.0)))
    noded = shapely.union_all(np.concatenate(lines))
    polys = shapely.get_parts(shapely.polygonize(shapely.get_parts(noded)))
    polys = polys[shapely.area(polys) > 1e-9]
    rep = shapely.point_on_surface(polys)
    tree = STRtree(parents)
    qi, qj = tree.query(rep, predicate="within")
    parent_of = np.full(len(polys), -1)
    parent_of[qi] = qj
    keep = parent_of >= 0  # tiny faces closed by overshooting stubs outside the district
    polys, rep, parent_of = polys[keep], rep[keep], parent_of[keep]
    xy = shapely.get_coordinates(rep)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seeds])])
    child_of = np.empty(len(polys), dtype=int)
    for p, pts in enumerate(seeds):
        sel = np.flatnonzero(parent_of == p)
        d = ((xy[sel, None, :] - pts[None, :, :]) ** 2).sum(2)
        child_of[sel] = offsets[p] + d.argmin(1)
    child_parent = np.repeat(np.arange(len(seeds)), [len(s) for s in seeds])
    _merge_shards(polys, rep, child_of, child_parent)
    return polys, parent_of, child_of


def _merge_shards(faces, rep, child_of, child_parent) -> None:
    """Give every detached part of a child (all but its largest) to the sibling it
    shares the longest border with, so each child is one piece where possible."""
    n_children = len(child_parent)
    for _ in range(5):
        geoms = [_union(faces[child_of == c]) for c in range(n_children)]
        changed = False
        for c in range(n_children):
            parts = shapely.get_parts(geoms[c])
            if len(parts) <= 1:
                continue
            main = int(np.argmax(shapely.area(parts)))
            siblings = [s for s in np.flatnonzero(child_parent == child_parent[c]) if s != c]
            for q, part in enumerate(parts):
                if q == main:
                    continue
                shared = [shapely.length(shapely.intersection(part.boundary, geoms[s].boundary)) for s in siblings]
                if not shared or max(shared) <= 0:
                    continue
                best = siblings[int(np.argmax(shared))]
                idx = np.flatnonzero(child_of == c)
                inside = shapely.within(rep[idx], part)
                child_of[idx[inside]] = best
                changed = True
        if not changed:
            return


def shared_line(a, b):
    """The border ``a`` and ``b`` share, merged into lines (may be empty)."""
    return shapely.line_merge(shapely.intersection(a.boundary, b.boundary))


def _reading_order(geoms: list, band: float) -> list[int]:
    """Indices of ``geoms`` north to south in bands of ``band`` metres, west to east."""
    pts = shapely.get_coordinates(shapely.point_on_surface(np.asarray(geoms)))
    return sorted(range(len(geoms)), key=lambda i: (-math.floor(pts[i, 1] / band), pts[i, 0]))


def _people_per_area(areas: list, pop_pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The index of the area of ``areas`` each point of the population sample lies in
    (-1: none), and how many lie in each area (floats: the weights of an allocation)."""
    pi, aj = STRtree(areas).query(pop_pts, predicate="within")
    of = np.full(len(pop_pts), -1)
    of[pi] = aj
    return of, np.bincount(of[of >= 0], minlength=len(areas)).astype(float)


def _children_in_order(parent, children: np.ndarray, geoms: list) -> list[int]:
    """The indices ``children`` (into ``geoms``) of the areas of ``parent`` in reading
    order, in bands about as tall as one child (0.8 of the side of its mean area)."""
    members = children.tolist()
    band = math.sqrt(parent.area / max(1, len(members))) * 0.8
    return [members[i] for i in _reading_order([geoms[m] for m in members], band)]


@dataclass
class Layout:
    """The metric partition (EPSG:4547 geometries) with names and codes, in code order."""

    district: Any  # a metric shapely geometry
    streets: list  # metric geoms
    street_names: list[str]
    street_codes: list[str]
    communities: list
    community_street: list[int]
    community_codes: list[str]
    community_names: list[str]
    grids: list
    grid_community: list[int]
    grid_codes: list[str]
    grid_names: list[str]


def partition(rng: np.random.Generator, district_m, density: Density) -> Layout:
    pop = sample_in(rng, POPULATION_SAMPLE, district_m, density)
    pop_pts = shapely.points(pop)

    # Streets and towns: k-means centres of the population, towns = the two farthest
    # from the old centre.
    k = N_STREETS + N_TOWNS
    seeds = _seeds_inside(rng, pop, k, district_m)
    faces0 = np.asarray(shapely.get_parts(district_m))
    faces, _, street_of = _subdivide(faces0, [district_m], [seeds])
    street_geoms = [_union(faces[street_of == s]) for s in range(k)]

    cx, cy = density.centres[0][:2]
    far = np.argsort(-np.hypot(seeds[:, 0] - cx, seeds[:, 1] - cy), kind="stable")
    towns = sorted(far[:N_TOWNS].tolist(), key=lambda s: seeds[s, 0])
    urban = [s for s in range(k) if s not in towns]
    # The old streets nearest the centre, the newer ones further out.
    urban.sort(key=lambda s: float(np.hypot(seeds[s, 0] - cx, seeds[s, 1] - cy)))
    name_of: dict[int, tuple[str, str]] = {}
    for s, name in zip(urban, N.STREETS_BY_CENTRALITY):
        name_of[s] = (name, f"{COUNTY}{N.STREETS.index(name) + 1:03d}000")
    for i, s in enumerate(towns):
        name_of[s] = (N.TOWNS[i], f"{COUNTY}{100 + i:03d}000")
    street_order = sorted(range(k), key=lambda s: name_of[s][1])

    # Communities: allocation by population (towns a bit fewer), k-means inside streets.
    pop_street, weights = _people_per_area(street_geoms, pop_pts)
    weights *= rng.uniform(0.85, 1.15, k)
    weights[towns] *= 0.8
    n_comm = _allocate(N_COMMUNITIES, weights, 4)
    comm_seeds = [_seeds_inside(rng, pop[pop_street == s], int(n_comm[s]), street_geoms[s]) for s in range(k)]
    faces, face_street, comm_of = _subdivide(faces, street_geoms, comm_seeds)
    comm_street = np.repeat(np.arange(k), n_comm)
    comm_geoms = [_union(faces[comm_of == c]) for c in range(len(comm_street))]

    # Grids: allocation by population, k-means inside communities.
    n_c = len(comm_geoms)
    pop_comm, weights = _people_per_area(comm_geoms, pop_pts)
    weights *= rng.uniform(0.8, 1.2, n_c)
    n_grid = _allocate(N_GRIDS, weights, 3)
    grid_seeds = [_seeds_inside(rng, pop[pop_comm == c], int(n_grid[c]), comm_geoms[c]) for c in range(n_c)]
    faces, face_comm, grid_of = _subdivide(faces, comm_geoms, grid_seeds)
    grid_comm = np.repeat(np.arange(n_c), n_grid)

    # Final geometries, all unions of the same faces (shared vertices are identical).
    grid_geoms = [_union(faces[grid_of == g]) for g in range(len(grid_comm))]
    face_comm = grid_comm[grid_of]
    comm_geoms = [_union(faces[face_comm == c]) for c in range(n_c)]
    face_street = comm_street[face_comm]
    street_geoms = [_union(faces[face_street == s]) for s in range(k)]
    district = _union(faces)

    # Codes in reading order (north to south, west to east).
    words = list(N.COMMUNITY_WORDS)
    rng.shuffle(words)
    layout = Layout(district, [], [], [], [], [], [], [], [], [], [], [])
    word_iter = iter(words)
    for s in street_order:
        name, code = name_of[s]
        layout.streets.append(street_geoms[s])
        layout.street_names.append(name)
        layout.street_codes.append(code)
        s_idx = len(layout.streets) - 1
        for ci, c in enumerate(_children_in_order(street_geoms[s], np.flatnonzero(comm_street == s), comm_geoms)):
            c_code = f"{code[:9]}{ci + 1:03d}"
            c_name = f"{next(word_iter)}社区"
            layout.communities.append(comm_geoms[c])
            layout.community_street.append(s_idx)
            layout.community_codes.append(c_code)
            layout.community_names.append(c_name)
            c_idx = len(layout.communities) - 1
            for gi, g in enumerate(_children_in_order(comm_geoms[c], np.flatnonzero(grid_comm == c), grid_geoms)):
                layout.grids.append(grid_geoms[g])
                layout.grid_community.append(c_idx)
                layout.grid_codes.append(f"{c_code}{gi + 1:03d}")
                layout.grid_names.append(f"{c_name}第{gi + 1}网格")
    return layout

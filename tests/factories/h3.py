"""Counting points per H3 cell the tests' own way, to check the service's counts:
the points of each metric read straight from the tables, and their counts per cell
and resolution."""

from __future__ import annotations

import h3
from sqlalchemy import text


def true_counts(xy) -> dict[int, dict[str, int]]:
    """The test's own count per cell and resolution: each point in its res-10 cell and
    in that cell's ancestors."""
    fine: dict[str, int] = {}
    for x, y in xy:
        cell = h3.latlng_to_cell(y, x, 10)
        fine[cell] = fine.get(cell, 0) + 1
    out = {10: fine}
    for res in (9, 8, 7):
        out[res] = {}
        for cell, n in fine.items():
            parent = h3.cell_to_parent(cell, res)
            out[res][parent] = out[res].get(parent, 0) + n
    return out


def points(session, metric: str, within: str | None = None) -> list[tuple[float, float]]:
    sql = {
        "members": """SELECT ST_X(s.geom), ST_Y(s.geom) FROM registrations r JOIN residences s
                      ON s.id = r.residence_id WHERE r.status IN ('confirmed', 'pending')""",
        "residences": "SELECT ST_X(s.geom), ST_Y(s.geom) FROM residences s WHERE s.ended_at IS NULL",
        "events": "SELECT ST_X(s.geom), ST_Y(s.geom) FROM events s WHERE true",
    }[metric]
    if within is not None:
        table = (
            "grid_versions gv JOIN grids g ON g.id = gv.grid_id AND gv.valid_to IS NULL"
            if len(within) == 15
            else "admin_areas g"
        )
        sql += f" AND ST_Intersects(s.geom, (SELECT geom FROM {table} WHERE g.code = :w))"
    return [tuple(r) for r in session.execute(text(sql), {"w": within}).all()]

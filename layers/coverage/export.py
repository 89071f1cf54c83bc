"""Exports of coverage findings and summaries: GeoJSON and CSV (WGS84)."""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely
from sqlalchemy.orm import Session

from layers.coverage.model import coverage_model
from layers.coverage.summary import RANKED
from layers.coverage.topology import Thresholds
from layers.geojson import collection

if TYPE_CHECKING:
    from layers.caches import Caches


def _geojson_geometry(geom, *, rounded: bool) -> dict | None:
    """GeoJSON of a WGS84 geometry; ``rounded`` to 7 decimals (~1 cm, as the other
    layers) or at full precision — findings are written unrounded, since a sliver a few
    decimetres wide does not survive centimetre rounding as a valid polygon."""
    if geom is None or shapely.is_empty(geom):
        return None
    if rounded:
        geom = shapely.transform(geom, lambda xy: np.round(xy, 7))
    return json.loads(shapely.to_geojson(geom))


def issues_geojson(found: list[dict[str, Any]], **extra) -> dict[str, Any]:
    """Findings from :func:`issues` as a GeoJSON FeatureCollection (WGS84)."""
    features = []
    for f in found:
        props = {k: v for k, v in f.items() if k not in ("geom", "id")}
        features.append(
            {
                "type": "Feature",
                "id": f["id"],
                "geometry": _geojson_geometry(f["geom"], rounded=False),
                "properties": props,
            }
        )
    return collection(features, **extra)


ISSUE_COLUMNS = ("id", "kind", "form", "area_code", "codes", "area_m2", "lon", "lat", "message", "wkt")


def issues_csv(found: list[dict[str, Any]]) -> str:
    """Findings as CSV: codes space-separated, the geometry as WKT (WGS84, full precision)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(ISSUE_COLUMNS)
    for f in found:
        lon, lat = f["point"] if f["point"] else ("", "")
        wkt = shapely.to_wkt(f["geom"], rounding_precision=-1) if f["geom"] is not None else ""
        w.writerow(
            [
                f["id"],
                f["kind"],
                f["form"] or "",
                f["area_code"] or "",
                " ".join(f["codes"]),
                "" if f["area_m2"] is None else f"{f['area_m2']:.2f}",
                lon,
                lat,
                f["message"],
                wkt,
            ]
        )
    return buf.getvalue()


SUMMARY_COLUMNS = (
    "code",
    "name",
    "level",
    "parent",
    "area_km2",
    "grids",
    "grids_with_branch",
    "branch_share",
    "uncovered_m2",
    "coverage_share",
    "members_resident",
    "members_registered",
    "members_pending",
    "registration_rate",
    "member_density_km2",
    "roles_filled_share",
    "roles_filled",
    "roles_missing",
    "issues",
) + tuple(f"rank_{m}" for m in RANKED)


def _summary_row(u: dict[str, Any]) -> list:
    out = []
    for col in SUMMARY_COLUMNS:
        if col.startswith("rank_"):
            v = u.get("rank", {}).get(col[5:])
        elif col in ("roles_filled", "roles_missing"):
            v = "、".join(u[col])
        elif col == "issues":
            v = " ".join(f"{k}={n}" for k, n in u["issues"].items())
        else:
            v = u[col]
        out.append("" if v is None else v)
    return out


def summary_filename(result: dict[str, Any]) -> str:
    """The file name of a summary's CSV: the area and the level of its units
    (``coverage_410105000000_street_summary.csv``)."""
    return f"coverage_{result['code']}_{result['level']}_summary.csv"


def summary_csv(result: dict[str, Any]) -> str:
    """The units of :func:`summary` as CSV, then the whole area as the last row."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SUMMARY_COLUMNS)
    for u in result["units"]:
        w.writerow(_summary_row(u))
    if result["total"]["code"] not in {u["code"] for u in result["units"]}:
        w.writerow(_summary_row({**result["total"], "rank": {}}))
    return buf.getvalue()


def summary_geojson(
    session: Session, caches: Caches, result: dict[str, Any], thresholds: Thresholds | None = None
) -> dict:
    """The units of :func:`summary` as GeoJSON features with their boundaries (WGS84)."""
    model = coverage_model(session, caches, thresholds)
    features = []
    for u in result["units"]:
        geom = (
            model.grid_geoms[model.grid_index[u["code"]]]
            if u["level"] == "grid"
            else model.area_geoms[model.area_index[u["code"]]]
        )
        features.append(
            {"type": "Feature", "id": u["code"], "geometry": _geojson_geometry(geom, rounded=True), "properties": u}
        )
    return collection(features, **{k: v for k, v in result.items() if k not in ("units",)})

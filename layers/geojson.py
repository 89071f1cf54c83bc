"""Small helpers shared by the feature queries to emit GeoJSON from PostGIS."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func

COORD_DECIMALS = 7  # ~1 cm at the equator


def as_geojson(column):
    """SQL expression: ``column`` (SRID 4326) as a GeoJSON text with 7 decimals."""
    return func.ST_AsGeoJSON(column, COORD_DECIMALS)


def feature(geometry_json: str | None, properties: dict[str, Any], fid: Any = None) -> dict[str, Any]:
    out = {
        "type": "Feature",
        "geometry": json.loads(geometry_json) if geometry_json else None,
        "properties": properties,
    }
    if fid is not None:
        out["id"] = fid
    return out


def collection(features: list[dict[str, Any]], **extra) -> dict[str, Any]:
    """A FeatureCollection that says whether it is whole: ``numberMatched`` and
    ``numberReturned`` (both the number of features unless a pager says otherwise), so a
    GIS reader that does not page sees a truncated answer for what it is."""
    return {
        "type": "FeatureCollection",
        "features": features,
        "numberMatched": len(features),
        "numberReturned": len(features),
        **extra,
    }

"""A MapLibre style (spec v8) over the tiles, usable offline as it stands: no glyphs, no
sprite, no URL but this service's own. Its one symbol layer writes the names of the
``labels`` layer; with no glyphs named, MapLibre GL JS (5.11 and later) draws that text in
the browser's own fonts, and desktop GIS in the system's.

One vector source ``gridbranch`` reads the composite tile of every public layer (one
request per tile); for admins a second source ``members`` reads their residences layer
(its requests need the caller's Authorization header: MapLibre's ``transformRequest``).
"""

from __future__ import annotations

from tiles.layers import LAYERS, PUBLIC_LAYERS
from tiles.tilejson import WORLD, tile_url

SOURCE = "gridbranch"
STYLE_NAME = "网格党支部"


def _source(layers, base, extent) -> dict:
    bounds = list(extent) if extent else list(WORLD)
    return {
        "type": "vector",
        "tiles": [tile_url(base, layers)],
        "minzoom": min(layer.minzoom for layer in layers),
        "maxzoom": max(layer.maxzoom for layer in layers),
        "bounds": [round(v, 6) for v in bounds],
        "attribution": "gridbranch",
    }


def by_level(district, street, community, grid) -> list:
    """A style expression choosing by the label's level."""
    return ["match", ["get", "level"], "district", district, "street", street, "community", community, grid]


def _layers() -> list[dict]:
    grid_colour = [
        "case",
        ["!", ["get", "has_branch"]],
        "#d1495b",
        ["==", ["get", "rate"], None],
        "#c9c9c9",
        ["interpolate", ["linear"], ["get", "rate"], 0, "#f6e3b4", 0.5, "#8cc084", 1, "#2a7f62"],
    ]
    return [
        {"id": "background", "type": "background", "paint": {"background-color": "#f5f3ee"}},
        {
            "id": "members-h3",
            "type": "fill",
            "source": SOURCE,
            "source-layer": "members_h3",
            "paint": {
                "fill-color": [
                    "interpolate",
                    ["linear"],
                    ["get", "count"],
                    5,
                    "#deebf7",
                    50,
                    "#6baed6",
                    200,
                    "#08519c",
                ],
                "fill-opacity": ["interpolate", ["linear"], ["zoom"], 10, 0.5, 16, 0.25],
            },
        },
        {
            "id": "grids-fill",
            "type": "fill",
            "source": SOURCE,
            "source-layer": "grids",
            "paint": {"fill-color": grid_colour, "fill-opacity": 0.45},
        },
        {
            "id": "coverage-issues-fill",
            "type": "fill",
            "source": SOURCE,
            "source-layer": "coverage_issues",
            "paint": {
                "fill-color": [
                    "match",
                    ["get", "kind"],
                    "gap",
                    "#ff006e",
                    "overlap",
                    "#8338ec",
                    "sliver",
                    "#fb5607",
                    "#ffbe0b",
                ],
                "fill-opacity": 0.7,
            },
        },
        {
            "id": "coverage-issues-line",
            "type": "line",
            "source": SOURCE,
            "source-layer": "coverage_issues",
            "paint": {"line-color": "#6a040f", "line-width": 1.2},
        },
        {
            "id": "grids-line",
            "type": "line",
            "source": SOURCE,
            "source-layer": "grids",
            "paint": {"line-color": "#5c5c5c", "line-width": ["interpolate", ["linear"], ["zoom"], 10, 0.3, 16, 1.2]},
        },
        {
            "id": "communities-line",
            "type": "line",
            "source": SOURCE,
            "source-layer": "areas",
            "filter": ["==", ["get", "level"], "community"],
            "paint": {"line-color": "#6d597a", "line-width": 1, "line-dasharray": [3, 2]},
        },
        {
            "id": "streets-line",
            "type": "line",
            "source": SOURCE,
            "source-layer": "areas",
            "filter": ["==", ["get", "level"], "street"],
            "paint": {"line-color": "#355070", "line-width": ["interpolate", ["linear"], ["zoom"], 8, 1, 16, 2.5]},
        },
        {
            "id": "district-line",
            "type": "line",
            "source": SOURCE,
            "source-layer": "areas",
            "filter": ["==", ["get", "level"], "district"],
            "paint": {"line-color": "#1d3557", "line-width": ["interpolate", ["linear"], ["zoom"], 8, 2, 16, 4]},
        },
        {
            "id": "branches",
            "type": "circle",
            "source": SOURCE,
            "source-layer": "branches",
            "paint": {
                "circle-color": ["match", ["get", "kind"], "grid", "#c1121f", "community", "#780000", "#669bbc"],
                "circle-radius": ["interpolate", ["linear"], ["zoom"], 11, 2.5, 16, 6],
                "circle-stroke-color": "#ffffff",
                "circle-stroke-width": 1,
            },
        },
        {
            "id": "events",
            "type": "circle",
            "source": SOURCE,
            "source-layer": "events",
            "paint": {
                "circle-color": [
                    "case",
                    ["get", "overdue"],
                    "#d00000",
                    ["get", "warning"],
                    "#ffba08",
                    ["in", ["get", "status"], ["literal", ["closed", "rejected", "duplicate"]]],
                    "#9e9e9e",
                    "#3a86ff",
                ],
                "circle-radius": ["interpolate", ["linear"], ["zoom"], 11, 2, 16, 5],
                "circle-stroke-color": "#ffffff",
                "circle-stroke-width": 0.5,
            },
        },
        {
            "id": "labels",
            "type": "symbol",
            "source": SOURCE,
            "source-layer": "labels",
            "layout": {
                "text-field": ["get", "name"],
                "text-size": by_level(17, 14, 12.5, 11.5),
                "symbol-sort-key": by_level(0, 1, 2, 3),
                "text-max-width": 7,
                "text-padding": 3,
            },
            "paint": {
                "text-color": by_level("#1d3557", "#355070", "#4a5563", "#2b2f33"),
                "text-halo-color": "rgba(255, 255, 255, 0.92)",
                "text-halo-width": 1.4,
            },
        },
    ]


def style(base: str, extent, *, members: bool = False) -> dict:
    """The style: every public layer from one composite source, plus the admin's
    ``members`` source and layer when ``members``."""
    public = tuple(LAYERS[name] for name in PUBLIC_LAYERS)
    bounds = list(extent) if extent else list(WORLD)
    sources = {SOURCE: _source(public, base, extent)}
    layers = _layers()
    if members:
        sources["members"] = _source((LAYERS["members"],), base, extent)
        layers.append(
            {
                "id": "members",
                "type": "circle",
                "source": "members",
                "source-layer": "members",
                "paint": {
                    "circle-color": [
                        "match",
                        ["get", "status"],
                        "confirmed",
                        "#2a9d8f",
                        "pending",
                        "#e9c46a",
                        "#8d99ae",
                    ],
                    "circle-radius": 3,
                    "circle-stroke-color": "#ffffff",
                    "circle-stroke-width": 0.5,
                },
            }
        )
    return {
        "version": 8,
        "name": STYLE_NAME,
        "metadata": {"gridbranch:layers": list(sources)},
        "center": [round((bounds[0] + bounds[2]) / 2, 6), round((bounds[1] + bounds[3]) / 2, 6)],
        "zoom": 11,
        "sources": sources,
        "layers": layers,
    }

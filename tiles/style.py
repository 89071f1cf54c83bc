"""The one MapLibre style (spec v8) over the tiles, usable offline as it stands: no glyphs,
no sprite, no URL but this service's own. The web map (web_map/static/style.js) draws this
style and adds only its interactive layers (hover, selection, previews), so a layer and
its colours are defined here once: desktop GIS, portals and the web map see the same map.
Its one symbol layer writes the names of the ``labels`` layer; with no glyphs named,
MapLibre GL JS (5.11 and later) draws that text in the browser's own fonts, and desktop
GIS in the system's.

One vector source ``gridbranch`` reads the composite tile of every public layer (one
request per tile); for admins a second source ``members`` reads their residences layer
(its requests need the caller's Authorization header: MapLibre's ``transformRequest``).
Every layer starts at its tile layer's first zoom (:data:`tiles.layers.LAYERS`).

Adding a tile layer: define it in :mod:`tiles.layers` (its ``TileLayer`` and an entry in
``LAYERS``), and give it its drawing here in :func:`_layers`, in drawing order.
"""

from __future__ import annotations

from layers.events import TERMINAL
from tiles.layers import EMBED_LAYERS, LAYERS, PUBLIC_LAYERS
from tiles.tilejson import WORLD, tile_url

SOURCE = "gridbranch"
STYLE_NAME = "网格党支部"

#: The colours of the map, which the web map's legend (web_map/static/map.css) repeats.
COLORS: dict[str, str] = {
    "outside": "#e6e9ed",
    "district": "#fbfaf7",
    "with_branch": "#8fbfe3",
    "without_branch": "#f3a29b",
    "grid_line": "#ffffff",
    "community": "#6f7d8c",
    "street": "#34495e",
    "district_line": "#b3261e",
}
BRANCH_COLORS = {"grid": "#c8102e", "community": "#7a0019", "work_unit": "#e07a1f"}
EVENT_COLORS = {"normal": "#2f6fdb", "warning": "#f2a900", "overdue": "#d7191c", "closed": "#9aa5b1"}
ISSUE_COLORS = {
    "gap": "#7b2cbf",
    "overlap": "#ff6d00",
    "sliver": "#e6c200",
    "outside_community": "#0b8f6a",
    "invalid": "#111111",
    "stray_part": "#8d5b4c",
}
#: member density, by the counts of :data:`H3_STOPS`: yellow to brown, a hue neither the
#: blue grids with a branch nor the pink ones without share, so both stay readable under it
H3_COLORS = ("#ffffd4", "#fed98e", "#fe9929", "#d95f0e", "#993404")
H3_STOPS = (5, 20, 100, 400, 1000)
MEMBER_COLORS = {"confirmed": "#2a9d8f", "pending": "#9d4edd"}
MEMBER_NONE = "#8d99ae"


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


def _width(z10: float, z16: float) -> list:
    return ["interpolate", ["linear"], ["zoom"], 10, z10, 16, z16]


def _level(name: str) -> list:
    return ["==", ["get", "level"], name]


def _match(prop: str, colours: dict, default: str) -> list:
    return ["match", ["get", prop], *[v for pair in colours.items() for v in pair], default]


def _on(tile_layer: str, layer: dict, source: str = SOURCE) -> dict:
    """``layer`` drawn from ``tile_layer`` of ``source``, from the tile layer's first zoom."""
    return {**layer, "source": source, "source-layer": tile_layer, "minzoom": LAYERS[tile_layer].minzoom}


def _layers() -> list[dict]:
    """Every public layer's drawing, bottom to top."""
    terminal = ["in", ["get", "status"], ["literal", list(TERMINAL)]]
    overdue = ["to-boolean", ["get", "overdue"]]
    warning = ["to-boolean", ["get", "warning"]]
    event = EVENT_COLORS
    return [
        {"id": "background", "type": "background", "paint": {"background-color": COLORS["outside"]}},
        _on(
            "areas",
            {
                "id": "district-fill",
                "type": "fill",
                "filter": _level("district"),
                "paint": {"fill-color": COLORS["district"]},
            },
        ),
        _on(
            "grids",
            {
                "id": "grids-fill",
                "type": "fill",
                "paint": {
                    "fill-color": [
                        "case",
                        ["to-boolean", ["get", "has_branch"]],
                        COLORS["with_branch"],
                        COLORS["without_branch"],
                    ],
                    # the web map's hover state (feature-state) brightens a grid; elsewhere never set
                    "fill-opacity": ["case", ["boolean", ["feature-state", "hover"], False], 0.95, 0.7],
                },
            },
        ),
        # member density is an overlay the viewer switches on (the web map's layer panel)
        _on(
            "members_h3",
            {
                "id": "members-h3-fill",
                "type": "fill",
                "layout": {"visibility": "none"},
                "paint": {
                    "fill-color": [
                        "interpolate",
                        ["linear"],
                        ["get", "count"],
                        *[v for pair in zip(H3_STOPS, H3_COLORS, strict=True) for v in pair],
                    ],
                    "fill-opacity": 0.55,
                },
            },
        ),
        _on(
            "members_h3",
            {
                "id": "members-h3-line",
                "type": "line",
                "layout": {"visibility": "none"},
                "paint": {"line-color": "#ffffff", "line-width": 0.6, "line-opacity": 0.8},
            },
        ),
        # grids without a branch keep their colour as an outline over the member density
        _on(
            "grids",
            {
                "id": "grids-nobranch-line",
                "type": "line",
                "filter": ["!", ["to-boolean", ["get", "has_branch"]]],
                "layout": {"line-join": "round"},
                "paint": {"line-color": "#e8505b", "line-width": _width(1.2, 2.5), "line-opacity": 0.9},
            },
        ),
        _on(
            "coverage_issues",
            {
                "id": "coverage-issues-fill",
                "type": "fill",
                "paint": {"fill-color": _match("kind", ISSUE_COLORS, "#555555"), "fill-opacity": 0.75},
            },
        ),
        _on(
            "grids",
            {
                "id": "grids-line",
                "type": "line",
                "layout": {"line-join": "round"},
                "paint": {"line-color": COLORS["grid_line"], "line-width": _width(0.5, 1.5), "line-opacity": 0.9},
            },
        ),
        _on(
            "areas",
            {
                "id": "communities-line",
                "type": "line",
                "filter": _level("community"),
                "layout": {"line-join": "round"},
                "paint": {
                    "line-color": COLORS["community"],
                    "line-width": _width(0.6, 1.4),
                    "line-opacity": 0.75,
                    "line-dasharray": [3, 2],
                },
            },
        ),
        _on(
            "areas",
            {
                "id": "streets-line",
                "type": "line",
                "filter": _level("street"),
                "layout": {"line-join": "round", "line-cap": "round"},
                "paint": {"line-color": COLORS["street"], "line-width": _width(1.4, 3), "line-opacity": 0.85},
            },
        ),
        _on(
            "coverage_issues",
            {
                "id": "coverage-issues-line",
                "type": "line",
                "paint": {"line-color": _match("kind", ISSUE_COLORS, "#555555"), "line-width": _width(1.2, 2.5)},
            },
        ),
        _on(
            "areas",
            {
                "id": "district-casing",
                "type": "line",
                "filter": _level("district"),
                "layout": {"line-join": "round", "line-cap": "round"},
                "paint": {"line-color": "#ffffff", "line-width": _width(6, 10), "line-opacity": 0.9},
            },
        ),
        _on(
            "areas",
            {
                "id": "district-line",
                "type": "line",
                "filter": _level("district"),
                "layout": {"line-join": "round", "line-cap": "round"},
                "paint": {"line-color": COLORS["district_line"], "line-width": _width(2.6, 4.5)},
            },
        ),
        _on(
            "branches",
            {
                "id": "branches-circle",
                "type": "circle",
                "paint": {
                    "circle-color": "#ffffff",
                    "circle-radius": ["interpolate", ["linear"], ["zoom"], 11, 2.5, 16, 7],
                    "circle-stroke-color": _match("kind", BRANCH_COLORS, "#666666"),
                    "circle-stroke-width": ["interpolate", ["linear"], ["zoom"], 11, 1.2, 16, 3],
                },
            },
        ),
        _on(
            "events",
            {
                "id": "events-circle",
                "type": "circle",
                # the late ones on top
                "layout": {"circle-sort-key": ["case", overdue, 3, warning, 2, terminal, 0, 1]},
                "paint": {
                    "circle-color": [
                        "case",
                        overdue,
                        event["overdue"],
                        warning,
                        event["warning"],
                        terminal,
                        event["closed"],
                        event["normal"],
                    ],
                    "circle-radius": ["interpolate", ["linear"], ["zoom"], 11, 2.5, 16, 6],
                    "circle-stroke-color": "#ffffff",
                    "circle-stroke-width": ["interpolate", ["linear"], ["zoom"], 11, 0.5, 16, 1.5],
                },
            },
        ),
        # names last, over everything; the higher level wins where two would collide
        _on(
            "labels",
            {
                "id": "labels-text",
                "type": "symbol",
                "layout": {
                    "text-field": ["get", "name"],
                    "text-size": by_level(17, 14, 12.5, 11.5),
                    "symbol-sort-key": by_level(0, 1, 2, 3),
                    "text-max-width": 7,
                    "text-padding": 3,
                },
                "paint": {
                    "text-color": by_level("#6b1d17", COLORS["street"], "#4a5563", "#2b2f33"),
                    "text-halo-color": "rgba(255, 255, 255, 0.92)",
                    "text-halo-width": 1.4,
                },
            },
        ),
    ]


def members_layer() -> dict:
    """The admin's residences (source ``members``), drawn under the events."""
    return _on(
        "members",
        {
            "id": "members-circle",
            "type": "circle",
            "paint": {
                "circle-color": _match("status", MEMBER_COLORS, MEMBER_NONE),
                "circle-radius": 3.5,
                "circle-stroke-color": "#ffffff",
                "circle-stroke-width": 0.8,
            },
        },
        source="members",
    )


def style(base: str, extent, *, members: bool = False) -> dict:
    """The style: every public layer from one composite source, plus the admin's
    ``members`` source and layer when ``members``.

    ``metadata`` says which tile layers the full map and an embedding portal draw
    (``gridbranch:composites``, in drawing order), and how the residences are drawn
    (``gridbranch:members_layer``, no data in it): the web map adds that layer itself
    once an admin signs in, since the admin's token goes with the members tiles only."""
    public = tuple(LAYERS[name] for name in PUBLIC_LAYERS)
    bounds = list(extent) if extent else list(WORLD)
    sources = {SOURCE: _source(public, base, extent)}
    layers = _layers()
    if members:
        sources["members"] = _source((LAYERS["members"],), base, extent)
        under_events = next(i for i, layer in enumerate(layers) if layer["id"] == "events-circle")
        layers.insert(under_events, members_layer())
    return {
        "version": 8,
        "name": STYLE_NAME,
        "metadata": {
            "gridbranch:layers": list(sources),
            "gridbranch:composites": {"map": list(PUBLIC_LAYERS), "embed": list(EMBED_LAYERS)},
            "gridbranch:members_layer": members_layer(),
        },
        "center": [round((bounds[0] + bounds[2]) / 2, 6), round((bounds[1] + bounds[3]) / 2, 6)],
        "zoom": 11,
        "sources": sources,
        "layers": layers,
    }

"""A QGIS layer definition (``.qlr``) of the ``gis`` views (migration 0023), styled with
the map's colours (``tiles.style``, which ``/tiles/style.json`` is drawn in): dropped onto QGIS, it adds areas, grids (branchless
ones in the map's colour), branches and events from the database, as a reader made by
``gridbranch db grant-reader`` (QGIS asks for the password; the file holds none).

The file is XML written here with ElementTree: QGIS's own writer needs QGIS, and a layer
definition is a small, documented subset of the project format.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from tiles.style import BRANCH_COLORS, COLORS, EVENT_COLORS


@dataclass(frozen=True)
class Layer:
    view: str  # gis.<view>
    title: str
    geometry: str  # QGIS's geometry kind: Polygon, Point
    wkb: str  # the view's column type: MultiPolygon, Point
    colour: str  # the map's colour (tiles.style), for the single symbol or the value false
    where: str = ""  # a filter (QGIS's provider "sql")
    by: tuple[str, str] | None = None  # a boolean field to colour by, and the map's colour for true
    outline: bool = False  # a boundary: drawn as its line


LAYERS = (
    Layer("areas", "社区边界", "Polygon", "MultiPolygon", COLORS["community"], "\"level\" = 'community'", outline=True),
    Layer("areas", "街道边界", "Polygon", "MultiPolygon", COLORS["street"], "\"level\" = 'street'", outline=True),
    Layer(
        "grids", "网格", "Polygon", "MultiPolygon", COLORS["without_branch"], by=("has_branch", COLORS["with_branch"])
    ),
    Layer("branches", "党支部", "Point", "Point", BRANCH_COLORS["grid"], '"geom" IS NOT NULL'),
    Layer("events", "事件（公共空间）", "Point", "Point", EVENT_COLORS["normal"], '"geom" IS NOT NULL'),
)


def _rgba(hex_colour: str, alpha: int = 255) -> str:
    return ",".join(str(int(hex_colour[i : i + 2], 16)) for i in (1, 3, 5)) + f",{alpha}"


def _symbol(parent: ET.Element, name: str, geometry: str, colour: str, outline: bool) -> None:
    kind = "fill" if geometry == "Polygon" else "marker"
    symbol = ET.SubElement(parent, "symbol", {"name": name, "type": kind, "alpha": "1", "clip_to_extent": "1"})
    layer = ET.SubElement(
        symbol,
        "layer",
        {"class": "SimpleFill" if kind == "fill" else "SimpleMarker", "enabled": "1", "locked": "0", "pass": "0"},
    )
    props: dict[str, str]
    if kind == "fill" and outline:  # a boundary: no fill, the line in the colour
        props = {"style": "no", "color": "0,0,0,0", "outline_color": _rgba(colour), "outline_width": "0.6"}
    elif kind == "fill":
        props = {"style": "solid", "color": _rgba(colour, 150), "outline_color": "92,92,92,255", "outline_width": "0.2"}
    else:
        props = {"name": "circle", "size": "2.4", "color": _rgba(colour), "outline_color": "255,255,255,255"}
    for k, v in props.items():
        ET.SubElement(layer, "prop", {"k": k, "v": v})


def layer_definition(url: str, reader: str) -> bytes:
    """The ``.qlr`` of :data:`LAYERS` read from the database at ``url`` (its host, port
    and name) as ``reader``."""
    u = make_url(url)
    root = ET.Element("qlr")
    tree = ET.SubElement(root, "layer-tree-group", {"name": "gridbranch", "expanded": "1", "checked": "Qt::Checked"})
    maplayers = ET.SubElement(root, "maplayers")
    for spec in reversed(LAYERS):  # QGIS draws the first of the tree on top
        id_ = f"gridbranch_{spec.view}_{uuid.uuid4().hex[:8]}"
        source = (
            f"dbname='{u.database}' host={u.host} port={u.port or 5432} user='{reader}' sslmode=prefer "
            f"key='id' srid=4326 type={spec.wkb} checkPrimaryKeyUnicity='0' "
            f'table="gis"."{spec.view}" (geom)' + (f" sql={spec.where}" if spec.where else "")
        )
        ET.SubElement(
            tree,
            "layer-tree-layer",
            {"id": id_, "name": spec.title, "providerKey": "postgres", "source": source, "checked": "Qt::Checked"},
        )
        ml = ET.SubElement(maplayers, "maplayer", {"type": "vector", "geometry": spec.geometry, "wkbType": spec.wkb})
        ET.SubElement(ml, "id").text = id_
        ET.SubElement(ml, "datasource").text = source
        ET.SubElement(ml, "layername").text = spec.title
        srs = ET.SubElement(ET.SubElement(ml, "srs"), "spatialrefsys")
        ET.SubElement(srs, "authid").text = "EPSG:4326"
        ET.SubElement(ml, "provider", {"encoding": "UTF-8"}).text = "postgres"
        if spec.by:
            field, true_colour = spec.by
            renderer = ET.SubElement(ml, "renderer-v2", {"type": "categorizedSymbol", "attr": field})
            cats = ET.SubElement(renderer, "categories")
            symbols = ET.SubElement(renderer, "symbols")
            for i, (value, label, colour) in enumerate(
                (("false", "无支部", spec.colour), ("true", "有支部", true_colour))
            ):
                ET.SubElement(cats, "category", {"value": value, "label": label, "symbol": str(i), "render": "true"})
                _symbol(symbols, str(i), spec.geometry, colour, spec.outline)
        else:
            renderer = ET.SubElement(ml, "renderer-v2", {"type": "singleSymbol"})
            _symbol(ET.SubElement(renderer, "symbols"), "0", spec.geometry, spec.colour, spec.outline)
    ET.indent(root)
    return b"<!DOCTYPE qgis-layer-definition>\n" + ET.tostring(root, encoding="utf-8")

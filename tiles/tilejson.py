"""TileJSON 3.0.0 documents for a layer or a composite, with URLs built from the request
so that they hold behind a reverse proxy.

The public base URL honours ``X-Forwarded-Proto``, ``X-Forwarded-Host`` and
``X-Forwarded-Prefix`` (first value of each; values that do not look like a scheme, a
host[:port] or a path are ignored), then the ASGI ``root_path``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from tiles.layers import TileLayer

TILEJSON_VERSION = "3.0.0"
WORLD = (-180.0, -85.0511, 180.0, 85.0511)
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
_PREFIX = re.compile(r"^(?:/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)*/?$")
#: The proxy headers a TileJSON or style varies with.
VARY = "Accept-Encoding, Authorization, X-Forwarded-Proto, X-Forwarded-Host, X-Forwarded-Prefix"

TRUNCATED_VECTOR_LAYER = {
    "id": "truncated",
    "description": (
        "Present only in tiles where a layer reached its feature limit: one point at the tile's "
        "centre per such layer, with its name and the limit"
    ),
    "fields": {"layer": "String", "limit": "Number"},
}


def _first(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(",")[0].strip() or None


def public_base_url(headers: Mapping[str, str], scheme: str, netloc: str, root_path: str = "") -> str:
    """``scheme://host[:port]/prefix`` as the client sees this service (no trailing slash)."""
    proto = (_first(headers.get("x-forwarded-proto")) or "").lower()
    if proto not in ("http", "https"):
        proto = scheme
    host = _first(headers.get("x-forwarded-host"))
    if host is None or not _HOST.match(host):
        host = headers.get("host") or netloc
        if not _HOST.match(host):
            host = netloc
    prefix = _first(headers.get("x-forwarded-prefix")) or ""
    if not _PREFIX.match(prefix):
        prefix = ""
    path = (prefix.rstrip("/") + "/" + root_path.strip("/")).rstrip("/")
    return f"{proto}://{host}{path}"


def tile_url(base: str, layers: tuple[TileLayer, ...]) -> str:
    return f"{base}/tiles/{','.join(layer.name for layer in layers)}/{{z}}/{{x}}/{{y}}.mvt"


def tilejson(layers: tuple[TileLayer, ...], base: str, extent: tuple[float, float, float, float] | None) -> dict:
    """The TileJSON 3.0.0 of ``layers`` (one layer or a composite)."""
    names = ",".join(layer.name for layer in layers)
    minzoom = min(layer.minzoom for layer in layers)
    maxzoom = max(layer.maxzoom for layer in layers)
    bounds = list(extent) if extent else list(WORLD)
    centre_zoom = min(max(minzoom, 12), maxzoom)
    return {
        "tilejson": TILEJSON_VERSION,
        "name": names,
        "description": "; ".join(f"{layer.name}: {layer.title}" for layer in layers),
        "version": "1.0.0",
        "attribution": "gridbranch 网格党支部空间服务",
        "scheme": "xyz",
        "tiles": [tile_url(base, layers)],
        "minzoom": minzoom,
        "maxzoom": maxzoom,
        "bounds": [round(v, 6) for v in bounds],
        "center": [round((bounds[0] + bounds[2]) / 2, 6), round((bounds[1] + bounds[3]) / 2, 6), centre_zoom],
        "vector_layers": [
            {
                "id": layer.name,
                "description": f"{layer.title}. {layer.description}. Feature limit order: {layer.priority}",
                "minzoom": layer.minzoom,
                "maxzoom": layer.maxzoom,
                "fields": dict(layer.fields),
            }
            for layer in layers
        ]
        + [TRUNCATED_VECTOR_LAYER],
    }

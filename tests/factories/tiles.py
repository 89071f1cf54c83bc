"""Tiles in tests: an app with given tile settings, tile paths, and decoding tiles back
to WGS84 (the tile tests, and the imports' and branches' tests that look at tiles)."""

from __future__ import annotations

import math

import mapbox_vector_tile
import numpy as np
import shapely
from fastapi.testclient import TestClient
from shapely.geometry import shape

from tests.conftest import make_settings
from tiles.tms import EXTENT, Tile, lonlat_to_tile


def make_client(engine, **tile_settings) -> TestClient:
    from geo_api.app import create_app
    from geo_api.settings import TileSettings

    settings = make_settings()
    if tile_settings:
        settings.tiles = TileSettings(**tile_settings)
    return TestClient(create_app(settings, engine=engine))


def decode(body: bytes) -> dict:
    """Layers of a tile, coordinates in tile units with y pointing down (as encoded)."""
    return mapbox_vector_tile.decode(body, default_options={"y_coord_down": True}) if body else {}


def to_lonlat(tile: Tile, geometry: dict):
    """A decoded feature's geometry (tile units, y down) in WGS84 degrees."""
    n = 1 << tile.z

    def coords(xy):
        lon = (tile.x + xy[0] / EXTENT) / n * 360.0 - 180.0
        lat = math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * (tile.y + xy[1] / EXTENT) / n))))
        return lon, lat

    return shapely.transform(shape(geometry), lambda a: np.array([coords(p) for p in a]))


def tile_at(lon: float, lat: float, z: int) -> Tile:
    return lonlat_to_tile(lon, lat, z)


def path(layers: str, tile: Tile) -> str:
    return f"/tiles/{layers}/{tile.z}/{tile.x}/{tile.y}.mvt"

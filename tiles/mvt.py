"""Just enough of the Mapbox Vector Tile protobuf (spec 2.1) to write the small
``truncated`` layer by hand. Every data layer is encoded by PostGIS (ST_AsMVT); a tile is
a sequence of ``layers`` fields, so encoded layers are joined by concatenation.
"""

from __future__ import annotations

from tiles.tms import EXTENT

TRUNCATED_LAYER = "truncated"


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        bits = n & 0x7F
        n >>= 7
        if n:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, wire: int) -> bytes:
    return _varint((number << 3) | wire)


def _bytes(number: int, payload: bytes) -> bytes:
    return _field(number, 2) + _varint(len(payload)) + payload


def _uint(number: int, value: int) -> bytes:
    return _field(number, 0) + _varint(value)


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def truncated_layer(limits: dict[str, int]) -> bytes:
    """A tile-level ``layers`` entry named ``truncated`` holding one point at the tile's
    centre per layer cut at its feature limit, with properties ``layer`` (its name) and
    ``limit`` (how many features it kept at most). Empty when nothing was cut."""
    if not limits:
        return b""
    keys = [b"layer", b"limit"]
    values: list[bytes] = []
    features = b""
    centre = EXTENT // 2
    geometry = b"".join(_varint(v) for v in (9, _zigzag(centre), _zigzag(centre)))  # MoveTo(1) x y
    for i, (name, limit) in enumerate(sorted(limits.items())):
        values.append(_bytes(1, name.encode()))  # string_value
        values.append(_uint(5, int(limit)))  # uint_value
        tags = b"".join(_varint(v) for v in (0, 2 * i, 1, 2 * i + 1))
        feature = _uint(1, i + 1) + _bytes(2, tags) + _uint(3, 1) + _bytes(4, geometry)  # id, tags, POINT, geometry
        features += _bytes(2, feature)
    layer = (
        _uint(15, 2)
        + _bytes(1, TRUNCATED_LAYER.encode())
        + features
        + b"".join(_bytes(3, k) for k in keys)
        + b"".join(_bytes(4, v) for v in values)
        + _uint(5, EXTENT)
    )
    return _bytes(3, layer)

"""Reading point rows (``id, lon, lat[, crs]``) from JSON or CSV and bringing them to
WGS84, validating every row and keeping bad rows in place with the reason.

Coordinates are always x then y: longitude/easting first (see ``ingest.crs``). For a
geographic CRS (wgs84, gcj02, bd09, cgcs2000, any geographic EPSG) they are degrees and
must be finite with |lon| ≤ 180 and |lat| ≤ 90; for a projected CRS (such as EPSG:4547)
they are metres and must be finite, and the converted point must be a valid lon/lat.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingest.crs import CrsSpec, check_lonlat, parse_crs, to_wgs84
from layers.errors import InvalidInput


@dataclass
class PointBatch:
    """n rows: ids, the WGS84 point of each good row (NaN for bad rows), the CRS and
    original coordinates as sent, and the reason each bad row was refused."""

    ids: list[Any]
    lon: np.ndarray
    lat: np.ndarray
    crs: list[str | None]
    x: np.ndarray
    y: np.ndarray
    errors: dict[int, dict[str, str]] = field(default_factory=dict)
    extra: list[dict[str, Any]] = field(default_factory=list)  # other columns of each row, as read

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def good(self) -> np.ndarray:
        """Indices of the rows that have a WGS84 point."""
        bad = np.zeros(len(self.ids), bool)
        if self.errors:
            bad[list(self.errors)] = True
        return np.flatnonzero(~bad)


def to_wgs84_point(x: Any, y: Any, crs: str | None) -> tuple[float, float, CrsSpec]:
    """One point to WGS84 ``(lon, lat)``; :class:`InvalidInput` naming the field otherwise."""
    batch = points_from_rows([{"id": None, "lon": x, "lat": y, "crs": crs}], default_crs="wgs84")
    if batch.errors:
        err = batch.errors[0]
        raise InvalidInput(err["detail"], field=err["field"])
    return float(batch.lon[0]), float(batch.lat[0]), parse_crs(crs or "wgs84")


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a coordinate")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return float(value.strip())
    raise ValueError(f"expected a number, got {type(value).__name__}")


def points_from_rows(rows: list[Any], *, default_crs: str = "wgs84", x_key: str = "lon", y_key: str = "lat",
                     id_key: str = "id", keep_extra: bool = False) -> PointBatch:
    """Validate and convert rows (mappings) of ``id, lon, lat[, crs]``."""
    n = len(rows)
    ids: list[Any] = [None] * n
    crs_names: list[str | None] = [None] * n
    x = np.full(n, np.nan)
    y = np.full(n, np.nan)
    errors: dict[int, dict[str, str]] = {}
    extra: list[dict[str, Any]] = []
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            errors[i] = {"field": "row", "detail": f"row {i} must be an object with {id_key}, {x_key}, {y_key}"}
            extra.append({})
            continue
        ids[i] = row.get(id_key)
        if keep_extra:
            extra.append(row)
        crs = row.get("crs") or default_crs
        crs_names[i] = crs if isinstance(crs, str) else None
        for key, target in ((x_key, x), (y_key, y)):
            value = row.get(key)
            if value is None or value == "":
                errors.setdefault(i, {"field": key, "detail": f"{key} is missing"})
                continue
            try:
                target[i] = _number(value)
            except ValueError as exc:
                errors.setdefault(i, {"field": key, "detail": f"{key} is not a number: {value!r} ({exc})"})
        if i not in errors:
            if not isinstance(crs, str):
                errors[i] = {"field": "crs", "detail": f"crs must be a string, got {crs!r}"}
            else:
                groups.setdefault(crs, []).append(i)
    lon = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    for crs, members in groups.items():
        idx = np.asarray(members)
        try:
            spec = parse_crs(crs)
        except InvalidInput as exc:
            for i in members:
                errors[i] = {"field": "crs", "detail": exc.detail}
            continue
        xs, ys = x[idx], y[idx]
        ok = np.isfinite(xs) & np.isfinite(ys)
        if spec.is_geographic:
            ok &= (np.abs(xs) <= 180) & (np.abs(ys) <= 90)
        for i in idx[~ok]:
            errors[int(i)] = _coordinate_error(x[i], y[i], spec)
        good = idx[ok]
        if not len(good):
            continue
        gl, ga = to_wgs84(x[good], y[good], spec)
        gl, ga = np.asarray(gl, float), np.asarray(ga, float)
        valid = np.isfinite(gl) & np.isfinite(ga) & (np.abs(gl) <= 180) & (np.abs(ga) <= 90)
        for i in good[~valid]:
            errors[int(i)] = {"field": "lon", "detail": f"({x[i]}, {y[i]}) in {spec.name} does not convert to a valid WGS84 point"}
        lon[good[valid]] = gl[valid]
        lat[good[valid]] = ga[valid]
    return PointBatch(ids, lon, lat, crs_names, x, y, errors, extra)


def _coordinate_error(x: float, y: float, spec: CrsSpec) -> dict[str, str]:
    if spec.is_geographic:
        try:
            check_lonlat(x, y)
        except InvalidInput as exc:
            return {"field": exc.field or "lon", "detail": exc.detail}
    field_name = "lon" if not math.isfinite(x) else "lat"
    return {"field": field_name, "detail": f"{field_name} must be a finite number"}


def rows_from_csv(data: bytes | str, *, required: tuple[str, ...] = ("id", "lon", "lat")) -> list[dict[str, str]]:
    """CSV text with a header row → list of dicts; :class:`InvalidInput` if a required
    column is missing. Accepts UTF-8 with or without BOM."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"the file is not UTF-8 text: {exc}", field="file")
    reader = csv.DictReader(io.StringIO(data))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
        raise InvalidInput(
            f"the CSV header must name the columns {', '.join(required)}; missing {', '.join(missing)} (header: {header})",
            field="file",
        )
    reader.fieldnames = header
    return [{k: (v.strip() if isinstance(v, str) else v) for k, v in row.items() if k is not None} for row in reader]

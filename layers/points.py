"""Reading point rows (``id, lon, lat[, crs]``) from JSON or CSV and bringing them to
WGS84, validating every row and keeping bad rows in place with the reason.

Coordinates are always x then y: longitude/easting first (see ``layers.crs``). For a
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

from layers.crs import CrsSpec, check_lonlat, parse_crs, to_wgs84
from layers.errors import InvalidInput
from layers.gcpause import no_gc


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


def _floats(values: list[Any], key: str, errors: dict[int, dict[str, str]]) -> np.ndarray:
    """A column of numbers as float64; rows that are not numbers get an error naming
    ``key`` and NaN. Vectorised when the column is clean, row by row otherwise."""
    out = None
    if not any(type(v) is bool for v in values):
        try:
            out = np.array(values, dtype=float)
        except (ValueError, TypeError):
            out = None
    if out is not None and out.shape != (len(values),):
        out = None  # nested lists ([[1], [2]]) make a 2-D array: look at each row
    if out is not None:
        suspicious = np.flatnonzero(np.isnan(out))  # None and "nan" both become NaN
    else:
        out = np.full(len(values), np.nan)
        suspicious = np.arange(len(values))
    for i in suspicious:
        value = values[i]
        if value is None or (isinstance(value, str) and not value.strip()):
            errors.setdefault(int(i), {"field": key, "detail": f"{key} is missing"})
            continue
        try:
            out[i] = _number(value)
        except ValueError as exc:
            errors.setdefault(int(i), {"field": key, "detail": f"{key} is not a number: {value!r} ({exc})"})
    return out


def points_from_rows(
    rows: list[Any], *, default_crs: str = "wgs84", x_key: str = "lon", y_key: str = "lat", id_key: str = "id"
) -> PointBatch:
    """Validate and convert rows (mappings) of ``id, lon, lat[, crs]``; a row that is not
    a mapping is reported in place."""
    errors: dict[int, dict[str, str]] = {}
    ids, xs, ys, crs = [], [], [], []
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            ids.append(row.get(id_key))
            xs.append(row.get(x_key))
            ys.append(row.get(y_key))
            crs.append(row.get("crs"))
        else:
            errors[i] = {"field": "row", "detail": f"row {i} must be an object with {id_key}, {x_key}, {y_key}"}
            ids.append(None)
            xs.append(0.0)
            ys.append(0.0)
            crs.append(None)
    return points_from_columns(ids, xs, ys, crs, default_crs=default_crs, x_key=x_key, y_key=y_key, errors=errors)


def points_from_columns(
    ids: list[Any],
    xs: list[Any],
    ys: list[Any],
    crs: list[Any] | None,
    *,
    default_crs: str = "wgs84",
    x_key: str = "lon",
    y_key: str = "lat",
    errors: dict[int, dict[str, str]] | None = None,
) -> PointBatch:
    """Validate and convert columns; ``crs`` entries that are empty take ``default_crs``."""
    n = len(ids)
    errors = {} if errors is None else errors
    x = _floats(xs, x_key, errors)
    y = _floats(ys, y_key, errors)
    if crs is None:
        crs_names: list[Any] = [default_crs] * n
    else:
        crs_names = [c if c else default_crs for c in crs]
    for i, c in enumerate(crs_names):
        if not isinstance(c, str) and i not in errors:  # a list or an object cannot even be grouped by
            errors[i] = {"field": "crs", "detail": f"crs must be a string, got {c!r}"}
    names = [c if isinstance(c, str) else None for c in crs_names]
    crs_names = [c if isinstance(c, str) else default_crs for c in crs_names]
    groups: dict[Any, list[int]] = {}
    if len(set(crs_names)) == 1:
        groups[crs_names[0] if n else default_crs] = [i for i in range(n) if i not in errors]
    else:
        for i, c in enumerate(crs_names):
            if i not in errors:
                groups.setdefault(c, []).append(i)
    lon = np.full(n, np.nan)
    lat = np.full(n, np.nan)
    for name, members in groups.items():
        if not members:
            continue
        idx = np.asarray(members)
        try:
            spec = parse_crs(name)
        except InvalidInput as exc:
            for i in members:
                errors[i] = {"field": "crs", "detail": exc.detail}
            continue
        xg, yg = x[idx], y[idx]
        ok = np.isfinite(xg) & np.isfinite(yg)
        if spec.is_geographic:
            ok &= (np.abs(xg) <= 180) & (np.abs(yg) <= 90)
        for i in idx[~ok]:
            errors[int(i)] = _coordinate_error(x[i], y[i], spec)
        good = idx[ok]
        if not len(good):
            continue
        gl, ga = to_wgs84(x[good], y[good], spec)
        gl, ga = np.asarray(gl, float), np.asarray(ga, float)
        valid = np.isfinite(gl) & np.isfinite(ga) & (np.abs(gl) <= 180) & (np.abs(ga) <= 90)
        for i in good[~valid]:
            errors[int(i)] = {
                "field": x_key,
                "detail": f"({x[i]}, {y[i]}) in {spec.name} does not convert to a valid WGS84 point",
            }
        lon[good[valid]] = gl[valid]
        lat[good[valid]] = ga[valid]
    return PointBatch(list(ids), lon, lat, names, x, y, errors)


def _coordinate_error(x: float, y: float, spec: CrsSpec) -> dict[str, str]:
    if spec.is_geographic:
        try:
            check_lonlat(x, y)
        except InvalidInput as exc:
            return {"field": exc.field or "lon", "detail": exc.detail}
    field_name = "lon" if not math.isfinite(x) else "lat"
    return {"field": field_name, "detail": f"{field_name} must be a finite number"}


def columns_from_csv(data: bytes | str, *, required: tuple[str, ...] = ("id", "lon", "lat")) -> dict[str, list[str]]:
    """CSV text with a header row → {column: values}; :class:`InvalidInput` naming
    ``file`` if a required column is missing. UTF-8 with or without BOM."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"the file is not UTF-8 text: {exc}", field="file") from None
    with no_gc():
        if '"' not in data:
            # no quoting anywhere: plain splitting gives the same fields, several times faster
            lines = data.splitlines()
            header = [h.strip() for h in lines[0].split(",")] if lines else []
            rows = [line.split(",") for line in lines[1:] if line.strip()]
        else:
            reader = csv.reader(io.StringIO(data))
            header = [h.strip() for h in next(reader, [])]
            rows = [r for r in reader if r]
    missing = [c for c in required if c not in header]
    if missing:
        raise InvalidInput(
            f"the CSV header must name the columns {', '.join(required)}; missing {', '.join(missing)} (header: {header})",
            field="file",
        )
    width = len(header)
    with no_gc():
        if any(len(r) != width for r in rows):
            rows = [r + [""] * (width - len(r)) if len(r) < width else r[:width] for r in rows]
        columns = list(zip(*rows)) if rows else [()] * width
        return {
            name: [v.strip() for v in col] if any(v != v.strip() for v in col) else list(col)
            for name, col in zip(header, columns)
        }


def rows_from_csv(data: bytes | str, *, required: tuple[str, ...] = ("id", "lon", "lat")) -> list[dict[str, str]]:
    """CSV text with a header row → list of dicts (see :func:`columns_from_csv`)."""
    columns = columns_from_csv(data, required=required)
    names = list(columns)
    return [dict(zip(names, values)) for values in zip(*columns.values())]

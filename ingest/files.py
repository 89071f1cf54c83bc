"""Reading boundary files: GeoPackage, Shapefile (a .shp, a folder, or a .zip with its
.dbf/.shx/.prj/.cpg), GeoJSON, KML/KMZ, FlatGeobuf, and CSV/XLSX with a WKT column.

GIS formats are read by GDAL through pyogrio (GDAL ships in its wheel); XLSX by
openpyxl, which — unlike GDAL's XLSX driver — tells a formula cell from a value, so a
formula is refused instead of its cached result silently taken. What comes out is a
:class:`SourceFile`: the attribute records and the shapely geometries *in the file's own
coordinates* (2D, x first), with the CRS the file declares. Assigning a CRS and
reprojecting are the caller's business (``ingest.boundaries``, through ``layers.crs``).

Everything that can make a file unreadable is a :class:`FileError` (an
:class:`~layers.errors.InvalidInput` naming ``file``, or the feature and field) whose
message starts with the file name: a truncated or damaged zip, a Shapefile without its
.dbf or .shx, a GeoPackage with no layer or several (``layer`` picks one), a formula
cell, a KML with a DTD (entity expansion: the "billion laughs" bomb), and anything over
the size :class:`Limits` (a .zip/.kmz/.xlsx is unpacked by streaming, counting bytes, so
a member that lies about its size is stopped too).

Encodings: a Shapefile's .cpg (or ``encoding``) is obeyed; without either, and for CSV,
the strings are read byte for byte and decoded as UTF-8 if they are valid UTF-8, else
as GB18030 (the superset of GBK that Chinese desktop GIS writes).
"""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from layers.crs import CrsSpec, UnknownCRSError, parse_crs
from layers.errors import InvalidInput

#: File suffixes read, and the GDAL driver (or reader) for each.
FORMATS = {
    ".gpkg": "GPKG",
    ".shp": "ESRI Shapefile",
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".kml": "KML",
    ".fgb": "FlatGeobuf",
    ".csv": "CSV",
    ".xlsx": "XLSX",
}
#: Containers unpacked first.
ARCHIVES = (".zip", ".kmz")
#: Formats whose CRS is WGS84 by definition, whatever the data really are.
WGS84_BY_DEFINITION = {"GeoJSON": "GeoJSON is WGS84 by definition (RFC 7946)", "KML": "KML is WGS84 by definition"}
#: Column names taken as the WKT geometry of a CSV or XLSX (case-insensitive) unless told.
WKT_COLUMNS = ("wkt", "geometry", "geom", "the_geom", "shape", "几何", "空间信息", "边界", "范围")


@dataclass(frozen=True)
class Limits:
    """Sizes beyond which a file is refused (bytes; features)."""

    max_bytes: int = 1 << 30
    max_unpacked_bytes: int = 2 << 30
    #: an archive member unpacking to more than this many times its packed size (and to
    #: more than 1 MiB) is a zip bomb
    max_ratio: int = 200
    max_kml_bytes: int = 256 << 20
    max_features: int = 2_000_000


class FileError(InvalidInput):
    """A file that cannot be read as a whole; ``field`` is ``file`` unless a feature's
    field is named."""

    def __init__(self, detail: str, *, field: str = "file", **extra):
        super().__init__(detail, field=field, **extra)


@dataclass
class SourceFile:
    """The features of one layer of a file, in the file's own coordinates."""

    name: str  # the file name as given, for messages
    driver: str
    layer: str | None
    fields: list[str]
    records: list[dict[str, Any]]
    #: shapely geometries, 2D, in the file's coordinates; None where a feature has none
    geoms: np.ndarray
    #: the CRS the file declares (None: it declares none, or one without an EPSG code)
    declared_crs: CrsSpec | None = None
    #: how the file declares it (a .prj's name, "EPSG:4547", or why there is none)
    crs_text: str | None = None
    #: the format defines the CRS (GeoJSON, KML): the data may still be GCJ-02
    crs_by_definition: str | None = None
    encoding: str | None = None
    encoding_note: str | None = None
    geometry_type: str | None = None
    #: "Z", "M" or "Z and M" when those ordinates were dropped
    dropped: str | None = None
    #: feature index → (field, reason) for features that could not be read (bad WKT)
    feature_errors: dict[int, tuple[str, str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)


def read_features(
    path: str | Path,
    *,
    layer: str | None = None,
    encoding: str | None = None,
    geometry_field: str | None = None,
    limits: Limits = Limits(),
) -> SourceFile:
    """Read every feature of one layer of ``path`` (see the module docstring)."""
    path = Path(path)
    name = path.name or str(path)
    if not path.exists():
        raise FileError(f"{path}: no such file or folder")
    with tempfile.TemporaryDirectory(prefix="gridbranch-import-") as tmp:
        target = path
        if path.is_file():
            _check_size(name, path.stat().st_size, limits.max_bytes)
            if path.suffix.lower() in ARCHIVES:
                _unpack(path, Path(tmp), limits)
                target = _dataset_in(Path(tmp), name, layer, kmz=path.suffix.lower() == ".kmz")
                if target.suffix.lower() == ".shp":
                    layer = None  # the layer named the Shapefile in the archive
        elif path.is_dir():
            target = _dataset_in(path, name, layer)
            if target.suffix.lower() == ".shp":
                layer = None
        suffix = target.suffix.lower()
        if suffix not in FORMATS:
            raise FileError(
                f"{name}: unsupported file type {suffix or '(none)'}; gridbranch reads "
                f"{', '.join(sorted(FORMATS))} and .zip/.kmz archives of them"
            )
        if suffix == ".xlsx":
            _check_archive(target, name, limits)
            return _read_xlsx(target, name, layer, geometry_field, limits)
        if suffix == ".kml":
            _check_kml(target, name, limits)
        if suffix == ".shp":
            _check_shapefile(target, name)
        return _read_ogr(target, name, FORMATS[suffix], layer, encoding, geometry_field, limits)


# ---- containers and size limits ----------------------------------------------------------


def _check_size(name: str, size: int, limit: int) -> None:
    if size > limit:
        raise FileError(f"{name}: {size / 2**20:.0f} MiB, more than the {limit / 2**20:.0f} MiB gridbranch reads")


def _open_zip(path: Path, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise FileError(f"{name}: not a complete zip archive (truncated or damaged: {exc})") from exc


def _members(zf: zipfile.ZipFile, name: str, limits: Limits) -> list[zipfile.ZipInfo]:
    members = [i for i in zf.infolist() if not i.is_dir()]
    declared = sum(i.file_size for i in members)
    if declared > limits.max_unpacked_bytes:
        raise FileError(
            f"{name}: unpacks to {declared / 2**20:.0f} MiB, more than the "
            f"{limits.max_unpacked_bytes / 2**20:.0f} MiB gridbranch reads"
        )
    for i in members:
        if i.file_size > (1 << 20) and i.file_size > limits.max_ratio * max(i.compress_size, 1):
            raise FileError(
                f"{name}: member {i.filename} unpacks {i.file_size // max(i.compress_size, 1)} times its "
                f"packed size (more than {limits.max_ratio}×): refused as a zip bomb"
            )
    return members


def _stream(zf: zipfile.ZipFile, info: zipfile.ZipInfo, out, name: str, budget: list[int], limits: Limits) -> None:
    """Copy one member, counting bytes against the budget (headers may lie)."""
    try:
        with zf.open(info) as src:
            while chunk := src.read(1 << 20):
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    raise FileError(
                        f"{name}: unpacks to more than the {limits.max_unpacked_bytes / 2**20:.0f} MiB "
                        "gridbranch reads: refused as a zip bomb"
                    )
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise FileError(
            f"{name}: not a complete zip archive (member {info.filename} is truncated or damaged: {exc})"
        ) from exc


def _unpack(path: Path, dest: Path, limits: Limits) -> None:
    name = path.name
    with _open_zip(path, name) as zf:
        budget = [limits.max_unpacked_bytes]
        for info in _members(zf, name, limits):
            rel = Path(info.filename)
            if rel.is_absolute() or ".." in rel.parts:
                raise FileError(f"{name}: member {info.filename} points outside the archive")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                _stream(zf, info, out, name, budget, limits)


def _check_archive(path: Path, name: str, limits: Limits) -> None:
    """An XLSX is a zip: the same bomb checks, reading through every member once."""
    with _open_zip(path, name) as zf:
        budget = [limits.max_unpacked_bytes]
        for info in _members(zf, name, limits):
            _stream(zf, info, _Discard(), name, budget, limits)


class _Discard:
    def write(self, chunk: bytes) -> None:
        pass


def _dataset_in(folder: Path, name: str, layer: str | None, kmz: bool = False) -> Path:
    """The one dataset in a folder or unpacked archive (``layer`` names a Shapefile's stem
    when there are several)."""
    found = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in FORMATS and "__MACOSX" not in p.parts and not p.name.startswith("._")
    )
    if kmz:
        kml = [p for p in found if p.suffix.lower() == ".kml"]
        doc = [p for p in kml if p.name.lower() == "doc.kml"]
        if doc or kml:
            return (doc or kml)[0]
        raise FileError(f"{name}: a KMZ without a .kml inside")
    if not found:
        raise FileError(f"{name}: holds no file gridbranch reads ({', '.join(sorted(FORMATS))})")
    if len(found) > 1 and layer is not None:
        chosen = [p for p in found if p.stem == layer]
        if len(chosen) == 1:
            return chosen[0]
    if len(found) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in found)
        raise FileError(
            f"{name}: holds several datasets ({names}); choose one with --layer NAME (its name without the suffix)",
            field="layer",
        )
    return found[0]


def _sibling(shp: Path, suffix: str) -> Path | None:
    for p in shp.parent.iterdir():
        if p.stem == shp.stem and p.suffix.lower() == suffix:
            return p
    return None


def _check_shapefile(shp: Path, name: str) -> None:
    for suffix, what in ((".dbf", "its attribute table"), (".shx", "its index")):
        if _sibling(shp, suffix) is None:
            raise FileError(
                f"{name}: the Shapefile {shp.name} has no {suffix} ({what}); a Shapefile is several files "
                f"({shp.stem}.shp, .shx, .dbf, .prj, .cpg): send them all, e.g. zipped together"
            )


def _check_kml(path: Path, name: str, limits: Limits) -> None:
    _check_size(name, path.stat().st_size, limits.max_kml_bytes)
    head = path.read_bytes()
    if b"<!ENTITY" in head or b"<!DOCTYPE" in head:
        raise FileError(
            f"{name}: the KML declares a DTD or entities, which KML never needs (entity expansion is the "
            "'billion laughs' bomb): refused"
        )


# ---- GDAL formats through pyogrio ---------------------------------------------------------


def _ogr_error(name: str, exc: Exception) -> FileError:
    return FileError(f"{name}: GDAL cannot read it: {exc}")


def _pick_layer(path: Path, name: str, layer: str | None) -> str | None:
    import pyogrio

    try:
        layers = [str(row[0]) for row in pyogrio.list_layers(path)]
    except Exception as exc:  # pyogrio's DataSourceError and friends
        raise _ogr_error(name, exc) from exc
    if not layers:
        raise FileError(f"{name}: holds no layer", field="layer")
    if layer is not None:
        if layer not in layers:
            raise FileError(f"{name}: has no layer {layer!r}; its layers: {', '.join(layers)}", field="layer")
        return layer
    if len(layers) > 1:
        raise FileError(
            f"{name}: holds several layers ({', '.join(layers)}); choose one with --layer NAME", field="layer"
        )
    return layers[0]


def _declared_crs(text: str | None) -> tuple[CrsSpec | None, str | None]:
    """The file's CRS (pyogrio's string: ``EPSG:n`` or WKT) as a :class:`CrsSpec`."""
    if not text:
        return None, None
    from pyproj import CRS

    try:
        crs = CRS.from_user_input(text)
    except Exception:
        return None, text[:120]
    code = crs.to_epsg(min_confidence=70)
    if code is None:
        return None, crs.name
    try:
        return parse_crs(f"EPSG:{code}"), f"EPSG:{code} ({crs.name})"
    except UnknownCRSError:
        return None, crs.name


def _redecode(strings: list[str]) -> tuple[str, str | None]:
    """The encoding of strings read byte for byte (as ISO-8859-1): UTF-8 when the bytes
    are valid UTF-8, else GB18030 (GBK's superset)."""
    try:
        raw = "".join(strings).encode("latin-1")
    except UnicodeEncodeError:
        return "UTF-8", None  # GDAL has decoded them already
    for enc in ("utf-8", "gb18030"):
        try:
            raw.decode(enc)
            return enc, enc.upper()
        except UnicodeDecodeError:
            continue
    return "latin-1", "ISO-8859-1"


def _recode(value: str, enc: str, lossy: bool = False) -> str:
    try:
        return value.encode("latin-1").decode(enc, errors="replace" if lossy else "strict")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _plain(value: Any) -> Any:
    """numpy scalars and NaN as plain Python values (None for missing)."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _read_ogr(
    path: Path,
    name: str,
    driver: str,
    layer: str | None,
    encoding: str | None,
    geometry_field: str | None,
    limits: Limits,
) -> SourceFile:
    import pyogrio
    import pyogrio.raw

    layer = _pick_layer(path, name, layer) if driver not in ("ESRI Shapefile", "CSV") else None
    detect = encoding is None and (driver == "CSV" or (driver == "ESRI Shapefile" and _sibling(path, ".cpg") is None))
    tabular = driver == "CSV"
    lossy = None

    def read(read_as):
        info = pyogrio.read_info(path, layer=layer, encoding=read_as)
        if info["features"] > limits.max_features:
            raise FileError(
                f"{name}: {info['features']} features, more than the {limits.max_features} gridbranch reads"
            )
        return info, pyogrio.raw.read(path, layer=layer, encoding=read_as, read_geometry=not tabular)

    try:
        try:
            info, (meta, _, wkb, columns) = read("ISO-8859-1" if detect else encoding)
        except UnicodeDecodeError as exc:
            if detect:
                raise
            # text that is not what the .cpg (or --encoding) says, typically a DBF field
            # name cut at its 10 bytes in the middle of a character: read it byte for byte
            lossy = f"not valid {encoding or 'in the .cpg encoding'} ({exc.reason} at byte {exc.start})"
            detect = True
            info, (meta, _, wkb, columns) = read("ISO-8859-1")
    except FileError:
        raise
    except Exception as exc:
        raise _ogr_error(name, exc) from exc
    fields = [str(f) for f in meta["fields"]]
    values = [[_plain(v) for v in col] for col in columns]
    enc_used, enc_note = encoding, ("given" if encoding else None)
    if detect:
        strings = fields + [v for col in values for v in col if isinstance(v, str)]
        py_enc, label = _redecode(strings) if lossy is None else ("utf-8", "UTF-8")
        if lossy is not None:
            # the values may be fine; what is not is shown with replacement characters
            py_enc = (
                "gb18030"
                if (encoding or "").lower().replace("-", "") in ("gbk", "gb18030", "cp936", "936")
                else "utf-8"
            )
            label = py_enc.upper()
        if label is not None:
            fields = [_recode(f, py_enc, lossy is not None) for f in fields]
            values = [
                [_recode(v, py_enc, lossy is not None) if isinstance(v, str) else v for v in col] for col in values
            ]
            enc_used = label
            enc_note = (
                ("detected" + (", no .cpg" if driver == "ESRI Shapefile" else ""))
                if lossy is None
                else f"{lossy}: undecodable bytes shown as \ufffd (a DBF field name cut at 10 bytes?)"
            )
    elif driver == "ESRI Shapefile" and encoding is None:
        enc_used, enc_note = meta.get("encoding") or info.get("encoding"), "from the .cpg"
    if fields and fields[0].startswith("\ufeff"):
        fields[0] = fields[0][1:]
    n = len(values[0]) if values else (len(wkb) if wkb is not None else 0)
    records = [dict(zip(fields, row)) for row in zip(*values)] if values else [{} for _ in range(n)]
    src = SourceFile(
        name=name,
        driver=driver,
        layer=layer,
        fields=fields,
        records=records,
        geoms=np.full(n, None, dtype=object),
        encoding=enc_used,
        encoding_note=enc_note,
        geometry_type=meta.get("geometry_type"),
    )
    if tabular:
        _geoms_from_wkt(src, geometry_field)
        return src
    src.declared_crs, src.crs_text = _declared_crs(meta.get("crs"))
    if driver in WGS84_BY_DEFINITION and (src.declared_crs is None or src.declared_crs.epsg == 4326):
        src.crs_by_definition = WGS84_BY_DEFINITION[driver]
    geoms = shapely.from_wkb(wkb, on_invalid="ignore") if wkb is not None else np.full(n, None, dtype=object)
    _set_geoms(src, np.asarray(geoms, dtype=object))
    return src


def _set_geoms(src: SourceFile, geoms: np.ndarray) -> None:
    """Keep 2D geometries, noting the Z and M ordinates dropped."""
    present = np.array([g is not None for g in geoms], bool)
    z = bool(shapely.has_z(geoms[present]).any()) if present.any() else False
    m = bool(shapely.has_m(geoms[present]).any()) if present.any() else False
    if z or m:
        geoms = geoms.copy()
        geoms[present] = shapely.force_2d(geoms[present])
        src.dropped = " and ".join(d for d, has in (("Z", z), ("M", m)) if has)
    src.geoms = geoms


def _geometry_column(src: SourceFile, geometry_field: str | None) -> str:
    if geometry_field is not None:
        if geometry_field not in src.fields:
            raise FileError(
                f"{src.name}: no column {geometry_field!r} for the geometry; its columns: {', '.join(src.fields)}",
                field="geometry",
            )
        return geometry_field
    lower = {f.strip().lower(): f for f in src.fields}
    for candidate in WKT_COLUMNS:
        if candidate in lower:
            return lower[candidate]
    raise FileError(
        f"{src.name}: no WKT geometry column (looked for {', '.join(WKT_COLUMNS)}); name it with "
        f"--map geometry=COLUMN; its columns: {', '.join(src.fields)}",
        field="geometry",
    )


def _geoms_from_wkt(src: SourceFile, geometry_field: str | None) -> None:
    """The geometries of a table: its WKT column parsed, bad cells reported per feature."""
    column = _geometry_column(src, geometry_field)
    texts = [r.get(column) for r in src.records]
    geoms = np.full(len(texts), None, dtype=object)
    for i, t in enumerate(texts):
        if t is None or (isinstance(t, str) and not t.strip()):
            continue
        try:
            geoms[i] = shapely.from_wkt(str(t).strip())
        except shapely.errors.GEOSException as exc:
            head = str(t).strip()[:40]
            src.feature_errors[i] = (column, f"not WKT ({head!r}…): {exc}")
    for r in src.records:
        r.pop(column, None)
    src.fields = [f for f in src.fields if f != column]
    src.crs_text = "none (a table's WKT column carries no CRS)"
    _set_geoms(src, geoms)


# ---- XLSX through openpyxl ----------------------------------------------------------------


def open_xlsx_sheet(path: Path, name: str, sheet: str | None, option: str):
    """(the workbook, opened read-only with formulas kept, and the sheet to read): the
    one named, else the only one; :class:`FileError` for an unreadable workbook, an
    unknown sheet, or several sheets and none chosen (``option`` says how to choose).
    The caller closes the workbook."""
    import openpyxl

    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=False)
    except Exception as exc:  # zipfile, XML and openpyxl's own errors
        raise FileError(f"{name}: not a readable XLSX workbook: {exc}") from exc
    sheets = wb.sheetnames
    if sheet is not None and sheet not in sheets:
        wb.close()
        raise FileError(f"{name}: has no sheet {sheet!r}; its sheets: {', '.join(sheets)}", field="layer")
    if sheet is None and len(sheets) > 1:
        wb.close()
        raise FileError(
            f"{name}: holds several sheets ({', '.join(sheets)}); choose one with {option} NAME", field="layer"
        )
    return wb, sheet if sheet is not None else sheets[0]


def _read_xlsx(path: Path, name: str, sheet: str | None, geometry_field: str | None, limits: Limits) -> SourceFile:
    wb, sheet = open_xlsx_sheet(path, name, sheet, "--layer")
    try:
        rows = wb[sheet].iter_rows()
        header: list[str] | None = None
        records: list[dict[str, Any]] = []
        for row in rows:
            cells = list(row)
            if header is None:
                if all(c.value is None for c in cells):
                    continue
                header = [
                    str(c.value).strip() if c.value is not None else f"column{k + 1}" for k, c in enumerate(cells)
                ]
                continue
            if all(c.value is None for c in cells):
                continue
            record: dict[str, Any] = {}
            for k, c in enumerate(cells[: len(header)]):
                if c.data_type == "f":
                    raise FileError(
                        f"{name}: sheet {sheet}, row {c.row} (feature {len(records) + 1}), column {header[k]!r}: a "
                        f"formula ({c.value}); gridbranch reads values only — paste the column as values",
                        field=header[k],
                    )
                record[header[k]] = c.value
            records.append(record)
            if len(records) > limits.max_features:
                raise FileError(f"{name}: more than the {limits.max_features} features gridbranch reads")
    finally:
        wb.close()
    src = SourceFile(
        name=name,
        driver="XLSX",
        layer=sheet,
        fields=header or [],
        records=records,
        geoms=np.full(len(records), None, dtype=object),
        encoding="UTF-8",
        encoding_note="XLSX",
    )
    _geoms_from_wkt(src, geometry_field)
    return src

"""A second real district built from files only: the real boundary of 中原区 (410102,
GCJ-02, from ``../shared/data/zhengzhou`` beside the clone) and generated streets,
communities and grids inside it, written the way real deployments receive them — the
areas as a GBK Shapefile in GCJ-02 (Chinese attribute names and values, no .cpg, a .prj
that says WGS84 as such exports do), the grids as a GeoPackage in EPSG:4547 — plus
broken files. The truth (WGS84 geometries) is kept to check what lands in the database.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyogrio.raw
import shapely
from shapely.geometry import shape

from layers.coverage.topology import polygon_parts
from layers.crs import gcj02_to_wgs84, geoms_from_wgs84

ROOT = Path(__file__).resolve().parents[2]


def _checkout_roots() -> list[Path]:
    """This checkout's root, and for a git worktree (``.git`` is a file naming the main
    repository's ``.git/worktrees/NAME``) the main checkout's root too."""
    roots = [ROOT]
    dotgit = ROOT / ".git"
    if dotgit.is_file():
        gitdir = Path(dotgit.read_text(encoding="utf-8").split("gitdir:", 1)[-1].strip())
        if gitdir.parent.name == "worktrees":
            roots.append(gitdir.parent.parent.parent)
    return roots


#: The shared real data beside the clone (in CI: ../shared/data/zhengzhou).
ZHENGZHOU = next(
    (
        r.parent / "shared" / "data" / "zhengzhou"
        for r in _checkout_roots()
        if (r.parent / "shared" / "data" / "zhengzhou").is_dir()
    ),
    ROOT.parent / "shared" / "data" / "zhengzhou",
)
CODE = "410102"
NAME = "中原区"
STREET_NAMES = ("林山寨街道", "建设路街道", "棉纺路街道")
COMMUNITY_NAMES = ("友爱", "和平", "幸福", "朝阳", "建新", "秦岭")
GRIDS_PER_COMMUNITY = 5


@dataclass
class Unit:
    code: str
    name: str
    parent: str | None
    geom: object  # WGS84 MultiPolygon


@dataclass
class District:
    boundary_file: Path
    boundary: object  # WGS84
    streets: list[Unit] = field(default_factory=list)
    communities: list[Unit] = field(default_factory=list)
    grids: list[Unit] = field(default_factory=list)


def boundary_file() -> Path:
    path = ZHENGZHOU / f"{CODE}.geojson"
    if not path.is_file():  # the proof needs the real boundary: fail, never skip
        raise FileNotFoundError(f"the real boundary {path} is missing (shared/data/zhengzhou beside the clone)")
    return path


def _multi(geom):
    parts, _ = polygon_parts([geom])
    return shapely.multipolygons(parts)


def build_district() -> District:
    path = boundary_file()
    gcj = shape(json.loads(path.read_text(encoding="utf-8")))
    wgs = shapely.transform(gcj, lambda xy: np.column_stack(gcj02_to_wgs84(xy[:, 0], xy[:, 1])))
    d = District(path, wgs)
    minx, miny, maxx, maxy = wgs.bounds
    xs = np.linspace(minx - 0.01, maxx + 0.01, len(STREET_NAMES) + 1)
    rng = np.random.default_rng(410102)
    for s, sname in enumerate(STREET_NAMES):
        street = _multi(shapely.intersection(wgs, shapely.box(xs[s], miny - 0.01, xs[s + 1], maxy + 0.01)))
        scode = f"{CODE}{s + 1:03d}000"
        d.streets.append(Unit(scode, sname, f"{CODE}000000", street))
        sx0, sy0, sx1, sy1 = street.bounds
        ymid = (sy0 + sy1) / 2
        for c, (y0, y1) in enumerate(((sy0 - 0.01, ymid), (ymid, sy1 + 0.01))):
            community = _multi(shapely.intersection(street, shapely.box(sx0 - 0.01, y0, sx1 + 0.01, y1)))
            ccode = f"{scode[:9]}{c + 1:03d}"
            cname = f"{COMMUNITY_NAMES[(2 * s + c) % len(COMMUNITY_NAMES)]}社区"
            d.communities.append(Unit(ccode, cname, scode, community))
            bx0, by0, bx1, by1 = community.bounds
            seeds = []
            while len(seeds) < GRIDS_PER_COMMUNITY:
                p = shapely.Point(rng.uniform(bx0, bx1), rng.uniform(by0, by1))
                if community.contains(p):
                    seeds.append(p)
            cells = shapely.voronoi_polygons(
                shapely.MultiPoint(seeds), extend_to=shapely.box(bx0 - 1, by0 - 1, bx1 + 1, by1 + 1)
            )
            cells = sorted(cells.geoms, key=lambda g: (round(g.centroid.y, 6), g.centroid.x))
            for k, cell in enumerate(cells):
                grid = _multi(shapely.intersection(community, cell))
                d.grids.append(Unit(f"{ccode}{k + 1:03d}", f"{cname}第{k + 1}网格", ccode, grid))
    return d


def _wkb(geoms, crs: str):
    return shapely.to_wkb(np.asarray(geoms_from_wgs84(np.asarray(geoms, dtype=object), crs), dtype=object))


def write_areas_shapefile(d: District, folder: Path, *, zipped: bool = True, prj: bool = True) -> Path:
    """Streets and communities, GCJ-02, GBK attributes 编码/名称/上级编码, no .cpg; the
    .prj (if any) says WGS84 as GCJ-02 exports do."""
    folder.mkdir(parents=True, exist_ok=True)
    units = d.streets + d.communities
    shp = folder / "areas.shp"
    pyogrio.raw.write(
        shp,
        _wkb([u.geom for u in units], "gcj02"),
        [
            np.array([u.code for u in units], dtype=object),
            np.array([u.name for u in units], dtype=object),
            np.array([u.parent for u in units], dtype=object),
        ],
        ["编码", "名称", "上级编码"],
        driver="ESRI Shapefile",
        geometry_type="MultiPolygon",
        crs="EPSG:4326",
        encoding="GBK",
    )
    (folder / "areas.cpg").unlink()
    if not prj:
        (folder / "areas.prj").unlink()
    if not zipped:
        return shp
    out = folder / "areas.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.glob("areas.*")):
            if p.suffix != ".zip":
                z.write(p, p.name)
    return out


def write_grids_gpkg(
    d: District,
    path: Path,
    grids: list[Unit] | None = None,
    crs: str = "EPSG:4547",
    declare: str | None = None,
    layer: str = "网格",
) -> Path:
    """Grids in EPSG:4547 (or ``crs``, declared as ``declare``), attributes 网格编码,
    网格名称, 所属社区."""
    grids = d.grids if grids is None else grids
    pyogrio.raw.write(
        path,
        _wkb([g.geom for g in grids], crs),
        [
            np.array([g.code for g in grids], dtype=object),
            np.array([g.name for g in grids], dtype=object),
            np.array([g.parent for g in grids], dtype=object),
        ],
        ["网格编码", "网格名称", "所属社区"],
        driver="GPKG",
        geometry_type="MultiPolygon",
        crs=declare or crs,
        layer=layer,
        append=path.exists(),
    )
    return path


GRID_MAP = "code=网格编码,name=网格名称,parent=所属社区"
AREA_MAP = "code=编码,name=名称,parent=上级编码"


ADMIN_PASSWORD = "Zhongyuan-2026"


def start_deployment(engine, folder: Path, d: District, *, grids: bool = True) -> dict[str, Path]:
    """The 中原区 deployment on ``engine`` (migrated, empty) through the command line, as
    an operator starts one: ``init`` with the real boundary, the areas committed from
    the GBK Shapefile and, with ``grids``, the grids from the GeoPackage. The district
    admin is ``admin`` (:data:`ADMIN_PASSWORD`). Returns the files written."""
    import contextlib
    import io
    import os

    from geo_api.cli import main

    files = {"areas": write_areas_shapefile(d, folder / "areas"), "grids": write_grids_gpkg(d, folder / "grids.gpkg")}
    env = {
        "GRIDBRANCH_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "GRIDBRANCH_INIT_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    saved = {k: os.environ.get(k) for k in env}
    steps = [
        ("init", "--district", CODE, "--boundary", str(d.boundary_file), "--crs", "gcj02", "--name", NAME),
        ("ingest", "areas", str(files["areas"]), "--crs", "gcj02", "--map", AREA_MAP, "--commit"),
    ]
    if grids:
        steps.append(("ingest", "grids", str(files["grids"]), "--map", GRID_MAP, "--commit"))
    os.environ.update(env)
    try:
        for argv in steps:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                rc = main(list(argv))
            if rc != 0:
                raise RuntimeError(f"gridbranch {' '.join(argv[:2])} failed: {out.getvalue()}")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return files

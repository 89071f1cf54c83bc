"""Starting an empty deployment for a county-level division (``gridbranch init``): the
district's boundary from a file (any format and CRS ``ingest.files`` reads), the
national holiday calendar, and a first district admin account. The schema, and with it
the default service roles (六员, migration 0001), come from the migrations, which the
caller has run. Nothing of the Jinshui demo is loaded: streets, communities and grids
come next from the district's own files (``ingest.boundaries``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from sqlalchemy import text
from sqlalchemy.orm import Session

from ingest.boundaries import DEFAULT_COLUMNS, resolve_crs
from ingest.calendar import load_national_calendar
from ingest.files import FileError, SourceFile
from layers import accounts, users
from layers import boundaries as store
from layers.codes import district_code
from layers.coverage.topology import lonlat_area, polygon_parts, repair
from layers.crs import crs_hint, geoms_to_wgs84, in_china_rough
from layers.errors import ConfigError, Conflict, InvalidInput

NAME_COLUMNS = DEFAULT_COLUMNS["name"] + ("dist_name", "区县", "区县名称")


def _name_from(src: SourceFile) -> str | None:
    lower = {f.strip().lower(): f for f in src.fields}
    for candidate in NAME_COLUMNS:
        if candidate in lower:
            names = {str(r.get(lower[candidate])).strip() for r in src.records if r.get(lower[candidate])}
            if len(names) == 1:
                return names.pop()
    return None


def district_boundary(src: SourceFile, crs: str | None) -> tuple[Any, list[str]]:
    """The district's boundary in WGS84 (every polygon of the file dissolved into one
    valid MultiPolygon) and notes on its CRS and repairs; :class:`FileError` for a file
    with no polygon or one that does not fall in China."""
    spec, notes = resolve_crs(src, crs)
    present = np.asarray([g for g in src.geoms if g is not None], dtype=object)
    parts, _ = polygon_parts(present) if len(present) else (np.zeros(0, dtype=object), None)
    if not len(parts):
        raise FileError(f"{src.name}: no polygon in it: a district boundary is a surface", field="geometry")
    with np.errstate(all="ignore"):
        wgs = geoms_to_wgs84(parts, spec)
    xy = shapely.get_coordinates(wgs)
    lon, lat = (float(np.median(xy[:, 0])), float(np.median(xy[:, 1]))) if np.isfinite(xy).all() else (np.nan, np.nan)
    if not (np.isfinite(xy).all() and in_china_rough(lon, lat)):
        src_xy = shapely.get_coordinates(parts)
        raise FileError(
            f"{src.name}: read in {spec.name}, the boundary does not fall in China "
            f"(at {lon:.6f}, {lat:.6f}): {crs_hint(src_xy[:, 0], src_xy[:, 1])}",
            field="crs",
        )
    invalid = ~shapely.is_valid(wgs)
    if invalid.any():
        reasons = sorted({shapely.is_valid_reason(g) for g in wgs[invalid]})
        wgs = np.asarray([repair(g) if bad else g for g, bad in zip(wgs, invalid)], dtype=object)
        notes.append(f"{int(invalid.sum())} invalid polygon(s) repaired by make_valid ({'; '.join(reasons[:3])})")
    merged = shapely.union_all(wgs) if len(wgs) > 1 else wgs[0]
    merged_parts, _ = polygon_parts([merged])
    return shapely.multipolygons(merged_parts), notes


def check_empty(session: Session) -> None:
    """:class:`Conflict` naming the district(s) the database holds, if any."""
    existing = store.districts(session.connection())
    if existing:
        held = ", ".join(f"{c} ({n})" for c, n in existing)
        raise Conflict(
            f"the database already holds the district {held}: init starts an empty deployment only", field="district"
        )


def start_district(
    session: Session,
    *,
    code: str,
    boundary: SourceFile,
    crs: str | None = None,
    name: str | None = None,
    admin_username: str = "admin",
    admin_password_hash: str,
) -> dict[str, Any]:
    """Start the deployment of district ``code`` in the session's transaction (the caller
    commits). Refuses (:class:`Conflict`) when the database already holds a district or
    the admin account exists. Returns what was set up."""
    code = district_code(code)
    conn = session.connection()
    check_empty(session)
    if not admin_username or not admin_username.strip():
        raise InvalidInput("the admin's username is empty", field="admin")
    if users.active_user(session, admin_username) is not None:
        raise Conflict(f"an account {admin_username!r} exists already", field="admin")
    name = (name or "").strip() or _name_from(boundary)
    if not name:
        raise InvalidInput(f"{boundary.name} does not name the district: give --name", field="name")
    geom, notes = district_boundary(boundary, crs)
    store.insert_areas(
        conn,
        [code],
        [name],
        ["district"],
        [None],
        shapely.to_wkb(shapely.set_srid(np.asarray([geom], dtype=object), 4326), hex=True, include_srid=True).tolist(),
    )
    roles = [r for (r,) in conn.execute(text("SELECT name FROM service_roles WHERE active ORDER BY position"))]
    if not roles:
        raise ConfigError(
            "no service roles: the migrations seed the default six (migration 0001); run gridbranch "
            "migrate on an empty database"
        )
    days = load_national_calendar(conn)
    # through the accounts' one way in, so that the first admin has its account_log row too
    accounts.create_account(
        session,
        actor=accounts.CLI_ACTOR,
        username=admin_username,
        password_hash=admin_password_hash,
        role="admin",
        area_code=code,
        display_name=f"{name}委组织部",
    )
    area_km2 = float(lonlat_area([geom])[0]) / 1e6
    return {
        "code": code,
        "name": name,
        "area_km2": area_km2,
        "parts": int(shapely.get_num_geometries(geom)),
        "roles": roles,
        "calendar_days": days,
        "admin": admin_username,
        "notes": notes,
    }

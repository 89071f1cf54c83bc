"""Imports through the web map (数据导入): upload a file of areas, grids, members,
branches, departments, categories or registrations, read its dry run's report (and, for
boundaries, the preview of what it would change on the map), then commit it.

District and street admins only, within their area (``ingest.uploads`` refuses, row by
row, what lies outside a street admin's street). The importers are the command line's;
the file is streamed to disk (``geo_api.imports``), checked in a worker thread, kept
until committed or expired, and the commit runs the dry run again inside its
transaction: what it writes is what was previewed, or nothing (409).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from geo_api.deps import Caller, ScopedImport, SessionDep, require_roles
from geo_api.imports import new_id
from geo_api.responses import GEOJSON, problems
from ingest import uploads
from layers import imports as store
from layers.codes import level_of
from layers.errors import Conflict, Forbidden, GridbranchError, InvalidInput, NotFound

router = APIRouter(prefix="/v1/imports", tags=["imports"], responses=problems(403, 404, 409, 413))
Admins = Annotated[Caller, require_roles("admin")]
Kind = Literal["areas", "grids", "members", "branches", "departments", "categories", "registrations"]


class ImportPublic(BaseModel):
    """An import: its file, the state of its dry run and the dry run's report, or the
    commit's result."""

    id: str
    kind: str
    filename: str
    size_bytes: int
    options: dict[str, Any]
    status: str = Field(description="checking, ready, failed, committed or expired")
    phase: str | None = Field(description="while checking: queued, reading, checking, comparing, preview")
    progress: float = Field(description="share of the dry run done, 0–1")
    report: dict[str, Any] | None = Field(
        description="the dry run's report: counts, problems or rejected rows "
        "(by number and code, no names or phones), `committable`"
    )
    error: dict[str, Any] | None = Field(
        description="why the file cannot be imported (a problem detail with `detail_zh`)"
    )
    result: dict[str, Any] | None = Field(description="what the commit wrote")
    kept: bool = Field(description="whether the file is still kept (another dry run may be asked: /check)")
    created_at: datetime
    expires_at: datetime
    committed_at: datetime | None


def _public(request: Request, row: dict) -> ImportPublic:
    kept = row["status"] in store.OPEN and _uploads(request).file(row["id"], row["filename"]).is_file()
    return ImportPublic(**{k: row[k] for k in ImportPublic.model_fields if k != "kept"}, kept=kept)


def _uploads(request: Request):
    return request.app.state.uploads


def _district_or_street(caller: Caller) -> str:
    if not caller.area_code or level_of(caller.area_code) not in ("district", "street"):
        raise Forbidden(
            "imports are for admins of the district or of a street",
            field="role",
            detail_zh="数据导入仅限区级和街道管理员",
        )
    return caller.area_code


#: A new generation of grids: when it takes effect, and whether grids it lacks retire.
Effective = Annotated[
    str | None,
    Query(
        max_length=40,
        description="grids: the day (2027-01-01, China time) or instant the new generation takes "
        "effect; default: when committed (the CLI's --effective)",
    ),
]
RetireMissing = Annotated[
    bool,
    Query(description="grids: retire the grids of the file's communities that it lacks (--retire-missing)"),
]


def _ticked(fields: dict, name: str) -> bool:
    """A form's checkbox or flag field set."""
    return str(fields.get(name, "")).lower() in ("1", "true", "on")


def _sweep(request: Request, session) -> None:
    _uploads(request).sweep(session)
    session.commit()


@router.post(
    "",
    status_code=202,
    response_model=ImportPublic,
    responses=problems(422),
    summary="Upload a file for import: its dry run starts (district and street admins)",
    # the raw body; a multipart/form-data body with the part `file` (its other parts
    # the query's options) is read too
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "the file itself (or multipart/form-data with the part `file`)",
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def create_import(
    request: Request,
    session: SessionDep,
    caller: Admins,
    kind: Annotated[Kind | None, Query(description="what the file holds (or the form field kind)")] = None,
    crs: Annotated[
        str | None,
        Query(max_length=64, description="the file's CRS when it does not say (wgs84, gcj02, bd09, cgcs2000, EPSG:n)"),
    ] = None,
    map: Annotated[str | None, Query(max_length=1000, description="columns: key=列名,… as the CLI's --map")] = None,
    layer: Annotated[str | None, Query(max_length=200, description="the layer or sheet to read")] = None,
    encoding: Annotated[str | None, Query(max_length=32, description="text encoding when not detected")] = None,
    repair: Annotated[bool, Query(description="boundaries: repair invalid geometries (make_valid)")] = False,
    effective: Effective = None,
    retire_missing: RetireMissing = False,
    filename: Annotated[str | None, Query(max_length=255, description="the file's name (a raw body)")] = None,
) -> ImportPublic:
    area = _district_or_street(caller)
    if kind is not None:
        uploads.allowed_kind(kind, area)  # before a byte is read
    ups = _uploads(request)
    id_ = new_id()
    given = {
        "kind": kind,
        "crs": crs,
        "map": map,
        "layer": layer,
        "encoding": encoding,
        "effective": effective,
        "filename": filename,
    }
    name, size, fields = await ups.receive(request, id_, given)
    try:
        values = {**{k: v for k, v in fields.items() if v != ""}, **{k: v for k, v in given.items() if v}}
        kind_ = values.get("kind")
        if not kind_:
            raise InvalidInput("kind is required (query or form field)", field="kind", detail_zh="请选择数据类型")
        uploads.allowed_kind(kind_, area)
        options = uploads.Options(
            crs=values.get("crs"),
            map=values.get("map"),
            layer=values.get("layer"),
            encoding=values.get("encoding"),
            repair=repair or _ticked(fields, "repair"),
            effective=values.get("effective"),
            retire_missing=retire_missing or _ticked(fields, "retire_missing"),
        ).checked(kind_)
        await run_in_threadpool(uploads.check_file, kind_, ups.file(id_, name), name)

        def record() -> dict:
            _sweep(request, session)
            ttl = request.app.state.settings.imports.ttl_minutes * 60
            row = store.create_import(
                session,
                id=id_,
                username=caller.username,
                area_code=area,
                kind=kind_,
                options=options.as_dict(),
                filename=name,
                size_bytes=size,
                ttl_s=ttl,
            )
            session.commit()
            return row

        row = await run_in_threadpool(record)
    except BaseException:
        ups.remove(id_)
        raise
    ups.submit(request.app, id_)
    return _public(request, row)


@router.get(
    "/{import_id}",
    response_model=ImportPublic,
    summary="An import: its dry run's state and progress, its report, or the commit's result",
)
def get_import(request: Request, session: SessionDep, caller: Admins, import_id: ScopedImport) -> ImportPublic:
    _sweep(request, session)
    return _public(request, store.import_row(session, import_id))


@router.get(
    "/{import_id}/preview",
    response_class=FileResponse,
    responses={
        200: {
            "content": {GEOJSON: {}},
            "description": "GeoJSON: each feature by `action` (add, "
            "change, unchanged, reject, absent) and the gaps and overlaps (gap, overlap)",
        }
    },
    summary="Boundaries: what the import would change on the map (GeoJSON)",
)
def preview(request: Request, session: SessionDep, caller: Admins, import_id: ScopedImport):
    _sweep(request, session)
    row = store.import_row(session, import_id)
    path: Path = _uploads(request).preview_path(import_id)
    if row["status"] != "ready" or not path.is_file():
        raise NotFound(
            f"import {import_id} has no preview ({row['status']})",
            field="import_id",
            detail_zh="这次导入没有可预览的内容",
        )
    return FileResponse(path, media_type=GEOJSON)


@router.post(
    "/{import_id}/check",
    status_code=202,
    response_model=ImportPublic,
    responses=problems(422),
    summary="Check an uploaded file again, as another kind or with other options (another CRS)",
)
def check_again(
    request: Request,
    session: SessionDep,
    caller: Admins,
    import_id: ScopedImport,
    kind: Annotated[Kind | None, Query(description="what the file holds; default as before")] = None,
    crs: Annotated[str | None, Query(max_length=64, description="the file's CRS; empty: the file's own")] = None,
    map: Annotated[str | None, Query(max_length=1000, description="columns: key=列名,…")] = None,
    layer: Annotated[str | None, Query(max_length=200)] = None,
    encoding: Annotated[str | None, Query(max_length=32)] = None,
    repair: Annotated[bool, Query(description="boundaries: repair invalid geometries")] = False,
    effective: Effective = None,
    retire_missing: RetireMissing = False,
) -> ImportPublic:
    _sweep(request, session)
    area = _district_or_street(caller)
    ups = _uploads(request)
    row = store.import_row(session, import_id, lock=True)
    path = ups.file(import_id, row["filename"])
    if row["status"] not in ("ready", "failed") or not path.is_file():
        raise Conflict(
            f"import {import_id} cannot be checked again ({row['status']}): upload the file again",
            field="import_id",
            detail_zh="无法重新预检（文件已不在）：请重新上传",
        )
    kind_ = kind or row["kind"]
    uploads.allowed_kind(kind_, area)
    uploads.check_file(kind_, path, row["filename"])
    options = uploads.Options(
        crs=crs or None,
        map=map or None,
        layer=layer or None,
        encoding=encoding or None,
        repair=repair,
        effective=effective or None,
        retire_missing=retire_missing,
    ).checked(kind_)
    store.restart_check(session, import_id, kind=kind_, options=options.as_dict())
    session.commit()
    ups.submit(request.app, import_id)
    return _public(request, store.import_row(session, import_id))


@router.post(
    "/{import_id}/commit",
    response_model=ImportPublic,
    responses=problems(422),
    summary="Write an import as its dry run showed it; again: the same result",
)
def commit_import(request: Request, session: SessionDep, caller: Admins, import_id: ScopedImport) -> ImportPublic:
    _sweep(request, session)
    area = _district_or_street(caller)
    ups = _uploads(request)
    row = store.import_row(session, import_id, lock=True)  # a second commit waits for the first, then answers it
    if row["status"] == "committed":
        return _public(request, row)
    if row["status"] != "ready":
        why = {
            "checking": ("its dry run is not finished", "预检尚未完成"),
            "failed": ("its file cannot be imported", "文件无法导入"),
            "expired": ("it expired: upload the file again", "已过期，请重新上传文件"),
        }[row["status"]]
        raise Conflict(f"import {import_id} cannot be committed: {why[0]}", field="import_id", detail_zh=why[1])
    report = row["report"] or {}
    settings = request.app.state.settings
    try:
        result = uploads.commit(
            session,
            row["kind"],
            ups.file(import_id, row["filename"]),
            uploads.Options.from_dict(row["options"]),
            scope_code=area,
            fingerprint=report.get("fingerprint"),
            actor=f"import:{caller.username}",
            thresholds=settings.coverage.thresholds(),
            tolerance_m=settings.locate.tolerance_m,
            edge_m=settings.locate.edge_m,
        )
    except Conflict:
        # the data moved since the dry run: check the file again, and say so
        session.rollback()
        store.restart_check(session, import_id)
        session.commit()
        ups.submit(request.app, import_id)
        raise
    except GridbranchError:
        session.rollback()
        raise
    store.mark_committed(session, import_id, result)
    session.commit()
    ups.remove(import_id)  # committed: the file is not needed any more
    return _public(request, store.import_row(session, import_id))

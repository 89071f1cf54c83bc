"""Uploads of the web map's import (数据导入): the file streamed to disk, its dry run in
a worker thread, and the file's end.

Each upload gets a folder of its own under the imports directory
(``GRIDBRANCH_IMPORTS_DIR``, mode 0700), holding the file (mode 0600, written as it
arrives: a request body is never held in memory) and, for boundaries, the preview
(GeoJSON). Both are deleted once the import is committed or expires — expiry by the
service's clock, swept whenever imports are created or read — and when the dry run finds
the file unreadable. The state lives in the database (:mod:`layers.imports`), so any
worker process answers for any import.

The dry run runs in a thread of this process (one at a time: the importers are CPU-bound
and the machine small), writing its phase and progress as it goes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from starlette.requests import Request

from geo_api.errors import ContentTooLarge
from ingest import uploads
from layers import imports as store
from layers.clock import SYSTEM
from layers.errors import GridbranchError, InvalidInput

log = logging.getLogger("gridbranch")

#: Form fields other than the file, and how long each may be.
FIELDS = {
    "kind": 32,
    "crs": 64,
    "map": 1000,
    "layer": 200,
    "encoding": 32,
    "repair": 8,
    "effective": 40,
    "retire_missing": 8,
    "filename": 255,
}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]")


def new_id() -> str:
    return secrets.token_hex(16)


def safe_name(name: str | None) -> str:
    """The file's own name (for messages and its type), without folders or characters no
    file system takes; ``upload`` when nothing is left."""
    name = unicodedata.normalize("NFC", (name or "").replace("\\", "/").rsplit("/", 1)[-1])
    name = _UNSAFE.sub("_", name).strip(" .")
    if len(name) > 120:
        stem, dot, suffix = name.rpartition(".")
        name = (stem[:110] + dot + suffix[:9]) if dot else name[:120]
    return name or "upload"


class Uploads:
    """The imports directory and the dry-run thread of one app."""

    def __init__(self, folder: Path, max_bytes: int, stray_after_s: float):
        self.root = folder
        self.max_bytes = max_bytes
        self.stray_after_s = stray_after_s
        self._executor: ThreadPoolExecutor | None = None

    # ---- files ----------------------------------------------------------------------------

    def folder(self, id: str) -> Path:
        return self.root / id

    def file(self, id: str, filename: str) -> Path:
        return self.folder(id) / safe_name(filename)

    def preview_path(self, id: str) -> Path:
        return self.folder(id) / "preview.geojson"

    def remove(self, id: str) -> None:
        shutil.rmtree(self.folder(id), ignore_errors=True)

    def _make_folder(self, id: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        folder = self.folder(id)
        folder.mkdir(mode=0o700)
        return folder

    async def receive(self, request: Request, id: str, given: dict[str, str | None]) -> tuple[str, int, dict]:
        """Stream the request's file into the import's folder: a ``multipart/form-data``
        body's part ``file`` (its other parts: the fields of :data:`FIELDS`), or any other
        body as the file itself (named by ``given["filename"]``). Returns the file's name,
        its size and the form fields."""
        self._make_folder(id)
        try:
            content_type = request.headers.get("content-type", "")
            if content_type.lower().startswith("multipart/form-data"):
                return await self._multipart(request, id, content_type, given)
            name = safe_name(given.get("filename"))
            if not given.get("filename"):
                raise InvalidInput(
                    "name the file: the query parameter filename (or send multipart/form-data)",
                    field="filename",
                    detail_zh="缺少文件名（filename）",
                )
            size = await self._write(request.stream(), self.file(id, name))
            return name, size, {}
        except BaseException:
            self.remove(id)
            raise

    async def _write(self, chunks, path: Path) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_bytes:
                    raise ContentTooLarge(self.max_bytes, "GRIDBRANCH_IMPORTS_MAX_BYTES")
                out.write(chunk)
        return size

    async def _multipart(self, request: Request, id: str, content_type: str, given: dict) -> tuple[str, int, dict]:
        # python-multipart's streaming parser, as Starlette's own form parsing uses it, but
        # writing the file part straight to the import's folder (Starlette spools uploads
        # to the system's temporary directory)
        from python_multipart.multipart import MultipartParser, parse_options_header

        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise InvalidInput(
                "multipart/form-data without a boundary",
                field="body",
                detail_zh="上传格式有误（multipart 缺少 boundary）",
            )
        state: dict[str, Any] = {
            "headers": {},
            "field": b"",
            "value": b"",
            "part": None,
            "out": None,
            "name": None,
            "size": 0,
            "fields": {},
            "files": 0,
        }

        def on_part_begin():
            state["headers"] = {}

        def on_header_field(data, start, end):
            state["field"] += data[start:end]

        def on_header_value(data, start, end):
            state["value"] += data[start:end]

        def on_header_end():
            state["headers"][state["field"].lower()] = state["value"]
            state["field"] = state["value"] = b""

        def on_headers_finished():
            _, options = parse_options_header(state["headers"].get(b"content-disposition", b""))
            part = options.get(b"name", b"").decode("utf-8", "replace")
            state["part"] = part
            if part == "file":
                state["files"] += 1
                if state["files"] > 1:
                    raise InvalidInput("one file per import", field="file", detail_zh="每次只能导入一个文件")
                state["name"] = safe_name(
                    options.get(b"filename", b"").decode("utf-8", "replace") or given.get("filename")
                )
                fd = os.open(self.file(id, state["name"]), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                state["out"] = os.fdopen(fd, "wb")
            elif part in FIELDS:
                state["fields"][part] = b""
            else:
                raise InvalidInput(f"unknown form field {part!r}; fields: file, {', '.join(FIELDS)}", field=part)

        def on_part_data(data, start, end):
            if state["part"] == "file":
                state["size"] += end - start
                if state["size"] > self.max_bytes:
                    raise ContentTooLarge(self.max_bytes, "GRIDBRANCH_IMPORTS_MAX_BYTES")
                state["out"].write(data[start:end])
            else:
                value = state["fields"][state["part"]] + data[start:end]
                if len(value) > FIELDS[state["part"]] * 4:
                    raise InvalidInput(f"{state['part']}: too long", field=state["part"])
                state["fields"][state["part"]] = value

        def on_part_end():
            if state["out"] is not None:
                state["out"].close()
                state["out"] = None

        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
            },
        )
        try:
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
        except GridbranchError:
            raise
        except ContentTooLarge:
            raise
        except Exception as exc:  # python-multipart's parse errors: the body is not multipart
            raise InvalidInput(
                f"the multipart body cannot be read: {exc}",
                field="body",
                detail_zh="上传内容无法解析（multipart 格式有误）",
            ) from None
        finally:
            if state["out"] is not None:
                state["out"].close()
        if state["name"] is None:
            raise InvalidInput("no file: send it as the form field file", field="file", detail_zh="没有收到文件")
        fields = {}
        for k, v in state["fields"].items():
            try:
                fields[k] = v.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidInput(f"{k}: not UTF-8 text", field=k) from None
        return state["name"], state["size"], fields

    # ---- the dry run ------------------------------------------------------------------------

    def submit(self, app, id: str) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gridbranch-import")
        self._executor.submit(self.check, app, id)

    def drain(self) -> None:
        """Wait for the dry runs submitted so far (tests; the worker runs one at a time)."""
        if self._executor is not None:
            self._executor.submit(lambda: None).result()

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def check(self, app, id: str) -> None:
        """The dry run of import ``id`` (in the worker thread): its report (and preview),
        or the problem that makes its file unreadable (the file is then deleted)."""
        maker = app.state.sessionmaker
        settings = app.state.settings
        try:
            with maker() as session:
                row = store.import_row(session, id)
            if row is None:
                self.remove(id)  # its request was rolled back: nothing will ever ask for it
                return
            if row["status"] != "checking":
                return  # expired meanwhile

            def progress(phase: str, share: float) -> None:
                with maker() as s:
                    store.set_progress(s, id, phase, share)
                    s.commit()

            error = report = None
            with maker() as session:
                try:
                    checked = uploads.dry_run(
                        session,
                        row["kind"],
                        self.file(id, row["filename"]),
                        uploads.Options.from_dict(row["options"]),
                        scope_code=row["area_code"],
                        thresholds=settings.coverage.thresholds(),
                        tolerance_m=settings.locate.tolerance_m,
                        edge_m=settings.locate.edge_m,
                        progress=progress,
                    )
                except InvalidInput as exc:
                    error = uploads.zh_error(exc, row["filename"])
                finally:
                    session.rollback()
            if error is None:
                report = {
                    **checked.report,
                    "committable": checked.committable,
                    "fingerprint": checked.fingerprint,
                    "preview": checked.preview is not None,
                }
                if checked.preview is not None:
                    self._write_preview(id, checked.preview)
            if error is not None and row["kind"] in store.PERSONAL:
                # a file with personal data that cannot be read: nothing to keep it for (a
                # boundary file waits for a dry run with other options, or its expiry)
                self.remove(id)
            with maker() as session:
                done = store.finish_check(session, id, report=report, error=error)
                session.commit()
            if not done:
                self.remove(id)  # expired while checked
        except Exception:
            log.exception("the dry run of import %s failed", id)
            try:
                with maker() as session:
                    store.finish_check(
                        session,
                        id,
                        error={
                            "status": 500,
                            "title": "Internal error",
                            "detail": "the dry run failed; it has been logged",
                            "detail_zh": "预检出错，已记录；请稍后重试",
                            "field": None,
                        },
                    )
                    session.commit()
            finally:
                self.remove(id)

    def _write_preview(self, id: str, preview: dict) -> None:
        fd = os.open(self.preview_path(id), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(preview, out, ensure_ascii=False, separators=(",", ":"))

    # ---- expiry -----------------------------------------------------------------------------

    def sweep(self, session) -> None:
        """Expire the imports whose time ran out (the clock) and delete their files, and
        the folders nothing will read again; the caller commits."""
        for id in store.expire_imports(session):
            self.remove(id)
        self._sweep_strays(session)

    def _sweep_strays(self, session) -> None:
        """Delete the folders of imports that are no longer open (a process that died
        between its commit and the deletion) and, once older than ``stray_after_s``, those
        with no import at all: an upload whose process died before it was recorded.
        Younger rowless folders are uploads still arriving. Their age is the folder's
        mtime against the wall clock — the file system's own time, which is all such a
        folder has (the service clock may stand elsewhere in tests)."""
        try:
            folders = [p for p in self.root.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return
        if not folders:
            return
        states = store.import_states(session, [p.name for p in folders])
        now = SYSTEM.now().timestamp()  # the file system's time is the wall clock's
        for p in folders:
            state = states.get(p.name)
            if state in store.OPEN:
                continue
            try:
                stray = state is not None or now - p.stat().st_mtime > self.stray_after_s
            except FileNotFoundError:
                continue
            if stray:
                log.warning("deleting the import folder %s, which no open import owns", p.name)
                shutil.rmtree(p, ignore_errors=True)

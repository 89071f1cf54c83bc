"""The district's own tables from CSV or XLSX: the member roster (党员花名册), the
branches (党支部), the functional departments (职能部门) and the event categories.

Each import is the registrations import's kind (``ingest.registrations``): a **dry run**
by default — every row is read and checked and what the file would change is counted
against the stored data in a transaction that is rolled back — and ``--commit`` writes
it in ONE transaction, loading the rows through COPY into a staging table and writing
set-based. Only what differs is written and a statement that would touch no row is not
run, so the same file imported twice changes nothing (not even the data versions).
Every row is imported or rejected with its reason, and a rejects file is always
written (see :func:`ingest.tables.write_rejects`): it holds the rejected rows' own
cells, the importer's own input, and nothing read from the database.

Columns are found by name — English keys or the Chinese headers rosters carry
(党员编号, 姓名, 手机号码, 所在支部, 党员类别, 经度, 纬度, 坐标系 …), see
:data:`SPECS` — or named with ``--map key=列名,…``. The text rules are the API's
(:mod:`layers.textfields`).

Members: ``number`` (党员编号, the key), ``name``, ``phone``, ``branch`` (the work-unit
branch 组织关系所在支部, by code or by name), ``status`` (in_service/floating/retired/
community, or 在职/流动/退休/社区党员), and optionally the residence ``lon``, ``lat`` with
its ``crs`` (the API's vocabulary: wgs84, gcj02, bd09, cgcs2000, EPSG:n; ``--crs`` for
rows that leave it empty). An empty phone, branch or status cell leaves what is stored
(a new member's status is then in_service); a member absent from the file is kept. A
residence that differs from the member's current one replaces it, unless the member is
registered at the current one: then it is kept and the row reported (registrations move
by re-registering, not silently). Members are locked in id order before anything is
written, as every API write on a member starts (``layers.registrations``).

Branches: ``code``, ``name``, ``kind`` (grid/community/work_unit or 网格党支部/社区党组织/
单位党支部), ``secretary`` and ``secretary_phone`` (both or neither), ``community`` (its
12-digit code; required but for work-unit branches), ``grids`` (grid codes separated by
``;`` ``、`` ``,`` or spaces: those it covers, all in its community; a grid branch's
grids may have no other active grid branch) and its activity ``site`` as
``lon``/``lat``/``crs`` (within 50 m of its community). Departments: ``code``, ``name``.
Categories: ``code``, ``name``, ``department`` (code or name), ``time_limit`` (working
hours), ``role`` (the service role concerned, code or name, optional), ``warn_share``
(the share of the time limit after which it warns, optional) and ``public_space`` (是/否:
whether anonymous Open311 readers see its events' exact location; optional, an empty cell
keeps what is stored, new categories default to 否).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ingest import tables
from ingest.tables import Row, Table, TablePlan
from layers import textfields
from layers.branches import SITE_SLACK_M, check_contact
from layers.crs import parse_crs
from layers.errors import InvalidInput
from layers.gcpause import no_gc
from layers.models import BRANCH_KINDS, MEMBER_STATUSES
from layers.points import points_from_columns


@dataclass(frozen=True)
class Spec:
    kind: str
    #: key → other names its column goes by (case-insensitive; the key itself too)
    candidates: dict[str, tuple[str, ...]]
    required: tuple[str, ...]


_COORDS = {
    "lon": ("经度", "x", "longitude", "居住地经度"),
    "lat": ("纬度", "y", "latitude", "居住地纬度"),
    "crs": ("坐标系", "坐标系统"),
}
SPECS = {
    "members": Spec(
        "members",
        {
            "number": ("member_number", "member_id", "党员编号", "编号"),
            "name": ("姓名", "党员姓名"),
            "phone": ("手机号码", "手机号", "手机", "联系电话", "电话"),
            "branch": ("work_branch", "组织关系所在支部", "所在支部", "所在党支部", "党支部", "支部", "支部编码"),
            "status": ("党员类别", "党员类型", "类别", "状态", "党员状态"),
            **_COORDS,
        },
        ("number", "name"),
    ),
    "branches": Spec(
        "branches",
        {
            "code": ("支部编码", "编码", "代码"),
            "name": ("支部名称", "名称"),
            "kind": ("支部类型", "类型"),
            "secretary": ("secretary_name", "书记", "书记姓名", "支部书记"),
            "secretary_phone": ("书记电话", "书记手机", "书记联系电话"),
            "community": ("community_code", "社区编码", "所属社区", "社区"),
            "grids": ("覆盖网格", "网格编码", "网格"),
            **_COORDS,
        },
        ("code", "name", "kind"),
    ),
    "departments": Spec(
        "departments",
        {
            "code": ("部门编码", "编码", "代码"),
            "name": ("部门名称", "名称", "部门"),
        },
        ("code", "name"),
    ),
    "categories": Spec(
        "categories",
        {
            "code": ("类别编码", "事件类别编码", "编码", "代码"),
            "name": ("类别名称", "事件类别", "名称"),
            "department": ("department_code", "责任部门", "处置部门", "部门编码", "部门"),
            "time_limit": ("time_limit_hours", "处置时限", "时限", "时限(工作小时)", "时限（工作小时）"),
            "role": ("service_role", "role_code", "服务角色", "角色"),
            "warn_share": ("预警比例",),
            "public_space": ("公共空间", "是否公共空间", "公共部位", "公共区域"),
        },
        ("code", "name", "department", "time_limit"),
    ),
}
KINDS = tuple(SPECS)

STATUS_WORDS = {
    "in_service": ("在职", "在职党员"),
    "floating": ("流动", "流动党员"),
    "retired": ("退休", "退休党员", "离退休", "离退休党员"),
    "community": ("社区", "社区党员"),
}
#: Yes and no as a category's 公共空间 column says them (lower-cased).
FLAG_WORDS = {True: ("是", "y", "yes", "true", "1", "公共空间"), False: ("否", "n", "no", "false", "0")}
BRANCH_KIND_WORDS = {
    "grid": ("网格", "网格党支部", "网格支部"),
    "community": ("社区", "社区党组织", "社区党支部", "社区党委", "社区党总支"),
    "work_unit": ("单位", "单位党支部", "机关党支部", "机关", "在职单位党支部"),
}
assert set(STATUS_WORDS) == set(MEMBER_STATUSES) and set(BRANCH_KIND_WORDS) == set(BRANCH_KINDS)
#: A code (branch, department, category): letters, digits and ``. _ / -``, 32 at most.
CODE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._/-]{0,31}$")
_GRID_SPLIT = re.compile(r"[;；,，、\s]+")
#: Longest time limit (working hours) a category may have: the column's precision.
TIME_LIMIT_MAX = 999_999.99
#: Cells checked only as text (no rule of their own) are at most this long.
CELL_MAX = 64


def _vocabulary(words: dict[str, tuple[str, ...]]) -> dict[str, str]:
    out = {k.lower(): k for k in words}
    out.update({w: k for k, ws in words.items() for w in ws})
    return out


_STATUSES = _vocabulary(STATUS_WORDS)
_BRANCH_KINDS = _vocabulary(BRANCH_KIND_WORDS)


# ---- reading and checking ---------------------------------------------------------------------


def hint(kind: str) -> str:
    spec = SPECS[kind]
    return ",".join(spec.candidates)


def read(path, kind: str, *, encoding: str | None = None, sheet: str | None = None, data: bytes | None = None) -> Table:
    return tables.read_table(path, header_hint=hint(kind), encoding=encoding, sheet=sheet, data=data)


def _plain_problem(value: str, label: str, max_length: int) -> str | None:
    """Why a cell that only names something looked up (a status, a CRS, a branch) is
    refused: no text, too long, formula-like; None when it is fine."""
    problem = textfields.text_problem(value)
    if problem:
        return f"{label} contains {problem}"
    if len(value) > max_length:
        return f"{label} has {len(value)} characters; at most {max_length}"
    if textfields.looks_like_formula(value) and not tables.NUMBER.match(value):
        return f"{label} {textfields.formula_problem(value)}"
    return None


class _Row:
    """One row's cells by key, collecting the problems found in it."""

    __slots__ = ("cells", "labels", "problems")

    def __init__(self, fields: list[str], index: dict[str, int], labels: dict[str, str]):
        self.cells = {k: fields[i].strip() for k, i in index.items()}
        self.labels = labels
        self.problems: list[str] = []

    def get(self, key: str) -> str:
        return self.cells.get(key, "")

    def check(self, rule, key: str, *args, **kwargs) -> Any:
        """``rule(value, field)`` of :mod:`layers.textfields`; None (and the problem kept)
        when it refuses."""
        try:
            return rule(self.cells[key], self.labels[key], *args, **kwargs)
        except InvalidInput as exc:
            self.problems.append(exc.detail)
            return None

    def plain(self, key: str, max_length: int = CELL_MAX) -> str | None:
        """A cell that only names something looked up; None when empty or refused (see
        :func:`_plain_problem`)."""
        value = self.cells.get(key, "")
        if not value:
            return None
        problem = _plain_problem(value, self.labels[key], max_length)
        if problem:
            self.problems.append(problem)
            return None
        return value

    def code(self, key: str) -> str | None:
        value = self.plain(key)
        if value is None:
            if not self.cells.get(key) and key in self.labels:
                self.problems.append(f"{self.labels[key]} is missing")
            return None
        coded = tables.code(value)  # (not None: value is not empty)
        if coded is None or not CODE.match(coded):
            self.problems.append(
                f"{self.labels[key]} must be 1–32 letters, digits or . _ / - (starting with a "
                f"letter or digit), got {(coded or value)[:40]!r}"
            )
            return None
        return coded


def _labels(columns: dict[str, str]) -> dict[str, str]:
    """How a field is named in reasons: its key, and the file's column when it differs."""
    return {k: k if c == k else f"{k} ({c})" for k, c in columns.items()}


def _points(
    rows: list[Row], index: dict[str, int], labels: dict[str, str], default_crs: str
) -> tuple[dict[int, tuple], dict[int, str]]:
    """The WGS84 point of every row with coordinates (by position in ``rows``): (lon,
    lat, crs name, x, y); and the reason for rows whose coordinates are refused."""
    i_lon, i_lat, i_crs = index.get("lon"), index.get("lat"), index.get("crs")
    out: dict[int, tuple] = {}
    errors: dict[int, str] = {}
    if i_lon is None and i_lat is None:
        return out, errors
    idx, xs, ys, crs = [], [], [], []
    crs_problems: dict[str, str | None] = {}
    problem: str | None
    for k, row in enumerate(rows):
        f = row.fields
        x = f[i_lon].strip() if i_lon is not None else ""
        y = f[i_lat].strip() if i_lat is not None else ""
        if not x and not y:
            continue
        c = f[i_crs].strip() if i_crs is not None else ""
        if c:
            if c not in crs_problems:
                crs_problems[c] = _plain_problem(c, labels["crs"], 32)
            problem = crs_problems[c]
            if problem:
                errors[k] = problem
                continue
        if not (x and y):
            errors[k] = f"{labels['lat' if x else 'lon']} is missing (the other coordinate is given)"
            continue
        idx.append(k)
        xs.append(x)
        ys.append(y)
        crs.append(c or None)
    if not idx:
        return out, errors
    batch = points_from_columns(idx, xs, ys, crs, default_crs=default_crs)
    names: dict[str, str] = {}
    lon, lat, bx, by = batch.lon.tolist(), batch.lat.tolist(), batch.x.tolist(), batch.y.tolist()
    for j, k in enumerate(idx):
        if j in batch.errors:
            errors[k] = batch.errors[j]["detail"]
            continue
        given = batch.crs[j] or default_crs
        if given not in names:
            names[given] = parse_crs(given).name
        out[k] = (lon[j], lat[j], names[given], bx[j], by[j])
    return out, errors


def plan(
    session: Session, kind: str, table: Table, *, mapping: dict[str, str] | None = None, default_crs: str = "wgs84"
) -> TablePlan:
    """Check every row of ``table`` for an import of ``kind``; nothing is written. A file
    whose columns cannot be found gives a plan with ``file_error``."""
    spec = SPECS[kind]
    out = TablePlan(kind, table.name, table.header, total=len(table.rows))
    try:
        parse_crs(default_crs)
        out.columns = tables.resolve_columns(table.name, table.header, spec.candidates, spec.required, mapping or {})
    except InvalidInput as exc:
        out.file_error = exc.detail
        return out
    if table.encoding:
        out.notes.append(f"read as {table.kind}, {table.encoding}")
    labels = _labels({k: out.columns.get(k, k) for k in spec.candidates})
    index = {k: table.header.index(c) for k, c in out.columns.items()}
    readable: list[Row] = []
    first = index[spec.required[0]]
    with no_gc():  # hundreds of thousands of small objects, no cycles
        for row in table.rows:
            if row.problem:
                key = row.fields[first] if first < len(row.fields) else None
                out.reject(row, key or None, row.problem)
            else:
                readable.append(row)
        _CHECKS[kind](session, out, readable, index, labels, default_crs)
    return out


def _finish(out: TablePlan, row: Row, r: _Row, key: str | None, good: Any) -> None:
    if r.problems:
        out.reject(row, key, "; ".join(r.problems))
    else:
        out.good.append(good)


def _once(seen: dict[str, int], r: _Row, key: str, value: str | None, row: int) -> None:
    """A value (a member number, a code, a name) the file may hold once."""
    if value is None:
        return
    if value in seen:
        r.problems.append(f"{r.labels[key]} {value} appears again (first on row {seen[value]})")
    else:
        seen[value] = row


def _lookup(r: _Row, key: str, by_code: dict[str, Any], by_name: dict[str, list[Any]], what: str) -> Any:
    """A stored thing named by its code or its name; None when the cell is empty or it is
    unknown (then the problem is kept)."""
    value = r.plain(key)
    if value is None:
        return None
    found = by_code.get(tables.code(value) or value)
    if found is not None:
        return found
    named = by_name.get(value, [])
    if len(named) == 1:
        return named[0]
    if named:
        r.problems.append(f"{r.labels[key]} {value!r}: {len(named)} {what}s have that name; give its code")
    else:
        r.problems.append(f"{r.labels[key]}: unknown {what} {value!r} (no {what} has that code or name)")
    return None


def _check_members(
    session: Session, out: TablePlan, rows: list[Row], index: dict[str, int], labels: dict[str, str], default_crs: str
) -> None:
    by_code: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    for id_, code, name in session.execute(text("SELECT id, code, name FROM branches")):
        by_code[code] = id_
        by_name.setdefault(name, []).append(id_)
    points, point_errors = _points(rows, index, labels, default_crs)
    seen: dict[str, int] = {}
    has = set(out.columns)
    number_rule, name_rule, phone_rule = textfields.member_number, textfields.name, textfields.phone
    # the common row, every cell of which the rules would take as it is, goes without
    # calling them (a roster has a million rows); any other row is checked rule by rule
    plain_number, plain_name = textfields.MEMBER_NUMBER.fullmatch, textfields.PLAIN_NAME.fullmatch
    plain_phone = textfields.PLAIN_MOBILE.fullmatch
    i_number, i_name = index["number"], index["name"]
    i_phone, i_branch, i_status = index.get("phone"), index.get("branch"), index.get("status")
    none = (None,) * 5
    good = out.good.append
    # text on the common path below, each checked value (or None) on the other
    number: str | None
    phone: str | None
    status: str | None
    branch: Any
    for i, row in enumerate(rows):
        f = row.fields
        number, name = f[i_number], f[i_name]
        phone = f[i_phone] if i_phone is not None else ""
        branch = f[i_branch] if i_branch is not None else ""
        status = f[i_status] if i_status is not None else ""
        if (
            plain_number(number)
            and number not in seen
            and plain_name(name)
            and (not phone or plain_phone(phone))
            and (not branch or branch in by_code)
            and (not status or status in _STATUSES)
            and i not in point_errors
        ):
            seen[number] = row.row
            good(
                (
                    row.row,
                    number,
                    name,
                    phone or None,
                    _STATUSES[status] if status else None,
                    by_code[branch] if branch else None,
                    *points.get(i, none),
                )
            )
            continue
        r = _Row(f, index, labels)
        cells = r.cells
        number = cells["number"]
        if number:
            number = r.check(number_rule, "number")
            _once(seen, r, "number", number, row.row)
        else:
            r.problems.append(f"{r.labels['number']} is missing")
            number = None
        name = r.check(name_rule, "name")
        phone = r.check(phone_rule, "phone") if "phone" in has and cells["phone"] else None
        branch = _lookup(r, "branch", by_code, by_name, "branch") if "branch" in has and cells["branch"] else None
        status = None
        if "status" in has and cells["status"]:
            word = r.plain("status")
            if word is not None:
                status = _STATUSES.get(word.lower()) or _STATUSES.get(word)
                if status is None:
                    r.problems.append(
                        f"{r.labels['status']} must be one of "
                        f"{', '.join(f'{k} ({w[0]})' for k, w in STATUS_WORDS.items())}, got {word!r}"
                    )
        if i in point_errors:
            r.problems.append(point_errors[i])
        p = points.get(i, (None,) * 5)
        _finish(out, row, r, number, (row.row, number, name, phone, status, branch, *p))


def _check_branches(
    session: Session, out: TablePlan, rows: list[Row], index: dict[str, int], labels: dict[str, str], default_crs: str
) -> None:
    communities: dict[str, int] = dict(
        session.execute(text("SELECT code, id FROM admin_areas WHERE level = 'community'")).all()
    )
    grids = {
        code: (gid, community)
        for code, gid, community in session.execute(
            text("SELECT code, id, community_id FROM grids WHERE gridbranch_live(retired_at)")
        )
    }
    # the active grid branch of each grid (by branch code), as stored
    held: dict[int, set[str]] = {}
    for gid, bcode in session.execute(
        text(
            "SELECT bg.grid_id, b.code FROM branch_grids bg JOIN branches b ON b.id = bg.branch_id "
            "WHERE b.kind = 'grid' AND b.active"
        )
    ):
        held.setdefault(gid, set()).add(bcode)
    points, point_errors = _points(rows, index, labels, default_crs)
    seen: dict[str, int] = {}
    taken: dict[int, tuple[str | None, int]] = {}  # grid id → (branch code, row) of a grid branch in this file
    todo = []
    for i, row in enumerate(rows):
        r = _Row(row.fields, index, labels)
        code = r.code("code")
        _once(seen, r, "code", code, row.row)
        name = r.check(textfields.name, "name")
        kind_word = r.plain("kind")
        kind = _BRANCH_KINDS.get(kind_word.lower()) or _BRANCH_KINDS.get(kind_word) if kind_word else None
        if kind_word and kind is None:
            r.problems.append(
                f"{r.labels['kind']} must be one of "
                f"{', '.join(f'{k} ({w[1]})' for k, w in BRANCH_KIND_WORDS.items())}, got {kind_word!r}"
            )
        elif not r.get("kind"):
            r.problems.append(f"{r.labels['kind']} is missing")
        try:
            secretary = check_contact(r.get("secretary") or None, r.get("secretary_phone") or None, "secretary")
        except InvalidInput as exc:
            r.problems.append(exc.detail)
            secretary = (None, None)
        community_code = r.code("community") if r.get("community") else None
        community = None
        if community_code is not None:
            community = communities.get(community_code)
            if community is None:
                r.problems.append(f"{r.labels['community']}: no community with code {community_code}")
        elif kind in ("grid", "community") and not r.get("community"):
            r.problems.append(f"{r.labels['community']} is missing (a {kind} branch belongs to a community)")
        codes = [c for c in _GRID_SPLIT.split(r.plain("grids", 4000) or "") if c]
        covered: list[tuple[str, int]] = []
        for c in codes:
            if c in {g for g, _ in covered}:
                r.problems.append(f"{r.labels['grids']}: grid {c} is listed twice")
            elif c not in grids:
                r.problems.append(f"{r.labels['grids']}: no current grid with code {c}")
            elif community is not None and grids[c][1] != community:
                r.problems.append(f"{r.labels['grids']}: grid {c} is not in community {community_code}")
            else:
                covered.append((c, grids[c][0]))
        if kind == "work_unit" and codes:
            r.problems.append(f"{r.labels['grids']}: a work-unit branch covers no grids")
        elif kind in ("grid", "community") and not codes and not r.problems:
            r.problems.append(f"{r.labels['grids']}: a {kind} branch covers at least one grid")
        if kind == "grid":
            for c, gid in covered:
                other = (held.get(gid, set()) - {code}) if code else set()
                if other:
                    r.problems.append(f"grid {c} already has the active grid branch {min(other)}")
                elif gid in taken and taken[gid][0] != code:
                    r.problems.append(
                        f"grid {c} is covered by the grid branch {taken[gid][0]} of row {taken[gid][1]} too"
                    )
        if i in point_errors:
            r.problems.append(point_errors[i])
        site = points.get(i)
        if site is not None and community is None:
            r.problems.append("a site needs the branch's community")
        if not r.problems and kind == "grid":
            for _, gid in covered:
                taken[gid] = (code, row.row)
        todo.append(
            (
                row,
                r,
                (
                    row.row,
                    code,
                    name,
                    kind,
                    *secretary,
                    community,
                    site[0] if site else None,
                    site[1] if site else None,
                    [g for _, g in covered],
                ),
            )
        )
    # sites within reach of their community, in one statement
    with_site = [(k, g) for k, (_, r, g) in enumerate(todo) if g[7] is not None and not r.problems]
    if with_site:
        far = (
            session.execute(
                text(
                    """SELECT k FROM unnest(CAST(:k AS int[]), CAST(:c AS int[]), CAST(:x AS float8[]), CAST(:y AS float8[]))
                   AS s(k, c, x, y) JOIN admin_areas a ON a.id = s.c
               WHERE NOT ST_DWithin(a.geom::geography, ST_SetSRID(ST_MakePoint(s.x, s.y), 4326)::geography, :m)"""
                ),
                {
                    "k": [k for k, _ in with_site],
                    "c": [g[6] for _, g in with_site],
                    "x": [g[7] for _, g in with_site],
                    "y": [g[8] for _, g in with_site],
                    "m": SITE_SLACK_M,
                },
            )
            .scalars()
            .all()
        )
        for k in far:
            row, r, g = todo[k]
            r.problems.append(
                f"the site ({g[7]:.6f}, {g[8]:.6f}) lies more than {SITE_SLACK_M:.0f} m outside "
                f"community {r.get('community')}"
            )
    for row, r, good in todo:
        _finish(out, row, r, good[1], good)


def _check_departments(
    session: Session, out: TablePlan, rows: list[Row], index: dict[str, int], labels: dict[str, str], default_crs: str
) -> None:
    stored: dict[str, str] = {name: code for name, code in session.execute(text("SELECT name, code FROM departments"))}
    codes: dict[str, int] = {}
    names: dict[str, int] = {}
    for row in rows:
        r = _Row(row.fields, index, labels)
        code = r.code("code")
        _once(codes, r, "code", code, row.row)
        name = r.check(textfields.name, "name")
        _once(names, r, "name", name, row.row)
        if name is not None and code is not None and stored.get(name, code) != code:
            r.problems.append(f"{r.labels['name']} {name!r} is the stored department {stored[name]}'s")
        _finish(out, row, r, code, (row.row, code, name))


def _check_categories(
    session: Session, out: TablePlan, rows: list[Row], index: dict[str, int], labels: dict[str, str], default_crs: str
) -> None:
    from layers.registrations import role_code

    by_code: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    for id_, code, name in session.execute(text("SELECT id, code, name FROM departments")):
        by_code[code] = id_
        by_name.setdefault(name, []).append(id_)
    roles: dict[str, str | None] = {}
    codes: dict[str, int] = {}
    for row in rows:
        r = _Row(row.fields, index, labels)
        code = r.code("code")
        _once(codes, r, "code", code, row.row)
        name = r.check(textfields.name, "name")
        department = _lookup(r, "department", by_code, by_name, "department")
        if department is None and not r.get("department"):
            r.problems.append(f"{r.labels['department']} is missing")
        limit = _number(r, "time_limit", 0, TIME_LIMIT_MAX, required=True)
        share = _number(r, "warn_share", 0, 1, required=False) if "warn_share" in out.columns else None
        public = _flag(r, "public_space") if "public_space" in out.columns else None
        role = None
        word = r.plain("role") if "role" in out.columns else None
        if word is not None:
            if word not in roles:
                try:
                    roles[word] = role_code(session, word)
                except InvalidInput as exc:
                    roles[word] = None
                    r.problems.append(f"{r.labels['role']}: {exc.detail}")
            elif roles[word] is None:
                r.problems.append(f"{r.labels['role']}: unknown service role {word!r}")
            role = roles[word]
        _finish(out, row, r, code, (row.row, code, name, department, limit, role, share, public))


def _flag(r: _Row, key: str) -> bool | None:
    """是/否 (yes/no, true/false, 1/0); None when empty, which keeps what is stored."""
    value = r.plain(key)
    if value is None:
        return None
    for flag, words in FLAG_WORDS.items():
        if value.lower() in words:
            return flag
    r.problems.append(f"{r.labels[key]} must be 是 or 否 (yes/no), got {value!r}")
    return None


def _number(r: _Row, key: str, low: float, high: float, *, required: bool) -> float | None:
    """A number in (low, high]; None when empty (a problem if required) or refused."""
    value = r.plain(key)
    if value is None:
        if required and not r.get(key):
            r.problems.append(f"{r.labels[key]} is missing")
        return None
    try:
        number = float(value)
    except ValueError:
        r.problems.append(f"{r.labels[key]} is not a number: {value!r}")
        return None
    if not (low < number <= high):
        r.problems.append(f"{r.labels[key]} must be more than {low:g} and at most {high:g}, got {value}")
        return None
    return round(number, 2) if key == "time_limit" else number


_CHECKS = {
    "members": _check_members,
    "branches": _check_branches,
    "departments": _check_departments,
    "categories": _check_categories,
}


# ---- writing -----------------------------------------------------------------------------------


def _run(conn: Connection, counts: dict[str, int], key: str, sql: str, write: bool, **params) -> None:
    """A statement run only when it has rows to touch (a statement-level trigger would
    bump the data version even for none)."""
    if write and counts.get(key):
        conn.execute(text(sql), params)


def _members(conn: Connection, plan: TablePlan, write: bool, actor: str) -> dict[str, int]:
    conn.execute(
        text(
            """CREATE TEMP TABLE import_members (row int, number text, name text, phone text, status text,
               work_branch_id int, lon float8, lat float8, source_crs text, source_x float8, source_y float8)
           ON COMMIT DROP"""
        )
    )
    tables.copy_rows(
        conn,
        "import_members",
        (
            "row",
            "number",
            "name",
            "phone",
            "status",
            "work_branch_id",
            "lon",
            "lat",
            "source_crs",
            "source_x",
            "source_y",
        ),
        plan.good,
    )
    conn.execute(text("ANALYZE import_members"))
    if write:
        # the members the file names are locked first, in id order, as every API write on
        # a member starts (layers.registrations); the data_versions rows after them
        conn.execute(
            text(
                "SELECT m.id FROM members m JOIN import_members s ON m.number = s.number ORDER BY m.id FOR UPDATE OF m"
            )
        )
    conn.execute(
        text(
            """CREATE TEMP TABLE import_members_diff ON COMMIT DROP AS
           SELECT s.*, m.id AS member_id, (m.id IS NULL) AS new_member,
                  (m.id IS NOT NULL AND (m.name IS DISTINCT FROM s.name
                       OR (s.phone IS NOT NULL AND m.phone IS DISTINCT FROM s.phone)
                       OR (s.status IS NOT NULL AND m.status IS DISTINCT FROM s.status)
                       OR (s.work_branch_id IS NOT NULL AND m.work_branch_id IS DISTINCT FROM s.work_branch_id)))
                      AS changed,
                  res.id AS residence_id,
                  (s.lon IS NOT NULL AND (res.id IS NULL OR res.source_crs IS DISTINCT FROM s.source_crs
                       OR res.source_x IS DISTINCT FROM s.source_x OR res.source_y IS DISTINCT FROM s.source_y))
                      AS moves,
                  EXISTS (SELECT 1 FROM registrations r WHERE r.residence_id = res.id
                          AND r.status IN ('pending', 'confirmed')) AS registered
           FROM import_members s
           LEFT JOIN members m ON m.number = s.number
           LEFT JOIN residences res ON res.member_id = m.id AND res.ended_at IS NULL"""
        )
    )
    conn.execute(text("ANALYZE import_members_diff"))  # a temporary table has no statistics until told
    c = conn.execute(
        text(
            """SELECT count(*) FILTER (WHERE new_member), count(*) FILTER (WHERE changed),
                  count(*) FILTER (WHERE moves AND NOT registered), count(*) FILTER (WHERE moves AND registered),
                  count(*) FILTER (WHERE moves AND NOT registered AND residence_id IS NOT NULL),
                  count(*) FILTER (WHERE NOT new_member AND NOT changed AND NOT (moves AND NOT registered))
           FROM import_members_diff"""
        )
    ).one()
    counts = {
        "members_created": c[0],
        "members_updated": c[1],
        "residences_recorded": c[2],
        "residences_kept_registered": c[3],
        "residences_ended": c[4],
        "unchanged": c[5],
    }
    kept = conn.execute(text("SELECT row FROM import_members_diff WHERE moves AND registered ORDER BY row LIMIT 20"))
    for (row,) in kept:
        plan.notes.append(f"row {row}: the member is registered at another residence; kept (they re-register to move)")
    _run(
        conn,
        counts,
        "members_created",
        # the clock read once for all rows (an init plan), not as a default per row
        """INSERT INTO members (number, name, phone, status, work_branch_id, created_at)
            SELECT number, name, phone, coalesce(status, 'in_service'), work_branch_id, (SELECT gridbranch_now())
            FROM import_members_diff WHERE new_member ORDER BY row""",
        write,
    )
    _run(
        conn,
        counts,
        "members_updated",
        """UPDATE members m SET name = d.name, phone = coalesce(d.phone, m.phone),
                   status = coalesce(d.status, m.status), work_branch_id = coalesce(d.work_branch_id, m.work_branch_id)
            FROM import_members_diff d WHERE d.changed AND m.id = d.member_id""",
        write,
    )
    _run(
        conn,
        counts,
        "residences_ended",
        """UPDATE residences r SET ended_at = gridbranch_now() FROM import_members_diff d
            WHERE d.moves AND NOT d.registered AND r.id = d.residence_id""",
        write,
    )
    _run(
        conn,
        counts,
        "residences_recorded",
        """INSERT INTO residences (member_id, geom, source_crs, source_x, source_y, recorded_at)
            SELECT m.id, ST_SetSRID(ST_MakePoint(d.lon, d.lat), 4326), d.source_crs, d.source_x, d.source_y,
                   (SELECT gridbranch_now())
            FROM import_members_diff d JOIN members m ON m.number = d.number
            WHERE d.moves AND NOT d.registered""",
        write,
    )
    conn.execute(text("DROP TABLE import_members_diff, import_members"))
    return counts


def _branches(conn: Connection, plan: TablePlan, write: bool, actor: str) -> dict[str, int]:
    conn.execute(
        text(
            """CREATE TEMP TABLE import_branches (row int, code text, name text, kind text, secretary_name text,
               secretary_phone text, community_id int, lon float8, lat float8, grids int[]) ON COMMIT DROP"""
        )
    )
    tables.copy_rows(
        conn,
        "import_branches",
        ("row", "code", "name", "kind", "secretary_name", "secretary_phone", "community_id", "lon", "lat", "grids"),
        ((*g[:9], "{" + ",".join(map(str, sorted(g[9]))) + "}") for g in plan.good),
    )
    if write:
        conn.execute(
            text("SELECT b.id FROM branches b JOIN import_branches s ON b.code = s.code ORDER BY b.id FOR UPDATE OF b")
        )
    conn.execute(
        text(
            """CREATE TEMP TABLE import_branches_diff ON COMMIT DROP AS
           SELECT s.*, b.id AS branch_id, (b.id IS NULL) AS new_branch,
                  (b.id IS NOT NULL AND (b.name IS DISTINCT FROM s.name OR b.kind IS DISTINCT FROM s.kind
                       OR b.secretary_name IS DISTINCT FROM s.secretary_name
                       OR b.secretary_phone IS DISTINCT FROM s.secretary_phone
                       OR b.community_id IS DISTINCT FROM s.community_id
                       OR NOT (b.site IS NOT DISTINCT FROM (CASE WHEN s.lon IS NULL THEN NULL
                               ELSE ST_SetSRID(ST_MakePoint(s.lon, s.lat), 4326) END))))
                      AS changed,
                  (coalesce((SELECT array_agg(grid_id ORDER BY grid_id) FROM branch_grids WHERE branch_id = b.id),
                            '{}') IS DISTINCT FROM s.grids) AS regrid
           FROM import_branches s LEFT JOIN branches b ON b.code = s.code"""
        )
    )
    c = conn.execute(
        text(
            """SELECT count(*) FILTER (WHERE new_branch), count(*) FILTER (WHERE changed),
                  count(*) FILTER (WHERE regrid AND cardinality(grids) + coalesce((SELECT count(*) FROM branch_grids
                                   WHERE branch_id = d.branch_id), 0) > 0),
                  count(*) FILTER (WHERE NOT new_branch AND NOT changed AND NOT regrid)
           FROM import_branches_diff d"""
        )
    ).one()
    counts = {"branches_created": c[0], "branches_updated": c[1], "coverage_changed": c[2], "unchanged": c[3]}
    _run(
        conn,
        counts,
        "branches_created",
        """INSERT INTO branches (code, name, kind, secretary_name, secretary_phone, community_id, site, active)
            SELECT code, name, kind, secretary_name, secretary_phone, community_id,
                   CASE WHEN lon IS NULL THEN NULL ELSE ST_SetSRID(ST_MakePoint(lon, lat), 4326) END, true
            FROM import_branches_diff WHERE new_branch ORDER BY row""",
        write,
    )
    _run(
        conn,
        counts,
        "branches_updated",
        """UPDATE branches b SET name = d.name, kind = d.kind, secretary_name = d.secretary_name,
                   secretary_phone = d.secretary_phone, community_id = d.community_id,
                   site = CASE WHEN d.lon IS NULL THEN NULL ELSE ST_SetSRID(ST_MakePoint(d.lon, d.lat), 4326) END
            FROM import_branches_diff d WHERE d.changed AND b.id = d.branch_id""",
        write,
    )
    if write and counts["coverage_changed"]:
        conn.execute(
            text(
                """DELETE FROM branch_grids bg USING import_branches_diff d
               WHERE d.regrid AND bg.branch_id = d.branch_id AND NOT bg.grid_id = ANY(d.grids)"""
            )
        )
        conn.execute(
            text(
                """INSERT INTO branch_grids (branch_id, grid_id)
               SELECT b.id, g FROM import_branches_diff d JOIN branches b ON b.code = d.code,
                      unnest(d.grids) AS g
               WHERE d.regrid ON CONFLICT DO NOTHING"""
            )
        )
    conn.execute(text("DROP TABLE import_branches_diff, import_branches"))
    return counts


def _departments(conn: Connection, plan: TablePlan, write: bool, actor: str) -> dict[str, int]:
    conn.execute(text("CREATE TEMP TABLE import_departments (row int, code text, name text) ON COMMIT DROP"))
    tables.copy_rows(conn, "import_departments", ("row", "code", "name"), plan.good)
    if write:
        conn.execute(text("LOCK TABLE departments IN SHARE ROW EXCLUSIVE MODE"))
    c = conn.execute(
        text(
            """SELECT count(*) FILTER (WHERE d.id IS NULL), count(*) FILTER (WHERE d.name <> s.name),
                  count(*) FILTER (WHERE d.name = s.name)
           FROM import_departments s LEFT JOIN departments d ON d.code = s.code"""
        )
    ).one()
    counts = {"departments_created": c[0], "departments_renamed": c[1], "unchanged": c[2]}
    _run(
        conn,
        counts,
        "departments_created",
        """INSERT INTO departments (code, name) SELECT s.code, s.name FROM import_departments s
            WHERE NOT EXISTS (SELECT 1 FROM departments d WHERE d.code = s.code) ORDER BY s.row""",
        write,
    )
    _run(
        conn,
        counts,
        "departments_renamed",
        """UPDATE departments d SET name = s.name FROM import_departments s
            WHERE d.code = s.code AND d.name <> s.name""",
        write,
    )
    conn.execute(text("DROP TABLE import_departments"))
    return counts


def _categories(conn: Connection, plan: TablePlan, write: bool, actor: str) -> dict[str, int]:
    conn.execute(
        text(
            """CREATE TEMP TABLE import_categories (row int, code text, name text, department_id int,
               time_limit_hours numeric(8, 2), role_code text, warn_share numeric(4, 3), public_space boolean)
               ON COMMIT DROP"""
        )
    )
    tables.copy_rows(
        conn,
        "import_categories",
        ("row", "code", "name", "department_id", "time_limit_hours", "role_code", "warn_share", "public_space"),
        plan.good,
    )
    if write:
        conn.execute(text("LOCK TABLE event_categories IN SHARE ROW EXCLUSIVE MODE"))
    differs = """(c.name, c.department_id, c.time_limit_hours, c.role_code, c.warn_share, c.public_space)
                 IS DISTINCT FROM (s.name, s.department_id, s.time_limit_hours, s.role_code,
                                   coalesce(s.warn_share, c.warn_share), coalesce(s.public_space, c.public_space))"""
    c = conn.execute(
        text(
            f"""SELECT count(*) FILTER (WHERE c.code IS NULL), count(*) FILTER (WHERE c.code IS NOT NULL AND {differs}),
                   count(*) FILTER (WHERE c.code IS NOT NULL AND NOT {differs})
            FROM import_categories s LEFT JOIN event_categories c ON c.code = s.code"""
        )
    ).one()
    counts = {"categories_created": c[0], "categories_updated": c[1], "unchanged": c[2]}
    _run(
        conn,
        counts,
        "categories_created",
        """INSERT INTO event_categories (code, name, department_id, time_limit_hours, role_code, warn_share,
                                         public_space)
            SELECT s.code, s.name, s.department_id, s.time_limit_hours, s.role_code, s.warn_share,
                   coalesce(s.public_space, false)
            FROM import_categories s WHERE NOT EXISTS (SELECT 1 FROM event_categories c WHERE c.code = s.code)
            ORDER BY s.row""",
        write,
    )
    _run(
        conn,
        counts,
        "categories_updated",
        f"""UPDATE event_categories c SET name = s.name, department_id = s.department_id,
                    time_limit_hours = s.time_limit_hours, role_code = s.role_code,
                    warn_share = coalesce(s.warn_share, c.warn_share),
                    public_space = coalesce(s.public_space, c.public_space)
             FROM import_categories s WHERE c.code = s.code AND {differs}""",
        write,
    )
    conn.execute(text("DROP TABLE import_categories"))
    return counts


_WRITERS = {"members": _members, "branches": _branches, "departments": _departments, "categories": _categories}


def changes(conn: Connection, plan: TablePlan, *, write: bool, actor: str = "import") -> dict[str, int]:
    """What the plan's good rows change in the stored data, counted; with ``write``, also
    written, in the caller's transaction (the caller commits). Without, nothing but
    temporary tables is touched (the caller rolls back)."""
    if plan.file_error is not None:
        raise InvalidInput(plan.file_error, field="file")
    return _WRITERS[plan.kind](conn, plan, write, actor)


def format_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())

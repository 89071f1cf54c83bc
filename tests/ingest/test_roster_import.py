"""The district's own tables from files: departments, categories, branches and the member
roster, through the command line, on a deployment built from files only (中原区 410102,
not the Jinshui demo: ``gridbranch init``, then its areas and grids).

The files are real and written here: CSV UTF-8 with a BOM (Excel's "CSV UTF-8"), CSV in
GBK (Excel's plain "CSV" on a Chinese Windows), XLSX with Chinese headers. Each import
is a dry run that writes nothing, a commit, and the same file again, which changes
nothing (the data versions included); every bad row is rejected with its reason in the
rejects file and every other row imported.
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import openpyxl
import pytest
from sqlalchemy import text

from geo_api.cli import main
from ingest import tables
from layers.crs import from_wgs84
from tests.conftest import scratch_engine
from tests.ingest.district_files import (
    AREA_MAP,
    CODE,
    GRID_MAP,
    NAME,
    build_district,
    write_areas_shapefile,
    write_grids_gpkg,
)
from tests.zh import untranslated_reasons


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def versions(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT layer, version FROM data_versions")).all())


def write_csv(path: Path, rows: list[list], encoding: str) -> Path:
    with open(path, "w", newline="", encoding=encoding) as handle:
        csv.writer(handle).writerows(rows)
    return path


def write_xlsx(path: Path, rows: list[list]) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "花名册"
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


def rejects_of(path: Path) -> dict[int, str]:
    """row → reason of a rejects file."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        out = {int(r["row"]): r["reason"] for r in csv.DictReader(handle) if r["row"]}
    assert not untranslated_reasons(out.values())  # the web map shows each in Chinese
    return out


def imported(engine, kind: str, path: Path, *extra: str) -> dict:
    """Dry run, commit, the same file again: what each printed, and the data versions
    before and after each."""
    out = {"before": versions(engine)}
    for step, flags in (("dry", ()), ("commit", ("--commit",)), ("again", ("--commit",))):
        rc, o, e = run("ingest", kind, str(path), *extra, *flags)
        out[step] = {
            "rc": rc,
            "out": o,
            "err": e,
            "versions": versions(engine),
            "rejects": rejects_of(path.with_name(path.stem + ".rejects.csv")),
        }
    out["rejects"] = out["dry"]["rejects"]
    return out


@pytest.fixture(scope="module")
def district():
    return build_district()


@pytest.fixture(scope="module")
def deployment(server_url, district, tmp_path_factory):
    """中原区 from files: init, areas, grids; the engine and a folder for the tables."""
    tmp = tmp_path_factory.mktemp("zhongyuan_roster")
    areas = write_areas_shapefile(district, tmp / "areas")
    grids = write_grids_gpkg(district, tmp / "grids.gpkg")
    with scratch_engine(server_url, "roster", pool=2, migrated=True) as engine, pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDBRANCH_DATABASE_URL", engine.url.render_as_string(hide_password=False))
        mp.setenv("GRIDBRANCH_INIT_ADMIN_PASSWORD", "zhongyuan-2026")
        for argv in (
            ("init", "--district", CODE, "--boundary", str(district.boundary_file), "--crs", "gcj02", "--name", NAME),
            ("ingest", "areas", str(areas), "--crs", "gcj02", "--map", AREA_MAP, "--commit"),
            ("ingest", "grids", str(grids), "--map", GRID_MAP, "--commit"),
        ):
            rc, out, err = run(*argv)
            assert rc == 0, out + err
        yield engine, tmp


@pytest.fixture(scope="module")
def departments(deployment):
    engine, tmp = deployment
    path = write_csv(
        tmp / "departments.csv",
        [
            ["部门编码", "部门名称"],
            ["CGJ", "区城市管理局"],
            ["ZJJ", "区住房和城乡建设局"],
            ["SCJ", "区市场监督管理局"],
            ["CGJ", "区城管局"],  # row 4: the code again
            ["=1+1", "公式部门"],  # row 5: a formula
            ["HBJ", "区城市管理局"],  # row 6: the name again
        ],
        "utf-8-sig",
    )
    return imported(engine, "departments", path)


def test_departments_from_csv_with_bom(deployment, departments):
    engine, _ = deployment
    d = departments
    assert d["dry"]["rc"] == 0, d["dry"]["out"] + d["dry"]["err"]
    assert "6 rows, 3 to import, 3 rejected" in d["dry"]["out"]
    assert "departments created 3" in d["dry"]["out"] and "dry run, nothing written" in d["dry"]["out"]
    assert d["dry"]["versions"] == d["before"]
    assert d["commit"]["rc"] == 0 and "departments created 3" in d["commit"]["out"]
    assert "departments created 0, departments renamed 0, unchanged 3" in d["again"]["out"]
    assert d["again"]["versions"] == d["commit"]["versions"]
    assert set(d["rejects"]) == {4, 5, 6}
    assert "code (部门编码) CGJ appears again (first on row 1)" in d["rejects"][4]
    assert "a spreadsheet would run it as a formula" in d["rejects"][5] or "must be 1–32" in d["rejects"][5]
    assert "name (部门名称) 区城市管理局 appears again" in d["rejects"][6]
    with engine.connect() as conn:
        assert dict(conn.execute(text("SELECT code, name FROM departments")).all()) == {
            "CGJ": "区城市管理局",
            "ZJJ": "区住房和城乡建设局",
            "SCJ": "区市场监督管理局",
        }


@pytest.fixture(scope="module")
def categories(deployment, departments):
    engine, tmp = deployment
    path = write_xlsx(
        tmp / "categories.xlsx",
        [
            ["类别编码", "类别名称", "责任部门", "处置时限", "服务角色", "公共空间"],
            ["C01", "占道经营", "CGJ", 4, "文明新风倡导员", "是"],
            ["C02", "违章搭建", "区住房和城乡建设局", 24, None, None],
            ["C03", "食品安全", "SCJ", "8.5", "social", "否"],  # row 3: an unknown role
            ["C04", "噪声扰民", "区环保局", 8, None, "也许"],  # row 4: an unknown department, not a yes or no
            ["C05", "井盖缺失", "CGJ", -2, None, "是"],  # row 5: a negative time limit
            ["C06", "路灯不亮", "CGJ", "=2*4", None, "否"],  # row 6: a formula cell
        ],
    )
    return imported(engine, "categories", path)


def test_categories_from_xlsx(deployment, categories):
    engine, _ = deployment
    c = categories
    assert c["dry"]["rc"] == 0, c["dry"]["out"] + c["dry"]["err"]
    assert "6 rows, 2 to import, 4 rejected" in c["dry"]["out"] and c["dry"]["versions"] == c["before"]
    assert "categories created 2" in c["commit"]["out"]
    assert c["commit"]["versions"]["events"] > c["before"]["events"]
    assert "unchanged 2" in c["again"]["out"] and c["again"]["versions"] == c["commit"]["versions"]
    assert set(c["rejects"]) == {3, 4, 5, 6}
    assert "unknown service role 'social'" in c["rejects"][3]
    assert "unknown department '区环保局'" in c["rejects"][4]
    assert "time_limit (处置时限) must be more than 0" in c["rejects"][5]
    assert "formula (=2*4)" in c["rejects"][6]
    assert "public_space (公共空间) must be 是 or 否 (yes/no), got '也许'" in c["rejects"][4]
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.code, d.code, c.time_limit_hours, c.role_code, c.public_space FROM event_categories c "
                "JOIN departments d ON d.id = c.department_id ORDER BY c.code"
            )
        ).all()
    assert [(r[0], r[1], float(r[2]), r[4]) for r in rows] == [("C01", "CGJ", 4.0, True), ("C02", "ZJJ", 24.0, False)]
    assert rows[0][3] is not None and rows[1][3] is None


@pytest.fixture(scope="module")
def branches(deployment, district):
    """Branches from a GBK CSV: a grid branch per grid of the first community, a
    community organisation, work-unit branches; with bad rows."""
    engine, tmp = deployment
    community = district.communities[0]
    grids = [g for g in district.grids if g.parent == community.code]
    other = next(g for g in district.grids if g.parent != community.code)
    site = community.geom.representative_point()
    gx, gy = from_wgs84(site.x, site.y, "gcj02")
    rows = [["支部编码", "支部名称", "支部类型", "书记", "书记电话", "社区编码", "覆盖网格", "经度", "纬度", "坐标系"]]
    for k, g in enumerate(grids[:3]):
        rows.append(
            [f"G{g.code}", f"{g.name}党支部", "网格党支部", "张伟", "13800000001", community.code, g.code, "", "", ""]
        )
    rows += [
        [
            f"C{community.code}",
            f"{community.name}党委",
            "社区党组织",
            "李娜",
            "0371-66668888",
            community.code,
            "、".join(g.code for g in grids),
            f"{gx:.7f}",
            f"{gy:.7f}",
            "gcj02",
        ],
        ["W001", "区城市管理局机关党支部", "单位党支部", "", "", "", "", "", "", ""],
        ["W002", "区教育局机关党支部", "单位党支部", "", "", "", "", "", "", ""],
        ["G9", "外网格党支部", "网格党支部", "", "", community.code, other.code, "", "", ""],  # row 7: other community
        ["G10", "重复网格党支部", "网格党支部", "", "", community.code, grids[0].code, "", "", ""],  # row 8: taken
        ["G11", "无书记电话党支部", "网格党支部", "王芳", "", community.code, grids[3].code, "", "", ""],  # row 9
        ["W003", "坐标党支部", "单位党支部", "", "", "", "", "113.6", "95", ""],  # row 10: bad lat, no community
    ]
    path = write_csv(tmp / "branches.csv", rows, "gbk")
    return imported(engine, "branches", path), community, grids


def test_branches_from_gbk_csv(deployment, branches):
    engine, _ = deployment
    b, community, grids = branches
    assert b["dry"]["rc"] == 0, b["dry"]["out"] + b["dry"]["err"]
    assert "GB18030" in b["dry"]["out"] and "10 rows, 6 to import, 4 rejected" in b["dry"]["out"]
    assert b["dry"]["versions"] == b["before"]
    assert "branches created 6" in b["commit"]["out"] and b["commit"]["versions"]["branches"] > b["before"]["branches"]
    assert "unchanged 6" in b["again"]["out"] and b["again"]["versions"] == b["commit"]["versions"]
    assert set(b["rejects"]) == {7, 8, 9, 10}
    assert f"grid {grids[-1].code}" not in b["rejects"][7] and "is not in community" in b["rejects"][7]
    assert f"grid {grids[0].code} is covered by the grid branch G{grids[0].code} of row 1" in b["rejects"][8]
    # once that branch is stored, the same row is refused for the stored branch
    assert set(b["again"]["rejects"]) == set(b["rejects"])
    assert f"grid {grids[0].code} already has the active grid branch G{grids[0].code}" in b["again"]["rejects"][8]
    assert "secretary_phone is required with a name" in b["rejects"][9]
    assert "lat" in b["rejects"][10] and "90" in b["rejects"][10]
    with engine.connect() as conn:
        covered = dict(
            conn.execute(
                text(
                    "SELECT b.code, count(bg.grid_id) FROM branches b LEFT JOIN branch_grids bg ON bg.branch_id = b.id "
                    "GROUP BY b.code"
                )
            ).all()
        )
        site = conn.execute(text(f"SELECT ST_X(site), ST_Y(site) FROM branches WHERE code = 'C{community.code}'")).one()
    assert covered == {**{f"G{g.code}": 1 for g in grids[:3]}, f"C{community.code}": len(grids), "W001": 0, "W002": 0}
    expected = community.geom.representative_point()
    assert abs(site[0] - expected.x) < 1e-5 and abs(site[1] - expected.y) < 1e-5  # GCJ-02 → WGS84


MEMBER_HEADER = ["党员编号", "姓名", "手机号码", "所在支部", "党员类别", "经度", "纬度", "坐标系"]


def _member_rows(district, grids) -> list[list]:
    inside = [g.geom.representative_point() for g in grids]
    g0 = from_wgs84(inside[0].x, inside[0].y, "gcj02")
    return [
        MEMBER_HEADER,
        ["ZY0001", "王建国", "13900000001", "W001", "在职党员", f"{inside[0].x:.7f}", f"{inside[0].y:.7f}", "wgs84"],
        [
            "ZY0002",
            "李秀英",
            "139 0000 0002",
            "区教育局机关党支部",
            "流动党员",
            f"{g0[0]:.7f}",
            f"{g0[1]:.7f}",
            "gcj02",
        ],
        ["ZY0003", "张明", "", "", "退休", "", "", ""],
        ["ZY0004", "刘洋", "12345", "W001", "在职", "", "", ""],  # row 4: bad phone
        ["ZY0001", "王建国", "13900000001", "W001", "在职", "", "", ""],  # row 5: the number again
        ["ZY0006", "陈静", "13900000006", "W404", "在职", "", "", ""],  # row 6: unknown branch
        ["ZY0007", "长" * 65, "13900000007", "W001", "在职", "", "", ""],  # row 7: overlong name
        ["ZY0008", "赵磊", "13900000008", "W001", "在职", "113.7", "abc", ""],  # row 8: bad coordinates
        ["ZY0009", "孙丽", "13900000009", "W001", "在职", "200", "34.7", ""],  # row 9: longitude out of range
        ["ZY0010", '=HYPERLINK("http://x")', "13900000010", "W001", "在职", "", "", ""],  # row 10: a formula
        ["ZY0011", "周杰", "13900000011", "W001", "挂职", "", "", ""],  # row 11: unknown status
    ]


def _check_member_import(m, prefix="ZY", rejects_extra=frozenset()):
    assert m["dry"]["rc"] == 0, m["dry"]["out"] + m["dry"]["err"]
    n = len(rejects_extra)
    assert f"{11 + n} rows, 3 to import, {8 + n} rejected" in m["dry"]["out"]
    assert "members created 3" in m["dry"]["out"] and "residences recorded 2" in m["dry"]["out"]
    assert m["dry"]["versions"] == m["before"]
    assert m["commit"]["rc"] == 0 and "members created 3" in m["commit"]["out"]
    assert m["commit"]["versions"]["members"] > m["before"]["members"]
    assert "members created 0, members updated 0, residences recorded 0" in m["again"]["out"]
    assert "unchanged 3" in m["again"]["out"] and m["again"]["versions"] == m["commit"]["versions"]
    r = m["rejects"]
    assert set(r) == {4, 5, 6, 7, 8, 9, 10, 11} | set(rejects_extra)
    assert "must be a mobile number" in r[4] and "'12345'" in r[4]
    assert f"{prefix}0001 appears again (first on row 1)" in r[5]
    assert set(m["again"]["rejects"]) == set(r)
    assert "unknown branch 'W404'" in r[6]
    assert "has 65 characters; at most 64" in r[7]
    assert "is not a number: 'abc'" in r[8]
    assert "lon" in r[9] and "180" in r[9]
    assert "formula" in r[10]
    assert "status (党员类别) must be one of" in r[11] and "'挂职'" in r[11]


def _members(engine, numbers) -> dict:
    with engine.connect() as conn:
        return {
            r[0]: r[1:]
            for r in conn.execute(
                text(
                    """SELECT m.number, m.name, m.phone, m.status, b.code, ST_X(res.geom), ST_Y(res.geom), res.source_crs
               FROM members m LEFT JOIN branches b ON b.id = m.work_branch_id
               LEFT JOIN residences res ON res.member_id = m.id AND res.ended_at IS NULL
               WHERE m.number = ANY(:n)"""
                ),
                {"n": list(numbers)},
            )
        }


def test_members_from_csv_with_bom(deployment, district, branches):
    engine, tmp = deployment
    _, community, grids = branches
    path = write_csv(tmp / "members.csv", _member_rows(district, grids), "utf-8-sig")
    m = imported(engine, "members", path)
    _check_member_import(m)
    stored = _members(engine, ["ZY0001", "ZY0002", "ZY0003", "ZY0004"])
    assert set(stored) == {"ZY0001", "ZY0002", "ZY0003"}
    p0, p1 = grids[0].geom.representative_point(), grids[1].geom.representative_point()
    assert stored["ZY0001"][:4] == ("王建国", "13900000001", "in_service", "W001")
    assert stored["ZY0002"][:4] == ("李秀英", "13900000002", "floating", "W002")
    assert stored["ZY0003"] == ("张明", None, "retired", None, None, None, None)
    assert abs(stored["ZY0001"][4] - p0.x) < 1e-6 and stored["ZY0001"][6] == "wgs84"
    assert abs(stored["ZY0002"][4] - p0.x) < 1e-5 and abs(stored["ZY0002"][5] - p0.y) < 1e-5  # GCJ-02 → WGS84
    assert stored["ZY0002"][6] == "gcj02"
    # the report names rows and member numbers, never names or phones
    assert "刘洋" not in m["dry"]["out"] and "12345" not in m["dry"]["out"].split("must be")[0]

    # a changed roster: a new phone, a moved residence; an empty phone keeps the stored one
    rows = [
        MEMBER_HEADER,
        ["ZY0001", "王建国", "13911111111", "W001", "在职", f"{p1.x:.7f}", f"{p1.y:.7f}", "wgs84"],
        ["ZY0003", "张明", "", "", "", "", "", ""],
    ]
    changed = write_csv(tmp / "members2.csv", rows, "utf-8-sig")
    before = versions(engine)
    rc, out, err = run("ingest", "members", str(changed), "--commit")
    assert rc == 0, out + err
    assert (
        "members updated 1, residences recorded 1, residences kept registered 0, residences ended 1, unchanged 1" in out
    )
    assert versions(engine)["members"] > before["members"]
    stored = _members(engine, ["ZY0001", "ZY0003"])
    assert stored["ZY0001"][1] == "13911111111" and abs(stored["ZY0001"][4] - p1.x) < 1e-6
    assert stored["ZY0003"][2] == "retired"
    with engine.connect() as conn:
        assert (
            conn.execute(
                text("SELECT count(*) FROM residences r JOIN members m ON m.id = r.member_id WHERE m.number = 'ZY0001'")
            ).scalar()
            == 2
        )  # the old one kept, ended


def test_members_from_gbk_csv(deployment, district, branches):
    engine, tmp = deployment
    _, _, grids = branches
    rows = [
        [c.replace("ZY", "GB") if isinstance(c, str) and c.startswith("ZY") else c for c in r]
        for r in _member_rows(district, grids)
    ]
    path = write_csv(tmp / "members_gbk.csv", rows, "gbk")
    m = imported(engine, "members", path)
    assert "GB18030" in m["dry"]["out"]
    _check_member_import(m, "GB")
    assert set(_members(engine, ["GB0001", "GB0002", "GB0003"])) == {"GB0001", "GB0002", "GB0003"}


def test_members_from_xlsx_with_map_and_a_formula(deployment, district, branches):
    engine, tmp = deployment
    _, _, grids = branches
    rows = [
        [c.replace("ZY", "XL") if isinstance(c, str) and c.startswith("ZY") else c for c in r]
        for r in _member_rows(district, grids)
    ]
    rows[0] = ["党员证号", "党员姓名", "联系方式", "组织关系所在支部", "党员类别", "经度", "纬度", "坐标系"]
    rows[1][2] = 13900000001  # Excel keeps phones as numbers
    rows.append(["XL0012", "吴敏", "=A2", "W001", "在职", "", "", ""])  # row 12: a formula cell
    path = write_xlsx(tmp / "members.xlsx", rows)
    # 党员证号 and 联系方式 are no names the importer knows: without --map it says so
    rc, out, err = run("ingest", "members", str(path))
    assert rc == 1 and "no column for number" in err and "--map number=COLUMN" in err
    reason = (tmp / "members.rejects.csv").read_text("utf-8-sig")
    assert "no column for number" in reason
    m = imported(engine, "members", path, "--map", "number=党员证号,phone=联系方式")
    _check_member_import(m, "XL", {12})
    assert "formula (=A2)" in m["rejects"][12]
    assert _members(engine, ["XL0001"])["XL0001"][1] == "13900000001"


def test_an_unreadable_file_writes_nothing_and_says_why(deployment):
    engine, tmp = deployment
    path = tmp / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04 not really a workbook")
    before = versions(engine)
    rc, out, err = run("ingest", "members", str(path), "--commit")
    assert rc == 1 and "broken.xlsx" in err
    assert "broken.xlsx" in (tmp / "broken.rejects.csv").read_text("utf-8-sig")
    assert versions(engine) == before


def test_registered_member_keeps_the_residence(deployment, branches):
    """A roster residence that differs from the one a member is registered at is not
    moved silently: kept, and the row named."""
    engine, tmp = deployment
    _, _, grids = branches
    p0, p2 = grids[0].geom.representative_point(), grids[2].geom.representative_point()
    path = write_csv(
        tmp / "reg.csv",
        [MEMBER_HEADER, ["RG0001", "郑爽", "13900000099", "W001", "在职", f"{p0.x}", f"{p0.y}", ""]],
        "utf-8",
    )
    assert run("ingest", "members", str(path), "--commit")[0] == 0
    with engine.begin() as conn:
        conn.execute(
            text(
                """INSERT INTO registrations (member_id, residence_id, grid_id, grid_version_id, status)
               SELECT m.id, r.id, g.id, v.id, 'confirmed' FROM members m JOIN residences r ON r.member_id = m.id,
                      grids g JOIN grid_versions v ON v.grid_id = g.id AND v.valid_to IS NULL
               WHERE m.number = 'RG0001' AND g.code = :g"""
            ),
            {"g": grids[0].code},
        )
    moved = write_csv(
        tmp / "reg2.csv",
        [MEMBER_HEADER, ["RG0001", "郑爽", "13900000099", "W001", "在职", f"{p2.x}", f"{p2.y}", ""]],
        "utf-8",
    )
    rc, out, err = run("ingest", "members", str(moved), "--commit")
    assert rc == 0, out + err
    assert "residences kept registered 1" in out and "row 1: the member is registered" in out
    assert abs(_members(engine, ["RG0001"])["RG0001"][4] - p0.x) < 1e-9


def test_quoted_and_plain_csv_read_alike(tmp_path, district):
    """A CSV without quotes is split (the fast path), one with them goes through the CSV
    reader: the same rows, fields and row numbers either way (CRLF line ends too)."""
    rows = [
        MEMBER_HEADER,
        ["A1", " 王五 ", "13900000001", "W001", "在职", "", "", ""],
        [],
        ["A2", "赵六", "", "", "", "113.6", "34.7", "gcj02"],
        ["A3", "孙七"],
    ]
    plain = tmp_path / "plain.csv"
    quoted = tmp_path / "quoted.csv"
    with open(plain, "w", newline="", encoding="utf-8-sig") as handle:
        csv.writer(handle, lineterminator="\r\n").writerows(rows)
    with open(quoted, "w", newline="", encoding="utf-8-sig") as handle:
        csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC).writerows(rows)
    assert '"' not in plain.read_text("utf-8-sig") and '"' in quoted.read_text("utf-8-sig")
    a, b = tables.read_table(plain, header_hint="-"), tables.read_table(quoted, header_hint="-")
    assert a.header == b.header == MEMBER_HEADER
    assert [(r.row, r.fields, r.problem) for r in a.rows] == [(r.row, r.fields, r.problem) for r in b.rows]
    assert [r.row for r in a.rows] == [1, 3, 4] and a.rows[0].fields[1] == "王五"
    assert a.rows[2].problem and "2 fields, the header 8" in a.rows[2].problem


@pytest.mark.parametrize(
    "value",
    [
        "王建国",
        "欧阳·娜娜",
        "Li",
        "长" * 64,
        "长" * 65,
        "=A1",
        "王\u202e国",
        "王 国",
        "13900000001",
        "12900000001",
        "1390000000",
        "0371-66668888",
        "ZY0001",
        "-1",
        "\u3000王",
        "Ａ１",
        "a\x00b",
        "\ud800",
    ],
)
def test_plain_patterns_only_take_what_the_rules_take_as_it_is(value):
    """The shortcuts a bulk import takes before the text rules never let through what a
    rule would refuse or change."""
    from layers import textfields

    def outcome(rule):
        try:
            return rule(value)
        except Exception:
            return None

    if textfields.PLAIN_NAME.fullmatch(value):
        assert outcome(textfields.name) == value
    if textfields.PLAIN_MOBILE.fullmatch(value):
        assert outcome(textfields.phone) == value
    if textfields.MEMBER_NUMBER.fullmatch(value):
        assert outcome(textfields.member_number) == value
    if textfields._PLAIN_TEXT.fullmatch(value):
        # the character-by-character check agrees there is nothing wrong
        assert textfields.character_problem(value) is None
        assert textfields.character_problem(value, format_chars=False) is None

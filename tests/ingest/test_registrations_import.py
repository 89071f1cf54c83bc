"""Bulk registration from CSV: dry run, commit, rejects, idempotence, the command."""

import csv
import io

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from geo_api.cli import main
from ingest import registrations as bulk
from layers.crs import from_wgs84
from layers.locate import build_grid_index
from layers.versions import data_versions
from tests.conftest import scratch_engine
from tests.factories import GRID_A, GRID_B, GRID_C, small_layout
from tests.zh import untranslated_reasons

X, Y = 113.60, 34.70
HEADER = "member_id,name,phone,lon,lat,crs,role\n"


def sample_csv() -> str:
    gx, gy = from_wgs84(X + 0.07, Y + 0.02, "gcj02")  # in B, sent as GCJ-02
    ex, ey = from_wgs84(X + 0.07, Y + 0.08, "EPSG:4547")  # in C, as CGCS2000 GK easting/northing
    rows = [
        f"DY001,张三,13800000001,{X + 0.02},{Y + 0.02},wgs84,平安创建示范员",
        f"DY002,李四,13800000002,{gx!r},{gy!r},gcj02,fuwu",
        f"DY003,王五,,{X + 0.05005},{Y + 0.08},,法治建设宣传员",
        f"DY004,赵六,13800000004,{X + 0.5},{Y + 0.02},wgs84,fuwu",
        "DY005,钱七,13800000005,abc,34.7,wgs84,fuwu",
        f"DY006,孙八,13800000006,{X + 0.02},{Y + 0.02},wgs84,宣传委员",
        f"DY001,张三,13800000001,{X + 0.02},{Y + 0.02},wgs84,fuwu",
        f"DY008,,13800000008,{X + 0.02},{Y + 0.02},wgs84,fuwu",
        f"DY009,周九,13800000009,{ex!r},{ey!r},EPSG:4547,jiandu",
    ]
    return HEADER + "\n".join(rows) + "\n"


def plan(session, data):
    return bulk.plan_import(session, data, build_grid_index(session), tolerance_m=30, edge_m=0.05)


def test_dry_run_classifies_every_row_and_writes_nothing(empty_db):
    small_layout(empty_db, X, Y)
    p = plan(empty_db, sample_csv())
    assert p.counts() == {"located": 3, "nearest": 1, "unmatched": 1, "invalid": 4}
    by_row = {o.row: o for o in p.outcomes}
    assert by_row[1].grid == GRID_A and by_row[2].grid == GRID_B and by_row[9].grid == GRID_C
    assert by_row[3].status == "nearest" and by_row[3].grid == GRID_A
    assert "nearest grid" in by_row[4].reason
    assert "lon" in by_row[5].reason and "宣传委员" in by_row[6].reason
    assert "first on row 1" in by_row[7].reason and "name is missing" in by_row[8].reason
    assert empty_db.execute(text("SELECT count(*) FROM members")).scalar() == 0


def test_commit_writes_the_good_rows_and_is_idempotent(empty_db, tmp_path):
    small_layout(empty_db, X, Y)
    p = plan(empty_db, sample_csv())
    counts = bulk.commit_import(empty_db.connection(), p, actor="import:test")
    assert counts == {
        "members_created": 4,
        "members_updated": 0,
        "registrations_created": 4,
        "moves": 0,
        "unchanged": 0,
    }
    regs = empty_db.execute(
        text("""SELECT m.number, g.code, r.status, r.role_code FROM registrations r
                JOIN members m ON m.id = r.member_id JOIN grids g ON g.id = r.grid_id ORDER BY m.number""")
    ).all()
    assert [tuple(r) for r in regs] == [
        ("DY001", GRID_A, "confirmed", "pingan"),
        ("DY002", GRID_B, "confirmed", "fuwu"),
        ("DY003", GRID_A, "confirmed", "fazhi"),
        ("DY009", GRID_C, "confirmed", "jiandu"),
    ]
    source = empty_db.execute(text("SELECT source_crs FROM residences ORDER BY id")).scalars().all()
    assert source == ["wgs84", "gcj02", "wgs84", "EPSG:4547"]
    rejects = tmp_path / "rejects.csv"
    assert bulk.write_rejects(rejects, p) == 5
    with open(rejects, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["row"] for r in rows] == ["4", "5", "6", "7", "8"] and all(r["reason"] for r in rows)
    assert not untranslated_reasons(r["reason"] for r in rows)  # the web map shows each in Chinese
    assert [r["line"] for r in rows] == ["5", "6", "7", "8", "9"]

    before = data_versions(empty_db)
    again = bulk.commit_import(empty_db.connection(), plan(empty_db, sample_csv()), actor="import:test")
    assert again == {"members_created": 0, "members_updated": 0, "registrations_created": 0, "moves": 0, "unchanged": 4}
    assert data_versions(empty_db) == before
    assert empty_db.execute(text("SELECT count(*) FROM registrations")).scalar() == 4


def test_a_moved_member_gets_a_new_registration_and_keeps_the_old(empty_db):
    small_layout(empty_db, X, Y)
    bulk.commit_import(empty_db.connection(), plan(empty_db, sample_csv()), actor="t")
    moved = HEADER + f"DY001,张三,13800000001,{X + 0.07},{Y + 0.03},wgs84,平安创建示范员\n"
    counts = bulk.commit_import(empty_db.connection(), plan(empty_db, moved), actor="t")
    assert counts["moves"] == 1 and counts["registrations_created"] == 1
    rows = empty_db.execute(
        text("""SELECT r.status, g.code FROM registrations r JOIN members m ON m.id = r.member_id
                JOIN grids g ON g.id = r.grid_id WHERE m.number = 'DY001' ORDER BY r.id""")
    ).all()
    assert [tuple(r) for r in rows] == [("ended", GRID_A), ("confirmed", GRID_B)]


def test_a_file_without_the_columns_is_refused(empty_db):
    small_layout(empty_db, X, Y)
    p = plan(empty_db, "member_id,name,phone,x,lat\n1,a,b,1,2\n")
    assert "missing lon" in p.file_error and p.outcomes == [] and p.good == []


@pytest.fixture
def cli_database(server_url, monkeypatch):
    with scratch_engine(server_url, "test_cli", migrated=True) as engine:
        with Session(engine) as session:
            small_layout(session, X, Y)
            session.commit()
        monkeypatch.setenv("GRIDBRANCH_DATABASE_URL", engine.url.render_as_string(hide_password=False))
        yield engine


def test_the_command_dry_runs_then_commits(cli_database, tmp_path, capsys):
    path = tmp_path / "members.csv"
    path.write_text(sample_csv(), encoding="utf-8")
    assert main(["ingest", "registrations", str(path)]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing written" in out and "invalid:                                4" in out
    with cli_database.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM registrations")).scalar() == 0
    assert main(["ingest", "registrations", str(path), "--commit"]) == 0
    out = capsys.readouterr().out
    assert "registrations created 4" in out and "5 rejected rows" in out
    assert (tmp_path / "members.rejects.csv").exists()
    assert main(["ingest", "registrations", str(path), "--commit"]) == 0
    assert "unchanged 4" in capsys.readouterr().out
    with cli_database.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM registrations")).scalar() == 4


def test_an_imported_member_with_a_bare_residence_gets_it_superseded(empty_db):
    from tests.factories import add_member

    small_layout(empty_db, X, Y)
    m = add_member(empty_db, "张三", number="DY001")
    empty_db.execute(
        text("""INSERT INTO residences (member_id, geom, source_crs, source_x, source_y)
                VALUES (:m, ST_SetSRID(ST_MakePoint(113.61, 34.71), 4326), 'wgs84', 113.61, 34.71)"""),
        {"m": m},
    )
    counts = bulk.commit_import(empty_db.connection(), plan(empty_db, sample_csv()), actor="t")
    assert counts["registrations_created"] == 4
    assert (
        empty_db.execute(
            text("SELECT count(*) FROM residences WHERE member_id = :m AND ended_at IS NULL"), {"m": m}
        ).scalar()
        == 1
    )


def test_rows_with_a_nul_character_are_rejected_and_the_rest_commit(empty_db):
    small_layout(empty_db, X, Y)
    data = (
        HEADER
        + "\n".join(
            [
                f"DY101,张\x00三,13800000101,{X + 0.02},{Y + 0.02},wgs84,fuwu",
                f"DY102,李四,13800000102,{X + 0.02},{Y + 0.02},wgs84,fu\x00wu",
                f"DY1\x0003,王五,13800000103,{X + 0.02},{Y + 0.02},wgs84,fuwu",
                f"DY104,赵六,13800000104,{X + 0.02},{Y + 0.02},wgs84,fuwu",
            ]
        )
        + "\n"
    )
    p = plan(empty_db, data)
    assert p.counts() == {"located": 1, "nearest": 0, "unmatched": 0, "invalid": 3}
    reasons = {o.row: o.reason for o in p.outcomes if o.status == "invalid"}
    assert "NUL" in reasons[1] and "name" in reasons[1]
    assert "NUL" in reasons[2] and "role" in reasons[2]
    assert "NUL" in reasons[3] and "member_id" in reasons[3]
    bulk.commit_import(empty_db.connection(), p, actor="import:test")
    assert empty_db.execute(text("SELECT array_agg(number) FROM members")).scalar() == ["DY104"]


def good_row(k: int, *, raw: bool = False, **cells) -> str:
    """Data row k: a member placed in grid A unless ``cells`` override a column; quoted
    as a spreadsheet would write it, unless ``raw`` (broken on purpose)."""
    values = {
        "member_id": f"DY{k:03d}",
        "name": f"党员{k}",
        "phone": f"138{k:08d}",
        "lon": f"{X + 0.02}",
        "lat": f"{Y + 0.02}",
        "crs": "wgs84",
        "role": "fuwu",
        **cells,
    }
    if raw:
        return ",".join(values[c] for c in bulk.COLUMNS)
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow([values[c] for c in bulk.COLUMNS])
    return out.getvalue()


def accounted(p) -> list[int]:
    return sorted(o.row for o in p.outcomes)


def test_an_unbalanced_quote_rejects_the_rows_it_swallows(empty_db):
    small_layout(empty_db, X, Y)
    rows = [good_row(k) for k in range(1, 15)]
    rows[11] = good_row(12, raw=True, name='"张十二')  # the quote runs on into row 13, closed at its end
    rows[12] = good_row(13, raw=True, role='fuwu"')
    p = plan(empty_db, HEADER + "\n".join(rows) + "\n")
    assert accounted(p) == list(range(1, 15))  # every row: imported or rejected, numbered as in the file
    by_row = {o.row: o for o in p.outcomes}
    for row in (12, 13):
        assert by_row[row].status == "invalid" and "rows 12–13" in by_row[row].reason and "quote" in by_row[row].reason
    assert by_row[13].values["member_id"] == "DY013"  # each row keeps its own text in the rejects
    assert all(by_row[k].status == "located" for k in range(1, 15) if k not in (12, 13))
    assert sorted(r["number"] for r in p.good) == [f"DY{k:03d}" for k in range(1, 15) if k not in (12, 13)]
    assert not any("DY013" in r["name"] for r in p.good)


def test_broken_quoting_and_a_quote_open_at_the_end_are_rejected(empty_db):
    small_layout(empty_db, X, Y)
    data = (
        HEADER
        + "\n".join(
            [
                good_row(1),
                good_row(2, raw=True, name='"张"三'),
                good_row(3),
                good_row(4, raw=True, name='"李四'),
                good_row(5),
            ]
        )
        + "\n"
    )
    p = plan(empty_db, data)
    assert accounted(p) == [1, 2, 3, 4, 5]
    by_row = {o.row: o for o in p.outcomes}
    assert by_row[2].status == "invalid" and "quoting" in by_row[2].reason
    assert by_row[4].status == by_row[5].status == "invalid" and "rows 4–5" in by_row[5].reason
    assert "never closed" in by_row[4].reason
    assert [r["number"] for r in p.good] == ["DY001", "DY003"]


def test_rows_with_too_many_or_too_few_fields_are_rejected(empty_db):
    small_layout(empty_db, X, Y)
    data = HEADER + "\n".join([good_row(1), good_row(2, raw=True, name="张,三"), "DY003,王五", good_row(4)]) + "\n"
    p = plan(empty_db, data)
    reasons = {o.row: o.reason for o in p.outcomes if o.status == "invalid"}
    assert set(reasons) == {2, 3} and "8 fields" in reasons[2] and "2 fields" in reasons[3]


HOSTILE = {  # column → values the API refuses for it
    "member_id": ["D" * 44, "=1+1", "-DY1", "DY 1", "DY\u202e1"],
    "name": [
        "名" * 5000,
        '=HYPERLINK("http://evil.example","点我")',
        "+张三",
        "-张三",
        "@SUM(A1)",
        "\t=1+1",
        "张\x1b[2J三",
        "张\u200b三",
        "张\u202e三",
        "张\ud800三",
    ],
    "phone": ["+1 234", "12345", "=13800000001", "１３８００００００００１", "1" * 5000],
    "role": ["=fuwu", "x" * 5000],
    "crs": ["=wgs84", "w" * 40],
    "lon": ["=113.62", "@113.62"],
}


def hostile_rows():
    cases = [(column, value) for column, values in HOSTILE.items() for value in values]
    rows = [good_row(k + 1, **{column: value}) for k, (column, value) in enumerate(cases)]
    return cases, rows


def test_every_hostile_cell_is_refused_with_its_column_named(empty_db):
    small_layout(empty_db, X, Y)
    cases, rows = hostile_rows()
    good_k = len(rows) + 1
    rows.append(good_row(good_k, lon=f"+{X + 0.02}"))  # a number may carry a sign: not a formula
    p = plan(empty_db, HEADER + "\n".join(rows) + "\n")
    assert accounted(p) == list(range(1, len(rows) + 1))
    by_row = {o.row: o for o in p.outcomes}
    for k, (column, value) in enumerate(cases, start=1):
        o = by_row[k]
        assert o.status == "invalid" and column in o.reason, (column, value, o.reason)
    assert [r["number"] for r in p.good] == [f"DY{good_k:03d}"]


def test_a_long_member_number_is_a_rejected_row_and_the_rest_commits(empty_db):
    small_layout(empty_db, X, Y)
    data = HEADER + "\n".join([good_row(1), good_row(2, member_id="M" * 44), good_row(3)]) + "\n"
    p = plan(empty_db, data)
    assert {o.row: o.status for o in p.outcomes} == {1: "located", 2: "invalid", 3: "located"}
    assert "44 characters" in p.outcomes[1].reason
    counts = bulk.commit_import(empty_db.connection(), p, actor="import:test")
    assert counts["registrations_created"] == 2


def test_the_rejects_file_runs_no_formula_when_opened(empty_db, tmp_path):
    small_layout(empty_db, X, Y)
    data = HEADER + good_row(1, name='=HYPERLINK("http://evil.example","点我")', lon="-113.5") + "\n"
    p = plan(empty_db, data)
    path = tmp_path / "rejects.csv"
    assert bulk.write_rejects(path, p) == 1
    with open(path, encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    assert row["name"] == "'" + '=HYPERLINK("http://evil.example","点我")'
    assert row["lon"] == "-113.5"  # a plain number stays a number
    assert not any(v.startswith(("=", "+", "@", "\t", "\r")) for v in row.values())


def test_the_command_reports_an_unreadable_file_and_still_writes_rejects(cli_database, tmp_path, capsys):
    path = tmp_path / "gbk.csv"
    path.write_bytes((HEADER + good_row(1, name="张三")).encode("gbk"))
    assert main(["ingest", "registrations", str(path), "--commit"]) == 1
    err = capsys.readouterr().err
    assert "not utf-8 text" in err.lower() and "--encoding" in err
    with open(tmp_path / "gbk.rejects.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["status"] == "unreadable" and "utf-8" in rows[0]["reason"].lower()
    with cli_database.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM members")).scalar() == 0

    # named, the encoding reads it
    assert main(["ingest", "registrations", str(path), "--commit", "--encoding", "gb18030"]) == 0
    with cli_database.connect() as conn:
        assert conn.execute(text("SELECT name FROM members")).scalars().all() == ["张三"]

    missing = tmp_path / "nowhere.csv"
    assert main(["ingest", "registrations", str(missing)]) == 1
    assert (tmp_path / "nowhere.rejects.csv").exists() and "cannot be read" in capsys.readouterr().err


def test_the_command_writes_rejects_on_a_dry_run(cli_database, tmp_path, capsys):
    path = tmp_path / "members.csv"
    path.write_text(HEADER + "\n".join([good_row(1), good_row(2, phone="+1 234")]) + "\n", encoding="utf-8")
    assert main(["ingest", "registrations", str(path)]) == 0
    with open(tmp_path / "members.rejects.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["row"] for r in rows] == ["2"] and "phone" in rows[0]["reason"]
    with cli_database.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM members")).scalar() == 0


def test_a_write_the_database_refuses_is_reported_and_writes_nothing(cli_database, tmp_path, capsys):
    with cli_database.begin() as conn:  # a rule of the database's the import cannot foresee
        conn.execute(text("ALTER TABLE members ADD CONSTRAINT no_test_name CHECK (name <> '党员2')"))
    try:
        path = tmp_path / "members.csv"
        path.write_text(HEADER + "\n".join([good_row(1), good_row(2), good_row(3, phone="x")]) + "\n", encoding="utf-8")
        assert main(["ingest", "registrations", str(path), "--commit"]) == 1
        assert "failed and wrote nothing" in capsys.readouterr().err
        with cli_database.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM members")).scalar() == 0
        with open(tmp_path / "members.rejects.csv", encoding="utf-8") as handle:
            assert [r["row"] for r in csv.DictReader(handle)] == ["3"]
    finally:
        with cli_database.begin() as conn:
            conn.execute(text("ALTER TABLE members DROP CONSTRAINT no_test_name"))

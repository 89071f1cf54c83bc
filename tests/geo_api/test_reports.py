"""The monthly report (月度报告, issue 21 item 4) on the demo: the PDF rendered on the
server and opened here (pypdf), its figures checked against the API's own answers; the
print HTML with its map of every grid; who may have it; bad months refused in Chinese;
and the command."""

from __future__ import annotations

import contextlib
import io
import os
import re
from datetime import timedelta

import pypdf
import pytest

from geo_api.cli import main
from tests.conftest import TEST_CLOCK, token_for
from tests.zh import zh_fault
from tiles.style import COLORS

DISTRICT, STREET, OTHER_STREET = "410105000000", "410105003000", "410105001000"


def _last_month() -> tuple[str, str, str]:
    """The month before the clock's (YYYY-MM), its first and last day."""
    from zoneinfo import ZoneInfo

    today = TEST_CLOCK.now().astimezone(ZoneInfo("Asia/Shanghai")).date()
    last = today.replace(day=1) - timedelta(days=1)
    return last.strftime("%Y-%m"), last.replace(day=1).isoformat(), last.isoformat()


def _pdf_text(body: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(body))
    return re.sub(r"\s+", " ", " ".join(page.extract_text() for page in reader.pages))


def _pct(v: float) -> str:
    return f"{v * 100:.1f}%"


def test_the_district_report_as_pdf_holds_the_api_figures(client):
    month, first, last = _last_month()
    r = client.get("/v1/reports/monthly", params={"month": month}, headers=token_for("admin"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf" and r.content.startswith(b"%PDF")
    assert f"report-{DISTRICT}-{month}.pdf" in r.headers["content-disposition"]
    text = _pdf_text(r.content)
    assert f"金水区 · {month} 月度报告" in text

    total = client.get("/v1/coverage/summary", headers=token_for("admin")).json()["total"]
    for figure, label in (
        (str(total["grids"]), "网格"),
        (str(total["grids_with_branch"]), "有党支部覆盖的网格"),
        (_pct(total["registration_rate"]), "报到率"),
        (str(total["members_registered"]), "已报到"),
    ):
        assert f"{figure} {label}" in text, (figure, label)

    streets = client.get(
        "/v1/events/evaluation", params={"level": "street", "from": first, "to": last}, headers=token_for("admin")
    ).json()["units"]
    received = sum(u["received"] for u in streets)
    closed = sum(u["closed"] for u in streets)
    assert received > 100  # the demo's month is full
    assert f"{received} 受理事件" in text and f"{closed} 已结案" in text
    best = next(u for u in streets if u["rank"] == 1)
    assert f"{best['name']} {best['code']} {best['received']} {best['due']} {_pct(best['closure_rate'])}" in text
    departments = client.get(
        "/v1/events/evaluation", params={"level": "department", "from": first, "to": last}, headers=token_for("admin")
    ).json()["units"]
    assert "职能部门办理排名" in text and departments[0]["name"] in text


def test_the_print_page_draws_every_grid_and_names_no_person(client, demo_db):
    from sqlalchemy import text

    month, _, _ = _last_month()
    r = client.get("/v1/reports/monthly", params={"month": month, "format": "html"}, headers=token_for("admin"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "@page" in page and 'lang="zh-CN"' in page
    assert page.count("<path ") == 500
    assert page.count(f'fill="{COLORS["without_branch"]}"') == 25  # the demo's branchless grids, as on the map
    names = demo_db.execute(text("SELECT name, phone FROM members ORDER BY id LIMIT 200")).all()
    assert not [n for n, p in names if n in page or (p and p in page)]


def test_a_street_admin_has_their_own_street_only(client):
    month, _, _ = _last_month()
    headers = token_for("street_admin")
    street = client.get("/v1/auth/me", headers=headers).json()["area_code"]
    own = client.get("/v1/reports/monthly", params={"month": month, "format": "html"}, headers=headers)
    assert own.status_code == 200 and street in own.text and "社区排名" in own.text
    for beyond in (DISTRICT, next(s for s in (STREET, OTHER_STREET) if s != street)):
        other = client.get("/v1/reports/monthly", params={"month": month, "within": beyond}, headers=headers)
        assert other.status_code == 403 and other.json()["field"] == "within" and not zh_fault(other.json())


@pytest.mark.parametrize("user, status", [(None, 401), ("member", 403), ("gridworker", 403), ("department", 403)])
def test_who_may_not(client, user, status):
    month, _, _ = _last_month()
    headers = token_for(user) if user else {}
    assert client.get("/v1/reports/monthly", params={"month": month}, headers=headers).status_code == status


@pytest.mark.parametrize("month", ["2026-13", "202611", "", "2999-01", "2026-1"])
def test_bad_months_are_refused_in_chinese(client, month):
    r = client.get("/v1/reports/monthly", params={"month": month}, headers=token_for("admin"))
    assert r.status_code == 422 and r.json().get("field") == "month" and not zh_fault(r.json()), r.text


def test_the_command_writes_the_pdf(demo_engine, tmp_path):
    month, _, _ = _last_month()
    out = tmp_path / "jinshui.pdf"
    env = {"GRIDBRANCH_DATABASE_URL": demo_engine.url.render_as_string(hide_password=False)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            assert main(["report", "--within", STREET, "--month", month, "--out", str(out)]) == 0
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    assert "wrote" in buf.getvalue() and out.read_bytes().startswith(b"%PDF")
    assert "人民路街道" in _pdf_text(out.read_bytes())

"""The public report form (随手拍, issue 22 build 4) in chromium on a phone (390×844) and
at a desk: the spot picked on the map shows the open reports near it first, a report
with a photo is made without an account and lands on its tracking page, which shows its
public state; every control is a 44 px target; nothing is fetched from another host."""

from __future__ import annotations

import io
from urllib.parse import urlsplit

import pytest
from PIL import Image
from sqlalchemy import text

from tests.web_map.test_phone_browser import PHONE

pytestmark = pytest.mark.browser


def _open_event(engine):
    with engine.connect() as conn:
        return conn.execute(
            text(
                """SELECT e.id, ST_X(e.geom) AS lon, ST_Y(e.geom) AS lat
                   FROM events e JOIN event_categories c ON c.code = e.category_code
                   WHERE NOT c.public_space AND e.status NOT IN ('closed', 'rejected', 'duplicate')
                     AND e.reported_at >= gridbranch_now() - interval '20 days'
                   ORDER BY e.reported_at DESC LIMIT 1"""
            )
        ).one()


def _tap(page, lon: float, lat: float) -> None:
    page.evaluate(
        "([lon, lat]) => new Promise((r) => { const m = window.gridbranchReportMap;"
        " m.jumpTo({center: [lon, lat], zoom: 16}); m.once('idle', () => r()); m.triggerRepaint(); })",
        [lon, lat],
    )
    box = page.locator("#report-map").bounding_box()
    xy = page.evaluate(
        "([lon, lat]) => { const p = window.gridbranchReportMap.project([lon, lat]); return [p.x, p.y]; }", [lon, lat]
    )
    page.mouse.click(box["x"] + xy[0], box["y"] + xy[1])


def test_a_resident_reports_with_a_photo_from_a_phone(page, page_log, live_server, demo_engine, tmp_path):
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server}/report")
    page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
    assert page.inner_text("h1").startswith("随手拍")

    near = _open_event(demo_engine)
    _tap(page, near.lon, near.lat)
    page.wait_for_selector("#report-nearby:not([hidden])")
    assert f"查看 {near.id}" in page.inner_text("#report-nearby-list")  # the report already made, first
    assert "已选位置" in page.inner_text("#report-where")

    page.click("#report-submit")  # nothing chosen yet: said, nothing sent
    assert "类别" in page.inner_text("#report-message")

    options = page.eval_on_selector_all("#report-category option", "os => os.map(o => [o.value, o.textContent])")
    value, name = next((v, t) for v, t in options if v)
    page.select_option("#report-category", value)
    page.fill("#report-description", "人行道地砖松动，雨天踩上去会溅水")
    photo = tmp_path / "street.jpg"
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (90, 120, 160)).save(buf, "JPEG")
    photo.write_bytes(buf.getvalue())
    page.set_input_files("#report-photos", str(photo))
    page.fill("#report-contact", "13800000000")

    targets = page.eval_on_selector_all(
        "button, select, textarea, input", "els => els.map(e => [e.id, e.getBoundingClientRect().height])"
    )
    assert all(h >= 44 for _, h in targets), targets

    page.click("#report-submit")
    page.wait_for_function("document.body.dataset.state === 'tracked'", timeout=60_000)
    number = int(page.inner_text("#track-number"))
    assert urlsplit(page.url).path == f"/report/{number}"
    details = page.inner_text("#track-details")
    assert "已上报，待受理" in details and name in details
    assert "13800000000" not in page.content()  # the contact is the staff's only

    with demo_engine.connect() as conn:
        row = conn.execute(
            text("SELECT channel, description, photos, reporter_contact FROM events WHERE id = :i"), {"i": number}
        ).one()
    assert row.channel == "public" and row.description.startswith("人行道地砖")
    assert len(row.photos) == 1 and "/v1/photos/" in row.photos[0] and row.reporter_contact == "13800000000"
    assert not page_log.foreign and not page_log.page_errors, (page_log.foreign, page_log.page_errors)


def test_the_tracking_page_at_a_desk_and_an_unknown_number(page, page_log, live_server, demo_engine):
    page.set_viewport_size({"width": 1440, "height": 900})
    near = _open_event(demo_engine)
    page.goto(f"{live_server}/report/{near.id}")
    page.wait_for_function("document.body.dataset.state === 'tracked'", timeout=60_000)
    assert page.inner_text("#track-number") == str(near.id) and "状态" in page.inner_text("#track-details")
    assert page.is_visible("#track-map") and page.is_hidden("#report-form-section")
    page.goto(f"{live_server}/report/999999999")
    page.wait_for_function("document.body.dataset.state === 'tracked'", timeout=60_000)
    assert "没有这个编号的上报" in page.inner_text("#track-details")
    assert not page_log.foreign and not page_log.page_errors

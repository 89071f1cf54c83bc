"""A member's session on a phone, in a real browser (issue 17 items 3–4, issue 22 build 2):
the street's admin issues the community's activation codes on the map; the member
activates their account with the code, sets a password, reloads and is still signed in (the httpOnly session cookie), registers at
the grid where they live, signs out; a reload after the account's tokens were revoked
elsewhere signs the page out and says why, and so does the idle timeout.

The member is made for the test and removed afterwards with everything it wrote."""

from __future__ import annotations

import pytest
from shapely.geometry import Point, shape
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.conftest import TEST_PASSWORD
from tests.factories import add_member
from tests.web_map.helpers import (
    api_grids,
    get_json,
    inner_point,
    open_map,
    registrations,
    submit,
    wait_located,
    wait_state,
)

pytestmark = pytest.mark.browser

NUMBER, PHONE, PASSWORD = "TEST-ACT-0001", "13912345601", "Phone-member-2026"


COMMUNITY = "410105001001"  # in the demo street admin's street


@pytest.fixture
def new_member(demo_engine):
    """A member of COMMUNITY (by their work-unit branch there) without an account."""
    with Session(demo_engine) as s:
        branch = s.execute(
            text(
                "SELECT b.id FROM branches b JOIN admin_areas a ON a.id = b.community_id "
                "WHERE a.code = :c ORDER BY b.id LIMIT 1"
            ),
            {"c": COMMUNITY},
        ).scalar_one()
        mid = add_member(s, "测试激活党员", number=NUMBER, phone=PHONE, work_branch=branch)
        s.commit()
    try:
        yield mid
    finally:
        with demo_engine.begin() as conn:
            conn.execute(text("DELETE FROM activation_codes WHERE issued_by = 'street_admin'"))
            conn.execute(text("DELETE FROM registrations WHERE member_id = :m"), {"m": mid})
            conn.execute(text("DELETE FROM residences WHERE member_id = :m"), {"m": mid})
            conn.execute(text("DELETE FROM users WHERE member_id = :m"), {"m": mid})
            conn.execute(text("DELETE FROM members WHERE id = :m"), {"m": mid})


def _a_grid(base: str) -> tuple[str, float, float]:
    """A grid's code and a point inside it and no other grid (typed in, not clicked)."""
    grids = api_grids(base)
    shapes = {f["properties"]["code"]: shape(f["geometry"]) for f in grids}
    for grid in grids:
        code, (lon, lat) = grid["properties"]["code"], inner_point(grid["geometry"])
        if not any(g.intersects(Point(lon, lat)) for c, g in shapes.items() if c != code):
            return code, lon, lat
    raise AssertionError("every grid of the demo overlaps another: it is deterministic, so this is a defect")


SIGNED_IN = "document.body.dataset.role === 'member'"
SIGNED_OUT = "document.body.dataset.role === undefined"


def test_a_member_activates_on_a_phone_reloads_registers_and_signs_out(
    page, page_log, live_server, demo_engine, new_member
):
    member_id = new_member
    page.set_viewport_size({"width": 390, "height": 844})
    page.clock.install()  # the page's timers, so the idle timeout can be skipped to below
    open_map(page, live_server)
    grid_code, lon, lat = _a_grid(live_server)

    # the street's admin issues the community's codes, to print and hand out
    page.fill("#signin input[name=username]", "street_admin")
    page.fill("#signin input[name=password]", TEST_PASSWORD)
    page.click("#signin button[type=submit]")
    page.wait_for_function("document.body.dataset.role === 'admin'")
    page.fill("#codes-form input[name=within]", COMMUNITY)
    page.click("#codes-form button[type=submit]")
    page.wait_for_function("document.getElementById('codes').dataset.state === 'ready'", timeout=60_000)
    code = page.inner_text(f"#codes-table tr[data-number='{NUMBER}'] .code")
    with demo_engine.connect() as conn:
        issued = conn.execute(
            text(
                "SELECT count(*) FROM activation_codes WHERE issued_by = 'street_admin' "
                "AND used_at IS NULL AND voided_at IS NULL"
            )
        ).scalar()
    assert issued == page.locator("#codes-table tbody tr").count() > 1
    page.click("#signout")
    page.wait_for_function(SIGNED_OUT)
    assert page.is_hidden("#codes")

    # activation, as a member types it on a phone: the code in lower case, without dashes
    page.click("#activate-toggle")
    page.fill("#activate input[name=number]", NUMBER)
    page.fill("#activate input[name=phone]", PHONE)
    page.fill("#activate input[name=code]", "wrong-code-0000")
    page.fill("#activate input[name=password]", PASSWORD)
    page.fill("#activate input[name=password2]", PASSWORD)
    page.click("#activate button[type=submit]")
    page.wait_for_function("document.querySelector('#activate .signin-error').textContent.includes('激活码不正确')")
    page.fill("#activate input[name=code]", code.replace("-", "").lower())
    page.click("#activate button[type=submit]")
    page.wait_for_function(SIGNED_IN)
    assert NUMBER in page.inner_text("#signed-in .who") and page.is_hidden("#activate")
    wait_state(page, "none")

    # the session is an httpOnly, SameSite=Strict cookie the page's script cannot read
    [cookie] = [c for c in page.context.cookies() if c["name"] == "gridbranch_session"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/v1/auth"
    assert "gridbranch_session" not in page.evaluate("document.cookie")

    # a reload keeps the member signed in
    page.reload()
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)
    page.wait_for_function(SIGNED_IN)
    wait_state(page, "none")

    # registers where they live (the existing flow)
    page.fill("#register-form input[name=lon]", f"{lon:.7f}")
    page.fill("#register-form input[name=lat]", f"{lat:.7f}")
    page.press("#register-form input[name=lat]", "Tab")
    wait_located(page, grid_code)
    submit(page, get_json(f"{live_server}/v1/registrations/roles")["roles"][0]["code"])
    wait_state(page, "pending")
    [reg] = registrations(demo_engine, member_id)
    assert reg[1] == "pending" and reg[4] == grid_code

    # signs out: every token and the cookie's session end; a reload stays signed out
    page.click("#signout")
    page.wait_for_function(SIGNED_OUT)
    assert page.inner_text("#session-message") == "已退出登录。"
    page.reload()
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)
    assert page.evaluate(SIGNED_OUT) and page.is_visible("#signin")

    # signed in again with the password; the account's tokens revoked elsewhere (a
    # password change, a disabling): the next reload signs the page out and says why
    page.fill("#signin input[name=username]", NUMBER)
    page.fill("#signin input[name=password]", PASSWORD)
    page.click("#signin button[type=submit]")
    page.wait_for_function(SIGNED_IN)
    wait_state(page, "pending")  # the panel has asked what it needs
    with demo_engine.begin() as conn:
        conn.execute(text("UPDATE users SET token_epoch = token_epoch + 1 WHERE member_id = :m"), {"m": member_id})
    page.reload()
    page.wait_for_function("document.body.dataset.ready === '1'", timeout=60_000)
    page.wait_for_function("(document.body.dataset.sessionMessage || '').includes('修改了密码')")
    assert page.evaluate(SIGNED_OUT)

    # unused for the idle timeout: the page signs out by itself and says so
    page.fill("#signin input[name=username]", NUMBER)
    page.fill("#signin input[name=password]", PASSWORD)
    page.click("#signin button[type=submit]")
    page.wait_for_function(SIGNED_IN)
    wait_state(page, "pending")
    page.clock.fast_forward("31:00")
    page.wait_for_function(SIGNED_OUT)
    assert "长时间未操作" in page.inner_text("#session-message")

    assert page_log.page_errors == [] and page_log.foreign == []
    # the refusals the flow asked for: the wrong code, the revoked session's refresh
    assert sorted(b.split()[0] for b in page_log.bad_status) == ["401", "401"], page_log.bad_status

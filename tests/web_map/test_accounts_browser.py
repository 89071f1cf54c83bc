"""Account management on the web map (accounts.js), in Debian's chromium against the
database: an admin creates a grid worker's account (its password generated and shown
once), the new account signs in with it, the admin disables it (a second click
confirms), and it can no longer sign in. Nobody but admins gets the panel."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.web_map.helpers import (
    open_map,
    sign_in,
    submit_sign_in,
)

pytestmark = pytest.mark.browser

USERNAME = "t_browser_gw"


def wait_ready(page) -> None:
    page.wait_for_function("document.getElementById('accounts').dataset.state === 'ready'", timeout=30_000)


def test_an_admin_creates_and_disables_an_account(page, live_server, demo_engine):
    with demo_engine.connect() as conn:
        grid = conn.execute(text("SELECT area_code FROM users WHERE username = 'gridworker'")).scalar()
    open_map(page, live_server)
    assert page.is_hidden("#accounts")
    try:
        sign_in(page, "gridworker")  # not an admin: no panel
        assert page.is_hidden("#accounts")
        sign_in(page, "street_admin")
        wait_ready(page)
        kinds = page.eval_on_selector_all("#accounts-form select[name=kind] option", "os => os.map(o => o.value)")
        assert kinds == ["community_admin", "grid_worker", "member"]  # what a street admin may create
        sign_in(page, "admin")
        wait_ready(page)
        kinds = page.eval_on_selector_all("#accounts-form select[name=kind] option", "os => os.map(o => o.value)")
        assert kinds == ["street_admin", "community_admin", "grid_worker", "dispatcher", "department_staff", "member"]

        # 1. a grid worker's account, its password generated and shown once
        page.select_option("#accounts-form select[name=kind]", "grid_worker")
        assert page.is_visible("#accounts-form .accounts-binding")
        page.fill("#accounts-form input[name=username]", USERNAME)
        page.fill("#accounts-form input[name=binding]", grid)
        page.fill("#accounts-form input[name=display_name]", "测试网格员")
        page.click("#accounts-form button[type=submit]")
        page.wait_for_selector("#accounts-password:not([hidden])")
        shown = page.inner_text("#accounts-password")
        assert "仅显示一次" in shown
        password = shown.rsplit("：", 1)[1].strip()
        assert len(password) >= 16
        row = f"#accounts-table tbody tr[data-username='{USERNAME}']"
        page.wait_for_selector(row)
        assert page.get_attribute(row, "data-active") == "true"
        assert page.inner_text(f"{row} .kind") == "网格员"

        # 2. it signs in
        submit_sign_in(page, USERNAME, password)
        page.wait_for_function("document.body.dataset.role === 'grid_worker'")
        assert USERNAME in page.inner_text("#signed-in .who")
        assert page.is_hidden("#accounts")

        # 3. the admin disables it: the first click asks, the second does it
        sign_in(page, "admin")
        wait_ready(page)
        page.click(f"{row} button.toggle")
        assert page.inner_text(f"{row} button.toggle") == "确认停用？"
        assert page.get_attribute(row, "data-active") == "true"
        page.click(f"{row} button.toggle")
        page.wait_for_selector(f"{row}[data-active='false']")
        assert page.inner_text(f"{row} .state") == "已停用"
        with demo_engine.connect() as conn:
            assert conn.execute(text("SELECT active FROM users WHERE username = :u"), {"u": USERNAME}).scalar() is False

        # 4. it can no longer sign in
        submit_sign_in(page, USERNAME, password)
        page.wait_for_selector("#signin .signin-error:not([hidden])")
        assert "用户名或密码错误" in page.inner_text("#signin .signin-error")
        assert page.evaluate("document.body.dataset.role") is None
    finally:
        with demo_engine.begin() as conn:  # the account log keeps its rows: it is append-only
            conn.execute(text("DELETE FROM users WHERE username = :u"), {"u": USERNAME})

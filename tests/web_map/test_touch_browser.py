"""Touch targets and MapLibre's own controls (issue 22 item 8), in a real browser: on a
phone (390×844) every button, field and map control a thumb presses is at least 44 px
tall and checkboxes are at least 22 px; on the desk checkboxes are larger than the
browser's 13 px; MapLibre's controls are labelled in Chinese (its `locale` option)."""

from __future__ import annotations

import re

import pytest

from tests.web_map.conftest import VIEWPORT
from tests.web_map.helpers import PHONE, open_map, pick_grid, sign_in

pytestmark = pytest.mark.browser

#: Every control a user can press, with its size and label, wherever it is on the page
#: (hidden ones left out: the panel scrolls, but nothing hidden can be pressed).
TARGETS = """(selector) => [...document.querySelectorAll(selector)].filter((e) => {
        const r = e.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden';
    }).map((e) => {
        const r = e.getBoundingClientRect();
        return {what: e.outerHTML.slice(0, 90), w: r.width, h: r.height, type: e.type || '',
                label: e.getAttribute('aria-label') || e.getAttribute('title') || e.textContent.trim()};
    })"""
PRESSABLE = "button, select, input:not([type=checkbox]):not([type=radio]):not([type=hidden]), .maplibregl-ctrl button"
ENGLISH = re.compile(r"[A-Za-z]{3,}")


def controls(page) -> list[dict]:
    return page.evaluate(TARGETS, ".maplibregl-ctrl button, .maplibregl-popup-close-button")


@pytest.mark.parametrize("account", [None, "dispatcher", "admin"])
def test_phone_targets_are_thumb_sized(page, live_server, account):
    page.set_viewport_size(PHONE)
    open_map(page, live_server)
    if account:
        sign_in(page, account)
    small = [t for t in page.evaluate(TARGETS, PRESSABLE) if t["h"] < 44]
    assert small == [], small
    boxes = page.evaluate(TARGETS, "input[type=checkbox], input[type=radio]")
    assert boxes and all(t["h"] >= 22 and t["w"] >= 22 for t in boxes), [t for t in boxes if t["h"] < 22]
    assert all(t["w"] >= 44 for t in controls(page)), controls(page)
    page.screenshot(path=f"/tmp/gridbranch-touch-{account or 'anonymous'}.png")


def test_desk_checkboxes_are_larger_and_controls_speak_chinese(page, live_server):
    page.set_viewport_size(VIEWPORT)
    open_map(page, live_server)
    boxes = page.evaluate(TARGETS, "#panel input[type=checkbox]")
    assert boxes and all(t["h"] >= 18 for t in boxes), boxes
    # a popup's close button too: open one on a grid
    _, (x, y) = pick_grid(page, live_server, True)
    page.mouse.click(x, y)
    page.wait_for_selector(".maplibregl-popup-close-button")
    labels = {t["label"] for t in controls(page)}
    assert {"放大", "缩小", "关闭弹窗"} <= labels, labels
    assert not [label for label in labels if ENGLISH.search(label)], labels
    attribution = page.get_attribute(".maplibregl-ctrl-attrib-button", "title")
    assert attribution and not ENGLISH.search(attribution), attribution

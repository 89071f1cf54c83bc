"""The Chinese of the service's refusals (layers.messages_zh): the catalogue fills its
templates from the English, and what it does not know still reads as Chinese."""

from __future__ import annotations

import re

import pytest

from layers.messages_zh import detail_zh, known, validation_zh

ENGLISH = re.compile(r"[A-Za-z]{3,}")


@pytest.mark.parametrize(
    "detail, field, status, expected",
    [
        ("lat out of range [-90, 90]: 95.0 (index 0)", "lat", 422, "纬度超出范围（±90）：95.0"),
        (
            "no grid within 30 m; the nearest grid is 410105001001001 一号网格, 600,065 m away",
            None,
            404,
            "该位置 30 米内没有网格；最近的网格是 410105001001001 一号网格，相距 600,065 米",
        ),
        ("no member with id 5 in your area", None, 404, "没有您管辖范围内的党员 5"),
        ("no event with id 77", None, 404, "没有事件 77"),
        (
            "event 9 is at version 3, not 2: reload and retry",
            None,
            409,
            "事件 9 已更新到第 3 版（您看到的是第 2 版），请刷新后重试",
        ),
        ("password: 至少 10 个字符 (at least 10 characters)", "password", 422, "至少 10 个字符"),
        ("crs: contains a NUL character (%00)", "crs", 422, "坐标系含有不允许的字符"),
        ("a grid_worker may not close an event that is dispatched", None, 403, "网格员不能对已派遣的事件执行结案"),
    ],
)
def test_known_messages(detail, field, status, expected):
    assert known(detail, field)
    assert detail_zh(detail, status=status, field=field) == expected


def test_unknown_messages_still_read_as_chinese():
    for status in (400, 401, 403, 404, 409, 422, 429, 503):
        text = detail_zh("some message nobody catalogued", status=status, field="lon")
        assert not known("some message nobody catalogued")
        assert text and not ENGLISH.search(text), (status, text)


def test_validation_errors_by_type():
    assert validation_zh({"type": "missing", "loc": ("body", "lon")}, "lon") == "缺少经度"
    assert (
        validation_zh({"type": "string_too_long", "ctx": {"max_length": 32}}, "category")
        == "事件类别太长（最多 32 个字符）"
    )
    assert (
        validation_zh({"type": "literal_error", "ctx": {"expected": "'public' or 'grid'"}}, "channel")
        == "渠道必须是以下之一：public or grid"
    )
    assert not ENGLISH.search(validation_zh({"type": "no_such_type"}, "lat"))

"""The check that a refusal speaks Chinese to the web map's zh-CN users: every problem
detail carries ``title_zh`` and ``detail_zh`` in Chinese, and that Chinese says what the
English ``detail`` says (the catalogue of layers.messages_zh knows it, or the raise site
gave its own), not only the sentence by status and field."""

from __future__ import annotations

import re

from layers.messages_zh import fallback_zh

CJK = re.compile(r"[\u3400-\u9fff]")


def zh_fault(problem: dict) -> str | None:
    """Why ``problem`` (a problem+json body) would reach a zh-CN user without its own
    Chinese, or None."""
    for key in ("title_zh", "detail_zh"):
        if not CJK.search(str(problem.get(key) or "")):
            return f"no Chinese {key}: {problem}"
    if problem.get("errors"):
        return None  # validation: the Chinese of each error by its type (pydantic's, not ours)
    if problem["detail_zh"] == fallback_zh(int(problem.get("status", 0)), problem.get("field")):
        return f"the catalogue has no Chinese for {problem.get('detail')!r}"  # nor the raise site
    return None


def untranslated_reasons(reasons) -> list[str]:
    """The import reasons (rows refused, features' problems) among ``reasons`` that would
    reach a zh-CN user without their own Chinese: some part the row-reason catalogue of
    layers.messages_zh does not know."""
    from layers.messages_zh import row_reason_known

    return [r for r in reasons if not row_reason_known(r)]

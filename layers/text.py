"""What no stored text may hold, whatever the entry point (API body, fast path, batch
writer): a NUL character (PostgreSQL's text refuses it) or a lone UTF-16 surrogate
(U+D800–U+DFFF: Python's JSON reader lets ``"\\ud800"`` through as a str that no UTF-8
encoder — psycopg2's, orjson's — can write)."""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def text_fault(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (a phrase to follow the field's name), or
    None when it can."""
    m = _UNSTORABLE.search(value)
    if m is None:
        return None
    if m.group() == "\x00":
        return "contains a NUL character (\\u0000), which no text can hold"
    return f"contains a lone surrogate (\\u{ord(m.group()):04x}), which is not a character"

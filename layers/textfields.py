"""The rules for text people type, in one place, whatever the way in: the API's request
bodies (the pydantic types :func:`Line` and :func:`Text` at the end of this module, for
fields no layer checks), the upkeep checks of ``layers.branches`` (grid workers, branch
names and secretaries, whichever way they come) and the bulk imports of ``ingest``.

Four kinds of text:

* a **name** (a person's, a branch's): one line, at most :data:`NAME_MAX` characters,
  no control or format characters, and not starting like a spreadsheet formula
  (``= + - @``, tab, CR): names end up in CSV exports opened in Excel, where such a cell
  runs as a formula (CSV injection);
* a **phone**: a mainland mobile number or a landline with its area code, spaces removed;
* a **line** of free text (a contact, a note, a URL): one line, control characters
  refused;
* **text** (a description, a reason): several lines allowed (LF, CR, tab), other control
  characters refused.

Every kind refuses lone surrogates (``"\\ud800"`` in JSON decodes to one; it cannot be
encoded as UTF-8, so PostgreSQL could never store it) and the bidirectional controls
that make text display other than it reads (U+202A–U+202E, U+2066–U+2069). The checks
raise :class:`layers.errors.InvalidInput` naming the field; the pydantic types turn the
same message into a 422 naming the body field.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import BeforeValidator, StringConstraints
from pydantic_core import PydanticCustomError

from layers.errors import InvalidInput

#: Longest name kept (a person's or a branch's).
NAME_MAX = 64
#: A mainland mobile number, or a landline with its area code (an optional hyphen).
PHONE = re.compile(r"^(?:1[3-9][0-9]{9}|0[0-9]{2,3}-?[0-9]{7,8})$")
PHONE_MAX = 20
_SPACES = re.compile(r"[ \u00a0\u3000]+")
#: The organisation department's member number (党员编号, ``members.number``, 32 at most).
MEMBER_NUMBER = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._/-]{0,31}$")
#: Names and mobile numbers the rules below take as they are: the common case, which a
#: bulk import matches at C speed before it calls the rules (they would only agree).
PLAIN_NAME = re.compile(f"[\u4e00-\u9fff\u00b7A-Za-z]{{1,{NAME_MAX}}}")
PLAIN_MOBILE = re.compile(r"1[3-9][0-9]{9}")
#: What a spreadsheet takes for the start of a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_MULTILINE = frozenset("\n\r\t")


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def text_fault(value: str) -> str | None:
    """The least any stored text must meet, whatever field it is (every string of every
    request body, the report batch writer): why ``value`` cannot be stored at all — a
    NUL (PostgreSQL's text refuses it) or a lone UTF-16 surrogate (Python's JSON reader
    lets ``"\\ud800"`` through as a str no UTF-8 encoder can write) — as a phrase to
    follow the field's name, or None. The kinds below are stricter."""
    m = _UNSTORABLE.search(value)
    if m is None:
        return None
    # worded as text_problem words them, so that a field refused by either reads the same
    if m.group() == "\x00":
        return f"contains a NUL character (U+0000) at character {m.start() + 1}"
    return f"contains a lone surrogate (U+{ord(m.group()):04X}) at character {m.start() + 1}, which is not text"


#: Text made only of printable ASCII, CJK punctuation, ideographs and full-width forms
#: has none of the problems below: the common case, answered without a look at each
#: character (a bulk import checks millions of cells).
_PLAIN_TEXT = re.compile("[\x20-\x7e\u00b7\u3000-\u303f\u4e00-\u9fff\uff01-\uff5e]*")


def text_problem(value: str, *, multiline: bool = False, format_chars: bool = True) -> str | None:
    """Why ``value`` cannot be kept as text (None when it can): a lone surrogate, a
    control character (besides LF, CR and tab in ``multiline`` text), a bidirectional
    control, or — unless ``format_chars`` — any format character (zero-width ones)."""
    if _PLAIN_TEXT.fullmatch(value):
        return None
    return character_problem(value, multiline=multiline, format_chars=format_chars)


def character_problem(value: str, *, multiline: bool = False, format_chars: bool = True) -> str | None:
    """:func:`text_problem` looking at every character."""
    for k, ch in enumerate(value):
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            return f"a lone surrogate (U+{code:04X}) at character {k + 1}, which is not text"
        if ch in _BIDI:
            return f"a bidirectional control character (U+{code:04X}) at character {k + 1}"
        category = unicodedata.category(ch)
        if category == "Cc" and not (multiline and ch in _MULTILINE):
            what = "a line break" if ch in "\n\r" else "a NUL character" if ch == "\x00" else "a control character"
            return f"{what} (U+{code:04X}) at character {k + 1}"
        if category == "Cf" and not format_chars:
            return f"an invisible format character (U+{code:04X}) at character {k + 1}"
        if category == "Cn" and (code & 0xFFFE) == 0xFFFE:
            return f"a noncharacter (U+{code:04X}) at character {k + 1}"
    return None


def looks_like_formula(value: str) -> bool:
    """Whether a spreadsheet would take ``value`` (a cell) for a formula."""
    return value.startswith(FORMULA_PREFIXES)


def formula_problem(value: str) -> str | None:
    """Why ``value`` may not be a name (or a CSV cell taken as text): it starts like a
    spreadsheet formula; None otherwise."""
    if looks_like_formula(value):
        return f"must not start with {value[0]!r} (a spreadsheet would run it as a formula)"
    return None


def _refuse(field: str, detail: str) -> InvalidInput:
    return InvalidInput(f"{field} {detail}", field=field)


def _length(value: str, field: str, max_length: int | None) -> None:
    if max_length is not None and len(value) > max_length:
        raise InvalidInput(
            f"{field} has {len(value)} characters; at most {max_length}", field=field, max_length=max_length
        )


def name(value: str, field: str = "name", *, max_length: int = NAME_MAX) -> str:
    """A name as stored: stripped, not blank, one line, not formula-like."""
    value = value.strip()
    if not value:
        raise _refuse(field, "must not be blank")
    _length(value, field, max_length)
    problem = text_problem(value, format_chars=False)
    if problem:
        raise _refuse(field, f"contains {problem}")
    problem = formula_problem(value)
    if problem:
        raise _refuse(field, problem)
    return value


def phone(value: str, field: str = "phone") -> str:
    """A phone as stored: a mainland mobile (11 digits, 1[3-9]…) or a landline with its
    area code (0371-12345678), spaces removed."""
    value = _SPACES.sub("", value)  # only spaces: a line break or a tab is no part of a phone
    _length(value, field, PHONE_MAX)
    problem = text_problem(value)
    if problem:
        raise _refuse(field, f"contains {problem}")
    if not PHONE.match(value):
        shown = value[:40] + ("…" if len(value) > 40 else "")
        raise _refuse(
            field,
            f"must be a mobile number (11 digits, 1[3-9]…) or a landline with its area code "
            f"(0371-12345678), got {shown!r}",
        )
    return value


def member_number(value: str, field: str = "member_id") -> str:
    """A member number (党员编号): 1–32 letters, digits and ``. _ / -``, starting with a
    letter or digit."""
    value = value.strip()
    if not MEMBER_NUMBER.match(value):
        if len(value) > 32:
            raise _refuse(field, f"has {len(value)} characters; a member number has at most 32")
        raise _refuse(
            field, f"must be 1–32 letters, digits or . _ / - (starting with a letter or digit), got {value[:40]!r}"
        )
    return value


def line(value: str, field: str, *, max_length: int | None = None) -> str:
    """One line of free text (no line breaks or other control characters)."""
    _length(value, field, max_length)
    problem = text_problem(value)
    if problem:
        raise _refuse(field, f"contains {problem}")
    return value


def text(value: str, field: str, *, max_length: int | None = None) -> str:
    """Free text of one or more lines (LF, CR and tab allowed)."""
    _length(value, field, max_length)
    problem = text_problem(value, multiline=True)
    if problem:
        raise _refuse(field, f"contains {problem}")
    return value


# -- The same rules as pydantic types for the API's request bodies ----------------------


def pydantic_error(detail: str) -> PydanticCustomError:
    """A rule's message (``"value …"``) as a pydantic error: the body field's name comes
    from pydantic's location, so the message goes without the placeholder."""
    return PydanticCustomError("text", detail.removeprefix("value "))


def _characters(check):
    def validate(value):
        if not isinstance(value, str):
            return value  # not text: pydantic's own type check answers
        try:
            return check(value, "value")
        except InvalidInput as exc:
            raise pydantic_error(exc.detail) from None

    # before pydantic's str and length checks, which would refuse lone surrogates in
    # words of their own
    return BeforeValidator(validate)


#: The character rules of a :func:`line` and a :func:`text` body field, for field types
#: spelled out where a type checker reads them (it cannot read a call such as
#: ``Line(200)`` as a type): ``Annotated[str, StringConstraints(max_length=200),
#: LINE_RULES]`` is ``Line(200)``.
LINE_RULES = _characters(line)
TEXT_RULES = _characters(text)


def Line(max_length: int | None = None):  # noqa: N802 - a type factory
    """A :func:`line` body field of at most ``max_length`` characters (pydantic's length
    check, whose message and schema the API has always had)."""
    return Annotated[str, StringConstraints(max_length=max_length), LINE_RULES]


def Text(max_length: int | None = None):  # noqa: N802 - a type factory
    """A :func:`text` body field of at most ``max_length`` characters."""
    return Annotated[str, StringConstraints(max_length=max_length), TEXT_RULES]

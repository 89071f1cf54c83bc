"""Statistical division codes (统计用区划代码) and grid codes.

12 digits: 6 county + 3 township (001–099 streets, 100–199 towns) + 3 community.
A grid code is its community's 12 digits + a 3-digit sequence (15 digits).
"""

from __future__ import annotations

import re

from layers.errors import InvalidInput

AREA_CODE = re.compile(r"^[0-9]{12}$")
GRID_CODE = re.compile(r"^[0-9]{15}$")


def area_prefix(code: str) -> str:
    """The prefix shared by every area and grid inside ``code``.

    410105000000 (district) → 410105; 410105001000 (street) → 410105001;
    410105001002 (community) → 410105001002; a 15-digit grid code is its own prefix.
    """
    if len(code) == 12:
        if code[6:] == "000000":
            return code[:6]
        if code[9:] == "000":
            return code[:9]
    return code


def check_code(code: str, field: str = "code") -> str:
    """A 12-digit area code or a 15-digit grid code, else :class:`InvalidInput`."""
    if not (AREA_CODE.match(code) or GRID_CODE.match(code)):
        raise InvalidInput(f"{field} must be a 12-digit area code or a 15-digit grid code, got {code!r}", field=field)
    return code


def level_of(code: str) -> str:
    """district, street, community or grid, read from the code's shape."""
    if len(code) == 15:
        return "grid"
    prefix = area_prefix(code)
    return {6: "district", 9: "street"}.get(len(prefix), "community")

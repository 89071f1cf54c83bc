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


def parent_code(code: str) -> str | None:
    """The code of the unit directly above, read from the code's shape: a grid's
    community (its first 12 digits), a community's street, a street's district; None for
    a district."""
    if len(code) == 15:
        return code[:12]
    level = level_of(code)
    if level == "community":
        return code[:9] + "000"
    if level == "street":
        return code[:6] + "000000"
    return None


def district_code(code: str) -> str:
    """A county-level division (6 digits, or 12 ending in six zeros) as its 12-digit
    code, else :class:`InvalidInput` naming ``district``."""
    code = code.strip()
    if re.fullmatch(r"[0-9]{6}", code):
        code += "000000"
    if not AREA_CODE.match(code) or code[6:] != "000000" or code[:6].endswith("00"):
        raise InvalidInput(
            f"a district is a county-level division: 6 digits (e.g. 410102) or 12 ending in 000000, got {code!r}",
            field="district",
        )
    return code


def area_code_problem(code: str) -> str | None:
    """Why ``code`` is not a 12-digit area code (None when it is one): 6 digits county,
    3 township (001–099 streets, 100–199 towns), 3 community (001–199); 000 for the
    levels above."""
    if not AREA_CODE.match(code):
        return f"an area code has 12 digits, got {code!r}"
    if code[4:6] == "00":
        return f"{code} has no county (its digits 5–6 are 00)"
    township, community = int(code[6:9]), int(code[9:])
    if township == 0:
        return None if community == 0 else f"{code} has a community part ({code[9:]}) but no township (000)"
    if township > 199:
        return f"{code}: township {code[6:9]} is out of range (001–099 streets, 100–199 towns)"
    if community > 199:
        return f"{code}: community {code[9:]} is out of range (001–199)"
    return None


def grid_code_problem(code: str) -> str | None:
    """Why ``code`` is not a 15-digit grid code (None when it is one): its community's
    12 digits and a sequence 001–999."""
    if not GRID_CODE.match(code):
        return f"a grid code has 15 digits (its community's 12 and a 3-digit sequence), got {code!r}"
    problem = area_code_problem(code[:12])
    if problem is None and level_of(code[:12]) != "community":
        problem = f"its first 12 digits ({code[:12]}) are not a community's code"
    if problem is None and code[12:] == "000":
        problem = "its sequence is 000 (001–999)"
    return f"{code}: {problem}" if problem and not problem.startswith(code) else problem

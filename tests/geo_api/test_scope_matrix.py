"""Every endpoint × role × an argument inside and outside the caller's area (issue 18,
the class "personal data across areas").

The routes are walked from the app, so a new endpoint is included by itself: a test fails
until it is classified in :data:`CASES` (how to call it, with an argument inside and
outside the area where it takes one). Then, on the Jinshui demo with canary members,
registrations and events planted inside the street admin's grid and in another street:

* no answer to any caller carries personal data the caller is not entitled to — the
  canaries' names, phones and residence coordinates, every demo member's phone (a
  member belongs to the grid of their active registration) and the canary reporters'
  contacts — whatever the status;
* an argument outside the caller's area (or a route outside the caller's role) is
  refused (401/403/404) and, for a write, changes nothing (the data versions every
  write bumps, the append-only logs);
* the same call with the argument inside the area is not refused for entitled callers
  (so the refusals above are the scope's, not a broken call);
* and, structurally, every path or query argument of a non-public route that names a
  member, registration, event, grid, branch or area comes from a ``geo_api.deps``
  dependency (the one place scope is checked), never from the endpoint itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter
from fastapi.routing import APIRoute
from sqlalchemy import text

from geo_api.app import create_app
from geo_api.audit import writer_of
from geo_api.deps import Access, Caller, ScopedEvent, require_roles
from tests.conftest import TEST_CLOCK, make_settings, token_for
from tests.factories import add_user
from tests.factories.api import api_routes

DISTRICT = "410105000000"
S_IN, C_IN, G_IN = "410105001000", "410105001001", "410105001001001"  # the street admin's, the grid worker's
S_OUT, C_OUT, G_OUT = "410105002000", "410105002001", "410105002001002"  # another street
FREE_GRID_IN = "410105001001006"  # a grid of C_IN without a grid branch

#: role → (account, area it covers; None: nothing; "" everything)
ROLES = {
    "admin": ("admin", ""),
    "street_admin": ("street_admin", S_IN),
    "community_admin": ("matrix_cadmin", C_IN),
    "dispatcher": ("dispatcher", ""),
    "gridworker": ("gridworker", G_IN),
    "member": ("member", None),
    "department": ("department", None),  # department staff: no area; "in" is their department's
    "anonymous": (None, None),
}
ACCOUNT_ROLE = {
    "admin": "admin",
    "street_admin": "admin",
    "community_admin": "admin",
    "dispatcher": "dispatcher",
    "gridworker": "grid_worker",
    "member": "member",
    "department": "department_staff",
    "anonymous": None,
}

#: Argument names that name a member, registration, event, grid, branch or area.
SCOPED_NAMES = {
    "member_id",
    "registration_id",
    "event_id",
    "code",
    "within",
    "street",
    "community",
    "grids",
    "duplicate_of",
    "service_request_id",
    "jurisdiction_id",
    "lon",
    "lat",
    "bbox",
    "x",
    "y",
}


def covers(role: str, code: str) -> bool:
    area = ROLES[role][1]
    if area is None:
        return False
    prefix = {12: lambda c: c[:6] if c[6:] == "000000" else c[:9] if c[9:] == "000" else c}.get(len(area), str)(area)
    return code.startswith(prefix)


# --------------------------------------------------------------------------------------
# The routes, classified
# --------------------------------------------------------------------------------------


@dataclass
class Case:
    """How to call one route. ``build(ctx, where)`` gives the request for ``where`` (``"in"``,
    ``"out"``, or None for a route taking no scoped argument). ``scope`` says what the
    argument names (None: nothing scoped, or public data); ``write`` whether it may
    change data; ``entitled(role, where)`` overrides who may call it successfully."""

    build: Callable
    scope: str | None = None
    write: bool = False
    entitled: Callable | None = None
    wheres: tuple = field(default=())

    def __post_init__(self):
        if not self.wheres:
            self.wheres = ("in", "out") if self.scope else (None,)


def req(method, url, **kw):
    return {"method": method, "url": url, **kw}


def _in_out(ctx, where, key):
    return ctx[f"{key}_{where}"]


def _tile(ctx, where):
    lon, lat = ctx[f"point_{where}"]
    n = 2**15
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return req("GET", f"/tiles/members,grids/15/{x}/{y}.mvt")


def _report(ctx, where, role):
    channel = {"anonymous": "public", "member": "member", "gridworker": "grid_worker"}.get(role, "hotline")
    lon, lat = ctx[f"point_{where}"]
    return req(
        "POST",
        "/v1/events",
        json={"lon": lon, "lat": lat, "category": "xfyh", "channel": channel, "description": "矩阵探针上报"},
    )


def _jpeg() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(out, "JPEG")
    return out.getvalue()


_JPEG = _jpeg()


def _last_month() -> str:
    """The month before the tests' clock's (a monthly report's)."""
    from datetime import timedelta
    from zoneinfo import ZoneInfo

    today = TEST_CLOCK.now().astimezone(ZoneInfo("Asia/Shanghai")).date()
    return (today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")


def _district_or_centre(role, where):
    return role in ("admin", "dispatcher")


def _district_admin(role, where):
    return role == "admin"


def _admins(role, where):
    return role in ("admin", "street_admin", "community_admin") and covers(role, _AREA[where])


def _centre(role, where):
    return role == "dispatcher" or _admins(role, where)


def _around(point, d: float = 0.01) -> str:
    lon, lat = point
    return f"{lon - d},{lat - d},{lon + d},{lat + d}"


_AREA = {"in": G_IN, "out": G_OUT, None: G_IN}
_ACCOUNT = {"in": "gridworker", "out": "matrix_gw_out"}  # grid workers of G_IN and G_OUT

CASES: dict[tuple[str, str], list[Case]] = {
    ("GET", "/healthz"): [Case(lambda c, w, r: req("GET", "/healthz"))],
    ("GET", "/livez"): [Case(lambda c, w, r: req("GET", "/livez"))],
    ("GET", "/readyz"): [Case(lambda c, w, r: req("GET", "/readyz"))],
    # operators' figures, by address (geo_api.telemetry): no one's data, whoever asks
    ("GET", "/metrics"): [Case(lambda c, w, r: req("GET", "/metrics"))],
    ("POST", "/v1/auth/token"): [
        Case(lambda c, w, r: req("POST", "/v1/auth/token", data={"username": "admin", "password": "wrong"}))
    ],
    ("GET", "/v1/auth/me"): [Case(lambda c, w, r: req("GET", "/v1/auth/me"))],
    # sign-in's own writes (guards, sign-in log, sessions) are no data of anyone's area
    ("POST", "/v1/auth/activate"): [
        Case(
            lambda c, w, r: req(
                "POST",
                "/v1/auth/activate",
                json={
                    "number": "MATRIX-1",
                    "phone": "19912340001",
                    "code": "AAAA-BBBB-CCCC",
                    "password": "Matrix-probe-2026",
                },
            ),
            write=True,
        )
    ],
    ("POST", "/v1/auth/refresh"): [Case(lambda c, w, r: req("POST", "/v1/auth/refresh"))],
    ("POST", "/v1/auth/password"): [
        Case(
            lambda c, w, r: req(
                "POST", "/v1/auth/password", json={"current_password": "wrong", "new_password": "Matrix-probe-2026"}
            ),
            write=True,
        )
    ],
    ("POST", "/v1/auth/logout"): [Case(lambda c, w, r: req("POST", "/v1/auth/logout"), write=True)],
    ("GET", "/v1/areas"): [Case(lambda c, w, r: req("GET", "/v1/areas"))],
    # public: boundaries, grids, places and locations carry no personal data
    ("GET", "/v1/areas/boundaries"): [
        Case(
            lambda c, w, r: req("GET", "/v1/areas/boundaries", params={"within": {"in": S_IN, "out": S_OUT}[w]}),
            scope="public",
            wheres=("in", "out"),
        )
    ],
    ("GET", "/v1/areas/{code}"): [
        Case(lambda c, w, r: req("GET", f"/v1/areas/{ {'in': C_IN, 'out': C_OUT}[w] }"), scope="public")
    ],
    ("GET", "/v1/grids"): [
        Case(lambda c, w, r: req("GET", "/v1/grids", params={"within": {"in": C_IN, "out": C_OUT}[w]}), scope="public")
    ],
    ("GET", "/v1/grids/{code}"): [Case(lambda c, w, r: req("GET", f"/v1/grids/{_AREA[w]}"), scope="public")],
    ("PUT", "/v1/grids/{code}/worker"): [
        Case(
            lambda c, w, r: req(
                "PUT", f"/v1/grids/{_AREA[w]}/worker", json={"name": "矩阵网格员", "phone": "13912345670"}
            ),
            scope="grid",
            write=True,
            entitled=_admins,
        )
    ],
    ("GET", "/v1/places"): [Case(lambda c, w, r: req("GET", "/v1/places", params={"q": "凤"}))],
    ("GET", "/v1/locate"): [
        Case(
            lambda c, w, r: req("GET", "/v1/locate", params=dict(zip(("lon", "lat"), c[f"point_{w}"]))), scope="public"
        )
    ],
    ("POST", "/v1/locate/batch"): [
        Case(
            lambda c, w, r: req(
                "POST", "/v1/locate/batch", json=[{"id": "a", "lon": c[f"point_{w}"][0], "lat": c[f"point_{w}"][1]}]
            ),
            scope="public",
        )
    ],
    ("POST", "/v1/registrations"): [
        # the member outside, the residence inside the caller's area: the take-over of defect 1
        Case(
            lambda c, w, r: req(
                "POST",
                "/v1/registrations",
                json={
                    "lon": c["point_in"][0],
                    "lat": c["point_in"][1],
                    "role": "平安创建示范员",
                    "move": True,
                    "member_id": c[f"member_{w}"],
                },
            ),
            scope="member",
            write=True,
            entitled=lambda r, w: _admins(r, w),
        ),
        # the member inside, the residence outside
        Case(
            lambda c, w, r: req(
                "POST",
                "/v1/registrations",
                json={
                    "lon": c[f"point_{w}"][0],
                    "lat": c[f"point_{w}"][1],
                    "role": "平安创建示范员",
                    "move": True,
                    "member_id": c["member_in"],
                },
            ),
            scope="grid",
            write=True,
            entitled=lambda r, w: _admins(r, w),
        ),
    ],
    ("GET", "/v1/registrations"): [
        Case(
            lambda c, w, r: req("GET", "/v1/registrations", params={"within": {"in": C_IN, "out": C_OUT}[w]}),
            scope="area",
            entitled=lambda r, w: r != "dispatcher" and covers(r, {"in": C_IN, "out": C_OUT}[w]) and r != "member",
        )
    ],
    ("GET", "/v1/registrations/stats"): [
        Case(
            lambda c, w, r: req(
                "GET", "/v1/registrations/stats", params={"within": {"in": C_IN, "out": C_OUT}[w], "level": "grid"}
            ),
            scope="area",
            entitled=lambda r, w: (
                r in ("admin", "street_admin", "community_admin") and covers(r, {"in": C_IN, "out": C_OUT}[w])
            ),
        )
    ],
    ("GET", "/v1/registrations/moved"): [
        Case(
            lambda c, w, r: req("GET", "/v1/registrations/moved", params={"within": {"in": C_IN, "out": C_OUT}[w]}),
            scope="area",
            entitled=lambda r, w: (
                r in ("admin", "street_admin", "community_admin") and covers(r, {"in": C_IN, "out": C_OUT}[w])
            ),
        )
    ],
    ("GET", "/v1/registrations/roles"): [Case(lambda c, w, r: req("GET", "/v1/registrations/roles"))],
    ("GET", "/v1/registrations/mine"): [Case(lambda c, w, r: req("GET", "/v1/registrations/mine"))],
    ("GET", "/v1/registrations/{registration_id}"): [
        Case(
            lambda c, w, r: req("GET", f"/v1/registrations/{c[f'registration_{w}']}"),
            scope="registration",
            entitled=lambda r, w: (
                r in ("admin", "street_admin", "community_admin", "gridworker") and covers(r, _AREA[w])
            ),
        )
    ],
    ("POST", "/v1/registrations/{registration_id}/confirm"): [
        Case(
            lambda c, w, r: req("POST", f"/v1/registrations/{c[f'registration_{w}']}/confirm"),
            scope="registration",
            write=True,
            entitled=lambda r, w: (
                r in ("admin", "street_admin", "community_admin", "gridworker") and covers(r, _AREA[w])
            ),
        )
    ],
    ("POST", "/v1/registrations/{registration_id}/reject"): [
        Case(
            lambda c, w, r: req("POST", f"/v1/registrations/{c[f'registration_{w}']}/reject", json={"reason": "矩阵"}),
            scope="registration",
            write=True,
            entitled=lambda r, w: (
                r in ("admin", "street_admin", "community_admin", "gridworker") and covers(r, _AREA[w])
            ),
        )
    ],
    ("GET", "/v1/branches/{code}"): [
        Case(lambda c, w, r: req("GET", f"/v1/branches/{c[f'branch_{w}']}"), scope="branch", entitled=_admins)
    ],
    ("POST", "/v1/branches"): [
        Case(
            lambda c, w, r: req(
                "POST",
                "/v1/branches",
                json={
                    "name": "矩阵探针支部",
                    "kind": "grid",
                    "community": {"in": C_IN, "out": C_OUT}[w],
                    "grids": [{"in": FREE_GRID_IN, "out": G_OUT}[w]],
                },
            ),
            scope="area",
            write=True,
            entitled=_admins,
        )
    ],
    ("PATCH", "/v1/branches/{code}"): [
        Case(
            lambda c, w, r: req("PATCH", f"/v1/branches/{c[f'branch_{w}']}", json={"name": "矩阵改名支部"}),
            scope="branch",
            write=True,
            entitled=_admins,
        )
    ],
    ("GET", "/v1/branches/{code}/unregistered"): [
        Case(
            lambda c, w, r: req("GET", f"/v1/branches/{c[f'branch_{w}']}/unregistered"),
            scope="branch",
            entitled=_district_admin,
        )
    ],
    ("GET", "/v1/upkeep"): [
        Case(
            lambda c, w, r: req("GET", "/v1/upkeep", params={"within": {"in": C_IN, "out": C_OUT}[w]}),
            scope="area",
            entitled=_admins,
        )
    ],
    # accounts: a grid worker's (below every admin) inside or outside the caller's area
    ("POST", "/v1/accounts"): [
        Case(
            lambda c, w, r: req(
                "POST",
                "/v1/accounts",
                json={
                    "username": "matrix_new",
                    "role": "grid_worker",
                    "area_code": _AREA[w],
                    "password": "Matrix-probe-2026",
                },
            ),
            scope="area",
            write=True,
            entitled=_admins,
        )
    ],
    ("GET", "/v1/accounts"): [
        Case(
            lambda c, w, r: req("GET", "/v1/accounts", params={"within": {"in": C_IN, "out": C_OUT}[w]}),
            scope="area",
            entitled=_admins,
        )
    ],
    ("GET", "/v1/accounts/{username}"): [
        Case(lambda c, w, r: req("GET", f"/v1/accounts/{_ACCOUNT[w]}"), scope="account", entitled=_admins)
    ],
    **{
        ("POST", f"/v1/accounts/{{username}}/{action}"): [
            Case(
                lambda c, w, r, action=action: req("POST", f"/v1/accounts/{_ACCOUNT[w]}/{action}"),
                scope="account",
                write=True,
                entitled=_admins,
            )
        ]
        for action in ("disable", "enable", "reset-password")
    },
    # imports (数据导入): district and street admins upload; an import is its uploader's alone,
    # so a stranger's (here: nobody's) id is a 404 to every caller
    ("POST", "/v1/imports"): [
        Case(
            lambda c, w, r: req(
                "POST",
                "/v1/imports",
                params={"kind": "grids", "filename": "matrix.geojson"},
                content=b'{"type": "FeatureCollection", "features": []}',
            ),
            write=True,
            entitled=lambda r, w: r in ("admin", "street_admin"),
        )
    ],
    **{
        (method, f"/v1/imports/{{import_id}}{tail}"): [
            Case(
                lambda c, w, r, method=method, tail=tail: req(method, f"/v1/imports/{'0' * 32}{tail}"),
                write=method == "POST",
                entitled=lambda r, w: False,
            )
        ]
        for method, tail in (("GET", ""), ("GET", "/preview"), ("POST", "/check"), ("POST", "/commit"))
    },
    # activation codes name the members of the grid (or community) they are issued for
    ("POST", "/v1/activation-codes"): [
        Case(
            lambda c, w, r: req("POST", "/v1/activation-codes", json={"within": _AREA[w]}),
            scope="area",
            write=True,
            entitled=_admins,
        )
    ],
    ("GET", "/v1/coverage/summary"): [
        Case(
            lambda c, w, r: req("GET", "/v1/coverage/summary", params={"code": {"in": C_IN, "out": C_OUT}[w]}),
            scope="area",
            entitled=_centre,
        )
    ],
    ("GET", "/v1/reports/monthly"): [
        Case(
            lambda c, w, r: req(
                "GET",
                "/v1/reports/monthly",
                params={"within": {"in": C_IN, "out": C_OUT}[w], "month": _last_month(), "format": "html"},
            ),
            scope="area",
            entitled=_centre,
        )
    ],
    ("GET", "/v1/coverage/issues"): [
        Case(
            lambda c, w, r: req("GET", "/v1/coverage/issues", params={"within": {"in": C_IN, "out": C_OUT}[w]}),
            scope="area",
            entitled=_centre,
        )
    ],
    # public: counts only, suppressed for whoever may not see the people themselves
    ("GET", "/v1/coverage/h3"): [
        Case(
            lambda c, w, r: req(
                "GET",
                "/v1/coverage/h3",
                params={"within": {"in": C_IN, "out": C_OUT}[w], "res": 10, "metric": "residences"},
            ),
            scope="public",
        )
    ],
    # anyone may report anywhere: the answer must carry nobody's data
    ("POST", "/v1/events"): [Case(lambda c, w, r: _report(c, w, r), scope="public", write=True)],
    ("GET", "/v1/events/categories"): [Case(lambda c, w, r: req("GET", "/v1/events/categories"))],
    ("GET", "/v1/events"): [
        Case(
            lambda c, w, r: req("GET", "/v1/events", params={"within": {"in": G_IN, "out": G_OUT}[w]}),
            scope="area",
            entitled=lambda r, w: (
                r in ("dispatcher", "admin", "street_admin", "community_admin", "gridworker")
                and (r == "dispatcher" or covers(r, _AREA[w]))
            ),
        )
    ],
    ("GET", "/v1/events/evaluation"): [
        Case(
            lambda c, w, r: req("GET", "/v1/events/evaluation", params={"within": {"in": C_IN, "out": C_OUT}[w]}),
            scope="area",
            entitled=_centre,
        )
    ],
    ("GET", "/v1/events/calendar"): [Case(lambda c, w, r: req("GET", "/v1/events/calendar"))],
    ("PUT", "/v1/events/calendar/{day}"): [
        Case(
            lambda c, w, r: req("PUT", "/v1/events/calendar/2031-05-06", json={"working": False, "note": "矩阵"}),
            write=True,
            entitled=_district_or_centre,
        )
    ],
    ("GET", "/v1/events/routes"): [Case(lambda c, w, r: req("GET", "/v1/events/routes"))],
    ("PUT", "/v1/events/routes/{category}/{street}"): [
        Case(
            lambda c, w, r: req(
                "PUT", f"/v1/events/routes/xfyh/{ {'in': S_IN, 'out': S_OUT}[w] }", json={"department": "D01"}
            ),
            scope="area",
            write=True,
            entitled=lambda r, w: r == "dispatcher" or (r in ("admin", "street_admin") and covers(r, _AREA[w])),
        )
    ],
    ("GET", "/v1/events/{event_id}"): [
        Case(
            lambda c, w, r: req("GET", f"/v1/events/{c[f'event_{w}']}"),
            scope="event",
            entitled=lambda r, w: _staff(r, w) or (r == "member" and w == "in"),
        ),
        # dispatched to the department account's department (in G_IN) or another one (in G_OUT)
        Case(
            lambda c, w, r: req("GET", f"/v1/events/{c[f'dept_event_{w}']}"),
            scope="event",
            entitled=lambda r, w: _handlers(r, w),
        ),
    ],
    ("GET", "/v1/events/{event_id}/log"): [
        Case(
            lambda c, w, r: req("GET", f"/v1/events/{c[f'event_{w}']}/log"),
            scope="event",
            entitled=lambda r, w: _staff(r, w) or (r == "member" and w == "in"),
        ),
        Case(
            lambda c, w, r: req("GET", f"/v1/events/{c[f'dept_event_{w}']}/log"),
            scope="event",
            entitled=lambda r, w: _handlers(r, w),
        ),
    ],
    ("GET", "/v1/events/{event_id}/routing"): [
        Case(lambda c, w, r: req("GET", f"/v1/events/{c[f'event_{w}']}/routing"), scope="event", entitled=_centre)
    ],
    ("POST", "/v1/events/{event_id}/transitions"): [
        Case(
            lambda c, w, r: req(
                "POST", f"/v1/events/{c[f'event_{w}']}/transitions", json={"action": "register", "version": 1}
            ),
            scope="event",
            write=True,
            entitled=_centre,
        ),
        # a department's start, handle or return: its own department's events only
        *[
            Case(
                lambda c, w, r, action=action: req(
                    "POST",
                    f"/v1/events/{c[f'dept_event_{w}']}/transitions",
                    json={"action": action, "version": 3, "reason": "矩阵退回"},
                ),
                scope="event",
                write=True,
                entitled=lambda r, w: _handlers(r, w),
            )
            for action in ("start", "return")
        ],
        # an event inside, the assisting member inside or outside
        Case(
            lambda c, w, r: req(
                "POST",
                f"/v1/events/{c['registered_in']}/transitions",
                json={"action": "dispatch", "version": 2, "member_id": c[f"member_{w}"]},
            ),
            scope="member",
            write=True,
            entitled=_centre,
        ),
        # an event inside, the original it duplicates inside or outside
        Case(
            lambda c, w, r: req(
                "POST",
                f"/v1/events/{c['later_in']}/transitions",
                json={"action": "mark_duplicate", "version": 1, "duplicate_of": c[f"event_{w}"]},
            ),
            scope="event",
            write=True,
            entitled=_centre,
        ),
    ],
    # Open311 is the public face of events: no personal data in it
    ("GET", "/open311/v2/discovery.json"): [Case(lambda c, w, r: req("GET", "/open311/v2/discovery.json"))],
    ("GET", "/open311/v2/services.json"): [Case(lambda c, w, r: req("GET", "/open311/v2/services.json"))],
    ("GET", "/open311/v2/services/{service_code}.json"): [
        Case(lambda c, w, r: req("GET", "/open311/v2/services/xfyh.json"))
    ],
    ("GET", "/open311/v2/requests.json"): [
        Case(
            lambda c, w, r: req(
                "GET", "/open311/v2/requests.json", params={"service_request_id": str(c[f"event_{w}"])}
            ),
            scope="public",
        )
    ],
    ("GET", "/open311/v2/requests/{service_request_id}.json"): [
        Case(lambda c, w, r: req("GET", f"/open311/v2/requests/{c[f'event_{w}']}.json"), scope="public")
    ],
    ("POST", "/open311/v2/requests.json"): [
        Case(
            lambda c, w, r: req(
                "POST",
                "/open311/v2/requests.json",
                json={
                    "service_code": "xfyh",
                    "lat": c[f"point_{w}"][1],
                    "long": c[f"point_{w}"][0],
                    "description": "矩阵",
                },
            ),
            scope="public",
            write=True,
        )
    ],
    # OGC API – Features: the public collections to anyone (a branch's secretary to the
    # admins of its community, audited), coverage findings to admins and dispatchers
    ("GET", "/ogc"): [Case(lambda c, w, r: req("GET", "/ogc"))],
    ("GET", "/ogc/conformance"): [Case(lambda c, w, r: req("GET", "/ogc/conformance"))],
    ("GET", "/ogc/collections"): [Case(lambda c, w, r: req("GET", "/ogc/collections"))],
    ("GET", "/ogc/collections/{collectionId}"): [Case(lambda c, w, r: req("GET", "/ogc/collections/grids"))],
    ("GET", "/ogc/collections/{collectionId}/items"): [
        *(
            Case(lambda c, w, r, name=name: req("GET", f"/ogc/collections/{name}/items", params={"limit": 10000}))
            for name in ("areas", "grids", "branches")
        ),
        Case(
            lambda c, w, r: req(
                "GET",
                "/ogc/collections/events/items",
                params={"bbox": _around(c[f"point_{w}"]), "limit": 10000},
            ),
            scope="public",
        ),
        Case(
            lambda c, w, r: req("GET", "/ogc/collections/coverage-findings/items", params={"limit": 10000}),
            entitled=lambda r, w: ACCOUNT_ROLE[r] in ("admin", "dispatcher"),
        ),
    ],
    ("GET", "/ogc/collections/{collectionId}/items/{featureId}"): [
        Case(lambda c, w, r: req("GET", f"/ogc/collections/branches/items/{c[f'branch_{w}']}"), scope="public"),
        Case(lambda c, w, r: req("GET", f"/ogc/collections/events/items/{c[f'event_{w}']}"), scope="public"),
    ],
    ("GET", "/tiles/style.json"): [Case(lambda c, w, r: req("GET", "/tiles/style.json"))],
    ("GET", "/tiles/{layers}.json"): [Case(lambda c, w, r: req("GET", "/tiles/members,grids.json"))],
    # the members layer: residences of the caller's area only (no names or phones at all)
    ("GET", "/tiles/{layers}/{z}/{x}/{y}.mvt"): [Case(lambda c, w, r: _tile(c, w), scope="public")],
    ("GET", "/map"): [Case(lambda c, w, r: req("GET", "/map"))],
    # the public report form: pages, photos and nearby reports for anyone, no one's data
    ("GET", "/report"): [Case(lambda c, w, r: req("GET", "/report"))],
    ("GET", "/report/{number}"): [Case(lambda c, w, r: req("GET", "/report/1"))],
    ("POST", "/v1/photos"): [
        Case(
            lambda c, w, r: req("POST", "/v1/photos", content=_JPEG, headers={"Content-Type": "image/jpeg"}), write=True
        )
    ],
    ("GET", "/v1/photos/{name}"): [Case(lambda c, w, r: req("GET", "/v1/photos/" + "0" * 32 + ".jpg"))],
    ("GET", "/v1/public/nearby"): [
        Case(
            lambda c, w, r: req("GET", "/v1/public/nearby", params=dict(zip(("lon", "lat"), c[f"point_{w}"]))),
            scope="public",
        )
    ],
    ("GET", "/docs"): [Case(lambda c, w, r: req("GET", "/docs"))],
    # the district admins' only: who received personal data
    ("GET", "/v1/audit"): [
        Case(
            lambda c, w, r: req("GET", "/v1/audit", params={"member_id": c[f"member_{w}"]}),
            scope="member",
            entitled=lambda r, w: r == "admin",
        )
    ],
}


def _staff(role, where):
    return role == "dispatcher" or (
        role in ("admin", "street_admin", "community_admin", "gridworker") and covers(role, _AREA[where])
    )


def _handlers(role, where):
    """Who handles a dispatched event: staff covering it, and its department's staff."""
    return _staff(role, where) or (role == "department" and where == "in")


def _route_params(route: APIRoute) -> tuple[set[str], set[str]]:
    """(names the endpoint itself takes from path/query/body fields, names taken by its
    dependencies), aliases included."""
    own = {p.alias for p in route.dependant.path_params + route.dependant.query_params}
    for body in route.dependant.body_params:
        model = getattr(body.field_info, "annotation", None) or body.type_
        own |= set(getattr(model, "model_fields", {}) or {body.alias: None})
    deps: set[str] = set()

    def walk(dependant):
        for d in dependant.dependencies:
            if getattr(d.call, "__module__", "") == "geo_api.deps":
                deps.update(p.alias for p in d.path_params + d.query_params)
            walk(d)

    walk(route.dependant)
    return own, deps


def _public(route: APIRoute) -> bool:
    return any(isinstance(d.call, Access) and not d.call.roles for d in route.dependant.dependencies)


def _roles(route: APIRoute) -> frozenset[str]:
    return next(d.call.roles for d in route.dependant.dependencies if isinstance(d.call, Access))


def _routes():
    app = create_app(make_settings())
    return [(m, r) for r in api_routes(app.routes) for m in sorted(r.methods - {"HEAD"})]


def _classify(routes) -> tuple[list[str], list[str], set]:
    """(routes not in CASES, routes taking a scoped path/query argument not through
    geo_api.deps, CASES entries naming no route)."""
    unclassified, unscoped, stale = [], [], set(CASES)
    for method, route in routes:
        key = (method, route.path)
        stale.discard(key)
        own, deps = _route_params(route)
        scoped_args = (own | deps) & SCOPED_NAMES
        if key not in CASES:
            unclassified.append(f"{method} {route.path} (scoped arguments: {sorted(scoped_args) or 'none'})")
            continue
        if scoped_args and not _public(route):
            # path and query arguments naming scoped things come from geo_api.deps only;
            # body fields are listed in CASES and checked by the matrix
            path_query = {p.alias for p in route.dependant.path_params + route.dependant.query_params}
            leaked = path_query & SCOPED_NAMES - {"lon", "lat", "bbox", "x", "y"}
            if leaked:
                unscoped.append(f"{method} {route.path}: {sorted(leaked)} not through a geo_api.deps dependency")
        if any(c.scope not in (None, "public") for c in CASES[key]) and _public(route):
            unscoped.append(f"{method} {route.path}: classified as scoped but public")
    return unclassified, unscoped, stale


def test_every_route_is_classified_and_scoped_through_deps():
    unclassified, unscoped, stale = _classify(_routes())
    assert not unclassified, "classify these routes in CASES (tests/geo_api/test_scope_matrix.py): " + "; ".join(
        unclassified
    )
    assert not unscoped, unscoped
    assert not stale, f"CASES names routes that no longer exist: {sorted(stale)}"


def test_a_new_route_is_caught_until_classified_and_scoped():
    router = APIRouter()

    @router.get("/v1/members/{member_id}")
    def unscoped(member_id: int, caller: Annotated[Caller, require_roles("admin")]) -> dict:
        return {}

    @router.get("/v1/events/{event_id}/probe")
    def scoped(caller: Annotated[Caller, require_roles("admin")], event_id: ScopedEvent) -> dict:
        return {}

    app = create_app(make_settings())
    app.include_router(router)
    routes = [(m, r) for r in api_routes(app.routes) for m in sorted(r.methods - {"HEAD"})]
    unclassified, unscoped_, _ = _classify(routes)
    assert [u.split(" (")[0] for u in unclassified] == [
        "GET /v1/members/{member_id}",
        "GET /v1/events/{event_id}/probe",
    ]
    assert "member_id" in unclassified[0] and "event_id" in unclassified[1]
    CASES[("GET", "/v1/members/{member_id}")] = CASES[("GET", "/v1/events/{event_id}/probe")] = [
        Case(lambda c, w, r: None, scope="member")
    ]
    try:
        _, unscoped_, _ = _classify(routes)
    finally:
        del CASES[("GET", "/v1/members/{member_id}")], CASES[("GET", "/v1/events/{event_id}/probe")]
    assert [u.split(":")[0] for u in unscoped_] == ["GET /v1/members/{member_id}"]


# --------------------------------------------------------------------------------------
# The matrix, on the demo with planted canaries
# --------------------------------------------------------------------------------------

CANARY = {  # key → (name, phone)
    "member_in": ("矩阵甲探针", "19912340001"),
    "pending_in": ("矩阵乙探针", "19912340002"),
    "member_out": ("矩阵丙探针", "19912340003"),
    "pending_out": ("矩阵丁探针", "19912340004"),
}
CONTACTS = {"in": "矩阵报告人戊 19912340005", "out": "矩阵报告人己 19912340006"}


def _point_in(db, grid: str, wiggle: float) -> tuple[float, float]:
    x, y = db.execute(
        text(
            "SELECT ST_X(p), ST_Y(p) FROM (SELECT ST_PointOnSurface(gv.geom) p FROM grid_versions gv "
            "JOIN grids g ON g.id = gv.grid_id WHERE g.code = :g AND gv.valid_to IS NULL) q"
        ),
        {"g": grid},
    ).one()
    point = (round(x, 4) + wiggle, round(y, 4) + wiggle)
    inside = db.execute(
        text(
            "SELECT ST_Intersects(gv.geom, ST_SetSRID(ST_MakePoint(:x, :y), 4326)) FROM grid_versions gv "
            "JOIN grids g ON g.id = gv.grid_id WHERE g.code = :g AND gv.valid_to IS NULL"
        ),
        {"g": grid, "x": point[0], "y": point[1]},
    ).scalar()
    assert inside, (grid, point)
    return point


def _plant(db) -> dict:
    """The canaries: two members per side (a confirmed one with a fitting role, a pending
    one), events reported inside (by the demo member) and outside, and the accounts."""
    add_user(db, "matrix_cadmin", "admin", area_code=C_IN)
    add_user(db, "matrix_gw_out", "grid_worker", area_code=G_OUT)
    ctx: dict = {"markers": {}}
    for where, grid, wiggle in (("in", G_IN, 0.0000137), ("out", G_OUT, 0.0000173)):
        # the residences, and a point of the same grid ≈ 100 m away for reports and locates
        point = _point_in(db, grid, wiggle)
        ctx[f"point_{where}"] = _point_in(db, grid, wiggle + 0.0008)
        for key, status in ((f"member_{where}", "confirmed"), (f"pending_{where}", "pending")):
            name, phone = CANARY[key]
            member = db.execute(
                text("INSERT INTO members (name, phone, status) VALUES (:n, :p, 'in_service') RETURNING id"),
                {"n": name, "p": phone},
            ).scalar()
            residence = db.execute(
                text(
                    "INSERT INTO residences (member_id, geom, source_crs, source_x, source_y) "
                    "VALUES (:m, ST_SetSRID(ST_MakePoint(:x, :y), 4326), 'wgs84', :x, :y) RETURNING id"
                ),
                {"m": member, "x": point[0], "y": point[1]},
            ).scalar()
            registration = db.execute(
                text(
                    "INSERT INTO registrations (member_id, residence_id, grid_id, grid_version_id, role_code, status) "
                    "SELECT :m, :r, g.id, gv.id, 'pingan', :s FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id "
                    "AND gv.valid_to IS NULL WHERE g.code = :g RETURNING id"
                ),
                {"m": member, "r": residence, "s": status, "g": grid},
            ).scalar()
            ctx[key] = member
            if status == "pending":
                ctx[f"registration_{where}"] = registration
            ctx["markers"][key] = (grid, [name, phone, repr(round(point[0], 7)), repr(round(point[1], 7))])

        def event(status: str, reporter: str | None, contact: str | None) -> int:
            return db.execute(
                text(
                    """INSERT INTO events (geom, source_crs, source_x, source_y, category_code, channel, description,
                                       reporter, reporter_contact, grid_id, grid_version_id, status, version)
                   SELECT ST_SetSRID(ST_MakePoint(:x, :y), 4326), 'wgs84', :x, :y, 'xfyh', 'hotline', '矩阵事件',
                          :rep, :contact, g.id, gv.id, :s, CASE WHEN :s = 'reported' THEN 1 ELSE 2 END
                   FROM grids g JOIN grid_versions gv ON gv.grid_id = g.id AND gv.valid_to IS NULL
                   WHERE g.code = :g RETURNING id"""
                ),
                {
                    "x": ctx[f"point_{where}"][0],
                    "y": ctx[f"point_{where}"][1],
                    "rep": reporter,
                    "contact": contact,
                    "s": status,
                    "g": grid,
                },
            ).scalar()

        ctx[f"event_{where}"] = event("reported", "member" if where == "in" else "someone_else", CONTACTS[where])
        # dispatched (with an assisting member and the reporter's contact) to the demo
        # department account's department inside, to another department outside
        dept = ctx[f"dept_event_{where}"] = event("dispatched", "someone_else", CONTACTS[where])
        db.execute(
            text(
                """WITH d AS (SELECT CASE WHEN :w = 'in' THEN (SELECT department_id FROM users WHERE username = 'department')
                                      ELSE (SELECT min(id) FROM departments WHERE id <> (
                                            SELECT department_id FROM users WHERE username = 'department')) END AS id),
                    e AS (UPDATE events SET department_id = d.id, version = 3, member_id = :m,
                                            dispatched_at = gridbranch_now(), due_at = gridbranch_now() + interval '1 day'
                          FROM d WHERE events.id = :e RETURNING events.id, d.id AS department_id)
               INSERT INTO event_log (event_id, at, actor, action, from_status, to_status, department_id)
               SELECT e.id, gridbranch_now(), 'dispatcher', a.action, a.from_status, a.to_status,
                      CASE WHEN a.action = 'dispatch' THEN e.department_id END
               FROM e, (VALUES ('report', NULL, 'reported'), ('register', 'reported', 'registered'),
                               ('dispatch', 'registered', 'dispatched')) a (action, from_status, to_status)"""
            ),
            {"w": where, "e": dept, "m": ctx[f"member_{where}"]},
        )
        ctx["markers"][f"contact_{where}"] = (grid, [CONTACTS[where]])
        if where == "in":
            ctx["registered_in"] = event("registered", None, None)
            ctx["later_in"] = event("reported", None, None)
        ctx[f"branch_{where}"] = db.execute(
            text(
                "SELECT b.code FROM branches b JOIN admin_areas a ON a.id = b.community_id WHERE a.code = :c "
                "ORDER BY b.code LIMIT 1"
            ),
            {"c": C_IN if where == "in" else C_OUT},
        ).scalar()
    clash = db.execute(text("SELECT count(*) FROM members WHERE phone LIKE '1991234000%'")).scalar()
    assert clash == 4  # the canaries' phones are theirs alone
    # every demo member's phone, by the grid of their active registration (None: none)
    ctx["phones"] = dict(
        db.execute(
            text(
                """SELECT m.phone, g.code FROM members m
           LEFT JOIN registrations r ON r.member_id = m.id AND r.status IN ('pending', 'confirmed')
           LEFT JOIN grids g ON g.id = r.grid_id WHERE m.phone IS NOT NULL"""
            )
        ).all()
    )
    ctx["own_phone"] = db.execute(
        text("SELECT m.phone FROM members m JOIN users u ON u.member_id = m.id WHERE u.username = 'member'")
    ).scalar()
    db.flush()
    return ctx


def _may_see(role: str, grid: str | None) -> bool:
    """Whether ``role`` may see the personal data of a member (or reporter) of ``grid``."""
    if role == "admin":
        return True
    if role in ("street_admin", "community_admin", "gridworker"):
        return grid is not None and covers(role, grid)
    return False


PHONE = re.compile(rb"(?<![0-9])1[3-9][0-9]{9}(?![0-9])")


def _leaks(ctx, role: str, path: str, body: bytes) -> list[str]:
    found = []
    for key, (grid, markers) in ctx["markers"].items():
        if _may_see(role, grid):
            continue
        # a reporter's contact: also the command centre's, and the reporter's own
        if key.startswith("contact") and (role == "dispatcher" or (role == "member" and key == "contact_in")):
            continue
        for i, marker in enumerate(markers):
            # dispatchers route events: member names (only) in the suggestions and in the
            # events they dispatch with an assisting member (one by one and in the list)
            if (
                role == "dispatcher"
                and (path == "/v1/events" or path.startswith("/v1/events/{event_id}"))
                and key.startswith("member")
                and i == 0
            ):
                continue
            if marker.encode() in body:
                found.append(f"{key}:{marker}")
    for phone in {m.decode() for m in PHONE.findall(body)}:
        if phone in ctx["phones"] and phone != (ctx["own_phone"] if role == "member" else None):
            if not _may_see(role, ctx["phones"][phone]):
                found.append(f"demo phone {phone}")
    return found


def _fingerprint(db):
    versions = db.execute(text("SELECT layer, version FROM data_versions ORDER BY layer")).all()
    counts = db.execute(
        text(
            "SELECT (SELECT count(*) FROM event_log), (SELECT count(*) FROM upkeep_log), "
            "(SELECT count(*) FROM events), (SELECT count(*) FROM registrations), "
            "(SELECT count(*) FROM work_calendar_days), (SELECT count(*) FROM event_routes), "
            "(SELECT count(*) FROM account_log), (SELECT count(*) FROM activation_codes), "
            "(SELECT md5(string_agg(username || password_hash || active, ',' ORDER BY username)) "
            "FROM users)"
        )
    ).one()
    return tuple(versions), tuple(counts)


REFUSED = (401, 403, 404)


def _carries_personal(ctx, key, role, r) -> bool:
    """Whether an answer carries personal data (the canaries' or any demo member's phone;
    a members tile's residences) — then an audit row must exist for it."""
    if key == ("GET", "/tiles/{layers}/{z}/{x}/{y}.mvt"):
        return r.status_code == 200 and ACCOUNT_ROLE[role] == "admin"
    body = r.content
    if any(m.encode() in body for _, markers in ctx["markers"].values() for m in markers):
        return True
    return any(p.decode() in ctx["phones"] for p in PHONE.findall(body))


def _audit_rows(db, after: int) -> list:
    return db.execute(
        text(
            "SELECT a.actor, a.endpoint, r.member_ids, r.event_ids, a.fields FROM audit_log a "
            "LEFT JOIN audit_records r ON r.digest = a.records WHERE a.id > :a"
        ),
        {"a": after},
    ).all()


def test_no_personal_data_out_of_scope_and_no_write_outside_the_area(client, demo_db):
    ctx = _plant(demo_db)
    demo_db.commit()  # the canaries stay (in the test's outer transaction) under every case
    conn = demo_db.get_bind()
    headers = {role: token_for(account) if account else {} for role, (account, _) in ROLES.items()}
    routes = {(m, r.path): r for m, r in _routes()}
    problems: list[str] = []
    checked = audited = 0
    writer = writer_of(client.app)
    for key, cases in CASES.items():
        route = routes[key]
        allowed = _roles(route)
        for case in cases:
            for where in case.wheres:
                for role in ROLES:
                    spec = case.build(ctx, where, role)
                    role_ok = not allowed or ACCOUNT_ROLE[role] in allowed
                    if case.entitled is not None:
                        entitled = role_ok and case.entitled(role, where)
                    else:
                        entitled = role_ok
                    label = f"{key[0]} {key[1]} [{where}] as {role}"
                    savepoint = conn.begin_nested()
                    try:
                        before = _fingerprint(demo_db)
                        last_audit = demo_db.execute(text("SELECT COALESCE(max(id), 0) FROM audit_log")).scalar()
                        extra = spec.pop("headers", {})  # a case's own (a photo's Content-Type)
                        r = client.request(
                            spec.pop("method"), spec.pop("url"), headers={**headers[role], **extra}, **spec
                        )
                        # what the request left uncommitted is undone, as closing its session would;
                        # what it committed stays until the savepoint's rollback below
                        demo_db.rollback()
                        body = r.content
                        if r.status_code >= 500:
                            problems.append(f"{label}: {r.status_code} {r.text[:200]}")
                        for leak in _leaks(ctx, role, key[1], body):
                            problems.append(f"{label}: leaks {leak}")
                        if not entitled and case.scope != "public" and (case.scope or case.write):
                            if r.status_code not in REFUSED:
                                problems.append(f"{label}: not refused ({r.status_code} {r.text[:120]})")
                        if entitled and case.scope not in (None, "public") and r.status_code in REFUSED:
                            problems.append(f"{label}: refused though entitled ({r.status_code} {r.text[:160]})")
                        if case.write and r.status_code in REFUSED:
                            if _fingerprint(demo_db) != before:
                                problems.append(f"{label}: refused but wrote something")
                        # the audit: a row for each answer carrying personal data, by the
                        # caller and naming the route; none for refusals or anonymous calls
                        writer.flush()
                        rows = _audit_rows(demo_db, last_audit)
                        if r.status_code in REFUSED or role == "anonymous":
                            if rows:
                                problems.append(f"{label}: {r.status_code} but audited {rows}")
                        elif r.status_code < 300 and _carries_personal(ctx, key, role, r):
                            account = ROLES[role][0]
                            if not any(a.actor == account and a.endpoint == key[1] for a in rows):
                                problems.append(f"{label}: personal data answered without an audit row")
                            audited += 1
                        checked += 1
                    finally:
                        demo_db.rollback()
                        savepoint.rollback()
                        demo_db.expire_all()
    assert checked > 300
    assert audited > 20
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)

"""Keeping grids' workers and party branches current (community and grid admins' duty).

A grid's worker (网格员) is a name and a phone on the grid. A branch (党支部) of a
community — ``grid`` (a grid branch: one or more grids of its community, none of them
with another active grid branch) or ``community`` (the community's party organisation,
covering grids of it) — has a name, an activity site (a WGS84 point within 50 m of the
community), its secretary's name and phone, the grids it covers and whether it is
active. A branch is never deleted: it is dissolved (``active`` false) and keeps its code.

Every change is one transaction; the data-version triggers bump ``grids`` (worker,
coverage, names) and ``branches`` (sites) in it, so tiles, the locate answers and the
coverage analysis follow at once. The same transaction writes the change to the upkeep
log (append-only, migration 0009): who, when, what it was and what it became.
"""

from __future__ import annotations

import json

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from layers import textfields
from layers.codes import area_prefix
from layers.errors import Conflict, InvalidInput, NotFound
from layers.models import SRID, AdminArea, Branch, BranchGrid, Grid

#: The kinds of branch kept here: those of a community (work units' branches belong to
#: no community and are the district's to keep).
KINDS = ("grid", "community")
KIND_PREFIX = {"grid": "G", "community": "C"}
#: How far outside its community a branch's activity site may lie (the road in front).
SITE_SLACK_M = 50.0


def check_contact(name: str | None, phone: str | None, field: str) -> tuple[str | None, str | None]:
    """A person's name and phone as stored: both given (the name a name, the phone a
    mainland mobile or a landline with area code: :mod:`layers.textfields`), or both None
    (nobody)."""
    name = name.strip() if isinstance(name, str) else name
    phone = phone.strip() if isinstance(phone, str) else phone
    if not name and not phone:
        return None, None
    if not name:
        raise InvalidInput(f"{field}_name is required with a phone", field=f"{field}_name")
    name = _name(name, f"{field}_name")
    if not phone:
        raise InvalidInput(f"{field}_phone is required with a name", field=f"{field}_phone")
    return name, textfields.phone(phone, f"{field}_phone")


def _name(value: str, field: str = "name") -> str:
    return textfields.name(value, field)


def _current_grid(session: Session, code: str) -> Grid:
    grid = session.scalar(select(Grid).where(Grid.code == code, func.gridbranch_live(Grid.retired_at)))
    if grid is None:
        raise NotFound(f"no current grid with code {code}", field="code")
    return grid


def _log(
    session: Session, actor: str, subject: str, code: str, area: str, action: str, before: dict | None, after: dict
) -> None:
    session.execute(
        text(
            "INSERT INTO upkeep_log (actor, subject, code, area, action, before, after) "
            "VALUES (:actor, :subject, :code, :area, :action, CAST(:before AS jsonb), CAST(:after AS jsonb))"
        ),
        {
            "actor": actor,
            "subject": subject,
            "code": code,
            "area": area,
            "action": action,
            "before": None if before is None else json.dumps(before, ensure_ascii=False),
            "after": json.dumps(after, ensure_ascii=False),
        },
    )


def set_grid_worker(session: Session, code: str, name: str | None, phone: str | None, actor: str) -> None:
    """Put ``name`` (``phone``) in charge of grid ``code`` as its worker, or nobody (both
    None); logged as ``actor``'s."""
    grid = _current_grid(session, code)
    before = {"name": grid.worker_name, "phone": grid.worker_phone}
    grid.worker_name, grid.worker_phone = check_contact(name, phone, "worker")
    session.flush()
    _log(session, actor, "grid", code, code, "worker", before, {"name": grid.worker_name, "phone": grid.worker_phone})


def branch_area(session: Session, code: str) -> str | None:
    """The code of branch ``code``'s community (None: a work unit's branch, of no
    community); :class:`NotFound`."""
    row = session.execute(
        select(AdminArea.code)
        .select_from(Branch)
        .outerjoin(AdminArea, AdminArea.id == Branch.community_id)
        .where(Branch.code == code)
    ).first()
    if row is None:
        raise NotFound(f"no branch with code {code}", field="code")
    return row[0]


def branch_view(session: Session, code: str) -> dict:
    """One branch with its secretary, site (WGS84) and the grids it covers (codes)."""
    row = session.execute(
        select(Branch, AdminArea.code.label("community"), func.ST_X(Branch.site), func.ST_Y(Branch.site))
        .outerjoin(AdminArea, AdminArea.id == Branch.community_id)
        .where(Branch.code == code)
    ).first()
    if row is None:
        raise NotFound(f"no branch with code {code}", field="code")
    branch, community, x, y = row
    grids = session.scalars(
        select(Grid.code)
        .join(BranchGrid, BranchGrid.grid_id == Grid.id)
        .where(BranchGrid.branch_id == branch.id)
        .order_by(Grid.code)
    ).all()
    return {
        "code": branch.code,
        "name": branch.name,
        "kind": branch.kind,
        "community": community,
        "active": branch.active,
        "secretary_name": branch.secretary_name,
        "secretary_phone": branch.secretary_phone,
        "site": None if x is None else {"lon": x, "lat": y},
        "grids": list(grids),
    }


def _community(session: Session, code: str) -> AdminArea:
    area = session.scalar(select(AdminArea).where(AdminArea.code == code))
    if area is None or area.level != "community":
        raise InvalidInput(f"community must be the code of a community, got {code!r}", field="community")
    return area


def _grids(
    session: Session,
    kind: str,
    codes: list[str],
    community: AdminArea,
    branch_id: int | None,
    *,
    exclusive: bool = True,
) -> list[Grid]:
    """The grids a branch of ``kind`` in ``community`` is to cover, checked; with
    ``exclusive``, a grid branch may not take a grid another active grid branch covers."""
    if len(set(codes)) != len(codes):
        raise InvalidInput("a grid is listed twice", field="grids")
    if not codes:
        raise InvalidInput(f"a {kind} branch covers at least one grid", field="grids")
    out = []
    for code in codes:
        grid = session.scalar(select(Grid).where(Grid.code == code, func.gridbranch_live(Grid.retired_at)))
        if grid is None:
            raise InvalidInput(f"no current grid with code {code}", field="grids")
        if grid.community_id != community.id:
            raise InvalidInput(f"grid {code} is not in community {community.code} ({community.name})", field="grids")
        if kind == "grid" and exclusive:
            other = session.execute(
                select(Branch.code)
                .join(BranchGrid, BranchGrid.branch_id == Branch.id)
                .where(
                    BranchGrid.grid_id == grid.id,
                    Branch.kind == "grid",
                    Branch.active.is_(True),
                    Branch.id != (branch_id or -1),
                )
            ).scalar()
            if other is not None:
                raise Conflict(
                    f"grid {code} already has the active grid branch {other}; dissolve it first", field="grids"
                )
        out.append(grid)
    return out


def _site(session: Session, community: AdminArea, site: tuple[float, float] | None):
    if site is None:
        return None
    lon, lat = site
    point = func.ST_SetSRID(func.ST_MakePoint(lon, lat), SRID)
    near = session.scalar(
        select(func.ST_DWithin(func.Geography(AdminArea.geom), func.Geography(point), SITE_SLACK_M)).where(
            AdminArea.id == community.id
        )
    )
    if not near:
        raise InvalidInput(
            f"the site ({lon:.6f}, {lat:.6f}) lies outside community {community.code} ({community.name})", field="site"
        )
    return point


def _new_code(session: Session, kind: str, community: AdminArea, grids: list[Grid]) -> str:
    base = KIND_PREFIX[kind] + (grids[0].code if kind == "grid" else community.code)
    code, n = base, 1
    while session.scalar(select(func.count()).where(Branch.code == code)):
        n += 1
        code = f"{base}-{n}"
    return code


def create_branch(
    session: Session,
    *,
    name: str,
    kind: str,
    community: str,
    grids: list[str],
    site: tuple[float, float] | None,
    secretary_name: str | None,
    secretary_phone: str | None,
    actor: str,
) -> str:
    """A new active branch; its code (``G`` + its first grid's code, ``C`` + the
    community's; ``-2``… when taken)."""
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}, got {kind!r}", field="kind")
    area = _community(session, community)
    covered = _grids(session, kind, grids, area, None)
    secretary = check_contact(secretary_name, secretary_phone, "secretary")
    branch = Branch(
        code=_new_code(session, kind, area, covered),
        name=_name(name),
        kind=kind,
        community_id=area.id,
        site=_site(session, area, site),
        active=True,
        secretary_name=secretary[0],
        secretary_phone=secretary[1],
    )
    session.add(branch)
    session.flush()
    session.add_all(BranchGrid(branch_id=branch.id, grid_id=g.id) for g in covered)
    session.flush()
    _log(session, actor, "branch", branch.code, area.code, "create", None, branch_view(session, branch.code))
    return branch.code


def update_branch(session: Session, code: str, changes: dict, actor: str) -> None:
    """Change what ``changes`` holds of branch ``code``: ``name``, ``grids`` (the full
    list), ``site`` ((lon, lat) or None), ``secretary`` ((name, phone)) and ``active``
    (False dissolves it; True restores it, when its grids have no other grid branch)."""
    branch = session.scalar(select(Branch).where(Branch.code == code).with_for_update())
    if branch is None:
        raise NotFound(f"no branch with code {code}", field="code")
    if branch.kind not in KINDS or branch.community_id is None:
        raise InvalidInput(f"branch {code} is a {branch.kind} branch, kept by the district, not here", field="code")
    area = session.get(AdminArea, branch.community_id)
    before = branch_view(session, code)
    # everything checked before anything changes
    name = _name(changes["name"]) if "name" in changes else branch.name
    secretary = (
        check_contact(*changes["secretary"], "secretary")
        if "secretary" in changes
        else (branch.secretary_name, branch.secretary_phone)
    )
    site = _site(session, area, changes["site"]) if "site" in changes else branch.site
    active = changes.get("active", branch.active)
    covered = None
    if "grids" in changes or (active and not branch.active):
        codes = changes["grids"] if "grids" in changes else branch_view(session, code)["grids"]
        covered = _grids(session, branch.kind, codes, area, branch.id, exclusive=active)
    branch.name, (branch.secretary_name, branch.secretary_phone), branch.site = name, secretary, site
    branch.active = active
    if "grids" in changes:
        session.execute(delete(BranchGrid).where(BranchGrid.branch_id == branch.id))
        session.add_all(BranchGrid(branch_id=branch.id, grid_id=g.id) for g in covered)
    session.flush()
    after = branch_view(session, code)
    action = (
        "dissolve" if before["active"] and not active else "restore" if active and not before["active"] else "update"
    )
    _log(session, actor, "branch", code, area.code, action, before, after)


def upkeep_log(session: Session, within: str, limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
    """The upkeep log of the grids and the branches of communities inside area (or grid)
    ``within``, newest first: a page of entries, and how many there are in all."""
    prefix = area_prefix(within)
    total = session.execute(text("SELECT count(*) FROM upkeep_log WHERE area LIKE :p"), {"p": prefix + "%"}).scalar()
    rows = (
        session.execute(
            text(
                "SELECT id, at, actor, subject, code, action, before, after FROM upkeep_log WHERE area LIKE :p "
                "ORDER BY at DESC, id DESC LIMIT :limit OFFSET :offset"
            ),
            {"p": prefix + "%", "limit": limit, "offset": offset},
        )
        .mappings()
        .all()
    )
    return [{**r, "at": r["at"].isoformat()} for r in rows], total

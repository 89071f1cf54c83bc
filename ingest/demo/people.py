"""The people of the demo: names and unique fake phone numbers, the branches with their
secretaries and sites (about 5 % of the grids deliberately without one, and the
work-unit branches), and the members with their residences and registrations."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import shapely
from shapely.geometry import Point

from ingest.demo import names as N
from ingest.demo.model import (
    BRANCHLESS_SHARE,
    COUNTY,
    CST,
    N_COMMUNITY_BRANCHES,
    N_FLOATING,
    N_IN_SERVICE,
    N_PAIR_BRANCHES,
    N_WORK_UNITS,
    ROLE_CODES,
    ROLE_WEIGHTS,
    Branch,
    Grid,
    Member,
    Registration,
    Residence,
)
from ingest.demo.partition import Layout, shared_line
from ingest.demo.sampling import point_in, random_times, sample_in, sample_lonlat


class People:
    """Names and unique fake phone numbers (1xx 0000 xxxx)."""

    def __init__(self, rng: np.random.Generator, n_phones: int) -> None:
        self.rng = rng
        self.surnames = [s for s, _ in N.SURNAMES]
        w = np.array([w for _, w in N.SURNAMES])
        self.surname_p = w / w.sum()
        self.chars = list(dict.fromkeys(N.GIVEN_CHARS))
        space = len(N.PHONE_PREFIXES) * 10_000
        self.phones = rng.choice(space, size=n_phones, replace=False)
        self.next_phone = 0

    def names(self, n: int) -> list[str]:
        rng = self.rng
        sur = rng.choice(len(self.surnames), size=n, p=self.surname_p)
        two = rng.random(n) < 0.62
        c1 = rng.integers(0, len(self.chars), n)
        c2 = rng.integers(0, len(self.chars), n)
        out = []
        for i in range(n):
            given = self.chars[c1[i]] + (self.chars[c2[i]] if two[i] and c2[i] != c1[i] else "")
            out.append(self.surnames[sur[i]] + given)
        return out

    def phone_numbers(self, n: int) -> list[str]:
        codes = self.phones[self.next_phone : self.next_phone + n]
        if len(codes) < n:
            raise RuntimeError("phone pool exhausted")
        self.next_phone += n
        return [f"{N.PHONE_PREFIXES[v // 10_000]}0000{v % 10_000:04d}" for v in codes]


def make_branches(rng, layout: Layout, grids: list[Grid], people: People, district_m, density, boundary_ll):
    n = len(grids)
    n_branchless = round(BRANCHLESS_SHARE * n)
    branchless_idx = sorted(rng.choice(n, size=n_branchless, replace=False).tolist())
    branchless = set(branchless_idx)
    by_comm: dict[int, list[int]] = {}
    for g, c in enumerate(layout.grid_community):
        if g not in branchless:
            by_comm.setdefault(c, []).append(g)
    metric = layout.grids

    def adjacent(a: int, b: int) -> bool:
        return shapely.length(shared_line(metric[a], metric[b])) > 1.0

    groups: list[tuple[str, list[int]]] = []  # (kind, grid indices)
    taken: set[int] = set()
    # Community branches: 3 mutually connected grids in communities with >= 5 covered grids.
    comm_order = [c for c in rng.permutation(len(layout.communities)).tolist() if len(by_comm.get(c, [])) >= 5]
    made = 0
    for c in comm_order:
        if made == N_COMMUNITY_BRANCHES:
            break
        cand = by_comm[c]
        for start in cand:
            group = [start]
            for h in cand:
                if h not in group and any(adjacent(h, x) for x in group):
                    group.append(h)
                if len(group) == 3:
                    break
            if len(group) == 3:
                groups.append(("community", sorted(group)))
                taken.update(group)
                made += 1
                break
    # Grid branches covering two adjacent small grids.
    median = float(np.median([g.area_m2 for g in grids]))
    made = 0
    for c in rng.permutation(len(layout.communities)).tolist():
        if made == N_PAIR_BRANCHES:
            break
        cand = [g for g in by_comm.get(c, []) if g not in taken and grids[g].area_m2 < median]
        pair = next(((a, b) for i, a in enumerate(cand) for b in cand[i + 1 :] if adjacent(a, b)), None)
        if pair:
            groups.append(("grid", list(pair)))
            taken.update(pair)
            made += 1
    for g in range(n):
        if g not in branchless and g not in taken:
            groups.append(("grid", [g]))
    groups.sort(key=lambda kg: grids[kg[1][0]].code)

    sec_names = people.names(len(groups) + N_WORK_UNITS)
    sec_phones = people.phone_numbers(len(groups) + N_WORK_UNITS)
    created = random_times(
        rng, len(groups) + N_WORK_UNITS, datetime(2021, 6, 1, tzinfo=CST), datetime(2025, 12, 31, tzinfo=CST)
    )
    branches: list[Branch] = []
    for i, (kind, members) in enumerate(groups):
        first = grids[members[0]]
        comm_code = first.community_code
        comm_name = layout.community_names[layout.community_codes.index(comm_code)]
        site_grid = grids[members[int(rng.integers(len(members)))]]
        site = point_in(rng, site_grid.geom)
        if kind == "community":
            code = f"C{comm_code}"
            name = f"{comm_name}党支部"
        elif len(members) == 1:
            code = f"G{first.code}"
            name = f"{first.name}党支部"
        else:
            code = f"G{first.code}"
            nums = "、".join(str(int(grids[g].code[-3:])) for g in members)
            name = f"{comm_name}第{nums}网格联合党支部"
        branches.append(
            Branch(
                code,
                name,
                kind,
                comm_code,
                tuple(grids[g].code for g in members),
                site,
                sec_names[i],
                sec_phones[i],
                created[i],
            )
        )

    # Work-unit branches: departments' offices, schools/hospitals, companies.
    unit_names = [f"{d}机关党支部" for d in N.DEPARTMENTS[:25]]
    unit_names += [f"{s}党支部" for s in N.SCHOOLS_AND_HOSPITALS]
    words = list(N.COMPANY_WORDS)
    kinds = list(N.COMPANY_KINDS)
    k = 0
    while len(unit_names) < N_WORK_UNITS:
        unit_names.append(f"郑州{words[k % len(words)]}{kinds[(k * 7) % len(kinds)]}党支部")
        k += 1
    sites = sample_lonlat(rng, N_WORK_UNITS, district_m, boundary_ll, density)
    for j, uname in enumerate(unit_names[:N_WORK_UNITS]):
        i = len(groups) + j
        branches.append(
            Branch(
                f"W{COUNTY}{j + 1:04d}",
                uname,
                "work_unit",
                None,
                (),
                Point(float(sites[j, 0]), float(sites[j, 1])),
                sec_names[i],
                sec_phones[i],
                created[i],
            )
        )
    return branches, [grids[g].code for g in branchless_idx]


def make_members(
    rng, people: People, grids, branches, defects, district_m, district_ll, density, grid_at, as_of: datetime
):
    n = N_IN_SERVICE + N_FLOATING
    status = np.array(["in_service"] * N_IN_SERVICE + ["floating"] * N_FLOATING)
    status = status[rng.permutation(n)]
    ll = sample_lonlat(rng, n, district_m, district_ll, density)
    # A few members deliberately live in each real gap (so the gap shows unregistered
    # members); they are drawn inside the gap polygon.
    k = 0
    for d in defects:
        if d["kind"] == "gap":
            gap = shapely.from_wkt(d["wkt"])
            gap = shapely.buffer(gap, -2e-6)  # keep clear of the gap's edges (~0.2 m)
            pts = sample_in(rng, 3, gap)
            ll[k : k + 3] = pts
            k += 3
    # Shuffle so the gap residents are not the first members.
    perm = rng.permutation(n)
    ll = ll[perm]
    grid_idx = grid_at(ll)

    names = people.names(n)
    phones = people.phone_numbers(n)
    work_units = [b for b in branches if b.kind == "work_unit"]
    wu_weights = rng.uniform(0.3, 1.0, len(work_units))
    wu_choice = rng.choice(len(work_units), size=n, p=wu_weights / wu_weights.sum())
    created = random_times(rng, n, datetime(2019, 1, 1, tzinfo=CST), datetime(2024, 6, 30, tzinfo=CST))
    accuracy = np.round(rng.uniform(5.0, 50.0, n), 1)
    branch_of_grid: dict[str, str] = {}
    for b in branches:
        for code in b.grid_codes:
            branch_of_grid.setdefault(code, b.code)

    registered = rng.random(n) < np.where(status == "in_service", 0.885, 0.86)
    pending = rng.random(n) < 0.07
    roles = rng.choice(len(ROLE_CODES), size=n, p=np.array(ROLE_WEIGHTS) / sum(ROLE_WEIGHTS))
    reg_age_days = rng.uniform(30, 700, n)
    pending_age_days = rng.uniform(0.2, 25, n)
    decide_hours = rng.uniform(2, 96, n)
    rec_minutes = rng.uniform(1, 30, n)

    members, residences, registrations = [], [], []
    for i in range(n):
        in_service = status[i] == "in_service"
        members.append(
            Member(
                i,
                names[i],
                phones[i],
                str(status[i]),
                work_units[wu_choice[i]].code if in_service else None,
                created[i],
            )
        )
        g = int(grid_idx[i])
        if registered[i] and g >= 0:
            grid = grids[g]
            if pending[i]:
                at = as_of - timedelta(days=float(pending_age_days[i]))
                decided, by, st = None, None, "pending"
            else:
                at = as_of - timedelta(days=float(reg_age_days[i]))
                decided = at + timedelta(hours=float(decide_hours[i]))
                by, st = f"网格员{grid.worker_name}", "confirmed"
            at = at.replace(microsecond=0)
            decided = decided.replace(microsecond=0) if decided else None
            registrations.append(
                Registration(i, grid.code, branch_of_grid.get(grid.code), ROLE_CODES[roles[i]], st, at, decided, by)
            )
            recorded = at - timedelta(minutes=float(rec_minutes[i]))
        else:
            recorded = as_of - timedelta(days=float(reg_age_days[i]))
        residences.append(
            Residence(i, float(ll[i, 0]), float(ll[i, 1]), float(accuracy[i]), recorded.replace(microsecond=0))
        )
    return members, residences, registrations

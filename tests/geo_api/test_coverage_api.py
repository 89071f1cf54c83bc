"""Coverage API and command on the demo: summary, issues and H3 with their access rules,
formats (JSON, GeoJSON, CSV) and bad input."""

from __future__ import annotations

import csv
import io
import json

import pytest
from shapely.geometry import shape

from tests.conftest import token_for
from tests.factories.h3 import points, true_counts

DISTRICT = "410105000000"
STREET = "410105003000"  # holds the demo's hole (community 003) and an overlap (community 008)
COMMUNITY = "410105003003"
GRID = "410105003003005"
OTHER_STREET = "410105001000"


def rows(body: bytes) -> list[dict[str, str]]:
    text = body.decode("utf-8")
    assert text.startswith("\ufeff")
    return list(csv.DictReader(io.StringIO(text[1:])))


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------


def test_summary_for_the_district_admin(client):
    r = client.get("/v1/coverage/summary", headers=token_for("admin"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["code"] == DISTRICT and body["level"] == "street" and len(body["units"]) == 14
    total = body["total"]
    assert total["grids"] == 500 and total["grids_with_branch"] == 475 and total["branch_share"] == 0.95
    assert 0.9999 < total["coverage_share"] < 1
    assert sum(u["grids"] for u in body["units"]) == 500
    assert sum(u["members_resident"] for u in body["units"]) == total["members_resident"]
    for metric, order in body["rankings"].items():
        assert sorted(order) == sorted(u["code"] for u in body["units"])
        values = [next(u for u in body["units"] if u["code"] == c)[metric] for c in order]
        assert values == sorted(values, reverse=True), metric
    # issue counts per street add up to the district's
    for kind in ("gap", "overlap", "sliver", "no_branch"):
        assert sum(u["issues"].get(kind, 0) for u in body["units"]) == total["issues"][kind]
    assert total["issues"]["gap"] == 2 and total["issues"]["overlap"] == 2 and total["issues"]["sliver"] == 1


def test_summary_is_scoped_to_the_admins_area(client):
    headers = token_for("street_admin")
    own = client.get("/v1/auth/me", headers=headers).json()["area_code"]
    body = client.get("/v1/coverage/summary", headers=headers).json()
    assert body["code"] == own and body["level"] == "community"
    assert body["units"] and all(u["code"].startswith(own[:9]) for u in body["units"])
    r = client.get("/v1/coverage/summary", params={"code": DISTRICT}, headers=headers)
    assert r.status_code == 403 and r.json()["field"] == "code"
    grids = client.get("/v1/coverage/summary", params={"level": "grid"}, headers=headers).json()
    assert grids["total"]["grids"] == len(grids["units"]) and all(u["level"] == "grid" for u in grids["units"])


@pytest.mark.parametrize("user, status", [(None, 401), ("member", 403), ("gridworker", 403), ("dispatcher", 200)])
def test_summary_access(client, user, status):
    r = client.get("/v1/coverage/summary", headers=token_for(user) if user else {})
    assert r.status_code == status, r.text
    if status == 200:
        assert r.json()["code"] == DISTRICT  # dispatchers: the one district


def test_summary_csv_and_geojson(client):
    headers = token_for("admin")
    body = client.get("/v1/coverage/summary", params={"code": STREET}, headers=headers).json()
    r = client.get("/v1/coverage/summary", params={"code": STREET, "format": "csv"}, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f"coverage_{STREET}_community_summary.csv" in r.headers["content-disposition"]
    table = rows(r.content)
    assert [t["code"] for t in table] == [u["code"] for u in body["units"]] + [STREET]
    for t, u in zip(table, body["units"]):
        assert int(t["members_registered"]) == u["members_registered"]
        assert float(t["coverage_share"]) == u["coverage_share"] and t["name"] == u["name"]
    r = client.get("/v1/coverage/summary", params={"code": STREET, "format": "geojson"}, headers=headers)
    assert r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    assert [f["id"] for f in fc["features"]] == [u["code"] for u in body["units"]]
    assert all(shape(f["geometry"]).is_valid and f["properties"]["level"] == "community" for f in fc["features"])


@pytest.mark.parametrize(
    "params, field",
    [
        ({"level": "province"}, "level"),
        ({"code": "410105999000"}, "code"),
        ({"code": "41"}, "code"),
        ({"code": "410105003000", "level": "district"}, "level"),
        ({"format": "xlsx"}, "format"),
    ],
)
def test_summary_bad_input_is_422_naming_it(client, params, field):
    r = client.get("/v1/coverage/summary", params=params, headers=token_for("admin"))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == field and r.json()["detail"]


# --------------------------------------------------------------------------------------
# Issues
# --------------------------------------------------------------------------------------


def test_issues_geojson_for_the_district(client):
    r = client.get("/v1/coverage/issues", headers=token_for("admin"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    counts = fc["counts"]
    assert (counts["gap"], counts["overlap"], counts["sliver"], counts["no_branch"]) == (2, 2, 1, 25)
    assert len(fc["features"]) == sum(counts.values())
    for f in fc["features"]:
        p = f["properties"]
        assert p["kind"] in fc["kinds"] and p["message"]
        if p["kind"] in ("gap", "overlap", "sliver", "no_branch"):
            geom = shape(f["geometry"])
            assert geom.is_valid and geom.area > 0 and p["area_m2"] > 0
            assert geom.buffer(1e-9).contains(shape({"type": "Point", "coordinates": p["point"]}))
    sliver = next(f for f in fc["features"] if f["properties"]["kind"] == "sliver")["properties"]
    assert sliver["form"] == "gap" and 23 < sliver["area_m2"] < 25


def test_issues_by_kind_and_within(client):
    headers = token_for("admin")
    fc = client.get("/v1/coverage/issues", params={"kind": "gap,overlap", "within": STREET}, headers=headers).json()
    got = sorted((f["properties"]["kind"], f["properties"]["area_code"]) for f in fc["features"])
    assert got == [("gap", "410105003003"), ("overlap", "410105003008")]
    fc = client.get("/v1/coverage/issues", params=[("kind", "topology")], headers=headers).json()
    assert {f["properties"]["kind"] for f in fc["features"]} == {"gap", "overlap", "sliver"}
    grid = "410105003008005"
    fc = client.get("/v1/coverage/issues", params={"within": grid, "kind": "topology"}, headers=headers).json()
    assert [f["properties"]["codes"] for f in fc["features"]] == [[grid, "410105003008007"]]


def test_issues_csv(client):
    r = client.get(
        "/v1/coverage/issues", params={"format": "csv", "kind": "topology,no_branch"}, headers=token_for("dispatcher")
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = rows(r.content)
    assert len(table) == 30 and {t["kind"] for t in table} == {"gap", "overlap", "sliver", "no_branch"}
    gap = next(t for t in table if t["kind"] == "gap")
    assert gap["wkt"].startswith("POLYGON") and float(gap["area_m2"]) > 3000
    assert gap["codes"].split()[0] == gap["area_code"]


@pytest.mark.parametrize(
    "user, params, status, field",
    [
        ("admin", {"kind": "gaps"}, 422, "kind"),
        ("admin", {"within": "410105999000"}, 422, "within"),
        ("admin", {"within": "4101050030"}, 422, "within"),
        ("street_admin", {"within": DISTRICT}, 403, "within"),
        (None, {}, 401, None),
        ("member", {}, 403, None),
    ],
)
def test_issues_bad_input_and_access(client, user, params, status, field):
    r = client.get("/v1/coverage/issues", params=params, headers=token_for(user) if user else {})
    assert r.status_code == status, r.text
    if field:
        assert r.json()["field"] == field


# --------------------------------------------------------------------------------------
# H3
# --------------------------------------------------------------------------------------


def h3(client, user=None, **params):
    r = client.get("/v1/coverage/h3", params=params, headers=token_for(user) if user else {})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/geo+json")
    return r.json()


def test_h3_public_is_suppressed_admin_is_not(client, demo_db):
    public = h3(client, res=10, metric="members", within=STREET)
    assert public["suppressed"] is True and public["k"] == 5 and public["total"] is None
    assert public["suppressed_cells"] > 0
    assert all(f["properties"]["count"] >= 5 for f in public["features"])
    full = h3(client, "admin", res=10, metric="members", within=STREET)
    assert full["suppressed"] is False and full["suppressed_cells"] == 0
    # the admin: members inside the street, exactly, every cell
    assert {f["properties"]["cell"]: f["properties"]["count"] for f in full["features"]} == true_counts(
        points(demo_db, "members", STREET)
    )[10]
    assert full["total"] == sum(f["properties"]["count"] for f in full["features"])
    # the public: the same cells listed, some left out, whole-cell counts (≥ the admin's)
    inside = {f["properties"]["cell"]: f["properties"]["count"] for f in full["features"]}
    shown = {f["properties"]["cell"]: f["properties"]["count"] for f in public["features"]}
    assert set(shown) <= set(inside) and len(shown) + public["suppressed_cells"] == len(inside)
    assert all(n >= inside[c] for c, n in shown.items())
    poly = shape(full["features"][0]["geometry"])
    assert poly.is_valid and poly.geom_type == "Polygon"


@pytest.mark.parametrize("res", [8, 9, 10])
def test_h3_differencing_across_within_recovers_nothing(client, demo_db, res):
    """A cell has one public count (or none) whatever the ``within``: no difference of
    two answers tells how many of its people live in one street, community or grid."""
    whole = true_counts(points(demo_db, "members"))[res]
    answers = {}
    for within in (None, DISTRICT, STREET, COMMUNITY, GRID, OTHER_STREET):
        body = h3(client, res=res, metric="members", **({"within": within} if within else {}))
        shown = {f["properties"]["cell"]: f["properties"]["count"] for f in body["features"]}
        listed = set(true_counts(points(demo_db, "members", within))[res])
        # listed: the cells holding a member inside ``within``; counted whole
        assert set(shown) <= listed and body["suppressed_cells"] == len(listed - set(shown)), within
        assert shown == {c: whole[c] for c in shown}, within
        answers[within] = shown, listed
    published = set(answers[None][0])
    for within, (shown, listed) in answers.items():
        assert set(shown) == listed & published, within  # suppressed in one answer, suppressed in all
    # the street's edge cells hold members outside it too: counted inside the street only,
    # as they were, the district's figure minus the street's gave the others away
    street = true_counts(points(demo_db, "members", STREET))[res]
    assert any(street[c] < n for c, n in answers[STREET][0].items())


@pytest.mark.parametrize(
    "user, metric, within, suppressed",
    [
        ("admin", "residences", None, False),  # default within: the admin's district
        ("street_admin", "members", DISTRICT, True),  # beyond their street
        ("dispatcher", "members", STREET, True),  # routing needs no member data
        ("dispatcher", "events", STREET, False),
        ("member", "members", STREET, True),
    ],
)
def test_h3_entitlement(client, user, metric, within, suppressed):
    params = {"res": 8, "metric": metric, **({"within": within} if within else {})}
    body = h3(client, user, **params)
    assert body["suppressed"] is suppressed
    if suppressed:
        assert all(f["properties"]["count"] >= 5 for f in body["features"])


@pytest.mark.parametrize(
    "params, field",
    [
        ({"res": 6}, "res"),
        ({"res": 11}, "res"),
        ({"res": "nine"}, "res"),
        ({"metric": "people"}, "metric"),
        ({"within": "410105999000"}, "within"),
    ],
)
def test_h3_bad_input_is_422_naming_it(client, params, field):
    r = client.get("/v1/coverage/h3", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == field


# --------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------


def test_coverage_report_command(demo_engine, tmp_path, monkeypatch, capsys):
    from geo_api.cli import main

    monkeypatch.setenv("GRIDBRANCH_DATABASE_URL", demo_engine.url.render_as_string(hide_password=False))
    assert main(["coverage", "report", "--within", STREET, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "人民路街道" in out and "gap 1" in out and "overlap 1" in out
    issues = json.loads((tmp_path / f"coverage_{STREET}_issues.geojson").read_text(encoding="utf-8"))
    table = rows((tmp_path / f"coverage_{STREET}_issues.csv").read_bytes())
    assert len(issues["features"]) == len(table) > 2
    assert [f["id"] for f in issues["features"]] == [t["id"] for t in table]
    summary = rows((tmp_path / f"coverage_{STREET}_community_summary.csv").read_bytes())
    assert summary[-1]["code"] == STREET and all(s["code"].startswith(STREET[:9]) for s in summary)
    assert main(["coverage", "report", "--within", "410105999000", "--out", str(tmp_path)]) == 2
    assert "unknown within" in capsys.readouterr().err

"""The partitioned layout of docs/scale.md (bench/scale_partitioned.sql) on a scratch
database: it applies, a county's query reads that county's partitions only (and one
year's, for events), a unique key without the partition key is refused, and a row of a
county without partitions finds none."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.conftest import scratch_engine

LAYOUT = Path(__file__).resolve().parents[2] / "bench" / "scale_partitioned.sql"
COUNTIES = ("410102", "410103", "410105")


def _scanned(plan: dict) -> set[str]:
    """The relations a JSON plan reads."""
    out = {plan["Relation Name"]} if "Relation Name" in plan else set()
    for child in plan.get("Plans", []):
        out |= _scanned(child)
    return out


@pytest.fixture(scope="module")
def layout(server_url):
    with scratch_engine(server_url, "scale_layout", migrated=True) as engine:
        with engine.begin() as conn:
            conn.connection.cursor().execute(LAYOUT.read_text())
            for code in COUNTIES:
                conn.execute(text("SELECT scale.add_district(:c, 2025, 2026)"), {"c": code})
            for k, code in enumerate(COUNTIES):
                conn.execute(
                    text(
                        """INSERT INTO scale.members (district_code, id, number, name, status)
                           SELECT :c, i, :c || '-' || i, '某某', 'in_service' FROM generate_series(1, 200) i"""
                    ),
                    {"c": code},
                )
                conn.execute(
                    text(
                        """INSERT INTO scale.events (district_code, id, reported_at, geom, category_code, status)
                           SELECT :c, i, timestamptz '2025-01-01 00:00+08' + i * interval '1 day',
                                  ST_SetSRID(ST_MakePoint(113.6 + :k * 0.1, 34.7), 4326), 'road', 'closed'
                           FROM generate_series(0, 700) i"""
                    ),
                    {"c": code, "k": k},
                )
            conn.execute(text("ANALYZE"))
        yield engine


def test_a_county_month_reads_one_partition(layout):
    with layout.connect() as conn:
        plan = conn.execute(
            text(
                """EXPLAIN (FORMAT JSON) SELECT status, count(*) FROM scale.events
                   WHERE district_code = '410103'
                     AND reported_at >= '2026-03-01 00:00+08' AND reported_at < '2026-04-01 00:00+08'
                   GROUP BY status"""
            )
        ).scalar()
        plan = plan if isinstance(plan, list) else json.loads(plan)
        assert _scanned(plan[0]["Plan"]) == {"events_410103_2026"}
        n = conn.execute(
            text(
                """SELECT count(*) FROM scale.events WHERE district_code = '410103'
                   AND reported_at >= '2026-03-01 00:00+08' AND reported_at < '2026-04-01 00:00+08'"""
            )
        ).scalar()
        assert n == 31
        members = conn.execute(
            text("EXPLAIN (FORMAT JSON) SELECT count(*) FROM scale.members WHERE district_code = '410105'")
        ).scalar()
        members = members if isinstance(members, list) else json.loads(members)
        assert _scanned(members[0]["Plan"]) == {"members_410105"}


def test_a_unique_key_without_the_county_is_refused(layout):
    with layout.connect() as conn, pytest.raises(DBAPIError, match="partition"):
        conn.execute(text("CREATE UNIQUE INDEX members_number_alone ON scale.members (number)"))


def test_a_county_without_partitions_takes_no_rows(layout):
    with layout.connect() as conn, pytest.raises(DBAPIError, match="no partition"):
        conn.execute(
            text("INSERT INTO scale.members (district_code, id, name, status) VALUES ('410181', 1, 'x', 'retired')")
        )

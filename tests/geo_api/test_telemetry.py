"""Metrics, readiness and liveness, request ids and JSON logs (geo_api.telemetry): what the
operators of a deployment read, and what they must never find in it (raw paths, codes)."""

from __future__ import annotations

import json
import logging
import re

from prometheus_client.parser import text_string_to_metric_families

from geo_api.telemetry import JsonFormatter
from tests.geo_api.test_middleware import POINT, TILE, client_for

LOOPBACK = ("127.0.0.1", 50000)
PROXY = ("10.0.0.2", 40000)


def scrape(c) -> dict[tuple[str, tuple], float]:
    """The metrics /metrics answers, as {(sample name, sorted labels): value}."""
    r = c.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_routes_by_template_and_the_tile_cache(demo_engine, demo_db):
    tile_route = "/tiles/{layers}/{z}/{x}/{y}.mvt"
    with client_for(demo_engine, demo_db, client=LOOPBACK) as c:
        assert c.get(TILE).status_code == 200  # warms the cache
        before = scrape(c)
        first, second = c.get(TILE), c.get(TILE)
        assert first.status_code == second.status_code == 200
        code = "410105001001001"
        assert c.get(f"/v1/grids/{code}").status_code in (200, 404)
        assert c.get("/v1/nothing/410105001001999").status_code == 404
        after = scrape(c)
        text = c.get("/metrics").text
    count = "gridbranch_http_requests_total"
    assert (
        value(after, count, method="GET", route=tile_route, status="200")
        - value(before, count, method="GET", route=tile_route, status="200")
        == 2
    )
    assert value(after, count, method="GET", route="<unmatched>", status="404") >= 1
    assert value(after, "gridbranch_http_request_duration_seconds_count", method="GET", route=tile_route) >= 2
    # the raw path — its tile numbers, a grid's code — is in no label (values are numbers:
    # a counter of the whole test process may well stand at 13365)
    labels = " ".join(v for _, ls in after for _, v in ls)
    assert "13365" not in labels and code not in labels and "410105001001999" not in labels
    assert 'route="/v1/grids/{code}"' in text
    hits = value(after, "gridbranch_tile_cache_lookups_total", result="hit") - value(
        before, "gridbranch_tile_cache_lookups_total", result="hit"
    )
    misses = value(after, "gridbranch_tile_cache_lookups_total", result="miss") - value(
        before, "gridbranch_tile_cache_lookups_total", result="miss"
    )
    assert hits + misses == 2
    if first.headers["etag"] == second.headers["etag"]:  # no write came between: both from the cache
        assert hits == 2
    reads = "gridbranch_data_version_reads_total"
    assert value(after, reads, reader="tiles") - value(before, reads, reader="tiles") >= 1  # a hit revalidates
    assert value(after, "gridbranch_db_pool_connections", pool="tiles", state="size") >= 1
    assert value(after, "gridbranch_db_pool_connections", pool="engine", state="size") >= 1


def test_metrics_are_for_the_allowed_addresses_only(demo_engine, demo_db):
    with client_for(demo_engine, demo_db, client=("203.0.113.9", 1)) as c:
        r = c.get("/metrics")
        assert r.status_code == 403 and r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["detail_zh"] == "监控指标仅允许从 GRIDBRANCH_METRICS_ALLOW 所列地址读取"
        assert "gridbranch_" not in r.text
    with client_for(demo_engine, demo_db, client=PROXY, security={"trusted_proxies": ("10.0.0.2",)}) as c:
        # through a trusted proxy (nginx on loopback), the client it names counts, not the proxy
        assert c.get("/metrics", headers={"X-Forwarded-For": "198.51.100.1"}).status_code == 403
        assert c.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200
    with client_for(
        demo_engine, demo_db, client=("203.0.113.9", 1), service={"metrics_allow": ("203.0.113.0/24",)}
    ) as c:
        assert c.get("/metrics").status_code == 200  # a monitoring network, by setting


def test_liveness_and_readiness(demo_engine, demo_db):
    with client_for(demo_engine, demo_db) as c:
        assert c.get("/livez").json() == {"status": "live"}
        r = c.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ready"}
        assert c.head("/readyz").status_code == 200


def test_request_ids_come_from_trusted_proxies_only(demo_engine, demo_db):
    given = "0f3c9a0e7d5b4c1a9e8f7a6b5c4d3e2f"
    with client_for(demo_engine, demo_db, client=PROXY, security={"trusted_proxies": ("10.0.0.2",)}) as c:
        for url in (TILE, f"/v1/locate?lon={POINT[0]}&lat={POINT[1]}", "/v1/events/categories"):
            assert c.get(url, headers={"X-Request-ID": given}).headers["x-request-id"] == given, url
        forged = c.get(TILE, headers={"X-Request-ID": "x\r\nlevel: error"})
        assert forged.status_code == 200 and "x-request-id" not in forged.headers  # not a request id: replaced
    with client_for(demo_engine, demo_db, client=("203.0.113.9", 1)) as c:
        # anyone's header is not believed, and the id made instead is only logged
        assert "x-request-id" not in c.get(TILE, headers={"X-Request-ID": given}).headers


def test_request_ids_made_here_are_unique_and_logged(demo_engine, demo_db, caplog):
    with client_for(demo_engine, demo_db, service={"log_format": "json"}) as c:
        with caplog.at_level(logging.INFO, logger="gridbranch.access"):
            for _ in range(3):
                assert c.get(TILE, headers={"X-Request-ID": "mine"}).status_code == 200
    ids = [json.loads(JsonFormatter().format(r))["request_id"] for r in caplog.records if r.name == "gridbranch.access"]
    assert len(ids) == 3 and len(set(ids)) == 3 and "mine" not in ids
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_json_access_log_names_the_route_and_the_request_id(demo_engine, demo_db, clock, caplog):
    given = "req-1234"
    with client_for(
        demo_engine, demo_db, client=PROXY, security={"trusted_proxies": ("10.0.0.2",)}, service={"log_format": "json"}
    ) as c:
        with caplog.at_level(logging.INFO, logger="gridbranch.access"):
            r = c.get(TILE, headers={"X-Request-ID": given})
    assert r.status_code == 200
    records = [rec for rec in caplog.records if rec.name == "gridbranch.access"]
    assert len(records) == 1
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == given == r.headers["x-request-id"]
    assert line["route"] == "/tiles/{layers}/{z}/{x}/{y}.mvt" and line["status"] == 200 and line["method"] == "GET"
    assert line["ts"] == clock.now().isoformat() and line["level"] == "info"
    assert "13365" not in json.dumps(line)
    assert line["duration_ms"] >= 0

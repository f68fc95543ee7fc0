"""Metrics over the real API app (make_app + install) and a Service on NullDriver/SqliteStore."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families
from service_kit import make_service

from netd import metrics as metrics_mod
from netd.api import metrics_route
from netd.api.metrics_route import install
from netd.api.server import make_app
from netd.errors import ConfigError
from netd.metrics import Metrics, serve_tcp


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition as {(name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def cni_call(command: str, cid: str) -> dict[str, Any]:
    return {
        "command": command,
        "containerId": cid,
        "netns": f"/run/netns/{cid}",
        "ifname": "eth0",
        "args": "",
        "path": "/opt/cni/bin",
        "config": {"cniVersion": "1.0.0", "name": "web", "type": "netd"},
    }


async def scenario(tmp_path: Path) -> tuple[str, str, Metrics]:
    svc = make_service(tmp_path)
    await svc.start()
    metrics = Metrics()
    app = make_app(svc, metrics=metrics)
    assert install(app, svc, Metrics()) is metrics  # idempotent: no second route/middleware
    async with TestClient(TestServer(app)) as client:
        resp = await client.post(
            "/v1/networks", json={"name": "web", "subnets": [{"subnet": "10.90.0.0/24"}]}
        )
        assert resp.status == 201, await resp.text()
        results = {}
        for cid in ("c1", "c2", "c3"):
            resp = await client.post("/v1/cni", json=cni_call("ADD", cid))
            assert resp.status == 200, await resp.text()
            results[cid] = await resp.json()
        resp = await client.post("/v1/cni", json=cni_call("DEL", "c3"))
        assert resp.status == 200
        check = cni_call("CHECK", "c1")
        check["config"]["prevResult"] = results["c1"]
        resp = await client.post("/v1/cni", json=check)
        assert resp.status == 200, await resp.text()
        # a CNI error: the network does not exist
        bad = cni_call("ADD", "c9")
        bad["config"]["name"] = "nope"
        resp = await client.post("/v1/cni", json=bad)
        assert resp.status == 422
        # a junk verb must not mint a label value
        resp = await client.post("/v1/cni", json=cni_call("X" * 10, "c9"))
        assert resp.status >= 400
        resp = await client.get("/v1/networks/web")
        assert resp.status == 200
        resp = await client.get("/v1/networks/missing-one")
        assert resp.status == 404
        resp = await client.get("/no/such/path")
        assert resp.status == 404
        resp = await client.get("/metrics")
        assert resp.status == 200
        content_type = resp.headers["Content-Type"]
        text = await resp.text()
    svc.store.close()
    return text, content_type, metrics


# netd/api/server.py stores the caller under a str key, which aiohttp >= 3.13 warns about
# (reported to the lead: use a web.RequestKey); the warning is not what this test is about.
def test_metrics_after_operations(tmp_path: Path) -> None:
    text, content_type, metrics = asyncio.run(scenario(tmp_path))
    assert content_type.startswith("text/plain")
    got = samples(text)
    cni = "netd_cni_operations_total"
    assert got[(cni, (("command", "ADD"), ("result", "ok")))] == 3
    assert got[(cni, (("command", "DEL"), ("result", "ok")))] == 1
    assert got[(cni, (("command", "CHECK"), ("result", "ok")))] == 1
    assert got[(cni, (("command", "ADD"), ("result", "error")))] == 1
    assert got[(cni, (("command", "other"), ("result", "error")))] == 1
    assert not any(k[0] == cni and ("command", "X" * 10) in k[1] for k in got)
    assert got[("netd_cni_operation_seconds_count", (("command", "ADD"),))] == 4
    assert got[("netd_cni_operation_seconds_sum", (("command", "ADD"),))] > 0
    api = "netd_api_requests_total"
    assert got[(api, (("method", "POST"), ("route", "/v1/networks"), ("status", "201")))] == 1
    assert got[(api, (("method", "POST"), ("route", "/v1/cni"), ("status", "200")))] == 5
    assert got[(api, (("method", "POST"), ("route", "/v1/cni"), ("status", "422")))] >= 1
    # route templates, never raw names
    assert got[(api, (("method", "GET"), ("route", "/v1/networks/{name}"), ("status", "200")))] == 1
    assert got[(api, (("method", "GET"), ("route", "/v1/networks/{name}"), ("status", "404")))] == 1
    assert got[(api, (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert not any("missing-one" in str(k) for k in got)
    # IPAM gauges at scrape time: c1, c2 hold addresses; a /24 less network, gateway, broadcast
    labels = (("network", "web"), ("subnet", "10.90.0.0/24"))
    assert got[("netd_ipam_addresses_used", labels)] == 2
    assert got[("netd_ipam_addresses_size", labels)] == 253
    # defined for the other producers, present at zero
    assert got[("netd_firewall_restores_total", ())] == 0
    assert got[("netd_dns_upstream_failures_total", ())] == 0
    assert got[("netd_dns_cache_hits_total", ())] == 0
    families = {f.name for f in metrics.registry.collect()}
    assert {"netd_reconcile_repairs", "netd_dns_queries", "netd_dns_query_seconds"} <= families
    # a fresh Metrics per test: the process-wide one saw none of this
    assert metrics is not metrics_mod.METRICS
    assert metrics_mod.METRICS.cni_operations.labels("ADD", "ok")._value.get() == 0


def test_producers_feed_the_exposition() -> None:
    m = Metrics()
    m.reconcile_repairs.labels("bridge").inc()
    m.firewall_restores.inc(2)
    m.dns.source = lambda: {
        "results": {"nxdomain": 1, "noerror": 4},
        "bounds": [0.001, 0.01],
        "buckets": [3, 1, 1],
        "sum": 0.05,
        "count": 5,
        "cache_hits": 2,
        "upstream_failures": 1,
        "over_share": {"forward": 7, "tcp": 3},
    }
    got = samples(m.exposition().decode())
    assert got[("netd_reconcile_repairs_total", (("kind", "bridge"),))] == 1
    assert got[("netd_firewall_restores_total", ())] == 2
    assert got[("netd_dns_queries_total", (("result", "nxdomain"),))] == 1
    assert got[("netd_dns_query_seconds_count", ())] == 5
    assert got[("netd_dns_query_seconds_bucket", (("le", "0.001"),))] == 3
    assert got[("netd_dns_query_seconds_bucket", (("le", "0.01"),))] == 4
    assert got[("netd_dns_query_seconds_bucket", (("le", "+Inf"),))] == 5
    assert got[("netd_dns_cache_hits_total", ())] == 2
    assert got[("netd_dns_upstream_failures_total", ())] == 1
    assert got[("netd_dns_over_share_total", (("kind", "forward"),))] == 7
    assert got[("netd_dns_over_share_total", (("kind", "tcp"),))] == 3
    # no service bound: the IPAM families exist but are empty
    assert not any(k[0].startswith("netd_ipam_") for k in got)


def test_dedicated_registry_not_global() -> None:
    from prometheus_client import REGISTRY

    m = Metrics()
    assert m.registry is not REGISTRY
    assert "netd_cni_operations_total" not in REGISTRY._names_to_collectors


@pytest.mark.parametrize("port", [0, -1, 70000])
def test_serve_tcp_rejects_bad_port(port: int) -> None:
    with pytest.raises(ConfigError, match=f"metrics port {port}"):
        serve_tcp(port, Metrics())


def test_install_before_start_only(tmp_path: Path) -> None:
    async def go() -> None:
        svc = make_service(tmp_path)
        app = web.Application()
        install(app, svc, Metrics())
        assert app.middlewares[0] is metrics_route.metrics_middleware
        svc.store.close()

    asyncio.run(go())


def test_cni_command_label_survives_hostile_bodies() -> None:
    """Found by fuzzing in CI: a 100k-deep body raised RecursionError in the middleware."""

    class Body:
        def __init__(self, raw: bytes) -> None:
            self.raw = raw

        async def read(self) -> bytes:
            return self.raw

    deep = b'{"command": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for raw in (deep, b"\xff\xfe", b"[1]", b'{"command": "ADD"}'):
        got = asyncio.run(metrics_route._cni_command(Body(raw)))  # type: ignore[arg-type]
        assert got == ("ADD" if raw.endswith(b'"ADD"}') else "other")

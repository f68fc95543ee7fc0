"""/metrics of a real daemon in a sandbox host after real operations (veths, CNI calls).

The daemon is `netd daemon` itself, started through a small launcher that wraps ``make_app``
with :func:`netd.api.metrics_route.install` (a no-op once the daemon's own ``make_app``
installs the metrics) and, when asked, also serves them on 127.0.0.1 of the sandbox host with
:func:`netd.metrics.serve_tcp`. The exposition is read with curl, independently of netd's client,
and parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import sys
from typing import Any

from netns_fixtures import Namespace, Sandbox, run
from netns_fixtures.daemon import Daemon
from prometheus_client.parser import text_string_to_metric_families

LAUNCHER = """
import os, sys
import netd.daemon
from netd.api.server import make_app
from netd.api.metrics_route import install
from netd.metrics import serve_tcp

def make_app_with_metrics(service, **kw):
    app = make_app(service, **kw)
    install(app, service)
    return app

netd.daemon.make_app = make_app_with_metrics
if os.environ.get("NETD_TEST_METRICS_PORT"):
    serve_tcp(int(os.environ["NETD_TEST_METRICS_PORT"]))
from netd.cli.main import cli
cli(sys.argv[1:], prog_name="netd")
"""
PORT = 9464


class MetricsDaemon(Daemon):
    """The fixture's daemon, launched through LAUNCHER."""

    def argv(self) -> list[str]:
        return [sys.executable, "-c", LAUNCHER, *super().argv()[1:]]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def cni(d: Daemon, command: str, c: Namespace, prev: Any = None) -> tuple[int, Any]:
    config: dict[str, Any] = {"cniVersion": "1.0.0", "name": "web", "type": "netd"}
    if prev is not None:
        config["prevResult"] = prev
    return d.request(
        "POST",
        "/v1/cni",
        {
            "command": command,
            "containerId": c.name,
            "netns": c.path,
            "ifname": "eth0",
            "args": "",
            "path": "/opt/cni/bin",
            "config": config,
        },
    )


def test_metrics_after_real_operations(sandbox: Sandbox, host: Namespace) -> None:
    d = MetricsDaemon(host, env={"NETD_TEST_METRICS_PORT": str(PORT)}).start()
    try:
        c1, c2, c3 = sandbox.add_ns("c1"), sandbox.add_ns("c2"), sandbox.add_ns("c3")
        status, _ = d.request(
            "POST", "/v1/networks", {"name": "web", "subnets": [{"subnet": "10.95.0.0/24"}]}
        )
        assert status == 201
        status, _ = d.request(
            "POST", "/v1/networks/web/connect", {"netns": c1.path, "container_id": "c1"}
        )
        assert status == 201
        status, added = cni(d, "ADD", c2)
        assert status == 200, added
        assert c2.addresses("eth0"), "the CNI ADD really plumbed a veth"
        status, _ = cni(d, "CHECK", c2, prev=added)
        assert status == 200
        status, added3 = cni(d, "ADD", c3)
        assert status == 200, added3
        status, _ = cni(d, "DEL", c3)
        assert status == 200
        status, _ = d.request("GET", "/v1/networks/nope")
        assert status == 404

        text = run(["curl", "-sS", "--fail", "--unix-socket", str(d.socket), "http://netd/metrics"])
        got = samples(text)
        ops = "netd_cni_operations_total"
        assert got[(ops, (("command", "ADD"), ("result", "ok")))] == 2
        assert got[(ops, (("command", "CHECK"), ("result", "ok")))] == 1
        assert got[(ops, (("command", "DEL"), ("result", "ok")))] == 1
        assert got[("netd_cni_operation_seconds_count", (("command", "ADD"),))] == 2
        assert got[("netd_cni_operation_seconds_sum", (("command", "ADD"),))] > 0
        api = "netd_api_requests_total"
        assert got[(api, (("method", "POST"), ("route", "/v1/networks"), ("status", "201")))] == 1
        route = "/v1/networks/{name}/connect"
        assert got[(api, (("method", "POST"), ("route", route), ("status", "201")))] == 1
        assert got[(api, (("method", "GET"), ("route", "/v1/networks/{name}"), ("status", "404")))]
        assert got[(api, (("method", "GET"), ("route", "/v1/status"), ("status", "200")))] >= 1
        subnet = (("network", "web"), ("subnet", "10.95.0.0/24"))
        assert got[("netd_ipam_addresses_used", subnet)] == 2  # c1 and c2; c3 was deleted
        assert got[("netd_ipam_addresses_size", subnet)] == 253

        # the optional TCP listener answers on the sandbox host's loopback only
        tcp = host.run("curl", "-sS", "--fail", f"http://127.0.0.1:{PORT}/metrics")
        assert samples(tcp)[("netd_ipam_addresses_used", subnet)] == 2
        listeners = host.run("ss", "-Hltn", f"sport = :{PORT}").split()
        assert f"127.0.0.1:{PORT}" in listeners, listeners
        assert not host.ok("curl", "-sS", "--max-time", "2", f"http://10.95.0.1:{PORT}/metrics")
    finally:
        log = d.log()
        d.close()
    assert "Traceback" not in log, log

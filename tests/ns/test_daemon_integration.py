"""The daemon with all seams live (bridge, nftables, DNS): checked with real clients."""

from __future__ import annotations

import json

from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon


def test_dns_and_firewall_through_the_daemon(host: Namespace, sandbox: Sandbox) -> None:
    d = Daemon(host, firewall="nftables").start()
    try:
        d.cli("network", "create", "app", "--subnet", "10.140.0.0/24")
        web, cli_ns = sandbox.add_ns("web"), sandbox.add_ns("cl")
        ep = json.loads(
            d.cli(
                "network",
                "connect",
                "app",
                "--netns",
                web.path,
                "--name",
                "web",
                "--alias",
                "api",
                "--format",
                "json",
            ).stdout
        )
        d.cli("network", "connect", "app", "--netns", cli_ns.path, "--name", "client")
        addr = ep["addresses"][0].split("/")[0]
        assert ep["dns"]["nameservers"] == ["10.140.0.1"]
        # a real client, from a container, against the daemon's DNS on the gateway
        out = cli_ns.run("dig", "+short", "+time=2", "+tries=1", "@10.140.0.1", "api")
        assert out.split() == [addr]
        out = cli_ns.run("dig", "+short", "+time=2", "+tries=1", "@10.140.0.1", "web.app")
        assert out.split() == [addr]
        assert d.cli("dns", "lookup", "web").stdout.split() == [addr]
        missing = d.cli("dns", "lookup", "nosuch", check=False)
        assert missing.returncode == 1
        shown = d.cli("firewall", "show").stdout
        assert "backend: nftables" in shown and "table inet netd" in shown
        # the kernel agrees, read independently of netd
        assert "table inet netd" in host.run("nft", "list", "tables")
        d.cli("network", "disconnect", "app", "--netns", web.path)
        out = cli_ns.run("dig", "+short", "+time=2", "+tries=1", "@10.140.0.1", "web")
        assert out.strip() == ""
    finally:
        d.close()


def test_dns_queries_show_in_metrics(host: Namespace, sandbox: Sandbox) -> None:
    """Queries answered by the unprivileged DNS worker are counted in the daemon's /metrics."""
    d = Daemon(host).start()
    try:
        d.cli("network", "create", "mx", "--subnet", "10.141.0.0/24")
        a, b = sandbox.add_ns("a"), sandbox.add_ns("b")
        for ns, name in ((a, "alpha"), (b, "beta")):
            d.cli("network", "connect", "mx", "--netns", ns.path, "--name", name)
        dig = ("dig", "+short", "+time=2", "+tries=1", "@10.141.0.1")
        for _ in range(3):
            assert a.run(*dig, "beta").strip()
        a.run(*dig, "nosuchname.dns.netd", check=False)
        metrics = _scrape(d)
        assert metrics.get('netd_dns_queries_total{result="noerror"}', 0) >= 3, metrics
        assert metrics.get('netd_dns_queries_total{result="nxdomain"}', 0) >= 1, metrics
        assert metrics.get("netd_dns_query_seconds_count", 0) >= 4
    finally:
        d.close()


def _scrape(d: Daemon) -> dict[str, float]:
    """/metrics over the Unix socket, parsed into {series: value} (independent of netd)."""
    import socket as socket_mod

    with socket_mod.socket(socket_mod.AF_UNIX) as s:
        s.connect(str(d.socket))
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    out: dict[str, float] = {}
    for line in raw.partition(b"\r\n\r\n")[2].decode().splitlines():
        if line and not line.startswith("#") and " " in line:
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out

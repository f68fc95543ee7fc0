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

"""`netd network inspect` shows the plumbing as the kernel holds it (bridge, veths, nft, DNS)."""

from __future__ import annotations

import json

from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon


def test_inspect_shows_live_plumbing_and_what_broke(host: Namespace, sandbox: Sandbox) -> None:
    d = Daemon(host, firewall="nftables")
    # No self-repair (periodic or from link events): the test breaks things to see them shown.
    d.config_path().write_text("reconcile_interval = 0\n")
    d.start()
    try:
        d.cli("network", "create", "app", "--subnet", "10.141.0.0/24")
        web = sandbox.add_ns("web")
        d.cli("network", "connect", "app", "--netns", web.path, "--name", "web", "-p", "8080:80")
        [net] = json.loads(d.cli("network", "inspect", "app").stdout)
        plumbing = net["plumbing"]
        bridge = plumbing["bridge"]
        assert bridge["name"] == net["bridge"] and bridge["present"] and bridge["up"]
        assert "10.141.0.1/24" in bridge["addresses"] and bridge["mtu"] >= 1280
        [veth] = plumbing["veths"]
        ep = net["endpoints"][0]
        assert veth["present"] and veth["up"] and veth["on_bridge"]
        assert veth["master"] == bridge["name"] and veth["container_id"] == ep["container_id"]
        fw = plumbing["firewall"]
        assert fw["backend"] == "nftables"
        assert {"inet netd", "bridge netd"} <= set(fw["tables"])
        assert {c["name"] for c in fw["chains"]} >= {"forward", "prerouting", "postrouting"}
        assert fw["present_elements"] == fw["expected_elements"] > 0
        assert [e["element"] for e in fw["elements"]["bridges"]] == [bridge["name"]]
        assert any("10.141.0.0/24" in e["element"] for e in fw["elements"]["masq4"])
        dnat = [e["element"] for e in fw["elements"]["pub4_any"]]
        assert dnat == [f"tcp . 8080 : {ep['addresses'][0].split('/')[0]}"], dnat
        dns = plumbing["dns"]
        addr = ep["addresses"][0].split("/")[0]
        assert dns["A"]["web"] == [addr] and dns["A"]["web.app"] == [addr]
        assert dns["listen"] == [{"address": "10.141.0.1", "port": 53, "bound": True}]
        # Break things behind netd's back: inspect shows it (and repairs nothing).
        host.run("ip", "link", "set", veth["name"], "down")
        host.run("nft", "flush", "set", "inet", "netd", "masq4")
        [after] = json.loads(d.cli("network", "inspect", "app").stdout)
        assert after["plumbing"]["veths"][0]["up"] is False
        fw2 = after["plumbing"]["firewall"]
        assert "masq4" not in fw2["elements"]
        assert fw2["present_elements"] < fw2["expected_elements"]
        host.run("ip", "link", "del", veth["name"])
        [gone] = json.loads(d.cli("network", "inspect", "app").stdout)
        assert gone["plumbing"]["veths"][0]["present"] is False
    finally:
        d.close()

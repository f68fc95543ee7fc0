"""The overlay's data plane through real daemons: NAT, published ports, isolation, internal.

One cluster (:class:`netns_fixtures.cluster.Cluster`) for the module: h1 and h2 run netd with
the nftables firewall, h3 with iptables. The "outside world" is etcd1's namespace
(10.251.0.11): it sits on the underlay and has no route to any overlay subnet, so a container
reaches it only when its node masquerades, and it reaches a container only through a port its
node publishes. The echo service (:mod:`multihost_kit`) answers with the client address it
saw, so each test reads the translation at the far end rather than from netd.

Networks: ov1 and ov2 (overlays), ovi (internal overlay), lb (a local bridge network of h1).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from multihost_kit import Hosts, ask, serve
from netns_fixtures import Namespace, leftovers, wait_for
from netns_fixtures.cluster import Cluster

ECHO = 7000  # the echo service's port, in the outside namespace and in containers
H = {"h1": "10.251.0.1", "h2": "10.251.0.2", "h3": "10.251.0.3"}
OUTSIDE = "10.251.0.11"  # etcd1's namespace


class Lab(Hosts):
    """The cluster with its networks made, and the outside namespace serving the echo."""

    outside: Namespace


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    cluster = Cluster(tmp_path_factory.mktemp("cluster"), hosts=3).start()
    try:
        daemons = {
            "h1": cluster.start_daemon("h1"),
            "h2": cluster.start_daemon("h2"),
            "h3": cluster.start_daemon("h3", firewall="iptables"),
        }
        lab = Lab(cluster, daemons)
        lab.outside = cluster.etcd_nodes[0].ns
        d1 = daemons["h1"]
        d1.cli("network", "create", "ov1", "-d", "overlay", "--subnet", "10.61.0.0/16")
        d1.cli("network", "create", "ov2", "-d", "overlay", "--subnet", "10.62.0.0/16")
        d1.cli("network", "create", "ovi", "-d", "overlay", "--subnet", "10.63.0.0/24",
               "--internal")  # fmt: skip
        d1.cli("network", "create", "lb", "--subnet", "10.64.0.0/24")
        lab.wait_network("ovi", ("h1", "h2", "h3"))
        serve(lab.outside, ECHO)
        yield lab
    finally:
        failures = cluster.close()
        assert not failures, failures
        assert not leftovers(cluster.prefix), leftovers(cluster.prefix)


def test_the_outside_has_no_route_back_to_the_overlays(lab: Lab) -> None:
    # What makes the NAT tests meaningful: replies to an overlay address would go nowhere.
    routes = [r["dst"] for r in lab.outside.ip_json("-4", "route", "show")]
    assert routes == ["10.251.0.0/24"], routes


def test_outbound_traffic_is_masqueraded_on_the_container_s_own_node(lab: Lab) -> None:
    lab.connect("h1", "ov1", "c1")
    lab.connect("h2", "ov1", "c2")
    a1, a2 = lab.address("c1"), lab.address("c2")
    for name, node in (("c1", "h1"), ("c2", "h2")):
        ns = lab.containers[name]
        assert ask(ns, OUTSIDE, ECHO, "udp") == H[node], name
        assert ask(ns, OUTSIDE, ECHO, "tcp") == H[node], name
    # Between containers of the overlay, across hosts, nothing is translated.
    serve(lab.containers["c2"], ECHO)
    wait_for("c1 -> c2 over the overlay", lambda: ask(lab.containers["c1"], a2, ECHO) == a1, 5)
    assert ask(lab.containers["c1"], a2, ECHO, "udp") == a1


def test_a_published_port_answers_on_the_container_s_node_only(lab: Lab) -> None:
    lab.connect("h1", "ov1", "web", "--publish", "8080:80", "--publish", "8080:80/udp")
    serve(lab.containers["web"], 80)
    # From the underlay to h1's address: DNATed to the container, which sees the real client.
    assert ask(lab.outside, H["h1"], 8080) == OUTSIDE
    assert ask(lab.outside, H["h1"], 8080, "udp") == OUTSIDE
    # The other nodes publish nothing for it (no proxying across the overlay).
    for node in ("h2", "h3"):
        assert ask(lab.outside, H[node], 8080) == "", node
        assert ask(lab.outside, H[node], 8080, "udp") == "", node
    # A container on another node reaches the published port like any client of h1 (its own
    # node masquerades it on the way out).
    assert ask(lab.containers["c2"], H["h1"], 8080) == H["h2"]
    # The same host port on another node is that node's own: h2 publishes it for its container.
    lab.connect("h2", "ov1", "web2", "--publish", "8080:8000")
    serve(lab.containers["web2"], 8000)
    assert ask(lab.outside, H["h2"], 8080) == OUTSIDE
    lab.d["h2"].cli("network", "disconnect", "ov1", "--netns", lab.containers["web2"].path)
    assert ask(lab.outside, H["h2"], 8080) == ""
    assert ask(lab.outside, H["h1"], 8080) == OUTSIDE  # h1's mapping untouched


def test_two_overlays_are_isolated_on_one_node_and_across_nodes(lab: Lab) -> None:
    lab.connect("h1", "ov2", "d1")
    lab.connect("h2", "ov2", "d2")
    d1, d2 = lab.containers["d1"], lab.containers["d2"]
    c1, c2 = lab.containers["c1"], lab.containers["c2"]
    a_d1, a_d2, a_c1, a_c2 = (lab.address(n) for n in ("d1", "d2", "c1", "c2"))
    # Each network works (so the refusals below are the firewall's, not a broken overlay).
    wait_for("d1 -> d2 on ov2", lambda: d1.ping(a_d2), 5)
    assert c1.ping(a_c2)
    for src, dst in ((c1, a_d1), (c1, a_d2), (d1, a_c1), (d1, a_c2), (d2, a_c1), (c2, a_d1)):
        assert not src.ping(dst, timeout=1), (src.name, dst)
    serve(d2, ECHO)
    assert ask(c1, a_d2, ECHO) == "" and ask(c1, a_d2, ECHO, "udp") == ""


def test_an_overlay_and_a_local_bridge_are_isolated_both_ways(lab: Lab) -> None:
    lab.connect("h1", "lb", "b1")
    b1, c1, c2 = lab.containers["b1"], lab.containers["c1"], lab.containers["c2"]
    a_b1, a_c1, a_c2 = lab.address("b1"), lab.address("c1"), lab.address("c2")
    assert b1.ping("10.64.0.1")  # the bridge network itself works
    assert ask(b1, OUTSIDE, ECHO, "udp") == H["h1"]  # and gets out like the overlay
    for src, dst in ((c1, a_b1), (c2, a_b1), (b1, a_c1), (b1, a_c2)):
        assert not src.ping(dst, timeout=1), (src.name, dst)
    serve(b1, ECHO)
    assert ask(c1, a_b1, ECHO) == ""
    # The bridge is h1's alone: no other node has it.
    assert "lb" not in lab.networks("h2")


def test_an_internal_overlay_spans_hosts_and_reaches_nothing_else(lab: Lab) -> None:
    lab.connect("h1", "ovi", "i1")
    lab.connect("h2", "ovi", "i2")
    # Published ports are accepted and ignored on an internal network, as on a bridge.
    lab.connect("h1", "ovi", "i3", "--publish", "8090:80")
    i1, i2, i3 = (lab.containers[n] for n in ("i1", "i2", "i3"))
    a_i2, a_i3 = lab.address("i2"), lab.address("i3")
    wait_for("i1 -> i2 on the internal overlay", lambda: i1.ping(a_i2), 5)
    assert i2.ping(lab.address("i1"))
    assert i1.ping("10.63.0.1")  # the gateway (its DNS) stays reachable
    assert i1.ip_json("route", "show", "default") == []
    # Even with a default route added by hand, the firewall lets nothing leave the subnet:
    # not the underlay, not the node's own underlay address, not another network.
    # Names resolve across hosts inside the internal network (DNS is on the gateway).
    out = i1.run("dig", "@10.63.0.1", "+short", "+time=1", "+tries=2", "i2.dns.netd")
    assert out.split() == [a_i2]
    i1.run("ip", "route", "add", "default", "via", "10.63.0.1")
    assert ask(i1, OUTSIDE, ECHO, "udp") == "" and ask(i1, OUTSIDE, ECHO) == ""
    for dst in (H["h1"], H["h2"], lab.address("c1"), lab.address("c2")):
        assert not i1.ping(dst, timeout=1), dst
    serve(i3, 80)
    serve(lab.containers["c1"], 80)
    assert ask(i2, a_i3, 80) == lab.address("i2")  # inside the network: fine, across hosts
    assert ask(lab.outside, H["h1"], 8090) == ""  # the port was not published
    # Nor does anything outside get in (here: a container of ov1 on the same node).
    assert ask(lab.containers["c1"], a_i3, 80) == ""
    assert ask(i3, lab.address("c1"), 80) == ""


def test_iptables_node_masquerades_publishes_and_isolates(lab: Lab) -> None:
    lab.connect("h3", "ov1", "c3")
    lab.connect("h3", "ov1", "web3", "--publish", "8081:80")
    lab.connect("h3", "ov2", "e3")
    c3, a3, a1 = lab.containers["c3"], lab.address("c3"), lab.address("c1")
    assert ask(c3, OUTSIDE, ECHO, "udp") == H["h3"]
    assert ask(c3, OUTSIDE, ECHO, "tcp") == H["h3"]
    serve(lab.containers["web3"], 80)
    assert ask(lab.outside, H["h3"], 8081) == OUTSIDE
    assert ask(lab.outside, H["h1"], 8081) == ""
    # The overlay between an iptables node and an nftables node: untranslated both ways.
    serve(c3, ECHO)
    wait_for("c1 -> c3 across firewalls", lambda: ask(lab.containers["c1"], a3, ECHO) == a1, 5)
    assert ask(c3, lab.address("c2"), ECHO) == a3
    assert not c3.ping(lab.address("e3"), timeout=1)
    assert not c3.ping(lab.address("d1"), timeout=1)
    # The internal overlay on the iptables node: reaches i1 on h1, nothing outside.
    lab.connect("h3", "ovi", "i4")
    i4 = lab.containers["i4"]
    wait_for("i4 -> i1 (iptables node to nftables node)", lambda: i4.ping(lab.address("i1")), 5)
    i4.run("ip", "route", "add", "default", "via", "10.63.0.1")
    assert ask(i4, OUTSIDE, ECHO, "udp") == ""
    for dst in (H["h3"], a3):
        assert not i4.ping(dst, timeout=1), dst


def test_a_dual_stack_overlay_carries_ipv6_across_hosts(lab: Lab) -> None:
    lab.d["h2"].cli("network", "create", "ov6", "-d", "overlay", "--ipv6", "--subnet",
                    "10.68.0.0/24", "--subnet", "fd00:68::/64")  # fmt: skip
    lab.wait_network("ov6", ("h1",))
    lab.connect("h1", "ov6", "s1")
    lab.connect("h2", "ov6", "s2")
    s1, s2 = lab.containers["s1"], lab.containers["s2"]
    v6 = [a.split("/")[0] for a in s2.addresses("eth0") if a.startswith("fd00:68:")]
    assert len(v6) == 1, s2.addresses("eth0")
    # NDP for a remote address is answered by the node's VXLAN proxy (nothing is flooded).
    wait_for("s1 -> s2 over IPv6 across hosts", lambda: s1.ok("ping", "-6", "-n", "-q", "-c",
             "1", "-W", "1", v6[0]), 10)  # fmt: skip
    out = s1.run("dig", "@10.68.0.1", "+short", "+time=1", "AAAA", "s2.dns.netd")
    assert out.split() == v6
    for name, host in (("s1", "h1"), ("s2", "h2")):
        lab.d[host].cli("network", "disconnect", "ov6", "--netns", lab.containers[name].path)
    lab.d["h1"].cli("network", "rm", "ov6")


def nft_ports(lab: Lab, host: str, port: int) -> int:
    """How many rules of h's nftables ruleset mention host port ``port`` (read with nft)."""
    out = lab.cluster.host(host).ns.run("nft", "list", "ruleset")
    return sum(f" {port} " in f" {line} " or f"{port} :" in line for line in out.splitlines())


def test_published_ports_and_nat_survive_a_daemon_crash_and_restart(lab: Lab) -> None:
    rules = nft_ports(lab, "h1", 8080)
    assert rules > 0
    lab.cluster.kill_daemon("h1")
    # The kernel keeps forwarding without the daemon: DNAT, masquerade, the overlay.
    assert ask(lab.outside, H["h1"], 8080) == OUTSIDE
    assert ask(lab.containers["c1"], OUTSIDE, ECHO, "udp") == H["h1"]
    lab.cluster.restart_daemon("h1")
    assert ask(lab.outside, H["h1"], 8080) == OUTSIDE
    assert ask(lab.containers["c1"], OUTSIDE, ECHO, "udp") == H["h1"]
    assert ask(lab.outside, H["h2"], 8080) == ""
    assert nft_ports(lab, "h1", 8080) == rules  # rebuilt, not duplicated
    assert lab.containers["c1"].ping(lab.address("c2"))

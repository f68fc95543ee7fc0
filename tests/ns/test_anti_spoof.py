"""Source-address validation on bridge ports: network option ``anti_spoof=true`` (issue #14).

A real `netd daemon` with the nftables backend in a sandbox host. On network "safe"
(anti_spoof=true) container "a" adds an address netd never gave it and tries to send from it,
and to claim neighbour "b"'s address over ARP; on network "open" (the default) the same works,
so the test shows what the option changes. Everything is read back from the kernel (ping,
dig, `ip neigh` in the host, `nft -j list table bridge netd`), not through netd.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon


@pytest.fixture
def nft_daemon(host: Namespace) -> Iterator[Daemon]:
    d = Daemon(host, firewall="nftables").start()
    try:
        yield d
    finally:
        d.close_checked()


def connect(d: Daemon, net: str, ns: Namespace, name: str) -> dict[str, Any]:
    out = d.cli(
        "network", "connect", net, "--netns", ns.path, "--name", name, "--format", "json"
    ).stdout
    return dict(json.loads(out))


def ping(ns: Namespace, src: str, dst: str) -> bool:
    return ns.ok("ping", "-c", "1", "-W", "1", "-I", src, dst)


def elements(host: Namespace, name: str) -> list[Any]:
    out = json.loads(host.run("nft", "-j", "list", "set", "bridge", "netd", name))
    return list(out["nftables"][1]["set"].get("elem", []))


def test_a_container_sends_only_from_its_own_addresses(
    nft_daemon: Daemon, sandbox: Sandbox
) -> None:
    d, host = nft_daemon, nft_daemon.host
    d.cli(
        "network", "create", "safe", "--ipv6", "--subnet", "10.78.0.0/24", "--subnet", "fd78::/64",
        "-o", "anti_spoof=true",
    )  # fmt: skip
    d.cli("network", "create", "open", "--subnet", "10.79.0.0/24")
    a, b, c = sandbox.add_ns("a"), sandbox.add_ns("b"), sandbox.add_ns("c")
    ep_a = connect(d, "safe", a, "a")
    ep_b = connect(d, "safe", b, "b")
    connect(d, "open", c, "c")
    a_addr, a_addr6 = (x.split("/")[0] for x in ep_a["addresses"])
    b_addr = ep_b["addresses"][0].split("/")[0]
    # the kernel holds a's port and address, tagged with its owner
    ports = elements(host, "spoof_ports")
    assert {e["elem"]["val"] for e in ports} == {ep_a["host_ifname"], ep_b["host_ifname"]}
    addrs = {tuple(e["elem"]["val"]["concat"]) for e in elements(host, "port_addrs4")}
    assert (ep_a["host_ifname"], a_addr) in addrs

    # own address: gateway, DNS and neighbour reachable
    assert ping(a, a_addr, "10.78.0.1") and ping(a, a_addr, b_addr)
    assert a.run("dig", "+short", "+time=2", "+tries=1", "@10.78.0.1", "b").split() == [b_addr]
    # an address netd did not give it: nothing leaves the port, to the host or to b
    a.run("ip", "addr", "add", "10.78.0.200/24", "dev", "eth0")
    assert not ping(a, "10.78.0.200", "10.78.0.1")
    assert not ping(a, "10.78.0.200", b_addr)
    out = a.run("dig", "-b", "10.78.0.200", "+time=1", "+tries=1", "@10.78.0.1", "b", check=False)
    assert "timed out" in out or "no servers could be reached" in out, out
    # IPv6 the same (neighbour discovery from link-local addresses still works)
    assert ping(a, a_addr6, "fd78::1")
    a.run("ip", "addr", "add", "fd78::200/64", "dev", "eth0", "nodad")
    assert not ping(a, "fd78::200", "fd78::1")
    # claiming the neighbour's address: the host never learns a's MAC for it
    a.run("ip", "addr", "add", f"{b_addr}/32", "dev", "eth0")
    host.run("ip", "neigh", "flush", "to", b_addr)
    ping(a, b_addr, "10.78.0.1")
    time.sleep(0.2)
    neigh = host.run("ip", "-j", "neigh", "show", b_addr)
    a_mac = a.ip_json("link", "show", "eth0")[0]["address"]
    assert a_mac not in neigh, neigh

    # the same on a network without the option works (what the option changes)
    c_addr = connect(d, "open", sandbox.add_ns("c2"), "c2")["addresses"][0].split("/")[0]
    c.run("ip", "addr", "add", "10.79.0.200/24", "dev", "eth0")
    assert ping(c, "10.79.0.200", "10.79.0.1") and ping(c, "10.79.0.200", c_addr)

    # detaching removes its elements
    d.cli("network", "disconnect", "safe", "--netns", a.path)
    assert ep_a["host_ifname"] not in {e["elem"]["val"] for e in elements(host, "spoof_ports")}
    addrs = {tuple(e["elem"]["val"]["concat"]) for e in elements(host, "port_addrs4")}
    assert not [x for x in addrs if x[0] == ep_a["host_ifname"]]


def test_backends_that_cannot_enforce_it_refuse_the_option(daemon: Daemon) -> None:
    # the fixture's daemon runs firewall backend "none"
    out = daemon.cli(
        "network", "create", "safe", "--subnet", "10.78.0.0/24", "-o", "anti_spoof=true",
        check=False,
    )  # fmt: skip
    assert out.returncode != 0
    assert "options.anti_spoof" in out.stderr and "nftables" in out.stderr, out.stderr
    assert "safe" not in daemon.cli("network", "ls").stdout

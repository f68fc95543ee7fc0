"""Result shapes per spec version, checked against the keys the spec allows in each object."""

from __future__ import annotations

import ipaddress
import json

import pytest

from netd.cni import spec
from netd.cni.netdef import Route
from netd.cni.result import build_dns, build_result
from netd.drivers.bridge import BridgeDriver
from netd.model import Endpoint, Network, Subnet

# SPEC.md "Success" (1.1.0) and "Result" (0.4.0): the keys each object may carry.
TOP = {"cniVersion", "interfaces", "ips", "routes", "dns"}
INTERFACE = {"name", "mac", "mtu", "sandbox", "socketPath", "pciID"}
IP_1X = {"address", "gateway", "interface"}
IP_LEGACY = IP_1X | {"version"}
ROUTE = {"dst", "gw", "mtu", "advmss", "priority", "table", "scope"}
DNS = {"nameservers", "domain", "search", "options"}

NET = Network(
    id="ef" * 32,
    name="web",
    driver="bridge",
    subnets=(
        Subnet(ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_address("10.1.0.1")),
        Subnet(ipaddress.ip_network("fd00:1::/64"), None),
    ),
)
EP = Endpoint(
    network_id=NET.id,
    container_id="c1",
    ifname="eth0",
    netns="/var/run/netns/blue",
    host_ifname="nv0123456789abc",
    addresses=(ipaddress.ip_interface("10.1.0.5/16"), ipaddress.ip_interface("fd00:1::5/64")),
    mac="02:88:77:66:55:44",
    host_mac="02:44:33:22:11:11",
)
IFACES = BridgeDriver().cni_interfaces(NET, EP)


@pytest.mark.parametrize("version", spec.SUPPORTED_VERSIONS)
def test_result_keys_follow_the_spec(version: str) -> None:
    result = build_result(
        version, NET, EP, dns=build_dns({"nameservers": ["10.1.0.1"]}), interfaces=IFACES
    )
    json.dumps(result)
    assert set(result) == TOP and result["cniVersion"] == version
    for iface in result["interfaces"]:
        assert set(iface) <= INTERFACE and iface["name"]
    legacy = version.startswith("0.")
    for ip in result["ips"]:
        assert set(ip) <= (IP_LEGACY if legacy else IP_1X)
        assert ("version" in ip) == legacy
        # Chained plugins (portmap, tuning) find the container side through this index.
        assert result["interfaces"][ip["interface"]]["sandbox"] == EP.netns
    for route in result["routes"]:
        assert set(route) <= ROUTE
    assert set(result["dns"]) <= DNS


def test_result_matches_the_spec_example_shape() -> None:
    """SPEC.md's ADD example, with netd's two interfaces instead of bridge's three."""
    result = build_result(
        "1.1.0", NET, EP, dns=build_dns({"nameservers": ["10.1.0.1"]}), interfaces=IFACES
    )
    assert result == {
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": "nv0123456789abc", "mac": "02:44:33:22:11:11"},
            {"name": "eth0", "mac": "02:88:77:66:55:44", "sandbox": "/var/run/netns/blue"},
        ],
        "ips": [
            {"interface": 1, "address": "10.1.0.5/16", "gateway": "10.1.0.1"},
            {"interface": 1, "address": "fd00:1::5/64"},  # no gateway, hence no v6 route
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
        "dns": {"nameservers": ["10.1.0.1"]},
    }


def test_legacy_result_matches_the_0_4_0_example() -> None:
    result = build_result("0.4.0", NET, EP, dns={}, interfaces=IFACES)
    assert result["ips"][0] == {
        "version": "4",
        "interface": 1,
        "address": "10.1.0.5/16",
        "gateway": "10.1.0.1",
    }
    assert result["dns"] == {}


def test_ipam_result_has_no_interfaces_and_extra_routes_are_deduplicated() -> None:
    extra = (Route("0.0.0.0/0", "10.1.0.254"), Route("192.168.0.0/16"))
    result = build_result("1.0.0", NET, EP, dns={}, extra_routes=extra)
    assert "interfaces" not in result
    assert all("interface" not in ip for ip in result["ips"])
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "192.168.0.0/16"}]


def test_dns_merges_runtime_searches_and_options() -> None:
    base = {"nameservers": ["10.1.0.1"], "search": ["web.netd"], "domain": "netd"}
    assert build_dns(base, ["corp", "web.netd"], ["ndots:1"]) == {
        "nameservers": ["10.1.0.1"],
        "domain": "netd",
        "search": ["web.netd", "corp"],
        "options": ["ndots:1"],
    }

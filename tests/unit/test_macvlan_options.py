"""Options of the macvlan and ipvlan drivers (pure): Docker's names, refusals that say why."""

from __future__ import annotations

import ipaddress

import pytest

from netd.drivers.macvlan import IpvlanDriver, MacvlanDriver
from netd.drivers.macvlan_options import Parent, parse_parent, validate_vlan_options, vlan_options
from netd.drivers.parent import plan_parent
from netd.errors import InvalidInput
from netd.model import Endpoint, Network, Subnet


def test_canonical_and_idempotent() -> None:
    given = {"parent": " eth0 ", "macvlan_mode": "VEPA", "com.docker.network.driver.mtu": "1400"}
    out = validate_vlan_options("macvlan", given)
    assert out == {"parent": "eth0", "macvlan_mode": "vepa", "mtu": "1400"}
    assert validate_vlan_options("macvlan", out) == out
    ipvlan = {"parent": "eth0.20", "ipvlan_mode": "l3s", "ipvlan_flag": "private"}
    assert validate_vlan_options("ipvlan", ipvlan) == ipvlan


NO_FIREWALL = (
    "not supported by driver %s: its containers' traffic does not pass a host interface that "
    "netd's firewall filters"
)


@pytest.mark.parametrize(
    ("driver", "options", "field", "rule"),
    [
        ("macvlan", {"parent": "eth0/1"}, "options.parent",
         "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
        ("macvlan", {"parent": "eth0.4095"}, "options.parent",
         "the VLAN id after the dot must be from 1 to 4094 (802.1Q)"),
        ("macvlan", {"parent": "averylongparent0"}, "options.parent",
         "at most 15 characters (IFNAMSIZ is 16)"),
        ("macvlan", {"macvlan_mode": "l2"}, "options.macvlan_mode",
         "must be one of bridge, private, vepa, passthru"),
        ("macvlan", {"ipvlan_mode": "l2"}, "options.ipvlan_mode",
         "unknown option for driver macvlan; known: parent, macvlan_mode, mtu, dns_servers, "
         "dns, dns_forward_internal, com.docker.network.driver.mtu"),
        ("macvlan", {"com.docker.network.bridge.name": "br0"},
         "options.com.docker.network.bridge.name", "not supported by driver macvlan: there is "
         "no bridge on this driver; name the parent link with options.parent"),
        ("macvlan", {"dns": "maybe"}, "options.dns", 'must be "true" or "false"'),
        ("ipvlan", {"ipvlan_mode": "l4"}, "options.ipvlan_mode", "must be one of l2, l3, l3s"),
        ("ipvlan", {"ipvlan_flag": "passthru"}, "options.ipvlan_flag",
         "must be one of bridge, private, vepa"),
        ("macvlan", {"mtu": "60"}, "options.mtu", "must be an integer from 68 to 65535"),
        ("macvlan", {"mtu": "1400", "com.docker.network.driver.mtu": "1500"},
         "options.com.docker.network.driver.mtu", "conflicts with options.mtu='1400'"),
        # The firewall keys' reason is netd.options' (one for every driver without firewall).
        ("macvlan", {"enable_icc": "false"}, "options.enable_icc", NO_FIREWALL % "macvlan"),
        ("ipvlan", {"com.docker.network.bridge.enable_ip_masquerade": "true"},
         "options.com.docker.network.bridge.enable_ip_masquerade", NO_FIREWALL % "ipvlan"),
        ("macvlan", {"host_ipv4": "10.0.0.1"}, "options.host_ipv4", NO_FIREWALL % "macvlan"),
    ],
)  # fmt: skip
def test_refused(driver: str, options: dict[str, str], field: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_vlan_options(driver, options)
    assert (err.value.field, err.value.rule) == (field, rule)
    assert err.value.value == options[field.removeprefix("options.")]  # as the user wrote it


def test_the_driver_declares_its_keys_and_validates_through_netd_options() -> None:
    # One parser (netd.options.parse_options) for every driver: the booleans' one rule, the
    # network-wide keys, Docker's aliases.
    for cls, kind in ((MacvlanDriver, "macvlan"), (IpvlanDriver, "ipvlan")):
        drv = cls()
        assert drv.option_keys.driver == kind and not drv.option_keys.firewall
        assert "parent" in drv.option_keys.accepted()
        got = drv.validate_options({"dns": "Off", "dns_servers": "10.0.0.53", "parent": "eth0"})
        assert got == {"dns": "false", "dns_servers": "10.0.0.53", "parent": "eth0"}


def test_parent_with_a_vlan_id() -> None:
    assert parse_parent("eth0") == Parent("eth0")
    assert parse_parent("eth0.10") == Parent("eth0.10", "eth0", 10)
    assert parse_parent("br.lan") == Parent("br.lan")  # a dot, but no VLAN id after it


def net(options: dict[str, str], internal: bool = False) -> Network:
    subnet = Subnet(ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_address("10.1.0.1"))
    return Network(id="ab" * 32, name="n", driver="macvlan", subnets=(subnet,),
                   internal=internal, options=options)  # fmt: skip


def test_parent_plans() -> None:
    user = plan_parent(
        "macvlan", net({"parent": "eth0"}), vlan_options("macvlan", {"parent": "eth0"})
    )
    assert (user.name, user.tag, user.internal) == ("eth0", "", False)
    sub = plan_parent(
        "macvlan", net({"parent": "eth0.7"}), vlan_options("macvlan", {"parent": "eth0.7"})
    )
    assert (sub.name, sub.tag, sub.vlan_base, sub.vlan_id, sub.internal) == (
        "eth0.7", "netd:vlan:macvlan:eth0.7", "eth0", 7, False)  # fmt: skip
    for n in (net({}), net({"parent": "eth0"}, internal=True)):
        plan = plan_parent("ipvlan", n, vlan_options("ipvlan", n.options))
        tag = "netd:parent:ipvlan:" + "ab" * 32
        assert (plan.name, plan.peer, plan.tag, plan.internal) == (
            "nm-abababababab", "np-abababababab", tag, True)  # fmt: skip
    typed = vlan_options("ipvlan", {"ipvlan_mode": "l3", "ipvlan_flag": "vepa", "mtu": "9000"})
    assert (typed.parent, typed.mode, typed.flags, typed.mtu) == (None, 1, 2, 9000)


def test_capabilities_and_cni_interfaces_without_a_kernel() -> None:
    drv = MacvlanDriver()
    caps = drv.capabilities
    assert (caps.firewall, caps.port_mappings, caps.icc, caps.host_interface, caps.dns) == (
        False, False, False, False, "netns")  # fmt: skip
    assert caps.kernel_features == ("macvlan",)
    assert IpvlanDriver().capabilities.kernel_features == ("ipvlan",)
    n = net({"parent": "eth0"})
    assert drv.host_interface(n) == "" and drv.endpoint_host_ifname(n, "c1", "eth0") == ""
    e = Endpoint(network_id=n.id, container_id="c1", ifname="eth0", netns="/run/netns/c1",
                 host_ifname="", addresses=(), mac="02:00:00:00:00:01")  # fmt: skip
    assert [i.to_json() for i in drv.cni_interfaces(n, e)] == [
        {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/run/netns/c1"}]  # fmt: skip
    assert drv.cni_interfaces(n, e)[0].container
    assert drv.endpoint_tags(n, e) == frozenset()
    # An internal network's parent is netd's, known from the record alone.
    assert drv.network_tags(net({})) == frozenset({"netd:parent:macvlan:" + "ab" * 32})
    with pytest.raises(InvalidInput) as err:
        IpvlanDriver()._endpoint_mac(e)
    assert err.value.rule == "ipvlan links share their parent's MAC address"

"""The overlay driver's pure parts: options, names and tags, the peer diff, availability."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address

import pytest

from netd.drivers import get_driver
from netd.drivers.overlay import NO_CLUSTER, OverlayDriver, RemotePeer
from netd.drivers.overlay_options import (
    VXLAN_OVERHEAD,
    overlay_mtu,
    overlay_options,
    validate_overlay_options,
)
from netd.drivers.overlay_peers import PeerPlan, entries_of, plan_peers
from netd.errors import ConfigError, InvalidInput
from netd.names import Tag, bridge_name, parse_tag, teardown_rank, vxlan_name, vxlan_tag

NET_ID = "3f2a" + "0" * 60
VTEP_A, VTEP_B, LOCAL = (
    IPv4Address("192.168.9.2"),
    IPv4Address("192.168.9.3"),
    IPv4Address("192.168.9.1"),
)
IP1, IP2 = ipaddress.ip_address("10.70.0.11"), ipaddress.ip_address("10.70.0.12")
IP6 = ipaddress.ip_address("fd00:70::11")
MAC1, MAC2 = "02:00:00:00:00:11", "02:00:00:00:00:12"


# --- options ------------------------------------------------------------------------------


def test_options_canonical_and_stable() -> None:
    out = validate_overlay_options({"vni": " 0042", "com.docker.network.driver.mtu": "1400"})
    assert out == {"vni": "42", "mtu": "1400"}
    assert validate_overlay_options(out) == out
    assert validate_overlay_options({}) == {}  # the cluster allocates the VNI later
    assert validate_overlay_options({"enable_icc": "no"}) == {"enable_icc": "false"}


@pytest.mark.parametrize(
    ("options", "field", "rule"),
    [
        ({"vni": "0"}, "options.vni", "must be an integer from 1 to 16777215 (24 bits)"),
        ({"vni": "16777216"}, "options.vni", "must be an integer from 1 to 16777215 (24 bits)"),
        ({"vni": "-1"}, "options.vni", "must be an integer from 1 to 16777215 (24 bits)"),
        ({"vni": "ten"}, "options.vni", "must be an integer from 1 to 16777215 (24 bits)"),
        ({"encrypted": ""}, "options.encrypted", None),
        ({"encrypted": "sometimes"}, "options.encrypted", None),
        ({"bridge": "br9"}, "options.bridge",
         "not supported by driver overlay: the bridge of an overlay network is named from the "
         "network id on every node"),
        ({"parent": "eth0"}, "options.parent", None),
    ],
)  # fmt: skip
def test_bad_options_name_the_field(options: dict[str, str], field: str, rule: str | None) -> None:
    with pytest.raises(InvalidInput) as err:
        OverlayDriver().validate_options(options)
    assert err.value.field == field
    assert err.value.value == next(iter(options.values()))
    if rule is not None:
        assert err.value.rule == rule
        assert "\n" not in err.value.message
    elif field == "options.encrypted":
        assert "true" in err.value.rule.lower() and "false" in err.value.rule.lower()
    else:
        known = "unknown option for driver overlay; known: vni, encrypted, mtu"
        assert err.value.rule.startswith(known)


def test_stored_record_needs_a_vni() -> None:
    assert overlay_options({"vni": "7", "mtu": "1400"}).vni == 7
    with pytest.raises(InvalidInput) as err:
        overlay_options({"mtu": "1400"})
    assert err.value.field == "options.vni"


def test_mtu_is_the_underlay_minus_the_encapsulation_unless_given() -> None:
    assert VXLAN_OVERHEAD == 50
    assert overlay_mtu(1500, overlay_options({"vni": "7"})) == 1450
    assert overlay_mtu(9000, overlay_options({"vni": "7"})) == 8950
    assert overlay_mtu(1500, overlay_options({"vni": "7", "mtu": "1300"})) == 1300
    # ESP (AES-CBC + HMAC-SHA-256-128) adds at most 57 bytes: 64 reserved.
    assert overlay_mtu(1500, overlay_options({"vni": "7", "encrypted": "true"})) == 1386


def test_encrypted_is_a_boolean_option() -> None:
    assert validate_overlay_options({"encrypted": "yes"}) == {"encrypted": "true"}
    assert validate_overlay_options({"encrypted": "False"}) == {"encrypted": "false"}
    assert overlay_options({"vni": "7", "encrypted": "true"}).encrypted
    assert not overlay_options({"vni": "7"}).encrypted


# --- names and tags -----------------------------------------------------------------------


def test_vxlan_name_and_tag() -> None:
    assert vxlan_name(NET_ID) == "nx-3f2a00000000"
    assert len(vxlan_name(NET_ID)) == 15
    assert vxlan_name(NET_ID) != bridge_name(NET_ID)
    assert vxlan_tag(NET_ID) == f"netd:vxlan:{NET_ID}"
    assert parse_tag(vxlan_tag(NET_ID)) == Tag("vxlan", NET_ID)
    assert teardown_rank(vxlan_tag(NET_ID)) == 2  # after the endpoints' veths and the bridge


# --- availability and capabilities ------------------------------------------------------------


def test_without_a_node_address_the_driver_says_why() -> None:
    driver = get_driver("overlay")
    assert isinstance(driver, OverlayDriver)
    assert driver.available() == NO_CLUSTER
    assert "\n" not in NO_CLUSTER and "[cluster]" in NO_CLUSTER
    caps = driver.capabilities
    assert (caps.scope, caps.dns, caps.firewall, caps.port_mappings, caps.icc) == (
        "global", "gateway", True, True, True,
    )  # fmt: skip
    assert caps.kernel_features == ("vxlan", "bridge", "veth")


def test_node_address_must_be_ipv4() -> None:
    assert OverlayDriver(node_address=" 192.168.9.1").node_address == LOCAL
    with pytest.raises(ConfigError, match=r"cluster\.node_address 'fd00::1'"):
        OverlayDriver(node_address="fd00::1")


# --- the peer diff --------------------------------------------------------------------------


def peers(*items: tuple[object, str, IPv4Address]) -> list[RemotePeer]:
    return [RemotePeer(ip, mac, vtep) for ip, mac, vtep in items]  # type: ignore[arg-type]


def test_from_nothing_everything_is_added() -> None:
    plan = plan_peers(peers((IP1, MAC1, VTEP_A), (IP6, MAC1, VTEP_A), (IP2, MAC2, VTEP_B)), {}, {})
    assert plan.fdb_add == ((MAC1, VTEP_A), (MAC2, VTEP_B))
    assert plan.neigh_set == ((IP1, MAC1), (IP2, MAC2), (IP6, MAC1))
    assert (plan.fdb_del, plan.neigh_del, plan.conflicts) == ((), (), ())


def test_the_same_state_plans_nothing() -> None:
    wanted = peers((IP1, MAC1.upper(), VTEP_A), (IP2, MAC2, VTEP_B))
    plan = plan_peers(wanted, {MAC1: {VTEP_A}, MAC2: {VTEP_B}}, {IP1: MAC1, IP2: MAC2.upper()})
    assert plan.empty and plan == PeerPlan()


def test_extra_and_moved_entries_are_removed() -> None:
    zero = "00:00:00:00:00:00"
    now_fdb = {MAC1: {VTEP_A, VTEP_B}, MAC2: {VTEP_B}, zero: {VTEP_A}}
    now_neigh = {IP1: MAC2, IP2: MAC2, IP6: MAC1}
    plan = plan_peers(peers((IP1, MAC1, VTEP_A)), now_fdb, now_neigh)
    # MAC1 moved off VTEP_B; MAC2 left; a flood-everything entry is never kept
    assert plan.fdb_del == ((zero, VTEP_A), (MAC1, VTEP_B), (MAC2, VTEP_B))
    assert plan.fdb_add == ()
    assert plan.neigh_del == (IP2, IP6)
    assert plan.neigh_set == ((IP1, MAC1),)


def test_conflicts_keep_the_first_and_say_so() -> None:
    plan = plan_peers(peers((IP1, MAC1, VTEP_A), (IP2, MAC1, VTEP_B), (IP1, MAC2, VTEP_B)), {}, {})
    assert plan.fdb_add == ((MAC1, VTEP_A), (MAC2, VTEP_B))
    assert plan.neigh_set == ((IP1, MAC1),)
    assert len(plan.conflicts) == 2
    assert "MAC 02:00:00:00:00:11 on 192.168.9.3 and 192.168.9.2" in plan.conflicts[0]


def test_peers_on_this_node_are_left_out() -> None:
    plan = plan_peers(peers((IP1, MAC1, LOCAL), (IP2, MAC2, VTEP_A)), {}, {}, LOCAL)
    assert plan.fdb_add == ((MAC2, VTEP_A),)
    assert plan.neigh_set == ((IP2, MAC2),)


def test_a_change_planned_from_the_last_peers_is_the_change_from_the_kernels_entries() -> None:
    # sync_remote(changes_only=True) diffs against entries_of(the peers it last programmed)
    # instead of the kernel's dump: for the kernel holding exactly those, the plans agree.
    last = peers((IP1, MAC1, VTEP_A), (IP6, MAC1, VTEP_A), (IP2, MAC2, LOCAL))
    now = peers((IP1, MAC1, VTEP_B), (IP2, MAC2, VTEP_A))
    fdb, neigh = entries_of(last, LOCAL)
    assert (fdb, neigh) == ({MAC1: {VTEP_A}}, {IP1: MAC1, IP6: MAC1})  # LOCAL's left out
    from_memory = plan_peers(now, fdb, neigh, LOCAL)
    from_kernel = plan_peers(now, {MAC1: {VTEP_A}}, {IP1: MAC1, IP6: MAC1}, LOCAL)
    assert from_memory == from_kernel
    assert from_memory.fdb_del == ((MAC1, VTEP_A),) and from_memory.neigh_del == (IP6,)
    assert from_memory.fdb_add == ((MAC1, VTEP_B), (MAC2, VTEP_A))
    assert plan_peers(last, *entries_of(last, LOCAL), LOCAL).empty


def test_sync_remote_checks_peers_before_touching_anything() -> None:
    driver = OverlayDriver(node_address="192.168.9.1")
    from kit.records import network

    net = network("ovl", "10.70.0.0/24", driver="overlay", options={"vni": "7"})
    with pytest.raises(InvalidInput) as err:
        driver.sync_remote(net, peers((IP1, "ff:ff:ff:ff:ff:ff", VTEP_A)))
    assert err.value.field == "peers[0].mac"
    with pytest.raises(InvalidInput) as err:
        driver.sync_remote(net, [RemotePeer(IP1, MAC1, ipaddress.ip_address("fd00::1"))])  # type: ignore[arg-type]
    assert err.value.field == "peers[0].vtep"

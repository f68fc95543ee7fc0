"""Network options: one parse, one boolean rule, one address rule, Docker aliases in one place."""

from __future__ import annotations

import dataclasses
import ipaddress
import pickle
import re
from copy import deepcopy

import pytest

from netd.api import formats
from netd.dns.records import forwards, network_meta
from netd.drivers.bridge import BridgeDriver, bridge_for
from netd.drivers.bridge_options import BRIDGE_KEYS
from netd.drivers.ipam import IpamOnlyDriver
from netd.errors import InvalidInput
from netd.firewall.policy import build_policy, check_backend_supports
from netd.ipam.subnets import parse_pool
from netd.model import Network, NetworkSpec, Subnet, SubnetRequest
from netd.options import (
    DnsServer,
    DriverKeys,
    FirewallOptions,
    NetworkOptions,
    OptionDef,
    parse_bool,
    parse_options,
    stored_options,
)
from netd.spec import build_network

SUBNETS = (
    Subnet(ipaddress.ip_network("10.7.0.0/24"), ipaddress.ip_address("10.7.0.1")),
    Subnet(ipaddress.ip_network("fd07::/64"), ipaddress.ip_address("fd07::1")),
)


def record(internal: bool = False, **options: str) -> Network:
    """A stored network whose options hold what the user typed (a record not normalised by a
    driver: an older or hand-restored copy, a fake backend)."""
    return Network(
        id="a" * 64,
        name="web",
        driver="bridge",
        subnets=SUBNETS,
        ipv6=True,
        internal=internal,
        options=dict(options),
    )


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("on", True),
        ("off", False),
        ("yes", True),
        ("no", False),
        ("1", True),
        ("0", False),
        ("TRUE", True),
        (" False ", False),
        ("On", True),
    ],
)
def test_one_boolean_rule_for_the_firewall_and_dns(word: str, value: bool) -> None:
    """Every word the create-time check accepts means the same to the firewall and to DNS
    (before: "on"/"off" were accepted at create and refused or misread by both)."""
    policy = build_policy(
        record(enable_icc=word, enable_ip_masquerade=word, anti_spoof=word), "nd-web"
    )
    assert (policy.icc, policy.masquerade, policy.anti_spoof) == (value, value, value)
    assert forwards(record(internal=True, dns_forward_internal=word)) is value
    if value:
        with pytest.raises(InvalidInput) as exc:
            check_backend_supports(record(anti_spoof=word), "iptables", frozenset())
        assert exc.value.field == "options.anti_spoof"
    else:
        check_backend_supports(record(anti_spoof=word), "iptables", frozenset())


def test_dns_servers_read_from_the_record_normalised() -> None:
    meta = network_meta(record(dns_servers=" 10.0.0.53 , FD00::53"))
    assert meta["dns_servers"] == ["10.0.0.53", "fd00::53"]


def create(**options: str) -> Network:
    """A network record as the service makes it: the request checked by the bridge driver."""
    return build_network(
        NetworkSpec(
            name="web",
            subnets=(SubnetRequest(subnet="10.7.0.0/24"), SubnetRequest(subnet="fd07::/64")),
            ipv6=True,
            options=dict(options),
        ),
        existing=[],
        host_routes=[],
        pools=[parse_pool("10.89.0.0/16:24")],
        ula=ipaddress.IPv6Network("fd00:1234:5678::/48"),
        validate_options=BridgeDriver().validate_options,
    )


def test_on_is_accepted_at_create_and_honoured_everywhere() -> None:
    net = create(
        enable_icc="off",
        **{"com.docker.network.bridge.enable_ip_masquerade": "On"},
        dns="OFF",
        dns_forward_internal="yes",
    )
    assert net.options == {
        "dns": "false",
        "dns_forward_internal": "true",
        "enable_icc": "false",
        "enable_ip_masquerade": "true",
    }
    policy = build_policy(net, bridge_for(net))
    assert (policy.icc, policy.masquerade) == (False, True)
    assert net.dns_enabled is False
    assert forwards(dataclasses.replace(net, internal=True)) is True


def test_docker_aliases_become_canonical_typed_values() -> None:
    opts = parse_options(
        {
            "com.docker.network.bridge.name": "br-web",
            "com.docker.network.driver.mtu": " 1400",
            "com.docker.network.bridge.enable_icc": "False",
            "com.docker.network.host_ipv4": "192.0.2.10",
            "com.docker.network.host_ipv6": "2001:DB8::1",
            "dns_servers": "10.0.0.53, FD00::53",
        },
        BRIDGE_KEYS,
    )
    assert opts.mtu == 1400
    assert opts.driver == {"bridge": "br-web"}
    assert opts.dns_servers == (
        DnsServer(ipaddress.ip_address("10.0.0.53")),
        DnsServer(ipaddress.ip_address("fd00::53")),
    )
    assert opts.firewall == FirewallOptions(
        enable_icc=False,
        host_ipv4=ipaddress.IPv4Address("192.0.2.10"),
        host_ipv6=ipaddress.IPv6Address("2001:db8::1"),
    )
    assert opts.as_dict() == {
        "dns_servers": "10.0.0.53,fd00::53",
        "bridge": "br-web",
        "mtu": "1400",
        "enable_icc": "false",
        "host_ipv4": "192.0.2.10",
        "host_ipv6": "2001:db8::1",
    }


def test_defaults_are_dockers() -> None:
    opts = parse_options({}, BRIDGE_KEYS)
    assert opts == NetworkOptions()
    assert (opts.dns, opts.dns_forward_internal, opts.mtu, opts.dns_servers) == (
        True,
        False,
        None,
        (),
    )
    assert opts.firewall == FirewallOptions(
        enable_icc=True, enable_ip_masquerade=True, isolate=False, anti_spoof=False
    )


def test_both_spellings_must_agree() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_options(
            {"enable_icc": "on", "com.docker.network.bridge.enable_icc": "no"}, BRIDGE_KEYS
        )
    assert err.value.field == "options.com.docker.network.bridge.enable_icc"
    assert err.value.value == "no"
    assert err.value.rule == "conflicts with options.enable_icc='true'"
    # The same meaning in two spellings is no conflict: one rule decides what a word means.
    same = {"enable_icc": "on", "com.docker.network.bridge.enable_icc": "TRUE"}
    assert parse_options(same, BRIDGE_KEYS).as_dict() == {"enable_icc": "true"}


@pytest.mark.parametrize(
    "raw",
    [
        {"isolate": "yes", "dns_servers": "10.0.0.53, fd00::53", "mtu": "9000"},
        {"com.docker.network.bridge.name": "br0", "anti_spoof": "On", "dns": "0"},
        {},
    ],
)
def test_parsing_the_canonical_map_again_gives_the_same_object(raw: dict[str, str]) -> None:
    once = parse_options(raw, BRIDGE_KEYS)
    again = parse_options(once.as_dict(), BRIDGE_KEYS)
    assert again == once and hash(again) == hash(once)
    assert again.as_dict() == once.as_dict()
    assert stored_options(once.as_dict()) == once


def test_frozen() -> None:
    opts = parse_options({"bridge": "br0", "mtu": "1400"}, BRIDGE_KEYS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.mtu = 9000  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.firewall.enable_icc = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        opts.driver["bridge"] = "evil"  # type: ignore[index]
    with pytest.raises(TypeError):
        opts.canonical["mtu"] = "1"  # type: ignore[index]
    copy = opts.as_dict()
    copy["mtu"] = "1"
    assert opts.canonical["mtu"] == "1400"
    net = record(mtu="1400")
    assert net.opts.mtu == 1400  # cached on the record: copies and pickles still work
    assert pickle.loads(pickle.dumps(net)).opts == net.opts == deepcopy(net).opts
    assert deepcopy(opts) == opts


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("dns", "maybe", 'must be "true" or "false"'),
        ("com.docker.network.bridge.enable_ip_masquerade", "", 'must be "true" or "false"'),
        ("host_ipv4", "fd00::1", "must be an IPv4 address"),
        ("com.docker.network.host_ipv6", "10.0.0.1", "must be an IPv6 address"),
        ("mtu", "1e3", "must be an integer from 68 to 65535"),
    ],
)
def test_bad_value_names_the_key_as_spelt_and_the_value(key: str, value: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_options({key: value}, BRIDGE_KEYS)
    assert (err.value.field, err.value.value, err.value.rule) == (f"options.{key}", value, rule)


def test_a_bad_stored_value_is_refused_with_the_same_message() -> None:
    """A record nobody checked (hand-edited recovery copy): the firewall refuses it as before."""
    with pytest.raises(InvalidInput) as err:
        build_policy(record(enable_icc="maybe"), "nd-web")
    assert err.value.message == 'invalid options.enable_icc \'maybe\': must be "true" or "false"'


MACVLAN_LIKE = DriverKeys(
    "macvlan",
    own=(
        OptionDef("parent", "ifname", "driver"),
        OptionDef("macvlan_mode", "choice", "driver", choices=("bridge", "private", "vepa")),
    ),
    firewall=False,
)


def test_a_driver_declares_its_keys() -> None:
    opts = parse_options(
        {"parent": "eth0.10", "macvlan_mode": "VEPA", "com.docker.network.driver.mtu": "1500"},
        MACVLAN_LIKE,
    )
    assert opts.driver == {"parent": "eth0.10", "macvlan_mode": "vepa"}
    assert opts.mtu == 1500 and opts.as_dict()["mtu"] == "1500"
    with pytest.raises(InvalidInput) as err:
        parse_options({"macvlan_mode": "l2"}, MACVLAN_LIKE)
    assert err.value.rule == "must be one of bridge, private, vepa"


@pytest.mark.parametrize("key", ["enable_icc", "com.docker.network.bridge.enable_icc", "isolate"])
def test_a_driver_without_firewall_refuses_the_firewall_keys(key: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_options({"parent": "eth0", key: "false"}, MACVLAN_LIKE)
    assert err.value.field == f"options.{key}" and err.value.value == "false"
    assert err.value.rule == (
        "not supported by driver macvlan: its containers' traffic does not pass a host "
        "interface that netd's firewall filters"
    )


def test_unknown_key_lists_what_the_driver_takes() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_options({"com.docker.network.bridge.name": "br0"}, MACVLAN_LIKE)
    assert err.value.field == "options.com.docker.network.bridge.name"
    assert err.value.value == "br0"
    assert err.value.rule == (
        "unknown option for driver macvlan; known: parent, macvlan_mode, mtu, dns_servers, dns, "
        "dns_forward_internal, com.docker.network.driver.mtu"
    )
    assert BRIDGE_KEYS.known()[:3] == ["bridge", "mtu", "enable_icc"]


def test_stored_records_keep_driver_keys_and_cache_the_parse() -> None:
    net = record(parent="eth0", macvlan_mode="bridge", mtu="1500")
    assert net.opts is net.opts  # parsed once per record
    assert net.opts.driver == {"parent": "eth0", "macvlan_mode": "bridge"}
    changed = dataclasses.replace(net, options={"mtu": "9000"})
    assert changed.opts.mtu == 9000 and net.opts.mtu == 1500
    assert changed == dataclasses.replace(net, options={"mtu": "9000"})


def test_parse_bool_and_the_ipam_driver_share_the_rule() -> None:
    assert [parse_bool(w) for w in ("On", " no ", "2")] == [True, False, None]
    assert IpamOnlyDriver().validate_options({"dns": "Off"}) == {"dns": "false"}
    with pytest.raises(InvalidInput):
        IpamOnlyDriver().validate_options({"dns": "on"})


@pytest.mark.parametrize(
    ("given", "canonical", "server"),
    [
        ("10.0.0.53", "10.0.0.53", ("10.0.0.53", 53)),
        ("10.0.0.53:53", "10.0.0.53", ("10.0.0.53", 53)),
        (" 127.0.0.1:5353", "127.0.0.1:5353", ("127.0.0.1", 5353)),
        ("[FD00::53]:5353", "[fd00::53]:5353", ("fd00::53", 5353)),
        ("[fd00::53]", "fd00::53", ("fd00::53", 53)),
    ],
)
def test_dns_servers_take_the_upstream_syntax_of_endpoints(
    given: str, canonical: str, server: tuple[str, int]
) -> None:
    """A network's upstreams are written as an endpoint's (``dns_servers`` of connect and CNI):
    the DNS forwarder always honoured ports in stored records; now create accepts them too."""
    opts = parse_options({"dns_servers": given}, BRIDGE_KEYS)
    assert opts.as_dict() == {"dns_servers": canonical}
    assert opts.dns_servers == (DnsServer(ipaddress.ip_address(server[0]), server[1]),)
    assert network_meta(record(dns_servers=given))["dns_servers"] == [canonical]


@pytest.mark.parametrize("bad", ["10.0.0.1:0", "10.0.0.1:65536", "[10.0.0.1]:53", "fd00::1]:53"])
def test_bad_dns_server(bad: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_options({"dns_servers": f"10.0.0.2,{bad}"}, BRIDGE_KEYS)
    assert err.value.rule == (f"must be a comma-separated list of IP addresses; {bad!r} is not one")


def test_the_api_schema_is_generated_from_the_same_table() -> None:
    schema = formats.bridge_options_schema()
    assert list(schema["properties"]) == BRIDGE_KEYS.known()
    mode = re.compile(formats.anchored(formats.option_syntax(MACVLAN_LIKE.own[1])))
    assert mode.fullmatch("VEPA") and not mode.fullmatch("l2")
    servers = re.compile(schema["properties"]["dns_servers"]["pattern"])
    assert servers.fullmatch(" 10.0.0.53, [fd00::53]:5353, 127.0.0.1:5353 ")
    both = formats.options_schema(BRIDGE_KEYS, MACVLAN_LIKE)["properties"]
    assert list(both) == [*BRIDGE_KEYS.known(), "parent", "macvlan_mode"]

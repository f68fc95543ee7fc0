"""Bridge driver options: canonical keys, Docker aliases, normalised values, exact errors."""

from __future__ import annotations

import pytest

from netd.drivers import get_driver
from netd.drivers.bridge_options import known_options, validate_bridge_options
from netd.drivers.macs import check_mac
from netd.drivers.null import NullDriver
from netd.errors import InvalidInput


def test_docker_aliases_are_normalised_to_canonical_keys() -> None:
    got = validate_bridge_options(
        {
            "com.docker.network.bridge.name": "br-web",
            "com.docker.network.driver.mtu": " 1400",
            "com.docker.network.bridge.enable_icc": "False",
            "com.docker.network.bridge.enable_ip_masquerade": "1",
            "com.docker.network.host_ipv4": "192.0.2.10",
            "com.docker.network.host_ipv6": "2001:DB8::1",
        }
    )
    assert got == {
        "bridge": "br-web",
        "mtu": "1400",
        "enable_icc": "false",
        "enable_ip_masquerade": "true",
        "host_ipv4": "192.0.2.10",
        "host_ipv6": "2001:db8::1",
    }


def test_canonical_keys_and_idempotence() -> None:
    opts = {"isolate": "yes", "dns_servers": "10.0.0.53, fd00::53", "mtu": "9000"}
    once = validate_bridge_options(opts)
    assert once == {"isolate": "true", "dns_servers": "10.0.0.53,fd00::53", "mtu": "9000"}
    assert validate_bridge_options(once) == once


def test_unknown_key_lists_known_options() -> None:
    with pytest.raises(InvalidInput) as err:
        validate_bridge_options({"colour": "blue"})
    assert err.value.field == "options.colour"
    assert err.value.value == "blue"
    assert err.value.message == (
        "invalid options.colour 'blue': unknown option for driver bridge; known: "
        + ", ".join(known_options())
    )


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("mtu", "67", "must be an integer from 68 to 65535"),
        ("mtu", "65536", "must be an integer from 68 to 65535"),
        ("com.docker.network.driver.mtu", "abc", "must be an integer from 68 to 65535"),
        ("bridge", "a-name-that-is-too-long", "at most 15 characters (IFNAMSIZ is 16)"),
        ("bridge", "br/0", "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
        ("enable_icc", "maybe", 'must be "true" or "false"'),
        ("host_ipv4", "fd00::1", "must be an IPv4 address"),
        ("host_ipv6", "10.0.0.1", "must be an IPv6 address"),
        (
            "dns_servers",
            "10.0.0.1,nope",
            "must be a comma-separated list of IP addresses; 'nope' is not one",
        ),
    ],
)
def test_bad_value_names_field_value_and_rule(key: str, value: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_bridge_options({key: value})
    assert err.value.field == f"options.{key}"
    assert err.value.value == value
    assert err.value.rule == rule


def test_both_spellings_must_agree() -> None:
    with pytest.raises(InvalidInput) as err:
        validate_bridge_options({"mtu": "1400", "com.docker.network.driver.mtu": "1500"})
    assert err.value.rule == "conflicts with options.mtu='1400'"
    same = {"mtu": "1400", "com.docker.network.driver.mtu": "1400"}
    assert validate_bridge_options(same) == {"mtu": "1400"}


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("01:00:5e:00:00:01", "must be a unicast MAC (lowest bit of the first octet 0)"),
        ("00:00:00:00:00:00", "must not be all zeros"),
        ("02:42:ac:11:00", "must be six hex octets like 02:42:ac:11:00:02"),
    ],
)
def test_bad_mac(value: str, rule: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_mac(value)
    assert err.value.rule == rule
    assert check_mac("02-42-AC-11-00-02") == "02:42:ac:11:00:02"


def test_factory() -> None:
    assert get_driver("bridge").name == "bridge"
    assert isinstance(get_driver("null"), NullDriver)
    with pytest.raises(InvalidInput) as err:
        get_driver("macvlan0")
    assert err.value.message == (
        "invalid driver 'macvlan0': unknown driver; known: bridge, ipam, null, macvlan, ipvlan, "
        "overlay"
    )

"""The published syntax (netd.api.formats) never promises more than the API's own checks accept.

For every pattern the OpenAPI document publishes, strings generated from that very pattern
(hypothesis ``from_regex``) pass pydantic's enforcement (Rust's regex engine) and the check that
stands behind the field (ipaddress, netd.names, the bridge options, the DNS upstream parser).
"""

from __future__ import annotations

import ipaddress
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from netd.api import formats, schemas
from netd.dns.upstreams import parse_server
from netd.drivers.bridge import BridgeDriver
from netd.drivers.bridge_options import validate_bridge_options
from netd.drivers.ipam import IpamOnlyDriver
from netd.drivers.macs import check_mac
from netd.drivers.macvlan import IpvlanDriver, MacvlanDriver
from netd.drivers.overlay import OverlayDriver
from netd.errors import InvalidInput
from netd.ipam.subnets import MAX_PREFIX
from netd.names import (
    MAX_IFNAME,
    NAME_PATTERN,
    check_container_id,
    check_ifname,
    check_network_name,
)
from netd.options import DriverKeys


def generated(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(re.compile(formats.anchored(pattern)), fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(generated(formats.IP))
def test_ip_pattern_is_an_address(text: str) -> None:
    ipaddress.ip_address(text)
    schemas.PortIn.model_validate({"host_port": 1, "container_port": 1, "host_ip": text})


@settings(max_examples=300, deadline=None)
@given(generated(formats.CIDR))
def test_cidr_pattern_is_a_network(text: str) -> None:
    ipaddress.ip_network(text, strict=False)
    schemas.SubnetIn.model_validate({"subnet": "10.0.0.0/8", "ip_range": text})


@settings(max_examples=300, deadline=None)
@given(generated(formats.SUBNET))
def test_subnet_pattern_is_big_enough(text: str) -> None:
    net = ipaddress.ip_network(text, strict=False)
    assert net.prefixlen <= MAX_PREFIX[net.version]
    schemas.SubnetIn.model_validate({"subnet": text})


@settings(max_examples=200, deadline=None)
@given(generated(formats.DNS_SERVER))
def test_dns_server_pattern_parses(text: str) -> None:
    parse_server(text)
    schemas.ConnectIn.model_validate({"netns": "/run/netns/x", "dns_servers": [text]})


@settings(max_examples=200, deadline=None)
@given(generated(formats.MAC).filter(lambda m: not re.fullmatch(formats.ZERO_MAC, m)))
def test_mac_pattern_is_a_usable_mac(text: str) -> None:
    check_mac(text)
    schemas.ConnectIn.model_validate({"netns": "/run/netns/x", "mac": text})


def test_zero_mac_is_refused_as_the_document_says() -> None:
    for mac in ("00:00:00:00:00:00", "00-00-00-00-00-00"):
        assert re.fullmatch(formats.ZERO_MAC, mac)
        try:
            schemas.ConnectIn.model_validate({"netns": "/run/netns/x", "mac": mac})
        except ValueError as exc:
            assert "zeros" in str(exc)
        else:
            raise AssertionError(mac)


@settings(max_examples=200, deadline=None)
@given(generated(NAME_PATTERN).filter(lambda n: len(n) <= MAX_IFNAME))
def test_name_pattern_passes_the_name_checks(text: str) -> None:
    check_network_name(text)
    check_container_id(text)
    check_ifname(text)
    schemas.DisconnectIn.model_validate({"container_id": text, "ifname": text})


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_bridge_option_patterns_pass_the_driver(data: st.DataObject) -> None:
    options = formats.bridge_options_schema()["properties"]
    key = data.draw(st.sampled_from(sorted(options)))
    value = data.draw(st.from_regex(re.compile(options[key]["pattern"]), fullmatch=True))
    validate_bridge_options({key: value})


def test_netns_pattern_refuses_relative_and_nul() -> None:
    pattern = re.compile(formats.anchored(formats.NETNS_PATH))
    assert pattern.fullmatch("/run/netns/a b")
    for bad in ("", "run/netns/x", "/run/netns/\x00x"):
        assert not pattern.fullmatch(bad)


# --- the options schema: every built-in driver's keys, from the drivers' own declarations ---

VLAN_DRIVERS = (MacvlanDriver(), IpvlanDriver())
BUILTIN = (BridgeDriver(), IpamOnlyDriver(), *VLAN_DRIVERS, OverlayDriver())


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_every_builtin_drivers_option_patterns_pass_that_driver(data: st.DataObject) -> None:
    """A value generated from a key's published pattern is accepted by every driver the key's
    description names, except for the rules the description states (a VLAN id's range; an
    IPAM-only network's dns is false only)."""
    options = formats.builtin_options_schema()["properties"]
    driver = data.draw(st.sampled_from(BUILTIN))
    key = data.draw(st.sampled_from(driver.option_keys.known()))
    assert driver.name in options[key]["description"].rsplit("drivers: ", 1)[1]
    value = data.draw(st.from_regex(re.compile(options[key]["pattern"]), fullmatch=True))
    try:
        driver.validate_options({key: value})
    except InvalidInput as exc:
        stated = {
            "parent": "VLAN id" in exc.rule and "VID from 1 to 4094" in options[key]["description"],
            "dns": driver.name == "ipam" and "ipam (false only)" in options[key]["description"],
        }
        assert stated.get(key), (driver.name, key, value, exc)


def test_a_key_is_described_with_the_drivers_that_take_it() -> None:
    schema = formats.builtin_options_schema()
    drivers = {
        key: prop["description"].rsplit("drivers: ", 1)[1]
        for key, prop in schema["properties"].items()
    }
    assert drivers["bridge"] == "bridge"
    assert drivers["enable_icc"] == "bridge, overlay"
    assert drivers["vni"] == "overlay"
    assert drivers["parent"] == "macvlan, ipvlan"
    assert drivers["macvlan_mode"] == "macvlan"
    assert drivers["ipvlan_flag"] == "ipvlan"
    assert drivers["dns"] == "bridge, ipam (false only), macvlan, ipvlan, overlay"
    assert schema["additionalProperties"] is False
    # Every key any built-in driver takes is in the document, and nothing else.
    known = {key for d in BUILTIN for key in d.option_keys.known()}
    assert set(schema["properties"]) == known
    assert "not take is refused" in schema["description"]


def test_an_open_driver_admits_any_other_key_and_says_so() -> None:
    schema = formats.options_schema(BridgeDriver.option_keys, DriverKeys("ptp", open=True))
    assert schema["additionalProperties"] == {"type": "string"}
    assert "drivers ptp are external plugins: any other key is theirs" in schema["description"]

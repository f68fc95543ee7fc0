"""Network options: one parse, one boolean rule, one address rule, Docker aliases in one place."""

from __future__ import annotations

import ipaddress

import pytest

from netd.dns.records import forwards, network_meta
from netd.errors import InvalidInput
from netd.firewall.policy import build_policy, check_backend_supports
from netd.model import Network, Subnet

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
    [("on", True), ("off", False), ("yes", True), ("no", False), ("1", True), ("0", False)]
    + [("TRUE", True), (" False ", False), ("On", True)],
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

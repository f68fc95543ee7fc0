"""anti_spoof=true: option validation, backend refusal, and the elements one endpoint adds."""

from __future__ import annotations

import pytest
from kit import endpoint, network

from netd.drivers.bridge_options import validate_bridge_options
from netd.errors import InvalidInput
from netd.firewall import ruleset
from netd.firewall.policy import build_policy, check_backend_supports
from netd.firewall.state import DesiredState
from netd.model import Network, PortMapping


def net(**options: str) -> Network:
    return network("safe", ["10.5.0.0/24", "fd05::/64"], id="e" * 64, options=options)


EP = endpoint(net(), "web", host_ifname="nvweb", port_mappings=(PortMapping(8080, 80),))


def test_option_is_a_validated_boolean() -> None:
    assert validate_bridge_options({"anti_spoof": "Yes"}) == {"anti_spoof": "true"}
    with pytest.raises(InvalidInput) as exc:
        validate_bridge_options({"anti_spoof": "maybe"})
    assert exc.value.field == "options.anti_spoof" and exc.value.value == "maybe"


def test_backends_without_the_ability_refuse_it() -> None:
    with pytest.raises(InvalidInput) as exc:
        check_backend_supports(net(anti_spoof="true"), "iptables", frozenset())
    assert exc.value.field == "options.anti_spoof" and "nftables" in str(exc.value)
    check_backend_supports(net(anti_spoof="true"), "nftables", frozenset({"anti_spoof"}))
    check_backend_supports(net(anti_spoof="false"), "iptables", frozenset())
    check_backend_supports(net(), "none", frozenset())


def test_endpoint_elements_carry_port_and_addresses_with_owner() -> None:
    policy = build_policy(net(anti_spoof="true"), "nd-safe")
    rules = DesiredState.build([(net(anti_spoof="true"), "nd-safe")], []).check_ports(EP)
    elems = ruleset.endpoint_elements(policy, EP, rules)
    spoof = sorted((e.set, e.key, e.comment) for e in elems if e.set.startswith(("spoof", "port_")))
    owner = "netd:eeeeeeeeeeee:web"
    assert spoof == [
        ("port_addrs4", '{"concat": ["nvweb", "10.5.0.2"]}', owner),
        ("port_addrs6", '{"concat": ["nvweb", "fd05::2"]}', owner),
        ("spoof_ports", '"nvweb"', owner),
    ]
    # without the option: none of them, the published ports unchanged
    plain = build_policy(net(), "nd-safe")
    assert [e for e in ruleset.endpoint_elements(plain, EP, rules)] == [
        e for e in elems if not e.set.startswith(("spoof", "port_"))
    ]


def test_rules_are_fixed_and_in_the_bridge_prerouting_chain() -> None:
    counts = ruleset.rule_counts()
    assert counts[("bridge", "prerouting")] == 3
    assert ruleset.CHAINS["bridge_prerouting"] == ("bridge", "filter", "prerouting", -200)

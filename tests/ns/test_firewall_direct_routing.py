"""Direct routing from outside into a NATed network is blocked, both backends (issue #4).

The lab of ``test_firewall_traffic.py``: the "out" namespace routes 10/8 and fd00::/8 via the
host, so it could reach any container address directly. Like Docker 28, netd lets new
connections from outside into a network with outbound NAT (masquerade or ``host_ipv4`` SNAT)
through only when they were DNATed, i.e. to a published port on a host address; a network
with ``enable_ip_masquerade=false`` is routed and stays directly reachable.
"""

from __future__ import annotations

import pytest
from netns_fixtures import Sandbox
from test_firewall_traffic import BACKENDS, add_snat_and_routed_networks, box, build_lab

from netd.model import PortMapping

__all__ = ["box"]  # the fixture that closes the backend drivers before the sandbox goes


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_published_ports_are_reachable_from_outside(box: Sandbox, backend: str) -> None:
    lab = build_lab(box, backend)
    add_snat_and_routed_networks(lab)
    web = lab.container("a1", "A", ["10.1.0.2/24", "fd00:a::2/64"], ports=(PortMapping(8080, 80),))
    a2 = lab.container("a2", "A", ["10.1.0.3/24"])
    s1 = lab.container("s1", "S", ["10.4.0.2/24"])
    r1 = lab.container("r1", "R", ["10.5.0.2/24"])
    for ns, port in ((web, 80), (web, 7000), (s1, 7000), (r1, 7000), (lab.out, 7000)):
        lab.serve(ns, port)
    for ns in (web, s1, r1, lab.out):
        lab.wait_serving(ns, "127.0.0.1", 7000)
    # The path out → host → bridge → container works: the routed network is reachable
    # directly, and its container sees the real client (no NAT either way).
    assert lab.ask(lab.out, "10.5.0.2", 7000, timeout=1) == "192.0.2.2"
    # Unpublished ports of NATed networks are not, IPv4 and IPv6, TCP and UDP, masquerade
    # (@masq4/6) and SNAT (@snat4) alike; nor is the container port behind a published one
    # when aimed at directly (only the DNAT through the host's address is let in).
    assert lab.blocked(lab.out, "10.1.0.2", 7000)
    assert lab.blocked(lab.out, "10.1.0.2", 7000, "udp")
    assert lab.blocked(lab.out, "fd00:a::2", 7000)
    assert lab.blocked(lab.out, "10.4.0.2", 7000)
    assert lab.blocked(lab.out, "10.1.0.2", 80)
    # The published port is reachable from outside through the host, v4 and v6, with the
    # real client address (the DNAT exemption, i.e. the rule tests the ct status bit).
    assert lab.ask(lab.out, "192.0.2.1", 8080, timeout=1) == "192.0.2.2"
    assert lab.ask(lab.out, "2001:db8::1", 8080, timeout=1) == "2001:db8::2"
    # Hairpin from the same network, and the host itself (output path) are unaffected.
    assert lab.ask(a2, "192.0.2.1", 8080, timeout=1) == "10.1.0.1"
    assert lab.ask(lab.host, "127.0.0.1", 8080, timeout=1) == "10.1.0.1"
    assert lab.ask(lab.host, "10.1.0.2", 7000, timeout=1) == "10.1.0.1"
    # Containers still get out (masqueraded / SNATed), their replies being established.
    assert lab.ask(web, "192.0.2.2", 7000, timeout=1) == "192.0.2.1"
    assert lab.ask(web, "2001:db8::2", 7000, timeout=1) == "2001:db8::1"
    assert lab.ask(s1, "192.0.2.2", 7000, timeout=1) == "192.0.2.100"

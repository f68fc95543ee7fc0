"""`netd recover` reads the firewall back (pure): listings captured from a real daemon.

tests/unit/golden/nft_listing_recover.json is ``list table inet netd`` + ``bridge netd``
(libnftables JSON) and iptables_save_recover.txt is ``iptables-save`` / ``ip6tables-save``,
both of a daemon with four networks: pub (dual stack; aaaa1111 publishes 8080->80 on every
address, 192.0.2.1:5353->53/udp and [2001:db8::1]:9090->90), int (internal; bbbb2222 asked
for 8081, which internal networks do not publish), noicc (enable_icc and
enable_ip_masquerade false; cccc3333 publishes 8082->80/sctp) and snat (host_ipv4 192.0.2.1).
The iptables capture predates the direct-routing drops (``! -i <br> -o <br> ... NEW ... !
DNAT -j DROP`` of pub and snat); they were added to it as iptables-save prints them.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

from test_firewall_ruleset import DB, NETWORKS, WEB

from netd.firewall.iptables_rules import Existing, build_render, build_restore
from netd.firewall.readback import FirewallFacts, parse_iptables_save, parse_nft
from netd.firewall.state import DesiredState
from netd.model import PortMapping
from netd.reconcile.recover import Peer, Scan, TaggedVeth, build_records

GOLDEN = Path(__file__).parent / "golden"
IP, IF = ipaddress.ip_address, ipaddress.ip_interface
# network ids (12-character prefixes) in the two captures
NFT = {
    "pub": "f5e0279864af",
    "int": "698ff6075e94",
    "noicc": "3a00f8c57d94",
    "snat": "ea20f574e3c0",
}
IPT = {
    "pub": "a6558724d27c",
    "int": "4d7f5425543d",
    "noicc": "364a3fa2077a",
    "snat": "cb9d0d3723b7",
}
WEB_PORTS = (
    PortMapping(5353, 53, "udp", IP("192.0.2.1")),
    PortMapping(8080, 80),
    PortMapping(9090, 90, "tcp", IP("2001:db8::1")),
)


def nft_facts() -> FirewallFacts:
    return parse_nft(json.loads((GOLDEN / "nft_listing_recover.json").read_text()))


def ipt_facts() -> FirewallFacts:
    v4, v6 = (GOLDEN / "iptables_save_recover.txt").read_text().split("====\n")
    return parse_iptables_save({4: v4, 6: v6}, {f"nd-{i}": i for i in IPT.values()})


def scan(ids: dict[str, str]) -> Scan:
    """The kernel of the capture: four bridges and one container on each."""
    subnets = {
        "pub": ["10.140.0.1/24", "fd00:140::1/64"],
        "int": ["10.141.0.1/24"],
        "noicc": ["10.142.0.1/24"],
        "snat": ["10.143.0.1/24"],
    }
    owners = {"pub": "aaaa1111", "int": "bbbb2222", "noicc": "cccc3333", "snat": "dddd4444"}
    out = Scan()
    for name, net12 in ids.items():
        out.bridges[net12 + "0" * 52] = (f"nd-{net12}", [IF(a) for a in subnets[name]])
        addrs = tuple(IF(a.replace("::1/", "::2/").replace(".1/", ".2/")) for a in subnets[name])
        peer = Peer(f"/run/netns/{name}", "eth0", "02:00:00:00:00:01", addrs)
        out.veths.append(TaggedVeth(f"nv-{name}", net12, "eth0", owners[name], "02:aa", peer))
    return out


def test_nft_listing() -> None:
    facts = nft_facts()
    assert facts.backend == "nftables" and facts.problems == []
    nets = facts.networks
    assert nets[NFT["int"]].internal and not nets[NFT["pub"]].internal
    assert nets[NFT["noicc"]].icc_off and not nets[NFT["pub"]].icc_off
    assert nets[NFT["pub"]].nat == {4: "masquerade", 6: "masquerade"}
    assert nets[NFT["snat"]].nat == {4: "192.0.2.1"}
    assert nets[NFT["noicc"]].nat == {} and nets[NFT["int"]].nat == {}
    ports = {(p.owner, p.net12, str(p.dest), p.mapping) for p in facts.ports}
    assert ports == {
        ("aaaa1111", NFT["pub"], "10.140.0.2", PortMapping(8080, 80)),
        ("aaaa1111", NFT["pub"], "fd00:140::2", PortMapping(8080, 80)),
        ("aaaa1111", NFT["pub"], "10.140.0.2", WEB_PORTS[0]),
        ("aaaa1111", NFT["pub"], "fd00:140::2", WEB_PORTS[2]),
        ("cccc3333", NFT["noicc"], "10.142.0.2", PortMapping(8082, 80, "sctp")),
    }


def test_iptables_save() -> None:
    facts = ipt_facts()
    assert facts.backend == "iptables" and facts.problems == []
    nets = facts.networks
    assert nets[IPT["int"]].internal and not nets[IPT["pub"]].internal
    assert nets[IPT["noicc"]].icc_off and not nets[IPT["snat"]].icc_off
    assert nets[IPT["pub"]].nat == {4: "masquerade", 6: "masquerade"}
    assert nets[IPT["snat"]].nat == {4: "192.0.2.1"}
    assert nets.get(IPT["noicc"]) is not None and nets[IPT["noicc"]].nat == {}
    ports = {(p.owner, p.net12, str(p.dest), p.mapping) for p in facts.ports}
    assert ports == {
        ("aaaa1111", None, "10.140.0.2", PortMapping(8080, 80)),
        ("aaaa1111", None, "fd00:140::2", PortMapping(8080, 80)),
        ("aaaa1111", None, "10.140.0.2", WEB_PORTS[0]),
        ("aaaa1111", None, "fd00:140::2", WEB_PORTS[2]),
        ("cccc3333", None, "10.142.0.2", PortMapping(8082, 80, "sctp")),
    }


def test_records_get_internal_options_and_ports_from_either_backend() -> None:
    for ids, facts in ((NFT, nft_facts()), (IPT, ipt_facts())):
        report = build_records(scan(ids), now=1.0, facts=facts)
        nets = {n.id[:12]: n for n in report.networks}
        assert nets[ids["int"]].internal and nets[ids["int"]].options == {}
        assert nets[ids["pub"]].options == {} and not nets[ids["pub"]].internal
        assert nets[ids["noicc"]].options == {
            "enable_icc": "false",
            "enable_ip_masquerade": "false",
        }
        assert nets[ids["snat"]].options == {"host_ipv4": "192.0.2.1"}
        ports = {ep.container_id: ep.port_mappings for ep in report.endpoints}
        assert ports == {
            "aaaa1111": WEB_PORTS,
            "bbbb2222": (),
            "cccc3333": (PortMapping(8082, 80, "sctp"),),
            "dddd4444": (),
        }
        lost = "\n".join(report.lost)
        assert "no recovered endpoint" not in lost and "no netd nftables table" not in lost
        assert "published port" not in lost and "ports published on internal networks" in lost
        text = report.render()
        assert f"({ids['int']}) internal:" in text
        assert "publishes 192.0.2.1:5353/udp->53" in text and "[2001:db8::1]:9090/tcp->90" in text


def test_ports_without_an_endpoint_and_no_firewall_are_reported() -> None:
    facts = nft_facts()
    kernel = scan(NFT)
    kernel.veths = [v for v in kernel.veths if v.container_id != "cccc3333"]
    lost = "\n".join(build_records(kernel, facts=facts).lost)
    assert "published port 8082/sctp->80 to 10.142.0.2 of container cccc3333" in lost
    report = build_records(scan(NFT), facts=FirewallFacts(problems=["loading libnftables: x"]))
    assert all(not n.internal and n.options == {} for n in report.networks)
    lost = "\n".join(report.lost)
    assert "no netd nftables table nor iptables chain found" in lost
    assert "the firewall: loading libnftables: x" in lost


def test_foreign_or_broken_elements_are_problems_not_crashes() -> None:
    listing: list[dict[str, Any]] = [
        {
            "map": {
                "table": "netd",
                "name": "pub4_any",
                "elem": [[{"elem": {"val": {"concat": ["tcp", 80]}}}, "10.0.0.2"]],
            }
        },
        {"set": {"table": "netd", "name": "internal_ifs", "elem": ["nd-nocomment"]}},
    ]
    facts = parse_nft(listing)
    assert facts.ports == [] and facts.networks == {}
    assert len(facts.problems) == 1 and "no owner" in facts.problems[0]


def test_iptables_direct_routing_drop_is_not_read_as_icc_off() -> None:
    state = DesiredState.build(NETWORKS, [WEB, DB])
    texts = {v: build_restore(build_render(state, v), Existing()) for v in (4, 6)}
    assert "! -i nd-a -o nd-a" in texts[4] and "! -i nd-c -o nd-c" in texts[4]
    facts = parse_iptables_save(texts, {"nd-a": "a" * 12, "nd-b": "b" * 12, "nd-c": "c" * 12})
    assert {k: n.icc_off for k, n in facts.networks.items()} == {
        "a" * 12: False,
        "b" * 12: False,
        "c" * 12: True,
    }

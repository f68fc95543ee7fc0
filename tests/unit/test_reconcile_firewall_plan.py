"""Firewall drift (pure): elements the kernel lost, by owner; planning and applying re-adds.

The listing is libnftables JSON captured from a real daemon (tests/unit/golden/
nft_listing_recover.json): networks pub (dual stack, ports published by aaaa1111), int
(internal), noicc (enable_icc and masquerade off, sctp port of cccc3333) and snat (host_ipv4).
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
from pathlib import Path
from typing import Any

from test_reconcile import BrokenDriver

from netd.firewall.base import NullFirewall
from netd.firewall.drift import Drift, element_text, find_drift
from netd.firewall.state import DesiredState
from netd.model import Endpoint, Network, PortMapping, Subnet
from netd.reconcile.plan import endpoint_id, plan_firewall
from netd.service import Service
from netd.store.sqlite import SqliteStore

GOLDEN = Path(__file__).parent / "golden" / "nft_listing_recover.json"
IDS = {
    "pub": "f5e0279864af",
    "int": "698ff6075e94",
    "noicc": "3a00f8c57d94",
    "snat": "ea20f574e3c0",
}


def net(name: str, cidrs: list[str], **kw: Any) -> Network:
    subnets = tuple(Subnet(ipaddress.ip_network(c), ipaddress.ip_network(c)[1]) for c in cidrs)
    return Network(IDS[name] + "0" * 52, name, "bridge", subnets, **kw)


PUB = net("pub", ["10.140.0.0/24", "fd00:140::/64"], ipv6=True)
INT = net("int", ["10.141.0.0/24"], internal=True)
NOICC = net(
    "noicc", ["10.142.0.0/24"], options={"enable_icc": "false", "enable_ip_masquerade": "false"}
)
SNAT = net("snat", ["10.143.0.0/24"], options={"host_ipv4": "192.0.2.1"})


def ep(network: Network, cid: str, addrs: list[str], host_if: str, *ports: PortMapping) -> Endpoint:
    return Endpoint(
        network_id=network.id,
        container_id=cid,
        ifname="eth0",
        netns=f"/run/netns/{cid}",
        host_ifname=host_if,
        addresses=tuple(ipaddress.ip_interface(a) for a in addrs),
        port_mappings=ports,
        state="ready",
    )


IP = ipaddress.ip_address
WEB = ep(
    PUB,
    "aaaa1111",
    ["10.140.0.2/24", "fd00:140::2/64"],
    "nva",
    PortMapping(8080, 80),
    PortMapping(5353, 53, "udp", IP("192.0.2.1")),
    PortMapping(9090, 90, "tcp", IP("2001:db8::1")),
)
SECRET = ep(INT, "bbbb2222", ["10.141.0.2/24"], "nvb", PortMapping(8081, 80))
ISOLATED = ep(
    NOICC, "cccc3333", ["10.142.0.2/24"], "nv6f0c79e1f75c5", PortMapping(8082, 80, "sctp")
)
OUT = ep(SNAT, "dddd4444", ["10.143.0.2/24"], "nvd")
NETS = [PUB, INT, NOICC, SNAT]
EPS = [WEB, SECRET, ISOLATED, OUT]


def state() -> DesiredState:
    return DesiredState.build([(n, f"nd-{n.id[:12]}") for n in NETS], EPS)


def listing() -> list[dict[str, Any]]:
    return list(json.loads(GOLDEN.read_text()))


def drop(items: list[dict[str, Any]], setname: str, contains: str) -> list[dict[str, Any]]:
    """The listing without the elements of ``setname`` whose text contains ``contains``."""
    out = copy.deepcopy(items)
    for obj in out:
        body = obj.get("set") or obj.get("map")
        if body and body["name"] == setname:
            body["elem"] = [e for e in body.get("elem", []) if contains not in element_text(e)]
    return out


def test_the_captured_kernel_matches_the_state() -> None:
    drift = find_drift(state(), listing())
    assert not drift and drift.incomplete == "", drift


def test_a_deleted_port_element_names_its_endpoint() -> None:
    drift = find_drift(state(), drop(listing(), "pub4_any", "8080"))
    assert drift.networks == {}
    assert drift.endpoints == {endpoint_id(WEB): ["pub4_any { tcp . 8080 : 10.140.0.2 }"]}


def test_changed_data_is_drift_too() -> None:
    items = listing()
    for obj in items:
        if obj.get("map", {}).get("name") == "pub4_any_port":
            obj["map"]["elem"][0][1] = 81
    assert set(find_drift(state(), items).endpoints) == {endpoint_id(WEB)}


def test_icc_and_network_elements() -> None:
    items = drop(drop(listing(), "no_icc_ports", "nv6f"), "internal_ifs", "nd-")
    items = drop(items, "snat4", "10.143")
    drift = find_drift(state(), items)
    assert drift.endpoints == {endpoint_id(ISOLATED): ["no_icc_ports { nv6f0c79e1f75c5 }"]}
    assert drift.networks == {
        INT.id: ["internal_ifs { nd-698ff6075e94 }"],
        SNAT.id: ["snat4 { 10.143.0.0/24 : 192.0.2.1 }"],
    }


def test_a_missing_set_is_left_to_the_monitor() -> None:
    items = [o for o in listing() if o.get("map", {}).get("name") != "pub6_ip"]
    drift = find_drift(state(), items)
    assert not drift and "pub6_ip" in drift.incomplete


def test_nothing_to_compare_without_networks() -> None:
    assert not find_drift(DesiredState(), [])


def test_host_prefixes_compare_as_addresses() -> None:
    prefix = {"elem": {"val": {"prefix": {"addr": "10.9.0.5", "len": 32}}, "comment": "x"}}
    assert element_text(prefix) == element_text("10.9.0.5") == "10.9.0.5"
    assert element_text(["fd00:0::2", 80]) == "fd00::2 : 80"


# --- planning --------------------------------------------------------------------------------


def test_plan_skips_unknown_networks_records_in_flight_and_not_ready() -> None:
    creating = ep(SNAT, "eeee5555", ["10.143.0.3/24"], "nve")
    creating = Endpoint(**{**creating.__dict__, "state": "creating"})
    missing = {endpoint_id(e): ["x"] for e in (WEB, OUT, creating)}
    missing[("f" * 64, "gone", "eth0")] = ["y"]
    actions = plan_firewall(
        {PUB.id: ["a"], "f" * 64: ["b"]},
        missing,
        [WEB, OUT, creating],
        {n.id for n in NETS},
        inflight={OUT.key},
    )
    assert [(a.kind, a.network_id) for a in actions] == [
        ("firewall_network", PUB.id),
        ("firewall_endpoint", PUB.id),
    ]
    assert actions[1].endpoint is WEB and actions[1].detail == "firewall: x"


# --- the service applies the plan through the backend ---------------------------------------


class DriftingFirewall(NullFirewall):
    """Reports a fixed drift and records what the service re-adds."""

    def __init__(self) -> None:
        self.report = Drift()
        self.calls: list[tuple[str, str]] = []

    def ensure_network(self, network: Network, bridge: str) -> None:
        self.calls.append(("ensure_network", network.name))

    def add_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        self.calls.append(("add_endpoint", endpoint.container_id))

    def drift(self) -> Drift:
        return self.report


def test_service_re_adds_lost_elements_and_after_every_re_plumb(tmp_path: Path) -> None:
    from netd.model import AttachRequest, NetworkSpec, SubnetRequest
    from netd.names import bridge_tag, endpoint_tag

    async def scenario() -> None:
        fw, driver = DriftingFirewall(), BrokenDriver()
        svc = Service(
            store=SqliteStore(tmp_path / "netd.db"),
            drivers={"bridge": driver},
            firewall=fw,
            ula=ipaddress.IPv6Network("fd00::/48"),
        )
        await svc.start()
        network = await svc.create_network(
            NetworkSpec("app", subnets=(SubnetRequest("10.7.0.0/24"),))
        )
        _, attached = await svc.attach(AttachRequest("app", "c1", "eth0", "/run/netns/c1"))
        driver.tagged = {
            bridge_tag(network.id): "nd-x",
            endpoint_tag(network.id, "c1", "eth0"): attached.host_ifname,
        }
        fw.calls.clear()
        assert await svc.reconcile() == []  # nothing lost: nothing done
        assert fw.calls == []

        fw.report = Drift(
            networks={network.id: ["bridges { nd-x }"]},
            endpoints={endpoint_id(attached): ["pub4_any { tcp . 80 : 10.7.0.2 }"]},
        )
        done = await svc.reconcile()
        assert [a.kind for a in done] == ["firewall_network", "firewall_endpoint"]
        assert fw.calls == [("ensure_network", "app"), ("add_endpoint", "c1")]

        # A re-plumbed endpoint gets its elements back explicitly; so does a new bridge.
        fw.report, fw.calls = Drift(), []
        driver.broken = {"c1"}
        del driver.tagged[bridge_tag(network.id)]
        done = await svc.reconcile()
        assert [a.kind for a in done] == ["missing_network", "endpoint"]
        assert fw.calls == [("ensure_network", "app"), ("add_endpoint", "c1")]

    asyncio.run(scenario())

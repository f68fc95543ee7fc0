"""Planning repairs (pure): orphan links, missing bridges, broken or unreachable endpoints."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from pathlib import Path

from netd.drivers.base import EndpointStatus
from netd.drivers.bridge import BridgeDriver
from netd.drivers.null import NullDriver
from netd.errors import InvalidInput
from netd.firewall.base import NullFirewall
from netd.model import AttachRequest, Endpoint, Network, NetworkSpec, Subnet, SubnetRequest
from netd.names import bridge_tag, endpoint_tag
from netd.reconcile.plan import (
    Expected,
    endpoint_id,
    expected_from,
    needs_check,
    plan_endpoints,
    plan_links,
    plan_orphans,
)
from netd.service import Service
from netd.store.sqlite import SqliteStore

NET = Network(
    id="a" * 64,
    name="web",
    driver="bridge",
    subnets=(Subnet(ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_address("10.0.0.1")),),
)
BRIDGE = BridgeDriver()  # only its pure tag methods are used here


def want(networks: list[Network], endpoints: list[Endpoint]) -> Expected:
    """What the bridge driver expects in the kernel for these records."""
    return expected_from(networks, endpoints, lambda net: BRIDGE)


EP = Endpoint(
    network_id=NET.id,
    container_id="c1",
    ifname="eth0",
    netns="/run/netns/c1",
    host_ifname="nv1",
    addresses=(ipaddress.ip_interface("10.0.0.2/24"),),
)


def test_owned_links_are_kept() -> None:
    tagged = {bridge_tag(NET.id): "nd-aaaa", endpoint_tag(NET.id, "c1", "eth0"): "nv1"}
    assert plan_orphans(tagged, want([NET], [EP])) == []


def test_orphans_found_veths_before_bridges() -> None:
    tagged = {
        bridge_tag("b" * 64): "nd-bbbb",
        endpoint_tag("b" * 64, "c9", "eth0"): "nv9",
        endpoint_tag(NET.id, "gone", "eth1"): "nv8",
        bridge_tag(NET.id): "nd-aaaa",
    }
    plan = plan_orphans(tagged, want([NET], [EP]))
    assert [name for name, _ in plan] == ["nv8", "nv9", "nd-bbbb"]


def test_ipam_only_endpoints_expect_no_link() -> None:
    ep = Endpoint(
        network_id=NET.id, container_id="c2", ifname="eth0", netns="", host_ifname="", addresses=()
    )
    tagged = {endpoint_tag(NET.id, "c2", "eth0"): "nvx"}
    assert plan_orphans(tagged, want([NET], [ep])) == [("nvx", endpoint_tag(NET.id, "c2", "eth0"))]


# --- periodic reconciliation: planning ---------------------------------------------------------

TAGGED = {bridge_tag(NET.id): "nd-aaaa", endpoint_tag(NET.id, "c1", "eth0"): "nv1"}
KEY = endpoint_id(EP)
READY = dataclasses.replace(EP, state="ready")


def test_nothing_to_do_when_kernel_matches() -> None:
    assert plan_links(TAGGED, [NET], want([NET], [READY])) == []
    assert plan_endpoints([READY], {KEY: []}, set()) == []


def test_missing_bridge_planned_after_orphans() -> None:
    tagged = {endpoint_tag("b" * 64, "x", "eth0"): "nvx"}
    plan = plan_links(tagged, [NET], want([NET], [READY]))
    assert [(a.kind, a.ifname or a.network_id) for a in plan] == [
        ("orphan_link", "nvx"),
        ("missing_network", NET.id),
    ]
    assert "web" in plan[1].detail


def test_endpoint_with_problems_is_replumbed_with_its_record() -> None:
    plan = plan_endpoints([READY], {KEY: ["address 10.0.0.2/24 missing on eth0"]}, set())
    assert [(a.kind, a.endpoint) for a in plan] == [("endpoint", READY)]
    assert "10.0.0.2/24 missing" in plan[0].detail


def test_gone_namespace_is_reaped_never_repaired() -> None:
    plan = plan_endpoints([READY], {KEY: ["interface missing"]}, {KEY: []})
    assert [a.kind for a in plan] == ["netns_gone"]


def test_namespace_held_elsewhere_is_only_reported() -> None:
    plan = plan_endpoints([READY], {}, {KEY: ["task 7 of pid 7 runs in it"]})
    assert [(a.kind, a.detail) for a in plan] == [("netns_held", "task 7 of pid 7 runs in it")]


def test_inflight_creating_and_ipam_only_endpoints_are_skipped() -> None:
    problems = {KEY: ["host veth missing"]}
    assert plan_endpoints([READY], problems, {}, inflight={READY.key}) == []
    assert plan_endpoints([EP], problems, {}) == []  # state "creating"
    # (An IPAM-only network's endpoints never reach the plan: the reconciler skips networks
    # whose driver makes no interface, test_attachments.)
    assert needs_check(READY, set()) and not needs_check(READY, {READY.key})


# --- periodic reconciliation: the service applies the plan (NullDriver, real SQLite) ------------


class BrokenDriver(NullDriver):
    """A NullDriver with a kernel inventory: tagged links and per-container problems."""

    def __init__(self) -> None:
        super().__init__()
        self.tagged: dict[str, str] = {}
        self.broken: set[str] = set()
        self.removed: list[str] = []

    def inventory(self) -> dict[str, str]:
        return dict(self.tagged)

    def network_tags(self, network: Network) -> frozenset[str]:
        return BRIDGE.network_tags(network)

    def endpoint_tags(self, network: Network, endpoint: Endpoint) -> frozenset[str]:
        return BRIDGE.endpoint_tags(network, endpoint)

    def remove_object(self, ifname: str) -> bool:
        self.removed.append(ifname)
        return True

    def check_endpoint(self, network: Network, endpoint: Endpoint) -> EndpointStatus:
        super().check_endpoint(network, endpoint)
        if endpoint.container_id in self.broken:
            return EndpointStatus([f"address missing on {endpoint.ifname}"])
        return EndpointStatus()


def test_service_reconcile_repairs_and_keeps_addresses(tmp_path: Path) -> None:
    driver = BrokenDriver()
    gone: set[str] = set()

    def validate(path: str, inode: int) -> None:
        if path in gone:
            raise InvalidInput("netns", path, "no such file")

    svc = Service(
        store=SqliteStore(tmp_path / "netd.db"),
        drivers={"bridge": driver},
        firewall=NullFirewall(),
        ula=ipaddress.IPv6Network("fd00:1::/48"),
        validate_netns=validate,
    )

    async def scenario() -> None:
        await svc.start()
        spec = NetworkSpec(name="web", subnets=(SubnetRequest(subnet="10.7.0.0/24"),))
        net = await svc.create_network(spec)
        _, a = await svc.attach(AttachRequest("web", "ca", "eth0", "/run/netns/a"))
        _, b = await svc.attach(AttachRequest("web", "cb", "eth0", "/run/netns/b"))
        driver.tagged = {
            bridge_tag(net.id): "nd-x",
            endpoint_tag(net.id, "ca", "eth0"): a.host_ifname,
            endpoint_tag(net.id, "cb", "eth0"): b.host_ifname,
            endpoint_tag("f" * 64, "old", "eth0"): "nvold",
        }
        assert [x.kind for x in await svc.reconcile()] == ["orphan_link"]
        assert driver.removed == ["nvold"]
        del driver.tagged[bridge_tag(net.id)]
        driver.tagged.pop(endpoint_tag("f" * 64, "old", "eth0"))
        driver.broken = {"ca"}
        gone.add("/run/netns/b")
        driver.calls.clear()
        done = await svc.reconcile()
        assert [x.kind for x in done] == ["missing_network", "endpoint"]
        setups = [args[1] for name, args in driver.calls if name == "setup_endpoint"]
        assert [(e.container_id, e.addresses, e.mac) for e in setups] == [
            ("ca", a.addresses, a.mac)
        ]
        # cb's namespace is gone: kept, with its address, until the runtime says otherwise.
        assert {e.container_id for e in svc.endpoints(net)} == {"ca", "cb"}
        assert {e.container_id for e in svc.store.list_endpoints(net.id)} == {"ca", "cb"}

    asyncio.run(scenario())

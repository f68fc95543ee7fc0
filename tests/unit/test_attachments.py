"""`netd network connect` twice (Docker's one-interface-per-network rule) and IPAM-only networks,
over the service with a real SQLite store and the null driver (no root)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from service_kit import make_service

from netd.drivers.bridge import BridgeDriver
from netd.drivers.ipam import IpamOnlyDriver
from netd.drivers.null import NullDriver
from netd.errors import AlreadyConnected, Conflict, InvalidInput
from netd.firewall.base import NullFirewall
from netd.model import AttachRequest, Endpoint, Network, NetworkSpec, SubnetRequest
from netd.reconcile.plan import expected_from, plan_links


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def req(cid: str = "c1", ifname: str = "eth0", **kw: Any) -> AttachRequest:
    return AttachRequest(
        network="web", container_id=cid, ifname=ifname, netns=f"/run/netns/{cid}", **kw
    )


class RecordingFirewall(NullFirewall):
    """The null firewall, remembering which methods were called."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def ensure_network(self, network: Network, bridge: str) -> None:
        self.calls.append("ensure_network")

    def remove_network(self, network: Network, bridge: str) -> None:
        self.calls.append("remove_network")

    def add_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        self.calls.append("add_endpoint")

    def remove_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        self.calls.append("remove_endpoint")

    def sync(self, networks: list[tuple[Network, str]], endpoints: list[Endpoint]) -> None:
        self.calls.append(f"sync {len(networks)} {len(endpoints)}")


def test_connect_twice_is_refused_naming_the_interface(tmp_path: Path) -> None:
    async def scenario() -> None:
        driver = NullDriver()
        svc = make_service(tmp_path, driver)
        await svc.start()
        net = await svc.create_network(NetworkSpec(name="web"))
        _, first = await svc.attach(req())
        with pytest.raises(AlreadyConnected) as err:
            await svc.attach(req(ifname="eth1"))
        assert err.value.code == "already_connected" and err.value.ifname == "eth0"
        assert err.value.message.startswith(
            "container 'c1' (netns /run/netns/c1) is already connected to network 'web' as eth0"
        )
        # The same namespace under another container id is the same container.
        with pytest.raises(AlreadyConnected, match="as eth0"):
            await svc.attach(
                AttachRequest(network="web", container_id="x", ifname="eth1", netns=first.netns)
            )
        # A retry with the same interface name returns the endpoint; nothing is plumbed again.
        setups = [c for c in driver.calls if c[0] == "setup_endpoint"]
        _, again = await svc.attach(req())
        assert again == first
        assert [c for c in driver.calls if c[0] == "setup_endpoint"] == setups
        # ... but not with other settings.
        with pytest.raises(AlreadyConnected, match=r"other settings .*ip 10\.89\.0\.77"):
            await svc.attach(req(static_ips=("10.89.0.77",)))
        assert [e.ifname for e in svc.endpoints(net)] == ["eth0"]

    run(scenario())


def test_cni_keeps_its_semantics(tmp_path: Path) -> None:
    """CNI: several interfaces of one container on one network are legitimate (Multus);
    an ADD for an existing (id, ifname) is a conflict, not a silent success."""

    async def scenario() -> None:
        svc = make_service(tmp_path)
        await svc.start()
        net = await svc.create_network(NetworkSpec(name="web"))
        await svc.attach(req(ifname="net1", origin="cni"))
        await svc.attach(req(ifname="net2", origin="cni"))
        assert sorted(e.ifname for e in svc.endpoints(net)) == ["net1", "net2"]
        with pytest.raises(Conflict, match="already attached") as err:
            await svc.attach(req(ifname="net1", origin="cni"))
        assert not isinstance(err.value, AlreadyConnected)

    run(scenario())


def ipam_service(tmp_path: Path, firewall: RecordingFirewall) -> Any:
    return make_service(
        tmp_path,
        drivers={"bridge": NullDriver(), "ipam": IpamOnlyDriver()},
        firewall=firewall,
    )


def test_ipam_only_network_has_no_firewall_bridge_or_dns(tmp_path: Path) -> None:
    async def scenario() -> None:
        fw = RecordingFirewall()
        svc = ipam_service(tmp_path, fw)
        await svc.start()
        spec = NetworkSpec(name="web", driver="ipam", subnets=(SubnetRequest("10.55.0.0/24"),))
        net = await svc.create_network(spec)
        assert not net.dns_enabled and svc.host_interface(net) == ""
        assert svc.dns_for(net) == {"nameservers": [], "search": []}
        _, ep = await svc.attach(req(), plumb=False)
        assert str(ep.addresses[0]) == "10.55.0.2/24" and ep.host_ifname == ""
        # Nothing can plumb it: refused before any address is taken.
        with pytest.raises(InvalidInput, match="is an IPAM-only network"):
            await svc.attach(req("c2"))
        assert [e.container_id for e in svc.endpoints(net)] == ["c1"]
        # The reconciler does not look for its bridge.
        assert [a for a in await svc.reconcile() if a.kind == "missing_network"] == []
        await svc.detach("web", "c1", "eth0", None)
        await svc.remove_network("web")
        assert fw.calls == ["sync 0 0"]
        # Restart: the start-up sync leaves it out too.
        await svc.create_network(spec)
        await svc.attach(req(), plumb=False)
        svc.store.close()
        fw2 = RecordingFirewall()
        await ipam_service(tmp_path, fw2).start()
        assert fw2.calls == ["sync 0 0"]

    run(scenario())


def test_ipam_driver_options() -> None:
    driver = IpamOnlyDriver()
    assert driver.validate_options({}) == {"dns": "false"}
    assert driver.validate_options({"dns": "false"}) == {"dns": "false"}
    with pytest.raises(InvalidInput, match=r"invalid options\.dns 'true': netd serves no DNS"):
        driver.validate_options({"dns": "true"})
    with pytest.raises(InvalidInput, match=r"invalid options\.mtu '1400': an IPAM-only network"):
        driver.validate_options({"mtu": "1400"})


def test_plan_links_skips_ipam_only_networks() -> None:
    import ipaddress

    from netd.model import Subnet

    subnets = (Subnet(ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_address("10.1.0.1")),)
    bridged = Network(id="a" * 64, name="b", driver="bridge", subnets=subnets)
    ipam = Network(id="b" * 64, name="i", driver="ipam", subnets=subnets)
    drivers = {"bridge": BridgeDriver(), "ipam": IpamOnlyDriver()}
    expected = expected_from([bridged, ipam], [], lambda net: drivers[net.driver])
    actions = plan_links({}, [bridged, ipam], expected)
    assert [(a.kind, a.network_id) for a in actions] == [("missing_network", bridged.id)]

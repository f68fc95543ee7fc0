"""Reaping endpoints whose namespace is gone for good: the evidence, the two steps, restarts.

``namespace_holders`` reads a fake ``/proc`` tree built here (symlinks read like the kernel's
``net:[N]`` links) and the real one; the service runs with the null driver and a real SQLite
store, its namespace check failing for the paths a test marks as gone.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest
from service_kit import make_service

from netd.drivers.bridge import BridgeDriver
from netd.errors import Conflict, InvalidInput
from netd.model import AttachRequest, Endpoint, Network, NetworkSpec, PortMapping, SubnetRequest
from netd.names import endpoint_tag
from netd.reconcile.reap import namespace_holders
from netd.reconcile.reap_report import status_lines
from netd.service import Service


def _proc(tmp_path: Path, pid: int, net: int, mnt: int, fds: dict[str, str], mounts: str) -> None:
    base = tmp_path / str(pid)
    (base / "task" / str(pid) / "ns").mkdir(parents=True)
    (base / "task" / str(pid) / "ns" / "net").symlink_to(f"net:[{net}]")
    (base / "ns").mkdir()
    (base / "ns" / "mnt").symlink_to(f"mnt:[{mnt}]")
    (base / "fd").mkdir()
    for fd, target in fds.items():
        (base / "fd" / fd).symlink_to(target)
    (base / "mountinfo").write_text(mounts)


MOUNT = "46 45 0:4 net:[{}] /run/netns/{} rw shared:2 - nsfs nsfs rw\n"


def test_holders_are_tasks_open_files_and_bind_mounts(tmp_path: Path) -> None:
    _proc(tmp_path, 1, 10, 500, {"0": "/dev/null"}, MOUNT.format(11, "kept"))
    _proc(tmp_path, 2, 12, 500, {"3": "net:[13]", "4": "socket:[9]"}, MOUNT.format(14, "unseen"))
    _proc(tmp_path, 3, 10, 501, {}, MOUNT.format(15, "other"))
    (tmp_path / "self").mkdir()  # not a pid
    found = namespace_holders({10, 11, 12, 13, 14, 15, 16}, tmp_path)
    assert found[10] == ["task 1 of pid 1 runs in it", "task 3 of pid 3 runs in it"]
    assert found[11] == ["bind-mounted at /run/netns/kept (mount namespace of pid 1)"]
    assert found[12] == ["task 2 of pid 2 runs in it"]
    assert found[13] == ["pid 2 holds it open (fd 3)"]
    assert found[14] == []  # pid 2 shares pid 1's mount namespace: its table was read once
    assert found[15] == ["bind-mounted at /run/netns/other (mount namespace of pid 3)"]
    assert found[16] == []


def test_holders_of_a_live_namespace_on_the_real_proc() -> None:
    own = os.stat("/proc/self/ns/net").st_ino
    found = namespace_holders({own})
    assert f"task {os.getpid()} of pid {os.getpid()} runs in it" in found[own]


class Dns:
    """Records the names each publication carries."""

    def __init__(self) -> None:
        self.served: dict[str, list[str]] = {}

    def set_state(self, networks: list[tuple[Network, list[Endpoint]]]) -> None:
        for net, eps in networks:
            self.update_network(net, eps)

    def update_network(self, network: Network, endpoints: list[Endpoint]) -> None:
        self.served[network.name] = sorted(e.name or "" for e in endpoints)

    def remove_network(self, network_id: str) -> None:
        pass


class Firewall:
    """A firewall that only remembers whose ports it holds."""

    name = "fake"
    capabilities: frozenset[str] = frozenset()

    def __init__(self) -> None:
        self.ports: dict[str, tuple[PortMapping, ...]] = {}

    def ensure_network(self, network: Network, bridge: str) -> None:
        pass

    def remove_network(self, network: Network, bridge: str) -> None:
        pass

    def add_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        self.ports[endpoint.container_id] = endpoint.port_mappings

    def remove_endpoint(self, network: Network, endpoint: Endpoint) -> None:
        self.ports.pop(endpoint.container_id, None)

    def sync(self, networks: Any, endpoints: list[Endpoint]) -> None:
        self.ports = {e.container_id: e.port_mappings for e in endpoints}

    def drift(self) -> Any:
        from netd.firewall.base import Drift

        return Drift()


class World:
    def __init__(self, tmp_path: Path, grace: float = 3600.0) -> None:
        self.tmp_path = tmp_path
        self.gone: set[str] = set()
        self.dns = Dns()
        self.firewall = Firewall()
        self.proc = tmp_path / "proc"
        self.proc.mkdir(exist_ok=True)
        self.svc = self.service(grace)

    def service(self, grace: float) -> Service:
        def validate(path: str, inode: int) -> None:
            if path in self.gone:
                raise InvalidInput("netns", path, "no such file")

        svc = make_service(
            self.tmp_path,
            firewall=self.firewall,
            dns=self.dns,
            validate_netns=validate,
            reap_grace=grace,
        )
        svc.reaper.proc = self.proc
        return svc

    async def attach(
        self, cid: str, port: int, inode: int = 4000, static: tuple[str, ...] = ()
    ) -> Endpoint:
        req = AttachRequest(
            "web",
            cid,
            "eth0",
            f"/run/netns/{cid}",
            name=cid,
            port_mappings=(PortMapping(host_port=port, container_port=80),),
            netns_inode=inode,
            static_ips=static,
        )
        return (await self.svc.attach(req))[1]

    def states(self) -> dict[str, str]:
        net = self.svc.find_network("web")
        return {e.container_id: e.state for e in self.svc.endpoints(net)}


def test_gone_namespace_is_withdrawn_at_once_and_released_after_the_grace(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def scenario() -> None:
        await w.svc.start()
        await w.svc.create_network(
            NetworkSpec(name="web", subnets=(SubnetRequest(subnet="10.62.0.0/24"),))
        )
        dead = await w.attach("dead", 8081, inode=4001)
        await w.attach("live", 8082, inode=4002)
        assert w.dns.served["web"] == ["dead", "live"]
        w.gone.add(dead.netns)
        kinds = [a.kind for a in await w.svc.reconcile()]
        assert [k for k in kinds if k.startswith("netns")] == ["netns_gone"]
        assert w.states() == {"dead": "gone", "live": "ready"}
        assert w.dns.served["web"] == ["live"]  # the name is withdrawn
        assert set(w.firewall.ports) == {"live"}  # and the port
        # The address is kept during the grace: a new container gets another one.
        other = await w.attach("new", 8081)  # the host port is free again
        assert other.addresses != dead.addresses
        with pytest.raises(Conflict):
            await w.attach("thief", 8084, static=("10.62.0.2",))
        status = w.svc.reaper.status(w.svc.list_networks(), w.svc.endpoints)
        [shown] = status["netns_gone"]
        assert shown["container_id"] == "dead" and shown["addresses"] == ["10.62.0.2/24"]
        assert shown["release_at"] == shown["gone_since"] + 3600
        assert "addresses released in 3600 s" in "\n".join(
            status_lines(status, shown["gone_since"])
        )
        assert "netns_gone" not in {a.kind for a in await w.svc.reconcile()}  # reaped once
        # Restart: the reaped record stays reaped (no port, no name) until its grace is over.
        w.svc.store.close()
        w.svc = w.service(3600.0)
        await w.svc.start()
        assert w.states() == {"dead": "gone", "live": "ready", "new": "ready"}
        assert set(w.firewall.ports) == {"live", "new"} and w.dns.served["web"] == ["live", "new"]
        w.svc.store.close()
        w.svc = w.service(0.0)  # grace over
        await w.svc.start()
        assert w.states() == {"live": "ready", "new": "ready"}
        assert "10.62.0.2" not in {
            str(a.ip) for e in w.svc.store.list_endpoints() for a in e.addresses
        }
        third = await w.attach("third", 8083, static=("10.62.0.2",))  # released: free again
        assert third.addresses == dead.addresses

    asyncio.run(scenario())


def test_live_namespace_is_never_reaped(tmp_path: Path) -> None:
    w = World(tmp_path, grace=0.0)
    _proc(w.proc, 9, 4100, 1, {}, "")  # a task still runs in net:[4100]
    _proc(w.proc, 10, 1, 2, {}, MOUNT.format(4101, "elsewhere"))  # net:[4101] bind-mounted

    async def scenario() -> None:
        await w.svc.start()
        net = await w.svc.create_network(
            NetworkSpec(name="web", subnets=(SubnetRequest(subnet="10.63.0.0/24"),))
        )
        eps = [
            await w.attach("run", 9001, inode=4100),
            await w.attach("mnt", 9002, inode=4101),
            await w.attach("veth", 9003, inode=4102),
            await w.attach("noinode", 9004, inode=0),
        ]
        w.gone |= {e.netns for e in eps}
        tagged = {endpoint_tag(net.id, "veth", "eth0"): eps[2].host_ifname}
        driver = w.svc.drivers["bridge"]
        driver.inventory = lambda: tagged  # type: ignore[method-assign]
        # The null driver expects no host link; this one stands in for the bridge's veths.
        driver.endpoint_tags = BridgeDriver().endpoint_tags  # type: ignore[method-assign]
        for _ in range(2):
            assert {a.kind for a in await w.svc.reconcile()} <= {"orphan_link", "missing_network"}
        assert set(w.states().values()) == {"ready"}
        assert set(w.firewall.ports) == {"run", "mnt", "veth", "noinode"}
        held = w.svc.reaper.status(w.svc.list_networks(), w.svc.endpoints)["netns_held"]
        why = {h["container_id"]: h["evidence"] for h in held}
        assert why["run"] == ["task 9 of pid 9 runs in it"]
        assert why["mnt"] == ["bind-mounted at /run/netns/elsewhere (mount namespace of pid 10)"]
        assert why["veth"] == [f"its host interface {eps[2].host_ifname} still exists"]
        assert "no namespace inode was recorded" in why["noinode"][0]
        # A DEL of a held endpoint: it is no longer reported.
        await w.svc.detach("web", "run", "eth0", None)
        await w.svc.reconcile()
        held = w.svc.reaper.status(w.svc.list_networks(), w.svc.endpoints)["netns_held"]
        assert sorted(h["container_id"] for h in held) == ["mnt", "noinode", "veth"]
        # The path comes back (the namespace was mounted again): nothing is held any more.
        w.gone.clear()
        await w.svc.reconcile()
        assert w.svc.reaper.held == {}

    asyncio.run(scenario())


def test_start_up_sweep_reaps_before_serving(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def scenario() -> None:
        await w.svc.start()
        await w.svc.create_network(
            NetworkSpec(name="web", subnets=(SubnetRequest(subnet="10.64.0.0/24"),))
        )
        dead = await w.attach("dead", 8081)
        w.svc.store.close()
        w.gone.add(dead.netns)  # died while the daemon was down (or the host rebooted)
        w.svc = w.service(3600.0)
        await w.svc.start()
        assert w.svc.ready and w.states() == {"dead": "gone"}
        assert w.firewall.ports == {} and w.dns.served["web"] == []
        # A DEL (late, or from GC) releases it at once; so does removing the network.
        await w.svc.detach("web", "dead", "eth0", None)
        assert w.states() == {}

    asyncio.run(scenario())


def test_network_with_only_reaped_endpoints_can_be_removed(tmp_path: Path) -> None:
    w = World(tmp_path)

    async def scenario() -> None:
        await w.svc.start()
        await w.svc.create_network(
            NetworkSpec(name="web", subnets=(SubnetRequest(subnet="10.65.0.0/24"),))
        )
        dead = await w.attach("dead", 8081)
        w.gone.add(dead.netns)
        await w.svc.reconcile()
        assert w.states() == {"dead": "gone"}
        await w.svc.remove_network("web")
        assert w.svc.list_networks() == [] and w.svc.store.list_endpoints() == []

    asyncio.run(scenario())


def test_status_lines_without_anything_gone() -> None:
    lines = status_lines({"reap_grace": 60.0, "netns_gone": [], "netns_held": []}, time.time())
    assert lines == ["gone:      0 endpoint(s) whose namespace is gone (reap_grace 60.0 s)"]

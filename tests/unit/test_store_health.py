"""A store that cannot write (EIO injected at ``store.write``): health, status and detach.

The namespace tests (tests/ns/test_store_faults.py) fill a real tmpfs; these drive the same
code paths with an I/O error, on a real SQLite store with the null driver, without root.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import network
from service_kit import make_service

from netd import faults
from netd.cni.handler import handle_cni
from netd.core.dns_publish import NullDns
from netd.drivers.null import NullDriver
from netd.errors import Conflict, StoreError
from netd.model import AttachRequest, Endpoint, Network, NetworkSpec, SubnetRequest
from netd.service import Service
from netd.store.sqlite import SqliteStore


class RecordingDns(NullDns):
    """A DNS sink that keeps the names it was last told to serve, per network."""

    def __init__(self) -> None:
        self.names: dict[str, set[str]] = {}

    def set_state(self, networks: list[tuple[Network, list[Endpoint]]]) -> None:
        for net, eps in networks:
            self.update_network(net, eps)

    def update_network(self, network: Network, endpoints: list[Endpoint]) -> None:
        self.names[network.id] = {e.name for e in endpoints if e.name}

    def remove_network(self, network_id: str) -> None:
        self.names.pop(network_id, None)


@pytest.fixture(autouse=True)
def disarm() -> Iterator[None]:
    yield
    faults.arm("")


async def attached(tmp_path: Path) -> tuple[Service, NullDriver, RecordingDns, Network]:
    driver, dns = NullDriver(), RecordingDns()
    svc = make_service(tmp_path, driver, dns=dns)
    await svc.start()
    net = await svc.create_network(
        NetworkSpec(name="web", subnets=(SubnetRequest(subnet="10.90.0.0/24"),))
    )
    req = AttachRequest(
        network="web", container_id="c1", ifname="eth0", netns="/run/netns/c1", name="api"
    )
    await svc.attach(req)
    return svc, driver, dns, net


def teardowns(driver: NullDriver) -> int:
    return sum(1 for method, _ in driver.calls if method == "teardown_endpoint")


def on_disk(path: Path) -> dict[str, str]:
    with SqliteStore(path) as store:
        return {e.container_id: e.state for e in store.list_endpoints()}


def test_health_follows_writes(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "netd.db") as store:
        assert store.probe().ok
        faults.arm("store.write=eio@*")
        report = store.probe()
        assert not report.ok and report.since > 0
        assert report.reason.startswith(f"{tmp_path / 'netd.db'}: Input/output error")
        assert report.reason.endswith("(errno 5)")
        net = network("n", [], id="a" * 64, created=1.0)
        with pytest.raises(StoreError, match="Input/output error"):
            store.create_network(net)
        assert store.list_networks() == []  # reads still work; nothing was written
        faults.arm("")
        assert store.probe().ok
        store.create_network(net)
        # A refusal by the store's own rules is not a disk problem.
        with pytest.raises(Conflict):
            store.create_network(net)
        assert store.health.report().ok


def test_status_reports_a_store_that_cannot_write(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, *_ = await attached(tmp_path)
        await svc.status()
        faults.arm("store.write=eio@*")
        with pytest.raises(StoreError, match=r"cannot write: .*Input/output error"):
            await svc.status()
        conf = {"cniVersion": "1.1.0", "name": "web", "type": "netd"}
        call = {"command": "STATUS", "config": conf}
        code, err = await handle_cni(call, svc)
        assert code == 1 and err["code"] == 51, err
        assert "cannot write" in err["msg"], err
        faults.arm("")
        await svc.status()
        assert await handle_cni(call, svc) == (0, {})

    asyncio.run(scenario())


def test_detach_that_cannot_record_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, driver, dns, net = await attached(tmp_path)
        faults.arm("store.write=eio@*")
        with pytest.raises(StoreError, match="Input/output error"):
            await svc.detach("web", "c1", "eth0", None)
        assert teardowns(driver) == 0  # the kernel was not touched
        assert [e.state for e in svc.endpoints(net)] == ["ready"]
        assert dns.names[net.id] == {"api"}
        faults.arm("")
        assert on_disk(tmp_path / "netd.db") == {"c1": "ready"}
        await svc.detach("web", "c1", "eth0", None)  # the retry succeeds
        assert teardowns(driver) == 1
        assert svc.endpoints(net) == [] and dns.names[net.id] == set()
        assert on_disk(tmp_path / "netd.db") == {}
        assert svc.utilisation(net)["10.90.0.0/24"][0] == 0

    asyncio.run(scenario())


def test_detach_whose_record_cannot_be_deleted_is_finished_later(tmp_path: Path) -> None:
    """Marked ``deleting``, torn down, then the delete fails: the name is gone, the address kept
    until the record goes; the reconciler finishes it once the store can write."""

    async def scenario() -> None:
        svc, driver, dns, net = await attached(tmp_path)
        faults.arm("store.write=eio@2")  # the 1st write (the mark) succeeds, the 2nd fails
        with pytest.raises(StoreError):
            await svc.detach("web", "c1", "eth0", None)
        assert teardowns(driver) == 1
        assert [e.state for e in svc.endpoints(net)] == ["deleting"]
        assert dns.names[net.id] == set()
        assert svc.utilisation(net)["10.90.0.0/24"][0] == 1
        assert on_disk(tmp_path / "netd.db") == {"c1": "deleting"}
        await svc.reconcile()
        assert svc.endpoints(net) == []
        assert on_disk(tmp_path / "netd.db") == {}
        assert svc.utilisation(net)["10.90.0.0/24"][0] == 0

    asyncio.run(scenario())


def test_retried_detach_and_restart_finish_a_deleting_record(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, _, _, net = await attached(tmp_path)
        req = AttachRequest(network="web", container_id="c2", ifname="eth0", netns="/run/netns/c2")
        await svc.attach(req)
        faults.arm("store.write=eio@2")
        with pytest.raises(StoreError):
            await svc.detach("web", "c1", "eth0", None)
        faults.arm("")
        await svc.detach("web", "c1", "eth0", None)  # a retried DEL finishes it
        assert [e.container_id for e in svc.endpoints(net)] == ["c2"]
        faults.arm("store.write=eio@2")
        with pytest.raises(StoreError):
            await svc.detach("web", "c2", "eth0", None)
        faults.arm("")
        svc.store.close()
        again = make_service(tmp_path, NullDriver())
        await again.start()  # the next start finishes it
        assert again.endpoints(again.find_network("web")) == []
        assert on_disk(tmp_path / "netd.db") == {}

    asyncio.run(scenario())

"""The service's orchestration over a real SQLite store and the NullDriver (no root)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from service_kit import make_service

from netd.drivers.null import NullDriver
from netd.errors import Conflict, InvalidInput, KernelError, NotFound
from netd.model import AttachRequest, NetworkSpec, SubnetRequest


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def spec(name: str, subnet: str | None = None, **kw: object) -> NetworkSpec:
    subnets = (SubnetRequest(subnet=subnet),) if subnet else ()
    return NetworkSpec(name=name, subnets=subnets, **kw)  # type: ignore[arg-type]


def attach_req(net: str, cid: str, ifname: str = "eth0", **kw: object) -> AttachRequest:
    return AttachRequest(
        network=net, container_id=cid, ifname=ifname, netns=f"/run/netns/{cid}", **kw
    )  # type: ignore[arg-type]


def test_create_attach_detach_persist(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = make_service(tmp_path)
        await svc.start()
        net = await svc.create_network(spec("web", "10.90.0.0/24"))
        _, ep = await svc.attach(attach_req("web", "c1"))
        assert [str(a) for a in ep.addresses] == ["10.90.0.2/24"]
        assert ep.state == "ready"
        _, ep2 = await svc.attach(attach_req("web", "c2"))
        assert str(ep2.addresses[0]) == "10.90.0.3/24"
        await svc.detach("web", "c1", "eth0", None)
        await svc.detach("web", "c1", "eth0", None)  # idempotent
        # round-robin: the released .2 is not reused at once
        _, ep3 = await svc.attach(attach_req("web", "c3"))
        assert str(ep3.addresses[0]) == "10.90.0.4/24"
        svc.store.close()
        # restart: state and cursor survive
        svc2 = make_service(tmp_path)
        await svc2.start()
        assert svc2.find_network("web").id == net.id
        assert {e.container_id for e in svc2.endpoints(net)} == {"c2", "c3"}
        _, ep4 = await svc2.attach(attach_req("web", "c4"))
        assert str(ep4.addresses[0]) == "10.90.0.5/24"

    run(scenario())


def test_attach_twice_is_conflict_ipam_only_is_idempotent(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = make_service(tmp_path)
        await svc.start()
        await svc.create_network(spec("web"))
        await svc.attach(attach_req("web", "c1", origin="cni"))
        with pytest.raises(
            Conflict, match="already attached"
        ):  # CNI ADD twice (API: test_attachments)
            await svc.attach(attach_req("web", "c1", origin="cni"))
        _, a = await svc.attach(attach_req("web", "c9"), plumb=False)
        _, b = await svc.attach(attach_req("web", "c9"), plumb=False)
        assert a.addresses == b.addresses

    run(scenario())


def test_failure_rolls_back_allocation_and_record(tmp_path: Path) -> None:
    async def scenario() -> None:
        driver = NullDriver()
        svc = make_service(tmp_path, driver)
        await svc.start()
        net = await svc.create_network(spec("web", "10.90.0.0/24"))
        driver.failures["setup_endpoint"] = KernelError("creating veth: boom")
        with pytest.raises(KernelError):
            await svc.attach(attach_req("web", "c1"))
        assert svc.endpoints(net) == []
        assert svc.store.list_endpoints(net.id) == []
        assert svc.utilisation(net)["10.90.0.0/24"][0] == 0
        del driver.failures["setup_endpoint"]
        _, ep = await svc.attach(attach_req("web", "c1"))
        assert ep.state == "ready"

    run(scenario())


def test_bad_input_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = make_service(tmp_path)
        await svc.start()
        await svc.create_network(spec("web", "10.90.0.0/24"))
        with pytest.raises(InvalidInput) as err:
            await svc.attach(attach_req("web", "c1", static_ips=("10.77.0.5",)))
        assert "10.77.0.5" in str(err.value)
        with pytest.raises(InvalidInput):
            await svc.attach(attach_req("web", "bad id!"))
        with pytest.raises(InvalidInput):
            await svc.attach(attach_req("web", "c1", ifname="x" * 16))
        with pytest.raises(NotFound):
            await svc.attach(attach_req("nope", "c1"))
        with pytest.raises(InvalidInput):
            await svc.create_network(spec("bad name"))
        with pytest.raises(Conflict, match='"web"'):
            await svc.create_network(spec("other", "10.90.0.128/25"))
        assert [n.name for n in svc.list_networks()] == ["web"]
        assert svc.store.list_endpoints() == []

    run(scenario())


def test_remove_with_endpoints_refused_and_prune(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = make_service(tmp_path)
        await svc.start()
        await svc.create_network(spec("a"))
        await svc.create_network(spec("b"))
        await svc.attach(attach_req("a", "c1"))
        with pytest.raises(Conflict, match="active endpoints"):
            await svc.remove_network("a")
        assert await svc.prune() == ["b"]
        assert [n.name for n in svc.list_networks()] == ["a"]

    run(scenario())


def test_200_concurrent_attaches_no_duplicates(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = make_service(tmp_path)
        await svc.start()
        for i in range(5):
            await svc.create_network(spec(f"n{i}"))
        results = await asyncio.gather(
            *(svc.attach(attach_req(f"n{i % 5}", f"c{i}")) for i in range(200))
        )
        by_net: dict[str, set[str]] = {}
        for net, ep in results:
            by_net.setdefault(net.name, set()).add(str(ep.addresses[0].ip))
        assert all(len(v) == 40 for v in by_net.values())
        stored = svc.store.list_endpoints()
        assert len(stored) == 200
        addrs = [(e.network_id, str(a)) for e in stored for a in e.addresses]
        assert len(addrs) == len(set(addrs))
        await asyncio.gather(*(svc.detach(f"n{i % 5}", f"c{i}", "eth0", None) for i in range(200)))
        assert svc.store.list_endpoints() == []

    run(scenario())


def test_gc_only_collects_cni_attachments(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = make_service(tmp_path)
        await svc.start()
        await svc.create_network(spec("web"))
        await svc.attach(attach_req("web", "keep", origin="cni"))
        await svc.attach(attach_req("web", "stale", origin="cni"))
        await svc.attach(attach_req("web", "manual", origin="api"))
        removed = await svc.gc("web", {("keep", "eth0")})
        assert removed == [("stale", "eth0")]
        left = {e.container_id for e in svc.endpoints(svc.find_network("web"))}
        assert left == {"keep", "manual"}

    run(scenario())


def test_interrupted_attach_is_undone_at_start(tmp_path: Path) -> None:
    async def scenario() -> None:
        from netd import faults

        driver = NullDriver()
        svc = make_service(tmp_path, driver)
        await svc.start()
        net = await svc.create_network(spec("web", "10.90.0.0/24"))
        faults.arm("service.plumbed=raise")
        try:
            with pytest.raises(faults.InjectedFault):
                await svc.attach(attach_req("web", "c1"))
        finally:
            faults.arm("")
        assert svc.store.list_endpoints(net.id) == []
        assert "teardown_endpoint" in [c[0] for c in driver.calls]

    run(scenario())


class SlowDriver(NullDriver):
    """Plumbing that takes a while, so requests overlap."""

    def setup_endpoint(self, network, endpoint):  # type: ignore[no-untyped-def]
        import time as _time

        _time.sleep(0.2)
        return super().setup_endpoint(network, endpoint)


def test_same_attachment_twice_at_once_is_try_again(tmp_path: Path) -> None:
    from netd.errors import Unavailable

    async def scenario() -> None:
        svc = make_service(tmp_path, SlowDriver())
        await svc.start()
        await svc.create_network(spec("web", "10.90.0.0/24"))
        results = await asyncio.gather(
            svc.attach(attach_req("web", "c1")),
            svc.attach(attach_req("web", "c1")),
            svc.attach(attach_req("web", "c2")),
            return_exceptions=True,
        )
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1 and isinstance(errors[0], Unavailable), results
        assert "try again" in str(errors[0])
        assert {e.container_id for e in svc.store.list_endpoints()} == {"c1", "c2"}
        # a detach racing nothing succeeds; the address is released after teardown
        await svc.detach("web", "c1", "eth0", None)
        assert {e.container_id for e in svc.store.list_endpoints()} == {"c2"}

    run(scenario())


def test_mtu_below_ipv6_minimum_is_refused_before_the_kernel(tmp_path: Path) -> None:
    # Found by the API fuzzer: mtu 68 with IPv6 made the bridge, then the kernel refused the
    # IPv6 gateway address (EINVAL) and the API answered 500.
    async def scenario() -> None:
        svc = make_service(tmp_path)
        await svc.start()
        with pytest.raises(InvalidInput) as err:
            await svc.create_network(NetworkSpec(name="v6", ipv6=True, options={"mtu": "68"}))
        assert err.value.field == "options.mtu" and "1280" in str(err.value)
        assert svc.list_networks() == []
        await svc.create_network(NetworkSpec(name="v4", options={"mtu": "68"}))
        await svc.create_network(NetworkSpec(name="v6", ipv6=True, options={"mtu": "1280"}))

    run(scenario())

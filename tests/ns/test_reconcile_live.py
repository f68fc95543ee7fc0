"""Periodic reconciliation against real tampering: a running daemon repairs what others break.

The daemon runs with ``reconcile_interval = 0.5``; the test breaks the kernel behind its back
with ``ip`` (an address deleted inside a container, a host veth deleted, the bridge deleted, a
namespace deleted) and checks from the kernel and with real pings that it heals: same address,
same MAC. A deleted namespace is not "repaired": its endpoint is reaped (netd.reconcile.reap), its
allocation kept for the grace period.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from netns_fixtures import Namespace, Sandbox, delete_namespace
from netns_fixtures import wait_for as fixtures_wait_for
from netns_fixtures.daemon import Daemon

NET = {"name": "heal", "subnets": [{"subnet": "10.131.0.0/24"}]}
GATEWAY = "10.131.0.1"
INTERVAL = 0.5


def wait_for(what: str, check: Callable[[], bool]) -> float:
    """Seconds until ``check()`` held (the repair), within a few reconcile intervals."""
    return fixtures_wait_for(what, check, timeout=8 * INTERVAL, step=0.1)


@pytest.fixture
def healing(host: Namespace) -> Iterator[Daemon]:
    d = Daemon(host)
    d.config_path().write_text(f"reconcile_interval = {INTERVAL}\n")
    d.start()
    try:
        yield d
    finally:
        d.close_checked()


def connect(d: Daemon, c: Namespace) -> dict[str, object]:
    status, ep = d.request("POST", "/v1/networks/heal/connect", {"netns": c.path})
    assert status == 201, ep
    return dict(ep)


def healthy(c: Namespace, ep: dict[str, object]) -> Callable[[], bool]:
    def check() -> bool:
        # The repair deletes and re-creates eth0: it may vanish between two reads, which is
        # "not healthy yet", not a failure.
        try:
            links = c.links()
            return (
                "eth0" in links
                and c.addresses("eth0") == ep["addresses"]
                and links["eth0"]["address"] == ep["mac"]
                and c.ping(GATEWAY, timeout=1)
            )
        except RuntimeError:  # `ip` failed: the link is gone right now
            return False

    return check


def test_repairs_address_veth_and_bridge(
    healing: Daemon, host: Namespace, sandbox: Sandbox
) -> None:
    d = healing
    assert d.request("POST", "/v1/networks", NET)[0] == 201
    c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
    ep1, ep2 = connect(d, c1), connect(d, c2)
    assert healthy(c1, ep1)() and healthy(c2, ep2)()

    c1.run("ip", "addr", "del", str(ep1["addresses"][0]), "dev", "eth0")  # type: ignore[index]
    assert not c1.ping(GATEWAY, timeout=1)
    took = [wait_for("address deleted in the container", healthy(c1, ep1))]

    # (The link-event watcher may repair it before the next line runs: no "broken" assertion.)
    host.run("ip", "link", "del", str(ep1["host_ifname"]))
    took.append(wait_for("host veth deleted", healthy(c1, ep1)))

    _, nets = d.request("GET", "/v1/networks")
    host.run("ip", "link", "del", nets[0]["bridge"])
    took.append(wait_for("bridge deleted", lambda: healthy(c1, ep1)() and healthy(c2, ep2)()))
    print("repaired in (s):", [round(t, 2) for t in took])

    log = d.log()
    assert "reconcile: re-plumbing" in log and "reconcile: re-creating the bridge" in log
    # Nothing was re-allocated: the records still hold exactly the first addresses.
    _, info = d.request("GET", "/v1/networks/heal")
    assert sorted(e["addresses"][0] for e in info["endpoints"]) == sorted(
        [ep1["addresses"][0], ep2["addresses"][0]]  # type: ignore[index]
    )


def test_deleted_namespace_is_reaped_not_repaired_and_keeps_its_address(
    healing: Daemon, host: Namespace, sandbox: Sandbox
) -> None:
    d = healing
    assert d.request("POST", "/v1/networks", NET)[0] == 201
    c1 = sandbox.add_ns("c1")
    ep = connect(d, c1)
    sandbox.namespaces.remove(c1)
    delete_namespace(c1.name)
    time.sleep(4 * INTERVAL)
    _, info = d.request("GET", "/v1/networks/heal")
    assert [(e["addresses"], e["state"]) for e in info["endpoints"]] == [(ep["addresses"], "gone")]
    assert d.log().count("is gone for good") == 1
    # A new attach does not get the kept address (grace: 60 s); the runtime's DEL releases it.
    c2 = sandbox.add_ns("c2")
    assert connect(d, c2)["addresses"] != ep["addresses"]
    status, _ = d.request(
        "POST", "/v1/networks/heal/disconnect", {"container_id": ep["container_id"]}
    )
    assert status == 200
    _, info = d.request("GET", "/v1/networks/heal")
    assert len(info["endpoints"]) == 1


def test_namespace_replaced_at_the_same_path_is_never_touched(
    healing: Daemon, host: Namespace, sandbox: Sandbox
) -> None:
    # The path outlives the namespace it led to (as /proc/<pid>/ns/net does when a pid is
    # reused): the endpoint is pinned to the namespace it was plumbed in, so neither the
    # reconciler nor DEL configures or deletes anything in the newcomer.
    d = healing
    assert d.request("POST", "/v1/networks", NET)[0] == 201
    c1 = sandbox.add_ns("c1")
    ep = connect(d, c1)
    delete_namespace(c1.name)
    subprocess.run(["ip", "netns", "add", c1.name], check=True)  # another namespace, same path
    c1.run("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    time.sleep(4 * INTERVAL)
    assert sorted(c1.links()) == ["eth0", "eth1", "lo"]
    assert c1.addresses("eth0") == []  # no address of the endpoint was put there
    assert d.log().count("is gone for good") == 1
    status, _ = d.request(
        "POST", "/v1/networks/heal/disconnect", {"container_id": ep["container_id"]}
    )
    assert status == 200
    assert sorted(c1.links()) == ["eth0", "eth1", "lo"]  # the newcomer's veth is left alone
    _, info = d.request("GET", "/v1/networks/heal")
    assert info["endpoints"] == []

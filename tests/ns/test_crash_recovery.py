"""SIGKILL the daemon at named points of create/connect/disconnect/remove; restart; check.

Invariants read from the kernel and the API after the restart: every netd-tagged link is owned by
a record, no address is held twice, and retrying the interrupted operation succeeds.
"""

from __future__ import annotations

import pytest
from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon

SUBNET = {"name": "crash", "subnets": [{"subnet": "10.130.0.0/24"}]}


def tagged_links(host: Namespace) -> dict[str, str]:
    """ifalias → name of netd-tagged links, read with `ip -d link` (not via netd)."""
    return {
        link["ifalias"]: name
        for name, link in host.links().items()
        if str(link.get("ifalias", "")).startswith("netd:")
    }


def check_invariants(daemon: Daemon, host: Namespace) -> None:
    _, nets = daemon.request("GET", "/v1/networks")
    owned_bridges = {n["bridge"] for n in nets}
    owned_veths = set()
    addresses: list[str] = []
    for n in nets:
        _, info = daemon.request("GET", f"/v1/networks/{n['name']}")
        for ep in info["endpoints"]:
            owned_veths.add(ep["host_ifname"])
            addresses += ep["addresses"]
            assert ep["state"] == "ready"
    for tag, name in tagged_links(host).items():
        assert name in owned_bridges | owned_veths, f"orphan {name} ({tag}) after restart"
    assert len(addresses) == len(set(addresses))


def restart(daemon: Daemon) -> Daemon:
    daemon.stop(9)
    daemon.env = {}
    return daemon.start()


@pytest.mark.parametrize("point", ["service.network_plumbed"])
def test_kill_during_network_create(host: Namespace, point: str) -> None:
    d = Daemon(host, env={"NETD_FAULTS": f"{point}=kill"}).start()
    try:
        with pytest.raises(OSError):
            d.request("POST", "/v1/networks", SUBNET)
        assert tagged_links(host), "the fault point should come after the bridge exists"
        restart(d)
        check_invariants(d, host)
        assert not tagged_links(host)
        assert d.request("POST", "/v1/networks", SUBNET)[0] == 201
    finally:
        d.close()


@pytest.mark.parametrize(
    "point",
    [
        "service.recorded",
        "bridge.veth_created",
        "bridge.addresses_added",
        "service.plumbed",
        "service.firewalled",
        "store.put_endpoint@2",
    ],
)
def test_kill_during_connect(host: Namespace, sandbox: Sandbox, point: str) -> None:
    name, _, nth = point.partition("@")
    d = Daemon(host, firewall="nftables").start()
    c = sandbox.add_ns("c")
    try:
        assert d.request("POST", "/v1/networks", SUBNET)[0] == 201
        d.stop()
        d.env = {"NETD_FAULTS": f"{name}=kill@{nth or 1}"}
        d.start()
        with pytest.raises(OSError):
            d.request("POST", "/v1/networks/crash/connect", {"netns": c.path})
        restart(d)
        check_invariants(d, host)
        status, ep = d.request("POST", "/v1/networks/crash/connect", {"netns": c.path})
        assert status == 201, ep
        assert c.addresses("eth0") == ep["addresses"]
        check_invariants(d, host)
    finally:
        d.close()


@pytest.mark.parametrize("point", ["service.endpoint_torn_down", "service.network_unrecorded"])
def test_kill_during_teardown(host: Namespace, sandbox: Sandbox, point: str) -> None:
    d = Daemon(host).start()
    c = sandbox.add_ns("c")
    try:
        assert d.request("POST", "/v1/networks", SUBNET)[0] == 201
        assert d.request("POST", "/v1/networks/crash/connect", {"netns": c.path})[0] == 201
        d.stop()
        d.env = {"NETD_FAULTS": f"{point}=kill"}
        d.start()
        with pytest.raises(OSError):
            d.request("POST", "/v1/networks/crash/disconnect", {"netns": c.path})
            d.request("DELETE", "/v1/networks/crash")
        restart(d)
        check_invariants(d, host)
        # Retrying the teardown succeeds (idempotent), and nothing is left.
        d.request("POST", "/v1/networks/crash/disconnect", {"netns": c.path})
        d.request("DELETE", "/v1/networks/crash")
        assert not tagged_links(host)
    finally:
        d.close()


def test_lost_database_is_not_taken_for_orphans(host: Namespace, sandbox: Sandbox) -> None:
    """A deleted netd.db must not make the next start delete live containers' links."""
    d = Daemon(host).start()
    c = sandbox.add_ns("c")
    try:
        assert d.request("POST", "/v1/networks", SUBNET)[0] == 201
        assert d.request("POST", "/v1/networks/crash/connect", {"netns": c.path})[0] == 201
        d.stop()
        before = tagged_links(host)
        for suffix in ("", "-wal", "-shm"):
            (d.state_dir / f"netd.db{suffix}").unlink(missing_ok=True)
        with pytest.raises(RuntimeError, match="netd recover"):
            d.start(timeout=10)
        assert tagged_links(host) == before  # nothing deleted
        assert c.ping("10.130.0.1")  # the container still reaches its gateway
    finally:
        d.close()

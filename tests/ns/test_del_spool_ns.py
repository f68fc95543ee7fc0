"""A CNI DEL that arrives while the daemon is down must not leak (issue #13, section 2).

The runtimes' sequence, replayed with the installed plugin (compiled C client and Python
launcher): a container with a published port and a DNS name is attached; the daemon stops; the
runtime sends DEL (Podman ignores a failed DEL and never retries, containerd logs it and moves on,
neither sends GC) and removes the namespace, or not; the daemon starts again. Read back from the
kernel and real clients, not from netd: no veth left (``ip -j``), no nftables element of the port
(``nft -j``), no DNS answer (``dig``), and the address and the host port can be taken again.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cni_runtime import REFERENCE_DIR, Runtime
from netns_fixtures import Namespace, Sandbox, delete_namespace, wait_for
from netns_fixtures.daemon import Daemon
from reap_kit import CONF, add_pod, dig, port_conf, publishes

from netd.cni.install import install_plugin


class World:
    """A daemon (nftables, DNS), the installed plugin and a probe container for DNS queries."""

    def __init__(self, host: Namespace, sandbox: Sandbox, bin_dir: Path, client: str) -> None:
        install_plugin(bin_dir, client=client)  # type: ignore[arg-type]
        self.host, self.sandbox = host, sandbox
        self.daemon = Daemon(host, firewall="nftables").start()
        self.rt = Runtime(host, [bin_dir], self.daemon.socket)
        self.probe = sandbox.add_ns("probe")
        assert self.add(self.probe, CONF, "probe").code == 0

    def add(self, ns: Namespace, conf: dict[str, Any], name: str, args: str = "") -> Any:
        return add_pod(self.rt, ns, conf, name, args)

    def spooled(self) -> list[str]:
        directory = Path(f"{self.daemon.socket}.del-spool")
        return sorted(p.name for p in directory.iterdir() if p.is_file())


@pytest.fixture(params=["c", "python"])
def world(
    request: pytest.FixtureRequest, host: Namespace, sandbox: Sandbox, tmp_path: Path
) -> Iterator[World]:
    w = World(host, sandbox, tmp_path / "bin", request.param)
    try:
        yield w
    finally:
        w.daemon.close_checked()


@pytest.mark.parametrize("sequence", ["podman", "containerd"])
def test_del_while_daemon_down_is_replayed_at_start(world: World, sequence: str) -> None:
    w, host = world, world.host
    c1 = w.sandbox.add_ns("c1")
    res = w.add(c1, port_conf(8081), "web1")
    assert res.code == 0, res.out
    address = res.out["ips"][0]["address"]
    host_if = next(i["name"] for i in res.out["interfaces"] if not i.get("sandbox"))
    assert host_if in host.links() and publishes(host, 8081)
    assert dig(w.probe, "web1") == [address.split("/")[0]]

    assert w.daemon.stop() == 0
    if sequence == "podman":
        # `podman rm -f`: DEL with the namespace path, then the namespace is removed.
        res = w.rt.exec("netd", "DEL", port_conf(8081), container_id=c1.name, netns=c1.path)
        w.sandbox.namespaces.remove(c1)
        delete_namespace(c1.name)
    else:
        # containerd after the sandbox exited: the namespace is already gone, CNI_NETNS empty.
        w.sandbox.namespaces.remove(c1)
        delete_namespace(c1.name)
        res = w.rt.exec("netd", "DEL", CONF, container_id=c1.name, netns="")
    assert (res.code, res.out) == (0, None), (res.out, res.err)
    assert len(w.spooled()) == 1 and "recorded in" in res.err

    w.daemon.start()
    assert w.spooled() == []
    assert "replayed spooled DEL of " + c1.name in w.daemon.log()
    assert host_if not in host.links()
    assert not publishes(host, 8081)
    assert dig(w.probe, "web1") == []
    _, net = w.daemon.request("GET", "/v1/networks/spool")
    assert [e["container_id"] for e in net["endpoints"]] == [w.probe.name]
    # The address and the host port are free again; a reused name resolves to one address.
    c2 = w.sandbox.add_ns("c2")
    again = w.add(c2, port_conf(8081), "web1", f";IP={address.split('/')[0]}")
    assert again.code == 0, again.out
    assert again.out["ips"][0]["address"] == address and publishes(host, 8081)
    assert dig(w.probe, "web1") == [address.split("/")[0]]


def test_del_with_live_namespace_tears_down_the_veth_at_replay(world: World) -> None:
    # The runtime sent DEL but kept the namespace: the replay removes the interfaces itself.
    w, host = world, world.host
    c1 = w.sandbox.add_ns("c1")
    res = w.add(c1, port_conf(8085), "web5")
    assert res.code == 0, res.out
    w.daemon.stop()
    res = w.rt.exec("netd", "DEL", CONF, container_id=c1.name, netns=c1.path)
    assert (res.code, res.out) == (0, None), res.err
    assert "eth0" in c1.links()  # nothing could happen while the daemon was down
    w.daemon.start()
    assert "eth0" not in c1.links()
    assert not publishes(host, 8085) and dig(w.probe, "web5") == []


def test_stale_spooled_del_never_removes_a_newer_attachment(world: World) -> None:
    # Container ids are reused (`podman restart` keeps it): DEL (spooled), then DEL and ADD once
    # the daemon is back. A record replayed after that ADD must not undo it.
    w = world
    c1 = w.sandbox.add_ns("c1")
    assert w.add(c1, CONF, "web6").code == 0
    w.daemon.stop()
    res = w.rt.exec("netd", "DEL", CONF, container_id=c1.name, netns=c1.path)
    assert res.code == 0
    # Hide the record from the start-up replay, as if the plugin wrote it a moment too late.
    directory = Path(f"{w.daemon.socket}.del-spool")
    [name] = w.spooled()
    os.rename(directory / name, directory.parent / name)
    w.daemon.start()
    assert w.rt.exec("netd", "DEL", CONF, container_id=c1.name, netns=c1.path).code == 0
    assert w.add(c1, CONF, "web6").code == 0  # the re-created attachment
    os.rename(directory.parent / name, directory / name)
    wait_for("the late record is looked at", lambda: w.spooled() == [], timeout=15)
    assert "dropped: the attachment was made again" in w.daemon.log()
    assert "eth0" in c1.links() and dig(w.probe, "web6") != []


def test_malformed_spool_record_does_not_stop_the_daemon(world: World) -> None:
    w = world
    w.daemon.stop()
    directory = Path(f"{w.daemon.socket}.del-spool")
    directory.mkdir(mode=0o700, exist_ok=True)
    (directory / "0001-1.json").write_text("{not json")
    w.daemon.start()
    assert w.spooled() == []
    assert (directory / "rejected" / "0001-1.json").exists()
    assert "unusable record" in w.daemon.log()


@pytest.mark.skipif(not (REFERENCE_DIR / "bridge").exists(), reason="containernetworking-plugins")
def test_reference_bridge_with_netd_ipam_del_while_down(
    host: Namespace, sandbox: Sandbox, tmp_path: Path
) -> None:
    # Another main plugin delegates addressing to netd: its DEL calls netd's IPAM DEL, which
    # must succeed (spooled) or the reference bridge plugin fails its own DEL too.
    install_plugin(tmp_path / "bin")
    d = Daemon(host).start()
    try:
        rt = Runtime(host, [tmp_path / "bin", REFERENCE_DIR], d.socket)
        conf = {
            "cniVersion": "1.0.0",
            "name": "refspool",
            "type": "bridge",
            "bridge": "refbr1",
            "isGateway": True,
            "ipam": {"type": "netd", "ranges": [[{"subnet": "10.153.0.0/24"}]]},
        }
        c1 = sandbox.add_ns("c1")
        res = rt.exec("bridge", "ADD", conf, container_id=c1.name, netns=c1.path)
        assert res.code == 0, (res.out, res.err)
        address = res.out["ips"][0]["address"]
        d.stop()
        res = rt.exec("bridge", "DEL", conf, container_id=c1.name, netns=c1.path)
        assert res.code == 0, (res.out, res.err)
        assert "eth0" not in c1.links()  # the bridge plugin did its part
        d.start()
        _, net = d.request("GET", "/v1/networks/refspool")
        assert net["endpoints"] == []
        c2 = sandbox.add_ns("c2")
        res = rt.exec(
            "bridge",
            "ADD",
            conf,
            container_id=c2.name,
            netns=c2.path,
            args=f"IgnoreUnknown=1;IP={address[:-3]}",
        )
        assert res.code == 0 and res.out["ips"][0]["address"] == address, res.out
        assert rt.exec("bridge", "DEL", conf, container_id=c2.name, netns=c2.path).code == 0
        host.run("ip", "link", "del", "refbr1")
    finally:
        d.close_checked()

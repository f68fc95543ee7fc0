"""The CNI plugin executable driven like a runtime, against a real daemon in a sandbox.

Assertions read the kernel back with `ip -j` inside the namespaces and send real pings; they do
not ask netd.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cni_runtime import REFERENCE_DIR, Runtime
from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon

from netd.cni.install import install_plugin

NET = {
    "cniVersion": "1.0.0",
    "name": "cninet",
    "type": "netd",
    "ipam": {"ranges": [[{"subnet": "10.96.0.0/24"}]]},
}


@pytest.fixture
def runtime(daemon: Daemon, host: Namespace, tmp_path: Path) -> Iterator[Runtime]:
    bin_dir = tmp_path / "bin"
    install_plugin(bin_dir)
    yield Runtime(host, [bin_dir, REFERENCE_DIR], daemon.socket)


def add(rt: Runtime, ns: Namespace, conf: dict = NET, ifname: str = "eth0", **kw: object):  # type: ignore[no-untyped-def,type-arg]
    return rt.exec("netd", "ADD", conf, container_id=ns.name, netns=ns.path, ifname=ifname, **kw)  # type: ignore[arg-type]


def test_two_containers_ping_each_other_and_gateway(runtime: Runtime, sandbox: Sandbox) -> None:
    c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
    r1, r2 = add(runtime, c1), add(runtime, c2)
    assert r1.code == 0, r1.out
    assert r1.out["cniVersion"] == "1.0.0"
    ip1 = r1.out["ips"][0]["address"].split("/")[0]
    ip2 = r2.out["ips"][0]["address"].split("/")[0]
    assert r1.out["ips"][0]["gateway"] == "10.96.0.1"
    assert c1.addresses("eth0") == [r1.out["ips"][0]["address"]]
    sandbox_ifaces = [i for i in r1.out["interfaces"] if i.get("sandbox")]
    assert sandbox_ifaces[0]["name"] == "eth0" and sandbox_ifaces[0]["sandbox"] == c1.path
    assert c1.links()["eth0"]["address"] == sandbox_ifaces[0]["mac"]
    assert c1.ping(ip2) and c2.ping(ip1) and c1.ping("10.96.0.1")
    routes = c1.ip_json("route", "show", "default")
    assert routes and routes[0]["gateway"] == "10.96.0.1"


def test_two_networks_two_interfaces(runtime: Runtime, sandbox: Sandbox) -> None:
    c = sandbox.add_ns("c")
    other = {**NET, "name": "second", "ipam": {"ranges": [[{"subnet": "10.97.0.0/24"}]]}}
    assert add(runtime, c).code == 0
    res = add(runtime, c, other, ifname="eth1")
    assert res.code == 0, res.out
    assert c.addresses("eth0")[0].startswith("10.96.0.")
    assert c.addresses("eth1")[0].startswith("10.97.0.")


def test_del_leaves_nothing_and_is_idempotent(
    runtime: Runtime, sandbox: Sandbox, host: Namespace, daemon: Daemon
) -> None:
    c = sandbox.add_ns("c")
    res = add(runtime, c)
    host_if = next(i["name"] for i in res.out["interfaces"] if not i.get("sandbox"))
    assert host_if in host.links()
    for _ in range(2):
        d = runtime.exec("netd", "DEL", NET, container_id=c.name, netns=c.path)
        assert d.code == 0, d.out
    assert host_if not in host.links()
    assert "eth0" not in c.links()
    _, net = daemon.request("GET", "/v1/networks/cninet")
    assert net["endpoints"] == [] and net["ipam_usage"]["10.96.0.0/24"]["used"] == 0


def test_del_with_empty_netns_removes_host_side(
    runtime: Runtime, sandbox: Sandbox, host: Namespace
) -> None:
    c = sandbox.add_ns("c")
    res = add(runtime, c)
    host_if = next(i["name"] for i in res.out["interfaces"] if not i.get("sandbox"))
    d = runtime.exec("netd", "DEL", NET, container_id=c.name, netns="")
    assert d.code == 0, d.out
    assert host_if not in host.links()


def test_add_twice_is_an_error(runtime: Runtime, sandbox: Sandbox) -> None:
    c = sandbox.add_ns("c")
    assert add(runtime, c).code == 0
    again = add(runtime, c)
    assert again.code != 0 and again.error_code is not None
    assert "already attached" in again.out["msg"]


def test_check_fails_after_address_deleted(runtime: Runtime, sandbox: Sandbox) -> None:
    c = sandbox.add_ns("c")
    res = add(runtime, c)
    conf = {**NET, "prevResult": res.out}
    ok = runtime.exec("netd", "CHECK", conf, container_id=c.name, netns=c.path)
    assert ok.code == 0, ok.out
    c.run("ip", "addr", "del", res.out["ips"][0]["address"], "dev", "eth0")
    bad = runtime.exec("netd", "CHECK", conf, container_id=c.name, netns=c.path)
    assert bad.code != 0
    assert res.out["ips"][0]["address"] in bad.out["msg"]


def test_gc_removes_attachments_not_listed(
    runtime: Runtime, sandbox: Sandbox, host: Namespace
) -> None:
    keep, stale = sandbox.add_ns("keep"), sandbox.add_ns("stale")
    add(runtime, keep)
    r = add(runtime, stale)
    stale_if = next(i["name"] for i in r.out["interfaces"] if not i.get("sandbox"))
    gc = {
        **NET,
        "cniVersion": "1.1.0",
        "cni.dev/valid-attachments": [{"containerID": keep.name, "ifname": "eth0"}],
    }
    res = runtime.exec("netd", "GC", gc)
    assert res.code == 0, res.out
    assert stale_if not in host.links()
    assert keep.addresses("eth0")


@pytest.mark.parametrize(
    ("conf", "env", "code"),
    [
        ({**NET, "cniVersion": "9.9.9"}, {}, 1),
        ("{not json", {}, 6),
        ({**NET, "ipam": {"ranges": [[{"subnet": "10.96.0.0/33"}]]}}, {}, 7),
        (NET, {"CNI_CONTAINERID": ""}, 4),
    ],
    ids=["incompatible-version", "decode", "invalid-config", "bad-env"],
)
def test_error_codes(
    runtime: Runtime, sandbox: Sandbox, conf: object, env: dict[str, str], code: int
) -> None:
    c = sandbox.add_ns("c")
    res = runtime.exec(
        "netd",
        "ADD",
        conf,
        container_id=c.name,
        netns=c.path,  # type: ignore[arg-type]
        env=env,
    )
    assert res.code != 0
    assert res.error_code == code, res.out
    assert res.out["msg"]


def test_daemon_down_is_try_again_later(host: Namespace, tmp_path: Path, sandbox: Sandbox) -> None:
    bin_dir = tmp_path / "bin"
    install_plugin(bin_dir)
    rt = Runtime(host, [bin_dir], tmp_path / "absent.sock")
    c = sandbox.add_ns("c")
    res = add(rt, c)
    assert res.error_code == 11
    assert "netd daemon" in res.out["msg"] and "absent.sock" in res.out["msg"]


def test_conflicting_inline_definition(runtime: Runtime, sandbox: Sandbox) -> None:
    c = sandbox.add_ns("c")
    assert add(runtime, c).code == 0
    other = {**NET, "ipam": {"ranges": [[{"subnet": "10.98.0.0/24"}]]}}
    res = add(runtime, sandbox.add_ns("d"), other)
    assert res.error_code == 7
    assert "10.98.0.0/24" in res.out["msg"] or "subnet" in res.out["msg"]


def test_k8s_pod_name_and_podman_args(runtime: Runtime, sandbox: Sandbox, daemon: Daemon) -> None:
    c = sandbox.add_ns("c")
    res = add(runtime, c, args="IgnoreUnknown=1;K8S_POD_NAME=mypod;K8S_POD_NAMESPACE=ns1")
    assert res.code == 0, res.out
    _, net = daemon.request("GET", "/v1/networks/cninet")
    assert net["endpoints"][0]["name"] == "mypod"


def test_version_verb(runtime: Runtime) -> None:
    res = runtime.exec("netd", "VERSION", {"cniVersion": "1.1.0"})
    assert res.code == 0
    assert "1.1.0" in res.out["supportedVersions"] and "0.4.0" in res.out["supportedVersions"]


needs_reference = pytest.mark.skipif(
    not (REFERENCE_DIR / "bridge").exists(), reason="containernetworking-plugins not installed"
)


@needs_reference
def test_reference_bridge_with_netd_ipam(
    runtime: Runtime, sandbox: Sandbox, host: Namespace
) -> None:
    conf = {
        "cniVersion": "1.0.0",
        "name": "refnet",
        "type": "bridge",
        "bridge": "refbr0",
        "isGateway": True,
        "ipam": {"type": "netd", "ranges": [[{"subnet": "10.99.0.0/24"}]]},
    }
    c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
    r1 = runtime.exec("bridge", "ADD", conf, container_id=c1.name, netns=c1.path)
    r2 = runtime.exec("bridge", "ADD", conf, container_id=c2.name, netns=c2.path)
    assert r1.code == 0, (r1.out, r1.err)
    ip2 = r2.out["ips"][0]["address"].split("/")[0]
    assert r1.out["ips"][0]["address"].startswith("10.99.0.")
    assert c1.ping(ip2)
    for c in (c1, c2):
        d = runtime.exec("bridge", "DEL", conf, container_id=c.name, netns=c.path)
        assert d.code == 0, d.out


@needs_reference
def test_netd_then_reference_portmap(runtime: Runtime, sandbox: Sandbox, host: Namespace) -> None:
    conflist = {
        "cniVersion": "1.0.0",
        "name": "chain",
        "plugins": [
            {"type": "netd", "ipam": {"ranges": [[{"subnet": "10.100.0.0/24"}]]}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }
    c = sandbox.add_ns("c")
    rc = {"portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]}
    res = runtime.conflist(conflist, "ADD", container_id=c.name, netns=c.path, runtime_config=rc)
    assert res.code == 0, (res.out, res.err)
    if shutil.which("iptables"):
        nat = host.run("iptables-save", "-t", "nat", check=False)
        assert "18080" in nat
    d = runtime.conflist(conflist, "DEL", container_id=c.name, netns=c.path, runtime_config=rc)
    assert d.code == 0, d.out


def test_bad_netns_creates_nothing(runtime: Runtime, daemon: Daemon, host: Namespace) -> None:
    """A bad CNI_NETNS is refused before the inline network would be created."""
    before = set(host.links())
    res = runtime.exec("netd", "ADD", NET, container_id="c9", netns="/proc/self/ns/net")
    assert res.code == 1 and res.error_code in (4, 7), res.out
    assert "netns" in res.out["msg"]
    assert daemon.request("GET", "/v1/networks")[1] == []
    assert set(host.links()) == before

"""IPAM-only mode against the reference ``bridge`` plugin: netd allocates, and makes nothing.

The reference plugin (Debian's containernetworking-plugins) creates its own bridge holding the
gateway address and delegates addressing with ``"ipam": {"type": "netd"}``. netd must then make
no kernel object of its own: a second bridge ``nd-...`` with the same gateway address broke
traffic between containers on the reference bridge wherever br_netfilter is loaded (every
Kubernetes node). The daemon runs the nftables firewall, as on a real host; the kernel is read
back with ``ip``/``nft``, and containers ping each other across the reference bridge.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cni_runtime import REFERENCE_DIR, Runtime
from netns_fixtures import Namespace, Sandbox, wait_for
from netns_fixtures.daemon import Daemon

from netd.cni.install import install_plugin

pytestmark = pytest.mark.skipif(
    not (REFERENCE_DIR / "bridge").exists(), reason="containernetworking-plugins not installed"
)
CONF = {
    "cniVersion": "1.0.0",
    "name": "refnet",
    "type": "bridge",
    "bridge": "refbr0",
    "isGateway": True,
    "ipam": {"type": "netd", "ranges": [[{"subnet": "10.99.0.0/24"}]]},
}
BR_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"


@pytest.fixture
def daemon(host: Namespace) -> Iterator[Daemon]:
    """nftables like a real host; a fast reconcile, so a pass surely runs during the test."""
    d = Daemon(host, firewall="nftables")
    d.config_path().write_text("reconcile_interval = 0.3\n")
    d.start()
    try:
        yield d
    finally:
        d.close_checked()


@pytest.fixture
def runtime(daemon: Daemon, host: Namespace, tmp_path: Path) -> Runtime:
    bin_dir = tmp_path / "bin"
    install_plugin(bin_dir)
    return Runtime(host, [bin_dir, REFERENCE_DIR], daemon.socket)


def netd_links(host: Namespace) -> list[str]:
    """Links netd would own: named nd-*/nv* or tagged with a netd: alias."""
    return [
        name
        for name, link in host.links().items()
        if name.startswith(("nd-", "nv")) or str(link.get("ifalias", "")).startswith("netd:")
    ]


def netd_tables(host: Namespace) -> list[str]:
    out = json.loads(host.run("nft", "-j", "list", "tables") or "{}")
    return [
        f"{o['table']['family']} {o['table']['name']}"
        for o in out.get("nftables", [])
        if "table" in o and o["table"]["name"] == "netd"
    ]


def add_two(runtime: Runtime, sandbox: Sandbox) -> tuple[Namespace, Namespace, list[str]]:
    c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
    addresses = []
    for c in (c1, c2):
        res = runtime.exec("bridge", "ADD", CONF, container_id=c.name, netns=c.path)
        assert res.code == 0, (res.out, res.err)
        assert "nameservers" not in res.out["dns"], res.out  # netd serves no DNS here
        addresses.append(res.out["ips"][0]["address"])
    return c1, c2, addresses


def test_ipam_only_makes_no_kernel_objects(
    runtime: Runtime, daemon: Daemon, host: Namespace, sandbox: Sandbox
) -> None:
    c1, c2, addresses = add_two(runtime, sandbox)
    assert addresses == ["10.99.0.2/24", "10.99.0.3/24"]
    assert host.addresses("refbr0") == ["10.99.0.1/24"]  # the reference plugin's gateway
    assert netd_links(host) == []
    assert netd_tables(host) == []
    # A bridge network beside it is plumbed as usual, and the reconciler repairs it, proving a
    # pass ran over both networks without "repairing" the IPAM-only network's absent bridge.
    status, other = daemon.request(
        "POST", "/v1/networks", {"name": "other", "subnets": [{"subnet": "10.98.0.0/24"}]}
    )
    assert status == 201, other
    host.run("ip", "link", "del", other["bridge"])
    wait_for("bridge of 'other' re-created", lambda: other["bridge"] in host.links(), timeout=20)
    assert netd_links(host) == [other["bridge"]]
    assert "bridge of network 'refnet'" not in daemon.log()
    # inspect says what it is rather than reporting a missing bridge.
    _, info = daemon.request("GET", "/v1/networks/refnet")
    assert (info["driver"], info["bridge"], info["dns_enabled"]) == ("ipam", "", False)
    assert info["plumbing"]["ipam_only"] is True
    assert sorted(e["addresses"][0] for e in info["endpoints"]) == addresses
    # netd as the main plugin on this network is refused, and changes nothing.
    c3 = sandbox.add_ns("c3")
    main = {**CONF, "type": "netd", "ipam": {"ranges": CONF["ipam"]["ranges"]}}  # type: ignore[index]
    res = runtime.exec("netd", "ADD", main, container_id=c3.name, netns=c3.path)
    assert res.code == 1 and res.error_code == 7 and "IPAM-only network" in res.out["msg"]
    assert "eth0" not in c3.links()
    for c in (c1, c2):
        assert runtime.exec("bridge", "DEL", CONF, container_id=c.name, netns=c.path).code == 0
    _, info = daemon.request("GET", "/v1/networks/refnet?plumbing=0")
    assert info["endpoints"] == []
    assert daemon.request("DELETE", "/v1/networks/other")[0] == 200
    assert netd_links(host) == [] and netd_tables(host) == []


def test_containers_on_the_reference_bridge_reach_each_other_under_br_netfilter(
    runtime: Runtime, host: Namespace, sandbox: Sandbox
) -> None:
    if not host.ok("test", "-e", BR_NF):
        pytest.skip(f"br_netfilter is not loaded ({BR_NF} missing): `modprobe br_netfilter`")
    # Per network namespace since Linux 5.3: set only in the sandbox host.
    host.run("sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1")
    c1, c2, addresses = add_two(runtime, sandbox)
    ip1, ip2 = (a.split("/")[0] for a in addresses)
    assert c1.ping(ip2) and c2.ping(ip1)
    assert c1.ping("10.99.0.1")
    for c in (c1, c2):
        assert runtime.exec("bridge", "DEL", CONF, container_id=c.name, netns=c.path).code == 0

"""macvlan networks through the daemon: the CLI, the CNI plugin, reconcile, recover and graph.

Topology: the sandbox ``host`` runs netd; its ``up0`` is a veth into namespace ``lan``, the
upstream router holding the gateway 192.168.77.1. Containers are namespaces attached through
the CLI or the CNI plugin; their resolv.conf says ``nameserver 127.0.0.11`` (what the daemon
returns for these networks), bind-mounted by ``ip netns exec`` from /etc/netns/<name>.
Everything is read back with ``ip``, ``ping``, ``getent`` and ``dig``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cni_runtime import REFERENCE_DIR, Runtime
from netns_fixtures import Namespace, Sandbox, wait_for
from netns_fixtures.daemon import NETD, Daemon

from netd.cni.install import install_plugin

# The LAN has other hosts (the sandbox host is .2): containers get addresses from a range of
# their own, as a Docker user gives macvlan networks --ip-range.
SUBNET = [
    "--subnet",
    "192.168.77.0/24",
    "--gateway",
    "192.168.77.1",
    "--ip-range",
    "192.168.77.128/25",
]


class Lan:
    """The sandbox with its LAN router, a daemon, and containers with Docker's resolv.conf."""

    def __init__(self, sandbox: Sandbox, host: Namespace, config: str = "") -> None:
        self.sandbox, self.host = sandbox, host
        self.lan = sandbox.add_ns("lan")
        sandbox.wire(host, self.lan, "192.168.77.2/24", "192.168.77.1/24")
        self.d = Daemon(host)
        if config:
            self.d.config_path().write_text(config)
        self.d.start()
        self.etc: list[Path] = []
        self.links_before = set(host.links())

    def container(self, name: str) -> Namespace:
        ns = self.sandbox.add_ns(name)
        etc = Path("/etc/netns") / ns.name
        etc.mkdir(parents=True)
        self.etc.append(etc)
        (etc / "resolv.conf").write_text(
            "nameserver 127.0.0.11\nsearch dns.netd\noptions ndots:0 timeout:2 attempts:2\n"
        )
        return ns

    def connect(self, net: str, ns: Namespace, *extra: str) -> dict[str, Any]:
        out = self.d.cli("network", "connect", net, "--netns", ns.path, "--name", ns.name[-2:],
                         "--format", "json", *extra).stdout  # fmt: skip
        return dict(json.loads(out))

    def inspect(self, net: str) -> dict[str, Any]:
        status, doc = self.d.request("GET", f"/v1/networks/{net}")
        assert status == 200, doc
        return dict(doc)

    def close(self) -> None:
        self.d.close_checked()
        for etc in self.etc:
            shutil.rmtree(etc, ignore_errors=True)


@pytest.fixture
def lan(sandbox: Sandbox, host: Namespace) -> Iterator[Lan]:
    world = Lan(sandbox, host)
    try:
        yield world
    finally:
        world.close()


def getent(ns: Namespace, name: str) -> list[str]:
    proc = subprocess.run(ns.argv("getent", "hosts", name), capture_output=True, text=True)
    return sorted(line.split()[0] for line in proc.stdout.splitlines())


def test_cli_network_with_names_through_glibc_and_teardown_leaves_nothing(lan: Lan) -> None:
    d = lan.d
    d.cli("network", "create", "-d", "macvlan", "-o", "parent=up0", *SUBNET, "lanet")
    c1, c2 = lan.container("c1"), lan.container("c2")
    e1, e2 = lan.connect("lanet", c1), lan.connect("lanet", c2)
    assert e1["dns"]["nameservers"] == ["127.0.0.11"]
    assert c1.links()["eth0"]["linkinfo"]["info_kind"] == "macvlan"
    ip1, ip2 = (e["addresses"][0].split("/")[0] for e in (e1, e2))
    assert c1.ping("192.168.77.1") and c1.ping(ip2) and lan.lan.ping(ip1)
    assert not lan.host.ping(ip1, timeout=1)  # the kernel rule, documented
    # Names through glibc and dig, served inside each container's namespace.
    assert getent(c1, "c2") == [ip2] and getent(c2, "c1.dns.netd") == [ip1]
    dig = c2.run("dig", "@127.0.0.11", "+short", "+time=2", "+tries=2", "c1")
    assert dig.split() == [ip1]
    doc = lan.inspect("lanet")
    assert doc["driver"] == "macvlan" and doc["options"] == {"parent": "up0"}
    (shown,) = json.loads(d.cli("network", "inspect", "lanet").stdout)
    plumbing = shown["plumbing"]
    assert (plumbing["parent"], plumbing["owned"], plumbing["exists"]) == ("up0", False, True)
    states = {e["container_id"]: (e["state"], e["mac"]) for e in plumbing["endpoints"]}
    assert states[c1.name] == ("UP", c1.links()["eth0"]["address"])
    assert {"address": "127.0.0.11", "port": 53, "in": "each container's namespace",
            "containers": 2} in plumbing["dns"]["listen"]  # fmt: skip
    assert set(lan.host.links()) == lan.links_before  # nothing host-side for endpoints
    # Detach closes the container's DNS socket: no listener left at 127.0.0.11.
    d.cli("network", "disconnect", "lanet", "--netns", c2.path)
    assert getent(c2, "c1") == [] and set(c2.links()) == {"lo"}
    assert getent(c1, "c2") == []  # and the name is withdrawn
    d.cli("network", "disconnect", "lanet", "--netns", c1.path)
    d.cli("network", "rm", "lanet")
    assert set(lan.host.links()) == lan.links_before


def test_refusals_are_one_line_naming_the_field(lan: Lan) -> None:
    d = lan.d
    before = set(lan.host.links())
    cases = {
        ("-o", "parent=eth9"): "invalid options.parent 'eth9': no such link in the daemon's "
        "network namespace",
        ("-o", "parent=up0", "-o", "enable_icc=false"): "invalid options.enable_icc 'false': not "
        "supported by driver macvlan: its containers' traffic does not pass a host interface that "
        "netd's firewall filters",
        ("-o", "parent=up0", "-o", "macvlan_mode=loud"): "invalid options.macvlan_mode 'loud': "
        "must be one of bridge, private, vepa, passthru",
    }
    for opts, message in cases.items():
        res = d.cli("network", "create", "-d", "macvlan", *opts, *SUBNET, "bad", check=False)
        assert res.returncode != 0 and message in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    d.cli("network", "create", "-d", "macvlan", "-o", "parent=up0", *SUBNET, "lanet")
    c1 = lan.container("c1")
    res = d.cli("network", "connect", "lanet", "--netns", c1.path, "-p", "8080:80", check=False)
    assert res.returncode != 0
    assert "network 'lanet' (driver macvlan) cannot publish ports" in res.stderr, res.stderr
    assert set(c1.links()) == {"lo"}
    assert [n["name"] for n in json.loads(d.cli("network", "ls", "--format", "json").stdout)
            ] == ["lanet"]  # fmt: skip
    assert set(lan.host.links()) == before


def test_ipvlan_on_a_kernel_without_it_is_one_line_naming_the_feature(lan: Lan) -> None:
    res = lan.d.cli("network", "create", "-d", "ipvlan", "-o", "parent=up0", *SUBNET, "iv",
                    check=False)  # fmt: skip
    if res.returncode == 0:
        pytest.skip("this kernel has ipvlan links: the refusal cannot be shown")
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "this kernel has no ipvlan links (CONFIG_IPVLAN)" in lines[0]
    pytest.skip("ipvlan networks not testable here: this kernel has no ipvlan links")


def test_cni_plugin_on_a_macvlan_network(lan: Lan, tmp_path: Path) -> None:
    lan.d.cli("network", "create", "-d", "macvlan", "-o", "parent=up0", *SUBNET, "cnilan")
    bin_dir = tmp_path / "bin"
    install_plugin(bin_dir)
    rt = Runtime(lan.host, [bin_dir, REFERENCE_DIR], lan.d.socket)
    conf = {"cniVersion": "1.0.0", "name": "cnilan", "type": "netd"}
    c1, c2 = lan.container("c1"), lan.container("c2")
    r1 = rt.exec("netd", "ADD", conf, container_id="cid1", netns=c1.path)
    r2 = rt.exec("netd", "ADD", conf, container_id="cid2", netns=c2.path,
                 args="K8S_POD_NAME=pod2")  # fmt: skip
    assert r1.code == 0 and r2.code == 0, (r1.out, r1.err)
    # Only the container's interface: there is no host side.
    assert r1.out["interfaces"] == [
        {"name": "eth0", "mac": c1.links()["eth0"]["address"], "sandbox": c1.path}
    ]
    assert r1.out["ips"][0]["interface"] == 0 and r1.out["ips"][0]["gateway"] == "192.168.77.1"
    assert r1.out["dns"]["nameservers"] == ["127.0.0.11"]
    ip2 = r2.out["ips"][0]["address"].split("/")[0]
    assert c1.ping(ip2) and c1.ping("192.168.77.1")
    assert getent(c1, "pod2") == [ip2]
    check = rt.exec("netd", "CHECK", {**conf, "prevResult": r1.out}, container_id="cid1",
                    netns=c1.path)  # fmt: skip
    assert check.code == 0, check.out
    for cid, ns in (("cid1", c1), ("cid2", c2)):
        assert rt.exec("netd", "DEL", conf, container_id=cid, netns=ns.path).code == 0
        assert set(ns.links()) == {"lo"}
    assert getent(c1, "pod2") == []
    assert set(lan.host.links()) == lan.links_before


def test_reconcile_repairs_a_deleted_link_and_internal_parent(
    sandbox: Sandbox, host: Namespace
) -> None:
    world = Lan(sandbox, host, config="reconcile_interval = 0.5\n")
    try:
        d = world.d
        d.cli("network", "create", "-d", "macvlan", "-o", "parent=up0", *SUBNET, "lanet")
        d.cli("network", "create", "-d", "macvlan", "--subnet", "10.55.0.0/24", "inside")
        c1, c2 = world.container("c1"), world.container("c2")
        world.connect("lanet", c1)
        world.connect("inside", c2, "--ifname", "eth1")
        c1.run("ip", "link", "del", "eth0")  # behind netd's back
        wait_for("eth0 re-plumbed", lambda: "eth0" in c1.links(), 20)
        wait_for("LAN reachable", lambda: c1.ping("192.168.77.1"), 10)
        parent = next(n for n in host.links() if n.startswith("nm-"))
        host.run("ip", "link", "del", parent)  # the internal parent, and with it eth1
        wait_for("internal parent back", lambda: parent in host.links(), 20)
        wait_for("eth1 re-plumbed", lambda: "eth1" in c2.links(), 20)
        assert c2.addresses("eth1")[0].startswith("10.55.0.")
        assert "netd:parent:macvlan:" in host.links()[parent]["ifalias"]
    finally:
        world.close()


def test_graph_draws_macvlan_networks(lan: Lan) -> None:
    lan.d.cli("network", "create", "-d", "macvlan", "-o", "parent=up0", *SUBNET, "lanet")
    lan.connect("lanet", lan.container("c1"))
    dot = lan.d.cli("graph", "--format", "dot").stdout
    assert "macvlan on up0" in dot and "192.168.77.1 (upstream router)" in dot
    assert "eth0 (in the container only)" in dot


def test_recover_rebuilds_a_macvlan_network_from_the_copy(
    sandbox: Sandbox, host: Namespace
) -> None:
    world = Lan(sandbox, host)
    try:
        d = world.d
        d.cli("network", "create", "-d", "macvlan", "-o", "parent=up0", *SUBNET, "lanet")
        c1 = world.container("c1")
        ip1 = world.connect("lanet", c1)["addresses"][0]
        d.stop()
        (d.state_dir / "netd.db").unlink()
        out = subprocess.run(host.argv(NETD, "recover", "--state-dir", str(d.state_dir)),
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stderr + out.stdout
        d.start()
        doc = world.inspect("lanet")
        assert doc["driver"] == "macvlan" and doc["options"] == {"parent": "up0"}
        assert [e["addresses"] for e in doc["endpoints"]] == [[ip1]]
        assert c1.ping("192.168.77.1")
        assert getent(c1, "c1") == [ip1.split("/")[0]]
    finally:
        world.close()


COMPOSE = """
    services:
      web:
        networks: [lan]
      db:
        networks:
          lan:
            ipv4_address: 192.168.77.200
    networks:
      lan:
        driver: macvlan
        driver_opts:
          parent: up0
          macvlan_mode: bridge
        ipam:
          config:
            - subnet: 192.168.77.0/24
              gateway: 192.168.77.1
              ip_range: 192.168.77.128/25
"""


def test_compose_macvlan_network(sandbox: Sandbox, host: Namespace, tmp_path: Path) -> None:
    from test_compose_up import compose_project

    lan_ns = sandbox.add_ns("lan")
    sandbox.wire(host, lan_ns, "192.168.77.2/24", "192.168.77.1/24")
    before = set(host.links())
    d = Daemon(host).start()
    try:
        project = compose_project(sandbox, d, tmp_path)
        compose = next(project)
        try:
            compose.write(COMPOSE)
            compose.up()
            net = compose.network("lan")
            assert net["driver"] == "macvlan"
            assert net["options"] == {"parent": "up0", "macvlan_mode": "bridge"}
            web = compose.sb("web")
            assert web.links()["eth0"]["linkinfo"]["info_kind"] == "macvlan"
            assert web.ping("192.168.77.1") and web.ping("192.168.77.200")
            got = compose.exec("web", "getent", "hosts", "db")
            assert got.stdout.split()[:1] == ["192.168.77.200"], got.stderr
            resolv = compose.exec("web", "cat", "/etc/resolv.conf").stdout
            assert "nameserver 127.0.0.11" in resolv
            compose.run("down")
            assert set(host.links()) == before
        finally:
            with contextlib.suppress(StopIteration):
                next(project)
    finally:
        d.close_checked()

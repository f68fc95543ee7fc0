"""Firewall behaviour with real packets, both backends (one parametrized matrix).

Topology per test (all namespaces from the sandbox; nothing in the initial namespace):

    out (the "internet", 192.0.2.2 / 2001:db8::2, routes 10/8 and fd00::/8 back via host)
     │ veth
    host (192.0.2.1 / 2001:db8::1; runs the backend in a driver subprocess)
     ├── nd-a  10.1.0.1/24 fd00:a::1/64   a1 (.2)  a2 (.3)
     ├── nd-b  10.2.0.1/24                b1 (.2)
     └── nd-i  10.3.0.1/24  (internal)    i1 (.2)  i2 (.3)

The bridges and veths are made with plain ``ip`` here (the bridge driver is not used). The
backend runs inside the host namespace: this file doubles as the driver script
(``python test_firewall_traffic.py driver``) that reads JSON commands on stdin.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

PY = sys.executable
HERE = __file__
NET_A, NET_B, NET_I = "a" * 64, "b" * 64, "c" * 64

SERVER = r"""
import socket, sys, threading
port = int(sys.argv[1])
def peer(a): return a[0].removeprefix("::ffff:")
def tcp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port)); s.listen(64)
    while True:
        c, a = s.accept(); c.sendall(peer(a).encode()); c.close()
def udp():
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind(("::", port))
    while True:
        d, a = s.recvfrom(100); s.sendto(peer(a).encode(), a)
threading.Thread(target=udp, daemon=True).start()
tcp()
"""

CLIENT = r"""
import socket, sys
host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(fam, kind); s.settimeout(float(sys.argv[4]))
s.connect((host, port))
if proto == "udp": s.send(b"x")
print(s.recv(100).decode())
"""


# --- the driver (runs inside the host namespace) ---------------------------------------------


def driver_main() -> None:
    """Read JSON commands on stdin, apply them with a real backend, answer on stdout."""
    import logging

    from netd.errors import NetdError
    from netd.firewall import FirewallMonitor, make_firewall
    from netd.model import endpoint_from_json, network_from_json

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    fw: Any = None
    monitor = None
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            result: Any = None
            if op == "init":
                fw = make_firewall(req["backend"])
            elif op in ("ensure_network", "remove_network"):
                getattr(fw, op)(network_from_json(req["network"]), req["bridge"])
            elif op in ("add_endpoint", "remove_endpoint"):
                net, ep = network_from_json(req["network"]), endpoint_from_json(req["endpoint"])
                getattr(fw, op)(net, ep)
            elif op == "monitor":
                monitor = FirewallMonitor(fw.check, fw.repair, req["interval"])
                monitor.start()
            elif op == "repairs":
                result = monitor.repairs if monitor else 0
            elif op == "show":
                result = fw.show()
            out = {"ok": True, "result": result}
        except NetdError as exc:
            out = {"ok": False, "type": type(exc).__name__, "message": str(exc)}
        print(json.dumps(out), flush=True)
    if monitor:
        monitor.stop()


if __name__ == "__main__" and sys.argv[1:] == ["driver"]:
    driver_main()
    sys.exit(0)


# --- the lab ---------------------------------------------------------------------------------

from kit import records as kit  # noqa: E402
from netns_fixtures import Namespace, Sandbox  # noqa: E402

from netd.model import Endpoint, Network, PortMapping, Subnet, to_json  # noqa: E402

DRIVERS: list[Driver] = []


class Driver:
    """The backend in a subprocess inside the host namespace."""

    def __init__(self, host: Namespace, backend: str) -> None:
        self.proc = host.spawn(
            PY, HERE, "driver", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        DRIVERS.append(self)
        self.call("init", backend=backend)

    def close(self) -> None:
        """End the driver (EOF on stdin) and close its pipes."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        finally:
            self.proc.stdout.close()

    def call(self, op: str, **kw: Any) -> Any:
        """Send one command; raise AssertionError with the backend's error if it failed."""
        reply = self.try_call(op, **kw)
        assert reply["ok"], reply
        return reply["result"]

    def try_call(self, op: str, **kw: Any) -> dict[str, Any]:
        """Send one command and return the raw reply."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "driver died"
        reply: dict[str, Any] = json.loads(line)
        return reply


def subnet(cidr: str, gw: str) -> Subnet:
    return kit.subnet(cidr, gateway=gw)


@dataclass
class Lab:
    """Host, outside, three bridges with containers, and the backend driver."""

    box: Sandbox
    host: Namespace
    out: Namespace
    driver: Driver
    networks: dict[str, tuple[Network, str]] = field(default_factory=dict)
    containers: dict[str, Namespace] = field(default_factory=dict)
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    def network(self, nid: str, name: str, bridge: str, subnets: list[Subnet], **kw: Any) -> None:
        net = kit.network(name, subnets, id=nid, ipv6=kw.pop("ipv6", False), **kw)
        self.host.run("ip", "link", "add", bridge, "type", "bridge")
        for s in subnets:
            addr = f"{s.gateway}/{s.subnet.prefixlen}"
            self.host.run(
                "ip", "addr", "add", addr, "dev", bridge, *(["nodad"] if s.version == 6 else [])
            )
        self.host.run("ip", "link", "set", bridge, "up")
        self.networks[name] = (net, bridge)
        self.driver.call("ensure_network", network=to_json(net), bridge=bridge)

    def container(
        self, name: str, net_name: str, addrs: list[str], ports: tuple[PortMapping, ...] = ()
    ) -> Namespace:
        net, bridge = self.networks[net_name]
        ns = self.box.add_ns(name)
        veth = f"v{name}"
        self.host.run(
            "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns.name
        )
        self.host.run("ip", "link", "set", veth, "master", bridge, "up")
        # What the bridge driver does too: a container may reach its own published port.
        self.host.run("bridge", "link", "set", "dev", veth, "hairpin", "on")
        for a in addrs:
            ns.run("ip", "addr", "add", a, "dev", "eth0", *(["nodad"] if ":" in a else []))
        ns.run("ip", "link", "set", "eth0", "up")
        versions = {ipaddress.ip_interface(a).version for a in addrs}
        for s in (s for s in net.subnets if s.version in versions):
            ns.run("ip", f"-{s.version}", "route", "add", "default", "via", str(s.gateway))
        ep = kit.endpoint(
            net, f"ctr-{name}", ip=addrs, netns=ns.path, host_ifname=veth, port_mappings=ports
        )
        self.containers[name] = ns
        self.endpoints[name] = ep
        self.driver.call("add_endpoint", network=to_json(net), endpoint=to_json(ep))
        return ns

    def serve(self, ns: Namespace, port: int) -> None:
        ns.spawn(PY, "-c", SERVER, str(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ask(
        self, ns: Namespace, host: str, port: int, proto: str = "tcp", timeout: float = 3.0
    ) -> str | None:
        """The peer address the server saw, or None if the connection failed."""
        proc = subprocess.run(
            ns.argv(PY, "-c", CLIENT, host, str(port), proto, str(timeout)),
            capture_output=True,
            text=True,
            timeout=30,
        )
        return proc.stdout.strip() if proc.returncode == 0 else None

    def blocked(self, ns: Namespace, host: str, port: int, proto: str = "tcp") -> bool:
        """True if no answer comes within half a second."""
        return self.ask(ns, host, port, proto, timeout=0.5) is None

    def wait_serving(self, ns: Namespace, addr: str, port: int) -> None:
        deadline = time.monotonic() + 5
        while self.ask(ns, addr, port, timeout=0.5) is None:
            assert time.monotonic() < deadline, f"server on {addr}:{port} never came up"
            time.sleep(0.05)


def build_lab(box: Sandbox, backend: str, icc: bool = True, **a_opts: str) -> Lab:
    host, out = box.add_host(), box.add_ns("out")
    box.wire(host, out, "192.0.2.1/24", "192.0.2.2/24")
    host.run("ip", "addr", "add", "2001:db8::1/64", "dev", "up0", "nodad")
    out.run("ip", "addr", "add", "2001:db8::2/64", "dev", "down0", "nodad")
    # The outside can route back to container subnets, so only NAT explains seeing the host's
    # address, and only the firewall explains an internal network not getting out.
    out.run("ip", "route", "add", "10.0.0.0/8", "via", "192.0.2.1")
    out.run("ip", "-6", "route", "add", "fd00::/8", "via", "2001:db8::1")
    lab = Lab(box, host, out, Driver(host, backend))
    opts = dict(a_opts)
    if not icc:
        opts["enable_icc"] = "false"
    lab.network(
        NET_A,
        "A",
        "nd-a",
        [subnet("10.1.0.0/24", "10.1.0.1"), subnet("fd00:a::/64", "fd00:a::1")],
        ipv6=True,
        options=opts,
    )
    lab.network(NET_B, "B", "nd-b", [subnet("10.2.0.0/24", "10.2.0.1")])
    lab.network(NET_I, "I", "nd-i", [subnet("10.3.0.0/24", "10.3.0.1")], internal=True)
    return lab


BACKENDS = ["nftables", "iptables"]


@pytest.fixture
def box(sandbox: Sandbox) -> Iterator[Sandbox]:
    """The sandbox, with every driver started in it closed before it is torn down."""
    yield sandbox
    while DRIVERS:
        DRIVERS.pop().close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_outbound_isolation_internal(box: Sandbox, backend: str) -> None:
    lab = build_lab(box, backend)
    a1 = lab.container("a1", "A", ["10.1.0.2/24", "fd00:a::2/64"])
    b1 = lab.container("b1", "B", ["10.2.0.2/24"])
    i1 = lab.container("i1", "I", ["10.3.0.2/24"])
    i2 = lab.container("i2", "I", ["10.3.0.3/24"])
    lab.serve(lab.out, 7000)
    for ns in (b1, i1, i2):
        lab.serve(ns, 7000)
    lab.wait_serving(lab.out, "127.0.0.1", 7000)
    # Outbound is masqueraded: the outside (with no route back to 10.1/16) sees the host.
    assert lab.ask(a1, "192.0.2.2", 7000) == "192.0.2.1"
    assert lab.ask(a1, "2001:db8::2", 7000) == "2001:db8::1"
    assert lab.ask(b1, "192.0.2.2", 7000) == "192.0.2.1"
    # Two networks cannot reach each other (either way), though the host reaches both.
    assert lab.ask(lab.host, "10.2.0.2", 7000) == "10.2.0.1"
    assert lab.blocked(a1, "10.2.0.2", 7000)
    assert not a1.ping("10.2.0.2", timeout=1)
    # Internal: cannot reach outside, nor other networks, nor be reached; peers and gateway ok.
    assert lab.blocked(i1, "192.0.2.2", 7000)
    assert not i1.ping("192.0.2.2", timeout=1)
    assert lab.blocked(i1, "10.2.0.2", 7000)
    assert lab.blocked(a1, "10.3.0.3", 7000)
    assert lab.blocked(lab.out, "10.3.0.2", 7000)
    assert lab.ask(i1, "10.3.0.3", 7000) == "10.3.0.2"
    assert i1.ping("10.3.0.1")
    # Internal containers do not reach the host's other addresses either.
    assert not i1.ping("192.0.2.1", timeout=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_published_ports(box: Sandbox, backend: str) -> None:
    lab = build_lab(box, backend)
    web = lab.container(
        "a1",
        "A",
        ["10.1.0.2/24", "fd00:a::2/64"],
        ports=(
            PortMapping(8080, 80),
            PortMapping(5353, 53, "udp"),
            PortMapping(9000, 90, "tcp", ipaddress.ip_address("192.0.2.1")),
        ),
    )
    a2 = lab.container("a2", "A", ["10.1.0.3/24"])
    b1 = lab.container("b1", "B", ["10.2.0.2/24"])
    i1 = lab.container("i1", "I", ["10.3.0.2/24"])
    for port in (80, 53, 90):
        lab.serve(web, port)
    lab.wait_serving(web, "127.0.0.1", 80)
    # From outside, IPv4 and IPv6, TCP and UDP; the container sees the real client.
    assert lab.ask(lab.out, "192.0.2.1", 8080) == "192.0.2.2"
    assert lab.ask(lab.out, "2001:db8::1", 8080) == "2001:db8::2"
    assert lab.ask(lab.out, "192.0.2.1", 5353, "udp") == "192.0.2.2"
    assert lab.ask(lab.out, "192.0.2.1", 9000) == "192.0.2.2"
    # Hairpin from a container of the same network (masqueraded to the gateway).
    assert lab.ask(a2, "192.0.2.1", 8080) == "10.1.0.1"
    assert lab.ask(web, "192.0.2.1", 8080) == "10.1.0.1"
    # From another network: published ports cross the isolation.
    assert lab.ask(b1, "192.0.2.1", 8080) is not None
    # From the host itself, its own address and loopback (IPv4).
    assert lab.ask(lab.host, "192.0.2.1", 8080) == "192.0.2.1"
    assert lab.ask(lab.host, "127.0.0.1", 8080) == "10.1.0.1"
    # An internal network reaches no published port; unpublished ports stay closed.
    assert lab.blocked(i1, "192.0.2.1", 8080)
    assert lab.blocked(lab.out, "192.0.2.1", 8081)
    # Removing the endpoint unpublishes.
    net, _ = lab.networks["A"]
    lab.driver.call("remove_endpoint", network=to_json(net), endpoint=to_json(lab.endpoints["a1"]))
    assert lab.blocked(lab.out, "192.0.2.1", 8080)


@pytest.mark.parametrize("backend", BACKENDS)
def test_port_conflict_names_holder(box: Sandbox, backend: str) -> None:
    lab = build_lab(box, backend)
    lab.container("a1", "A", ["10.1.0.2/24"], ports=(PortMapping(8080, 80),))
    net, _bridge = lab.networks["B"]
    ep = kit.endpoint(
        net,
        "ctr-late",
        ip="10.2.0.9/24",
        netns="/x",
        host_ifname="vlate",
        port_mappings=(PortMapping(8080, 81, "tcp", ipaddress.ip_address("192.0.2.1")),),
    )
    reply = lab.driver.try_call("add_endpoint", network=to_json(net), endpoint=to_json(ep))
    assert reply["type"] == "Conflict"
    assert reply["message"] == (
        "publishing host port 192.0.2.1:8080/tcp for container ctr-late: "
        "already published by container ctr-a1"
    )
    # The refused endpoint changed nothing: a1's port still works.
    lab.serve(lab.containers["a1"], 80)
    lab.wait_serving(lab.containers["a1"], "127.0.0.1", 80)
    assert lab.ask(lab.out, "192.0.2.1", 8080) == "192.0.2.2"


@pytest.mark.parametrize("backend", BACKENDS)
def test_icc_off_blocks_same_network(box: Sandbox, backend: str) -> None:
    lab = build_lab(box, backend, icc=False)
    a1 = lab.container("a1", "A", ["10.1.0.2/24"])
    a2 = lab.container("a2", "A", ["10.1.0.3/24"])
    lab.serve(a2, 7000)
    lab.serve(lab.out, 7000)
    lab.wait_serving(a2, "127.0.0.1", 7000)
    assert lab.ask(lab.host, "10.1.0.3", 7000) == "10.1.0.1"
    assert lab.blocked(a1, "10.1.0.3", 7000)
    assert not a1.ping("10.1.0.3", timeout=1)
    # Still reaches the gateway and the outside.
    assert a1.ping("10.1.0.1")
    lab.wait_serving(lab.out, "127.0.0.1", 7000)
    assert lab.ask(a1, "192.0.2.2", 7000) == "192.0.2.1"


@pytest.mark.parametrize("backend", BACKENDS)
def test_snat_and_no_masquerade(box: Sandbox, backend: str) -> None:
    lab = build_lab(box, backend)
    add_snat_and_routed_networks(lab)
    s1 = lab.container("s1", "S", ["10.4.0.2/24"])
    r1 = lab.container("r1", "R", ["10.5.0.2/24"])
    lab.serve(lab.out, 7000)
    lab.wait_serving(lab.out, "127.0.0.1", 7000)
    assert lab.ask(s1, "192.0.2.2", 7000) == "192.0.2.100"
    # Routed, not NATed: the outside (which has a route back) sees the container itself.
    assert lab.ask(r1, "192.0.2.2", 7000) == "10.5.0.2"


def _foreign_ruleset(host: Namespace) -> str:
    return host.run("nft", "-s", "list", "ruleset")


@pytest.mark.parametrize("backend", BACKENDS)
def test_teardown_leaves_nothing(box: Sandbox, backend: str) -> None:
    host = box.add_host()
    # Someone else's rules, which must survive untouched.
    host.run(
        "nft",
        "add table inet other; add chain inet other fw { type filter hook forward "
        "priority 0; policy accept; }; add rule inet other fw counter",
    )
    before_nft = host.run("nft", "-s", "list", "ruleset")
    before_ipt = host.run("iptables-save") + host.run("ip6tables-save")
    assert "netd" not in before_nft
    lab = Lab(box, host, host, Driver(host, backend))
    lab.network(
        NET_A,
        "A",
        "nd-a",
        [subnet("10.1.0.0/24", "10.1.0.1"), subnet("fd00:a::/64", "fd00:a::1")],
        ipv6=True,
        options={"enable_icc": "false"},
    )
    lab.network(NET_I, "I", "nd-i", [subnet("10.3.0.0/24", "10.3.0.1")], internal=True)
    lab.container("a1", "A", ["10.1.0.2/24", "fd00:a::2/64"], ports=(PortMapping(8080, 80),))
    lab.container("i1", "I", ["10.3.0.2/24"])
    assert "netd" in lab.driver.call("show").lower()
    for name in ("a1", "i1"):
        ep = lab.endpoints[name]
        net = next(n for n, _ in lab.networks.values() if n.id == ep.network_id)
        lab.driver.call("remove_endpoint", network=to_json(net), endpoint=to_json(ep))
    for net, bridge in lab.networks.values():
        lab.driver.call("remove_network", network=to_json(net), bridge=bridge)
    after_ipt = host.run("iptables-save") + host.run("ip6tables-save")
    assert "NETD" not in after_ipt
    # No rule of anyone's in the built-in chains (iptables-nft may leave them, empty).
    assert [ln for ln in after_ipt.splitlines() if ln.startswith("-A")] == []
    if backend == "nftables":
        assert host.run("nft", "-s", "list", "ruleset") == before_nft
    else:
        assert host.run("nft", "-s", "list", "table", "inet", "other") in before_nft
        assert before_ipt == ""


@pytest.mark.parametrize("backend", BACKENDS)
def test_repair_after_flush_ruleset(box: Sandbox, backend: str) -> None:
    lab = build_lab(box, backend)
    web = lab.container("a1", "A", ["10.1.0.2/24"], ports=(PortMapping(8080, 80),))
    lab.serve(web, 80)
    lab.serve(lab.out, 7000)
    lab.wait_serving(web, "127.0.0.1", 80)
    lab.wait_serving(lab.out, "127.0.0.1", 7000)
    lab.driver.call("monitor", interval=1.0)
    assert lab.ask(lab.out, "192.0.2.1", 8080) == "192.0.2.2"
    lab.host.run("nft", "flush", "ruleset")
    if backend == "iptables":
        # `iptables` here is iptables-nft, whose tables the flush removed too; be sure.
        assert "NETD" not in lab.host.run("iptables-save")
    start = time.monotonic()
    while lab.ask(lab.out, "192.0.2.1", 8080, timeout=0.5) != "192.0.2.2":
        assert time.monotonic() - start < 5, "firewall not restored within 5 s"
        time.sleep(0.1)
    assert lab.ask(a := lab.containers["a1"], "192.0.2.2", 7000) == "192.0.2.1", a
    assert lab.driver.call("repairs") >= 1


def add_snat_and_routed_networks(lab: Lab) -> None:
    """Network S (10.4.0.0/24) source-NATs to the host's 192.0.2.100; R (10.5.0.0/24) is routed."""
    lab.host.run("ip", "addr", "add", "192.0.2.100/24", "dev", "up0")
    lab.network(
        "d" * 64,
        "S",
        "nd-s",
        [subnet("10.4.0.0/24", "10.4.0.1")],
        options={"host_ipv4": "192.0.2.100"},
    )
    lab.network(
        "e" * 64,
        "R",
        "nd-r",
        [subnet("10.5.0.0/24", "10.5.0.1")],
        options={"enable_ip_masquerade": "false"},
    )

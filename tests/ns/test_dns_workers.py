"""DNS with two worker processes on SO_REUSEPORT sockets, and networks removed and re-added.

Topology: host ns br0 10.77.0.1/24 (network "a") and br1 10.78.0.1/24 (network "b"); c1 is
10.77.0.2 on a (name "one") and 10.78.0.2 on b. ``python -m netd.dns.standalone --workers 2``
serves both. Queries come from a Python client in c1 with a fresh source port each, so the
kernel spreads them over the two workers' sockets.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit.worlds import sandbox_world
from netns_fixtures import Namespace, Sandbox

from netd.model import Endpoint, Network, Subnet, to_json

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]

# Sends N queries for "one" from N sockets (distinct source ports) and prints how many were
# answered with 10.77.0.2/10.78.0.2 within the timeout.
CLIENT = r"""
import socket, struct, sys
server, n, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
q = lambda i: struct.pack("!HHHHHH", i, 0x0100, 1, 0, 0, 0) + b"\x03one\x00\x00\x01\x00\x01"
socks = []
for i in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    s.sendto(q(i), (server, 53))
    socks.append(s)
ok = 0
for i, s in enumerate(socks):
    try:
        data = s.recv(512)
    except OSError:  # timeout, or ICMP port unreachable when nothing listens
        continue
    if data[:2] == struct.pack("!H", i) and data[-4:-1] in (b"\x0a\x4d\x00", b"\x0a\x4e\x00"):
        ok += 1
print(ok)
"""


def _world_state(path: Path, with_b: bool) -> None:
    items = []
    for name, cidr, addr in (
        ("a", "10.77.0.1/24", "10.77.0.2"),
        ("b", "10.78.0.1/24", "10.78.0.2"),
    ):
        if name == "b" and not with_b:
            continue
        iface = ipaddress.ip_interface(cidr)
        net = Network(
            id=name * 64, name=name, driver="bridge", subnets=(Subnet(iface.network, iface.ip),)
        )
        ep = Endpoint(
            network_id=net.id, container_id="c1", ifname="eth0", netns="/x", host_ifname="v",
            addresses=(ipaddress.ip_interface(f"{addr}/24"),), name="one", state="ready",
        )  # fmt: skip
        items.append({"network": to_json(net), "endpoints": [to_json(ep)]})
    path.write_text(json.dumps(items))


class Two:
    def __init__(self, box: Sandbox, tmp: Path) -> None:
        self.host = box.add_host()
        self.c1 = box.add_ns("c1")
        for i, (br, gw, addr) in enumerate(
            (("br0", "10.77.0.1/24", "10.77.0.2/24"), ("br1", "10.78.0.1/24", "10.78.0.2/24"))
        ):
            self.host.run("ip", "link", "add", br, "type", "bridge")
            self.host.run("ip", "addr", "add", gw, "dev", br)
            self.host.run("ip", "link", "set", br, "up")
            subprocess.run(
                ["ip", "link", "add", f"v{i}", "netns", self.host.name, "type", "veth", "peer",
                 "name", f"eth{i}", "netns", self.c1.name],
                check=True,
            )  # fmt: skip
            self.host.run("ip", "link", "set", f"v{i}", "master", br, "up")
            self.c1.run("ip", "addr", "add", addr, "dev", f"eth{i}")
            self.c1.run("ip", "link", "set", f"eth{i}", "up")
        self.state = tmp / "state.json"
        _world_state(self.state, with_b=True)
        (tmp / "resolv.conf").write_text("nameserver 10.77.0.99\n")
        self.client = tmp / "client.py"
        self.client.write_text(CLIENT)
        self.proc = self.host.spawn(
            PY, "-m", "netd.dns.standalone", str(self.state), "--workers", "2",
            "--upstreams-from", str(tmp / "resolv.conf"),
            stdout=subprocess.PIPE, text=True, cwd=str(ROOT),
        )  # fmt: skip
        self.pids: list[int] = self.status()["worker_pids"]
        self.generation = 0

    def status(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "standalone DNS manager exited"
        return dict(json.loads(line))

    def answered(self, server: str, n: int = 40, timeout: float = 1.0) -> int:
        ns: Namespace = self.c1
        return int(ns.run(PY, str(self.client), server, str(n), str(timeout), timeout=30))

    def reload(self, with_b: bool) -> None:
        _world_state(self.state, with_b)
        os.kill(self.proc.pid, signal.SIGHUP)
        self.generation += 1
        assert self.status()["generation"] == self.generation


@pytest.fixture(scope="module")
def two() -> Iterator[Two]:
    with sandbox_world(Two, "netd-dns-workers-") as w:
        yield w


def test_two_workers_each_serve_a_share(two: Two) -> None:
    assert len(two.pids) == 2 and len(set(two.pids)) == 2
    assert two.answered("10.77.0.1") == 40
    os.kill(two.pids[1], signal.SIGSTOP)
    try:
        # Queries hashed to the stopped worker's socket wait; the other worker answers its own.
        got = two.answered("10.77.0.1", timeout=0.5)
        assert 0 < got < 40, got
    finally:
        os.kill(two.pids[1], signal.SIGCONT)
    assert two.answered("10.77.0.1") == 40


def test_network_removed_stops_answering_and_comes_back(two: Two) -> None:
    assert two.answered("10.78.0.1") == 40
    two.reload(with_b=False)
    try:
        assert two.answered("10.78.0.1", n=10, timeout=0.3) == 0
        assert two.answered("10.77.0.1") == 40
    finally:
        two.reload(with_b=True)
    assert two.answered("10.78.0.1") == 40


def test_killed_worker_is_restarted_with_its_sockets(two: Two) -> None:
    old = two.pids[1]
    os.kill(old, signal.SIGKILL)
    two.pids = two.status()["worker_pids"]
    assert two.pids[0] is not None and two.pids[1] not in (None, old)
    assert two.answered("10.77.0.1") == 40
    assert two.answered("10.78.0.1") == 40

"""Helpers shared by the multi-host namespace tests: containers attached through each host's
daemon, and a TCP/UDP echo service that answers with the address it saw the client come from
(the far end's view is what tells masquerade, DNAT and isolation apart).

Everything runs in namespaces of one :class:`netns_fixtures.cluster.Cluster`; nothing here
asks netd how the packets went.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from netns_fixtures import Namespace, wait_for
from netns_fixtures.cluster import Cluster
from netns_fixtures.daemon import Daemon

PY = sys.executable

# Answers every TCP connection and UDP datagram on PORT with the client's address as seen here.
ECHO_SERVER = r"""
import socket, sys, threading
port = int(sys.argv[1])
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        d, a = s.recvfrom(100); s.sendto(a[0].encode(), a)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port)); s.listen(64)
while True:
    c, a = s.accept(); c.sendall(a[0].encode()); c.close()
"""

# argv HOST PORT PROTO TIMEOUT: prints what the echo server answered (exit 1 on no answer).
ECHO_CLIENT = r"""
import socket, sys
host, port, proto, timeout = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind); s.settimeout(timeout)
s.connect((host, port))
if proto == "udp": s.send(b"x")
print(s.recv(100).decode())
"""


def serve(ns: Namespace, port: int) -> None:
    """Start the echo service on ``port`` (TCP and UDP) in ``ns``; wait until it answers."""
    ns.spawn(PY, "-c", ECHO_SERVER, str(port), stdout=subprocess.DEVNULL)
    wait_for(f"echo service on {ns.name}:{port}", lambda: ask(ns, "127.0.0.1", port) != "", 10)


def ask(ns: Namespace, host: str, port: int, proto: str = "tcp", timeout: float = 1.0) -> str:
    """The client address the echo service at ``host:port`` saw, "" if nothing answered."""
    proc = subprocess.run(
        ns.argv(PY, "-c", ECHO_CLIENT, host, str(port), proto, str(timeout)),
        capture_output=True,
        text=True,
        timeout=timeout + 20,
    )
    return proc.stdout.strip() if proc.returncode == 0 else ""


class Hosts:
    """A cluster's daemons (by host name) and the containers attached so far (by name)."""

    def __init__(self, cluster: Cluster, daemons: dict[str, Daemon]) -> None:
        self.cluster = cluster
        self.d = daemons
        self.containers: dict[str, Namespace] = {}

    def container(self, name: str) -> Namespace:
        """A fresh container namespace called ``name`` (in the cluster's sandbox)."""
        ns = self.cluster.sandbox.add_ns(name)
        self.containers[name] = ns
        return ns

    def connect(self, host: str, net: str, name: str, *extra: str) -> dict[str, Any]:
        """Attach container ``name`` (made if new) to ``net`` through ``host``'s daemon."""
        ns = self.containers.get(name) or self.container(name)
        out = self.d[host].cli("network", "connect", net, "--netns", ns.path, "--name", name,
                               "--format", "json", *extra).stdout  # fmt: skip
        return dict(json.loads(out))

    def address(self, name: str, ifname: str = "eth0") -> str:
        """The container's IPv4 address on ``ifname``, read from its namespace."""
        addrs = self.containers[name].addresses(ifname)
        return next(a.split("/")[0] for a in addrs if "." in a)

    def networks(self, host: str) -> set[str]:
        """Network names ``network ls`` shows on ``host``."""
        out = self.d[host].cli("network", "ls", "--format", "json").stdout
        return {n["name"] for n in json.loads(out)}

    def wait_network(self, name: str, hosts: tuple[str, ...]) -> None:
        """Wait until every host in ``hosts`` serves network ``name``."""
        for h in hosts:
            wait_for(f"{name} on {h}", lambda h=h: name in self.networks(h), 10)

"""Names for macvlan containers: DNS at 127.0.0.11 inside each container's namespace.

A macvlan container cannot reach its host through the parent (test_macvlan_ns shows it), so
the bridge's DNS-on-the-gateway cannot serve it. The DNS manager binds 127.0.0.11:53 inside
each endpoint's namespace and its unprivileged worker serves the endpoint's networks there.
Containers are plumbed by the real macvlan driver (vlan_agent); the manager runs in the
sandbox host (dns_netns_agent); queries are real glibc (``getent``) and ``dig``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bridge_agent import PYTHON
from netns_fixtures import Namespace, Sandbox
from vlan_agent import endpoint, network, ok, run_agent

HERE = Path(__file__).resolve().parent
NET = "c3" * 32


class Manager:
    """One dns_netns_agent process (a daemon's DNS manager) in the sandbox host."""

    def __init__(self, host: Namespace, run_dir: Path, state: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.name, PYTHON, str(HERE / "dns_netns_agent.py"),
             str(run_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        host.sandbox.processes.append(self.proc)  # killed by pid if a test fails midway
        assert self.say(json.dumps(state)) == "ok"

    def say(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def end(self, how: str) -> None:
        assert self.say(how) == "ok"
        self.proc.wait(timeout=30)
        self.close()

    def close(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class World:
    def __init__(self, box: Sandbox, run_dir: Path) -> None:
        self.box, self.run_dir = box, run_dir
        self.host, self.lan = box.add_host(), box.add_ns("lan")
        box.wire(self.host, self.lan, "192.168.77.2/24", "192.168.77.1/24")
        self.net = network("macvlan", NET, [("192.168.77.0/24", "192.168.77.1")],
                           options={"parent": "up0"})  # fmt: skip
        self.c: dict[str, Namespace] = {}
        self.eps: dict[str, Any] = {}
        self.etc: list[Path] = []
        steps: list[dict[str, Any]] = [{"op": "ensure_network", "network": self.net}]
        for i, (cid, name) in enumerate((("c1", "web"), ("c2", "db")), start=10):
            ns = box.add_ns(cid)
            self.c[cid] = ns
            ep = endpoint(NET, cid, ns.path, [f"192.168.77.{i}/24"], name=name,
                          aliases=[f"{name}-alias"])  # fmt: skip
            steps.append({"op": "setup_endpoint", "network": self.net, "endpoint": ep})
            self.resolv(ns)
        for res in ok(run_agent("macvlan", self.host.name, steps))[1:]:
            self.eps[res["container_id"]] = {**res, "state": "ready"}
        # Detached DNS workers outlive their manager: find them in the host to kill them.
        self.dns: Manager | None = None

    def state(self) -> dict[str, Any]:
        return {"network": self.net, "endpoints": list(self.eps.values())}

    def manager(self) -> Manager:
        self.dns = Manager(self.host, self.run_dir, self.state())
        return self.dns

    def resolv(self, ns: Namespace) -> None:
        """Docker's resolv.conf for the container (``ip netns exec`` bind-mounts it)."""
        etc = Path("/etc/netns") / ns.name
        etc.mkdir(parents=True)
        self.etc.append(etc)
        (etc / "resolv.conf").write_text(
            "nameserver 127.0.0.11\nsearch dns.netd\noptions ndots:0 timeout:2 attempts:2\n"
        )

    def close(self) -> None:
        for etc in self.etc:
            shutil.rmtree(etc, ignore_errors=True)


@pytest.fixture
def world(sandbox: Sandbox) -> Iterator[World]:
    run_dir = Path(tempfile.mkdtemp(prefix="netd-dns-"))
    w = World(sandbox, run_dir)
    try:
        yield w
    finally:
        if w.dns is not None and w.dns.proc.poll() is None:
            w.dns.end("stop")  # stops its workers too
        w.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def getent(ns: Namespace, name: str) -> list[str]:
    proc = subprocess.run(ns.argv("getent", "hosts", name), capture_output=True, text=True)
    return sorted(line.split()[0] for line in proc.stdout.splitlines())


def dig(ns: Namespace, *args: str) -> list[str]:
    out = ns.run("dig", "@127.0.0.11", "+short", "+time=2", "+tries=2", *args, check=False)
    return sorted(out.split())


def test_names_resolve_through_glibc_and_dig_inside_each_container(world: World) -> None:
    dns = world.manager()
    c1, c2 = world.c["c1"], world.c["c2"]
    assert getent(c1, "db") == []  # nothing listens at 127.0.0.11 before the attach
    assert dns.say("attach c1") == "ok" and dns.say("attach c2") == "ok"
    assert dns.say("attach c1") == "ok"  # idempotent
    assert getent(c1, "db") == ["192.168.77.11"]
    assert getent(c2, "web-alias") == ["192.168.77.10"]
    assert getent(c1, "db.dns.netd") == ["192.168.77.11"]
    assert dig(c2, "web") == ["192.168.77.10"]
    assert dig(c2, "+tcp", "web") == ["192.168.77.10"]
    assert dig(c1, "-x", "192.168.77.11") == ["db.dns.netd."]
    # The socket is in the container, not the host: the host has no 127.0.0.11 listener.
    host_out = world.host.run("dig", "@127.0.0.11", "+time=1", "+tries=1", "web", check=False)
    assert "192.168.77.10" not in host_out
    records = json.loads(dns.say("records"))
    assert {"address": "127.0.0.11", "port": 53, "in": "each container's namespace",
            "containers": 2} in records["listen"]  # fmt: skip
    assert not any(item["address"] == "192.168.77.1" for item in records["listen"])
    # Detach closes the container's sockets (and so lets its namespace go when it dies).
    assert dns.say("detach c1") == "ok"
    assert getent(c1, "db") == []
    assert getent(c2, "web") == ["192.168.77.10"]
    dns.end("stop")


def test_sockets_survive_a_daemon_restart_and_sync_drops_stale_ones(world: World) -> None:
    first = world.manager()
    assert first.say("attach c1") == "ok" and first.say("attach c2") == "ok"
    first.end("handover")  # the daemon stops; its detached worker keeps serving
    world.dns = None
    c1, c2 = world.c["c1"], world.c["c2"]
    assert getent(c1, "db") == ["192.168.77.11"]
    second = world.manager()  # adopts the worker and its sockets
    assert getent(c1, "db") == ["192.168.77.11"]
    assert second.say("sync c1") == "ok"  # c2 detached while the daemon was away
    assert getent(c1, "db") == ["192.168.77.11"]
    assert getent(c2, "web") == []
    assert second.say("sync c1 c2") == "ok"  # and a missing one is bound again
    assert getent(c2, "web") == ["192.168.77.10"]
    second.end("stop")


def test_a_namespace_that_is_gone_is_a_clear_error(world: World) -> None:
    dns = world.manager()
    world.box.namespaces.remove(world.c["c2"])
    subprocess.run(["ip", "netns", "del", world.c["c2"].name], check=True)
    reply = dns.say("attach c2")
    assert reply == f"error: invalid netns '{world.c['c2'].path}': no such file"
    assert dns.say("attach c1") == "ok"
    assert getent(world.c["c1"], "web") == ["192.168.77.10"]

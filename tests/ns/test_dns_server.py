"""Embedded DNS end to end: the real worker in a sandbox host, queried with dig and glibc.

Topology (all inside one sandbox; built once per module because it is read-mostly):

    host ns: br-front 10.88.0.1/24 fd88::1/64   (network "front")
             br-back  10.89.0.1/24              (network "back")
             br-int   10.91.0.1/24              (network "priv", internal)
             up0      10.90.0.1/24  --veth--  outside ns: 10.90.0.2 (dnsmasq upstream)
    c1: front 10.88.0.2 + fd88::2, name web, alias www, publishes 8080->80/tcp
    c2: front 10.88.0.3 and back 10.89.0.3, name db, alias www on front
    c3: back 10.89.0.4, name cache
    c4: priv 10.91.0.2, name secret

The DNS manager runs inside the host ns via ``python -m netd.dns.standalone``; the upstream
list is a private resolv.conf naming a dead server (10.90.0.9) first and dnsmasq second.
Tests that change state (detach, worker kill) restore it before returning.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kit import endpoint, network
from kit.worlds import sandbox_world
from netns_fixtures import Namespace, Sandbox

from netd.model import Endpoint, Network, PortMapping, to_json

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]


def _net(name: str, cidrs: list[str], internal: bool = False) -> Network:
    return network(name, cidrs, id=name * 8, internal=internal, ipv6=False)


def _ep(net: Network, cid: str, name: str, addrs: list[str], **kw: Any) -> Endpoint:
    return endpoint(net, cid, ip=addrs, host_ifname="x", name=name, **kw)


class World:
    """The sandbox, the DNS process and helpers to query from containers."""

    def __init__(self, box: Sandbox, tmp: Path) -> None:
        self.box = box
        self.tmp = tmp
        self.host = box.add_host()
        self.c: dict[str, Namespace] = {n: box.add_ns(n) for n in ("c1", "c2", "c3", "c4")}
        self.outside = box.add_ns("up")
        self.front = _net("front", ["10.88.0.1/24", "fd88::1/64"])
        self.back = _net("back", ["10.89.0.1/24"])
        self.priv = _net("priv", ["10.91.0.1/24"], internal=True)
        for bridge, net in (
            ("br-front", self.front),
            ("br-back", self.back),
            ("br-int", self.priv),
        ):
            self.host.run("ip", "link", "add", bridge, "type", "bridge")
            for sub in net.subnets:
                cidr = f"{sub.gateway}/{sub.subnet.prefixlen}"
                self.host.run("ip", "addr", "add", cidr, "dev", bridge, "nodad")
            self.host.run("ip", "link", "set", bridge, "up")
        self._plug("c1", "br-front", "eth0", ["10.88.0.2/24", "fd88::2/64"])
        self._plug("c2", "br-front", "eth0", ["10.88.0.3/24"])
        self._plug("c2", "br-back", "eth1", ["10.89.0.3/24"])
        self._plug("c3", "br-back", "eth0", ["10.89.0.4/24"])
        self._plug("c4", "br-int", "eth0", ["10.91.0.2/24"])
        box.wire(self.host, self.outside, "10.90.0.1/24", "10.90.0.2/24")
        self.outside.run("ip", "route", "add", "10.88.0.0/16", "via", "10.90.0.1")
        self.dnsmasq = self.outside.spawn(
            "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--port=53",
            "--listen-address=10.90.0.2", "--bind-interfaces", "--address=/example.test/1.2.3.4",
            "--user=root", "--pid-file=", "--local-ttl=60",
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.resolv = tmp / "upstreams.conf"
        self.resolv.write_text(
            "nameserver 127.0.0.53\nnameserver 10.90.0.9\nnameserver 10.90.0.2\n"
        )
        self.state_file = tmp / "state.json"
        self.endpoints = {
            "c1": _ep(self.front, "c1", "web", ["10.88.0.2/24", "fd88::2/64"], aliases=("www",),
                      port_mappings=(PortMapping(8080, 80),)),
            "c2f": _ep(self.front, "c2", "db", ["10.88.0.3/24"], aliases=("www",)),
            "c2b": _ep(self.back, "c2", "db", ["10.89.0.3/24"]),
            "c3": _ep(self.back, "c3", "cache", ["10.89.0.4/24"]),
            "c4": _ep(self.priv, "c4", "secret", ["10.91.0.2/24"]),
        }  # fmt: skip
        self.write_state()
        self.proc = self.host.spawn(
            PY, "-m", "netd.dns.standalone", str(self.state_file),
            "--upstreams-from", str(self.resolv), "--host-listen", "127.0.0.1:5353",
            stdout=subprocess.PIPE, text=True, cwd=str(ROOT),
        )  # fmt: skip
        self.worker_pid = self.next_status()["worker_pid"]
        self.generation = 0

    def _plug(self, cname: str, bridge: str, ifname: str, addrs: list[str]) -> None:
        ns = self.c[cname]
        peer = f"{cname}{ifname}"
        subprocess.run(
            ["ip", "link", "add", peer, "netns", self.host.name, "type", "veth", "peer", "name",
             ifname, "netns", ns.name],
            check=True,
        )  # fmt: skip
        self.host.run("ip", "link", "set", peer, "master", bridge, "up")
        for a in addrs:
            ns.run("ip", "addr", "add", a, "dev", ifname, "nodad")
        ns.run("ip", "link", "set", ifname, "up")

    def write_state(self, skip: tuple[str, ...] = ()) -> None:
        nets: dict[str, dict[str, Any]] = {}
        for net in (self.front, self.back, self.priv):
            nets[net.id] = {"network": to_json(net), "endpoints": []}
        for key, ep in self.endpoints.items():
            if key not in skip:
                nets[ep.network_id]["endpoints"].append(to_json(ep))
        self.state_file.write_text(json.dumps(list(nets.values())))

    def next_status(self, timeout: float = 10.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, "standalone DNS manager printed no status"
        line = self.proc.stdout.readline()
        assert line, "standalone DNS manager exited"
        return dict(json.loads(line))

    def reload(self, skip: tuple[str, ...] = ()) -> None:
        self.write_state(skip)
        os.kill(self.proc.pid, signal.SIGHUP)
        self.generation += 1
        status = self.next_status()
        assert status["generation"] == self.generation

    def dig(self, cname: str, *args: str, server: str = "10.88.0.1") -> str:
        return self.c[cname].run("dig", f"@{server}", "+tries=1", "+time=3", *args, timeout=15)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    # The worker runs as nobody and reads the upstream list itself (in the 0755 scratch dir).
    with sandbox_world(World, "netd-dns-test-") as w:
        yield w


def short(world: World, cname: str, *args: str, server: str = "10.88.0.1") -> list[str]:
    return world.dig(cname, "+short", *args, server=server).split()


def status_of(out: str) -> str:
    return out.split("status: ", 1)[1].split(",", 1)[0]


# --- local names -----------------------------------------------------------------------------


def test_name_forms_over_udp_v4_and_v6(world: World) -> None:
    assert short(world, "c2", "web") == ["10.88.0.2"]
    assert short(world, "c2", "WEB.DNS.NETD") == ["10.88.0.2"]
    assert short(world, "c2", "web.front") == ["10.88.0.2"]
    assert short(world, "c1", "db.dns.netd", server="fd88::1") == ["10.88.0.3"]
    assert short(world, "c1", "web", "AAAA", server="fd88::1") == ["fd88::2"]


def test_tcp_several_messages_per_connection(world: World) -> None:
    out = world.dig("c2", "+tcp", "+keepopen", "web", "db", "cache")
    assert out.count("(TCP)") == 3
    assert "web.\t\t\t5\tIN\tA\t10.88.0.2" in out
    assert "cache.\t\t\t5\tIN\tA\t10.89.0.4" in out


def test_norec_and_edns(world: World) -> None:
    out = world.dig("c2", "+norec", "+edns=0", "+bufsize=1232", "web")
    assert "flags: qr aa ra;" in out and "EDNS: version: 0" in out and "10.88.0.2" in out
    bad = world.dig("c2", "+edns=1", "+noednsnegotiation", "web")
    assert status_of(bad) == "BADVERS"


def test_aaaa_on_v4_only_name_is_nodata_with_soa(world: World) -> None:
    out = world.dig("c1", "db", "AAAA")
    assert status_of(out) == "NOERROR"
    assert "ANSWER: 0, AUTHORITY: 1" in out
    assert "dns.netd.\t\t5\tIN\tSOA\tns.dns.netd. hostmaster.dns.netd." in out


def test_unknown_and_other_types(world: World) -> None:
    for qtype in ("TXT", "MX", "TYPE65", "CAA"):
        out = world.dig("c1", "web", qtype)
        assert status_of(out) == "NOERROR" and "ANSWER: 0, AUTHORITY: 1" in out, qtype
    out = world.dig("c1", "web", "ANY")
    assert "10.88.0.2" in out and "fd88::2" in out
    nx = world.dig("c1", "nosuch.dns.netd")
    assert status_of(nx) == "NXDOMAIN" and "AUTHORITY: 1" in nx
    assert short(world, "c1", "_http._tcp.web", "SRV") == ["0", "0", "80", "web.dns.netd."]


def test_ptr_both_families(world: World) -> None:
    assert short(world, "c2", "-x", "10.88.0.2") == ["web.dns.netd."]
    assert short(world, "c1", "-x", "fd88::2") == ["web.dns.netd."]
    assert status_of(world.dig("c1", "-x", "10.88.0.200")) == "NXDOMAIN"


def test_scoping_by_source_address(world: World) -> None:
    # c1 is only on front: db resolves to its front address, cache (back only) does not exist.
    assert short(world, "c1", "db") == ["10.88.0.3"]
    assert status_of(world.dig("c1", "cache")) == "NXDOMAIN"
    # c2 is on both networks and sees both, whichever gateway it asks.
    assert sorted(short(world, "c2", "db", server="10.89.0.1")) == ["10.88.0.3", "10.89.0.3"]
    assert short(world, "c2", "cache", server="10.88.0.1") == ["10.89.0.4"]
    # c3 is on back only: web does not resolve even when it asks front's server.
    assert status_of(world.dig("c3", "web", server="10.89.0.1")) == "NXDOMAIN"


def test_alias_shared_round_robin(world: World) -> None:
    firsts = {short(world, "c1", "www")[0] for _ in range(4)}
    assert firsts == {"10.88.0.2", "10.88.0.3"}
    assert sorted(short(world, "c1", "www")) == ["10.88.0.2", "10.88.0.3"]


def test_unknown_source_is_refused(world: World) -> None:
    # The outside namespace is routed to the gateway but is no container: no open resolver.
    out = world.outside.run("dig", "@10.88.0.1", "+tries=1", "+time=2", "web", check=False)
    assert "status: REFUSED" in out


def test_glibc_resolver_with_resolv_conf(world: World) -> None:
    etc = Path("/etc/netns") / world.c["c2"].name
    etc.mkdir(parents=True)
    try:
        (etc / "resolv.conf").write_text(
            "nameserver 10.88.0.1\nsearch dns.netd\noptions ndots:0 timeout:2 attempts:1\n"
        )
        out = world.c["c2"].run("getent", "hosts", "web")
        assert out.split()[0] in ("10.88.0.2", "fd88::2")
        out = world.c["c2"].run("getent", "ahostsv4", "cache.dns.netd")
        assert out.split()[0] == "10.89.0.4"
        assert world.c["c2"].run("getent", "hosts", "example.test").split()[0] == "1.2.3.4"
    finally:
        shutil.rmtree(etc)


def test_host_listener_sees_all_networks(world: World) -> None:
    out = world.host.run("dig", "@127.0.0.1", "-p", "5353", "+short", "cache", "secret")
    assert out.split() == ["10.89.0.4", "10.91.0.2"]


# --- forwarding ------------------------------------------------------------------------------


def test_forwarding_with_a_dead_upstream_first(world: World) -> None:
    start = time.monotonic()
    assert short(world, "c1", "example.test") == ["1.2.3.4"]
    first = time.monotonic() - start
    assert first < 1.5  # staggered race: the dead 10.90.0.9 costs at most 0.5 s
    start = time.monotonic()
    assert short(world, "c1", "www.example.test", "+tcp") == ["1.2.3.4"]
    # The dead upstream is now remembered as bad (or the answer is cached): no stall at all.
    assert time.monotonic() - start < 0.45
    out = world.dig("c1", "example.test")
    assert "EDNS: version: 0" in out and "1.2.3.4" in out


def test_cache_serves_when_upstream_stops(world: World) -> None:
    assert short(world, "c2", "cached.example.test") == ["1.2.3.4"]
    os.kill(world.dnsmasq.pid, signal.SIGSTOP)
    try:
        assert short(world, "c2", "cached.example.test") == ["1.2.3.4"]
        start = time.monotonic()
        out = world.dig("c2", "other.example.test")
        assert status_of(out) == "SERVFAIL"
        assert time.monotonic() - start < 2.5  # SERVFAIL in ~2 s, not a client timeout
    finally:
        os.kill(world.dnsmasq.pid, signal.SIGCONT)


def test_internal_network_does_not_forward(world: World) -> None:
    assert short(world, "c4", "secret", server="10.91.0.1") == ["10.91.0.2"]
    out = world.dig("c4", "example.test", server="10.91.0.1")
    assert status_of(out) == "REFUSED"


# --- live updates, privilege separation, restart ----------------------------------------------


def test_detach_removes_name_at_once(world: World) -> None:
    world.reload(skip=("c3",))
    try:
        assert status_of(world.dig("c2", "cache")) == "NXDOMAIN"
        # c3 is no container any more: its queries are refused.
        assert status_of(world.dig("c3", "db", server="10.89.0.1")) == "REFUSED"
    finally:
        world.reload()
    assert short(world, "c2", "cache") == ["10.89.0.4"]


def test_worker_is_unprivileged(world: World) -> None:
    status = Path(f"/proc/{world.worker_pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split() == ["65534"] * 4
    assert fields["Gid"].split() == ["65534"] * 4
    assert fields["Groups"].strip() == ""
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, cap
    assert fields["NoNewPrivs"].strip() == "1"


def test_worker_killed_restarts_within_a_second(world: World) -> None:
    old = world.worker_pid
    os.kill(old, signal.SIGKILL)
    start = time.monotonic()
    world.worker_pid = world.next_status()["worker_pid"]
    assert world.worker_pid != old
    answer: list[str] = []
    while time.monotonic() - start < 3:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            answer = (
                world.c["c1"]
                .run("dig", "@10.88.0.1", "+short", "+tries=1", "+time=1", "web", timeout=5)
                .split()
            )
            if answer:
                break
    elapsed = time.monotonic() - start
    assert answer == ["10.88.0.2"]
    assert elapsed < 1.0, elapsed

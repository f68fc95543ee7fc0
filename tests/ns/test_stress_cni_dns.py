"""200 CNI ADDs then DELs through the real plugin executable, 12 at a time, with DNS under way.

The plugin is installed as a runtime would (``install_plugin``, what ``netd cni install``
does) and exec'd with CNI_* in its environment inside the sandbox host, against a daemon with
the nftables backend and its DNS worker. Five networks; every container is named by
``K8S_POD_NAME`` and every fourth publishes a host port. Meanwhile a thread asks the DNS
servers (on the five gateways) from a ``probe`` container attached to all five networks: the
name of a container that exists must answer its address, a name that never existed NXDOMAIN,
and no query may time out. Afterwards, read from the kernel and from DNS, not from netd: no
veth, no allocation, no nftables element and no DNS record of any of the 200 is left.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cni_runtime import Runtime
from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon

from netd.cni.install import install_plugin

N, WIDTH, NETS = 200, 12, 5
SUBNETS = [f"10.15{k}.0.0/24" for k in range(NETS)]
GATEWAYS = [f"10.15{k}.0.1" for k in range(NETS)]

# Runs inside the probe namespace: one DNS query per stdin line "<id> <server> <name>",
# answered on stdout as "<id> <rcode> <address,...>" ("timeout" when nothing came back in 2 s).
RELAY = r"""
import socket, sys
from dnslib import DNSRecord, QTYPE, RCODE
for line in sys.stdin:
    qid, server, name = line.split()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    try:
        s.sendto(DNSRecord.question(name, "A").pack(), (server, 53))
        reply = DNSRecord.parse(s.recv(4096))
        ips = ",".join(str(r.rdata) for r in reply.rr if r.rtype == QTYPE.A) or "-"
        print(qid, RCODE[reply.header.rcode], ips, flush=True)
    except socket.timeout:
        print(qid, "timeout", "-", flush=True)
    finally:
        s.close()
"""


class Resolver:
    """Sends queries through the relay in the probe namespace (one at a time)."""

    def __init__(self, probe: Namespace) -> None:
        self.proc = probe.spawn(
            sys.executable,
            "-c",
            RELAY,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.n = 0

    def ask(self, server: str, name: str) -> tuple[str, list[str]]:
        """(rcode, addresses) of ``name`` at ``server``."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.n += 1
        self.proc.stdin.write(f"{self.n} {server} {name}\n")
        self.proc.stdin.flush()
        qid, rcode, ips = self.proc.stdout.readline().split()
        assert int(qid) == self.n
        return rcode, [] if ips == "-" else ips.split(",")

    def close(self) -> None:
        """End the relay (EOF on its stdin) and close the pipes."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with contextlib.suppress(OSError):
            self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.proc.stdout.close()


class World:
    """What the test knows: which containers exist now (ADD answered, DEL not yet sent)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: dict[int, str] = {}  # index -> address
        self.deleting: set[int] = set()


def conf(i: int) -> dict[str, Any]:
    k = i % NETS
    out: dict[str, Any] = {
        "cniVersion": "1.0.0",
        "name": f"stress{k}",
        "type": "netd",
        "ipam": {"ranges": [[{"subnet": SUBNETS[k]}]]},
    }
    if i % 4 == 0:
        out["runtimeConfig"] = {
            "portMappings": [{"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}]
        }
    return out


def dns_load(resolver: Resolver, world: World, stop: threading.Event) -> dict[str, Any]:
    """Query until ``stop``: live containers (sampled) and names that never existed."""
    rng = random.Random(7)
    stats: dict[str, Any] = {"asked": 0, "rcodes": Counter(), "wrong": [], "late": 0}
    while not stop.is_set():
        with world.lock:
            live = [i for i in world.live if i not in world.deleting]
        if live and rng.random() < 0.8:
            i = rng.choice(live)
            want = world.live[i]
            rcode, ips = resolver.ask(GATEWAYS[rng.randrange(NETS)], f"pod-{i}")
            with world.lock:
                still = i in world.live and i not in world.deleting
            if still and (rcode, ips) != ("NOERROR", [want]):
                # Records are pushed after the ADD returned: allow the push a moment.
                time.sleep(0.2)
                stats["late"] += 1
                rcode, ips = resolver.ask(GATEWAYS[i % NETS], f"pod-{i}")
                with world.lock:
                    still = i in world.live and i not in world.deleting
                if still and (rcode, ips) != ("NOERROR", [want]):
                    stats["wrong"].append((f"pod-{i}", want, rcode, ips))
        else:
            rcode, ips = resolver.ask(GATEWAYS[rng.randrange(NETS)], f"never-{rng.randrange(9999)}")
            if rcode != "NXDOMAIN":
                stats["wrong"].append(("never", "NXDOMAIN", rcode, ips))
        stats["asked"] += 1
        stats["rcodes"][rcode] += 1
    return stats


def test_200_plugin_adds_and_dels_with_dns_running(
    host: Namespace, sandbox: Sandbox, tmp_path: Path
) -> None:
    started = time.monotonic()
    d = Daemon(host, firewall="nftables").start()
    resolver: Resolver | None = None
    try:
        for k in range(NETS):
            body = {"name": f"stress{k}", "subnets": [{"subnet": SUBNETS[k]}]}
            assert d.request("POST", "/v1/networks", body)[0] == 201
        probe = sandbox.add_ns("probe")
        for k in range(NETS):
            body = {"netns": probe.path, "container_id": "probe", "ifname": f"eth{k}"}
            status, ep = d.request("POST", f"/v1/networks/stress{k}/connect", body)
            assert status == 201, ep
        before = set(host.links())
        containers = [sandbox.add_ns(f"p{i}") for i in range(N)]
        install_plugin(tmp_path / "bin")
        rt = Runtime(host, [tmp_path / "bin"], d.socket)
        resolver, world, stop = Resolver(probe), World(), threading.Event()
        assert resolver.ask(GATEWAYS[0], "never-0")[0] == "NXDOMAIN"
        setup = time.monotonic() - started

        def add(i: int) -> tuple[int, Any]:
            c = containers[i]
            res = rt.exec(
                "netd",
                "ADD",
                conf(i),
                container_id=c.name,
                netns=c.path,
                args=f"K8S_POD_NAME=pod-{i}",
            )
            if res.code == 0:
                with world.lock:
                    world.live[i] = res.out["ips"][0]["address"].split("/")[0]
            return res.code, res.out

        def delete(i: int) -> tuple[int, Any]:
            c = containers[i]
            with world.lock:
                world.deleting.add(i)
            res = rt.exec("netd", "DEL", conf(i), container_id=c.name, netns=c.path)
            if res.code == 0:
                with world.lock:
                    world.live.pop(i, None)
            return res.code, res.out

        with ThreadPoolExecutor(1) as dns_thread:
            load = dns_thread.submit(dns_load, resolver, world, stop)
            t0 = time.monotonic()
            with ThreadPoolExecutor(WIDTH) as pool:
                added = list(pool.map(add, range(N)))
            t_add = time.monotonic() - t0
            errors = [(i, out) for i, (code, out) in enumerate(added) if code != 0]
            assert not errors, errors[:3]
            addresses = [out["ips"][0]["address"] for _, out in added]
            assert len(set(addresses)) == N, "duplicate addresses"
            for i, address in enumerate(addresses):
                assert address.startswith(SUBNETS[i % NETS][:7]), (i, address)
            # Every container has exactly its answered address, in its namespace.
            for i in random.Random(1).sample(range(N), 20):
                assert containers[i].addresses("eth0") == [addresses[i]]
            time.sleep(1)  # DNS load against the full set too
            t0 = time.monotonic()
            with ThreadPoolExecutor(WIDTH) as pool:
                deleted = list(pool.map(delete, range(N)))
            t_del = time.monotonic() - t0
            stop.set()
            stats = load.result(timeout=60)
        errors = [(i, out) for i, (code, out) in enumerate(deleted) if code != 0]
        assert not errors, errors[:3]
        print(
            f"setup {setup:.1f} s, {N} ADDs in {t_add:.1f} s, {N} DELs in {t_del:.1f} s "
            f"({WIDTH} at a time); DNS: {stats['asked']} queries {dict(stats['rcodes'])}, "
            f"{stats['late']} asked twice"
        )
        assert stats["rcodes"]["timeout"] == 0, stats
        assert not stats["wrong"], stats["wrong"][:5]
        assert stats["rcodes"]["NOERROR"] >= 50 and stats["rcodes"]["NXDOMAIN"] >= 10, stats

        # Nothing left, read from the kernel, from DNS and from the store's allocations.
        assert set(host.links()) == before, sorted(set(host.links()) ^ before)
        for c in random.Random(2).sample(containers, 20):
            assert "eth0" not in c.links()
        mark = f"{sandbox.prefix}-p"  # in the owner comment of every container's element
        leftover = [
            (body["name"], e)
            for obj in json.loads(host.run("nft", "-j", "list", "ruleset"))["nftables"]
            for body in [obj.get("set") or obj.get("map")]
            if body
            for e in body.get("elem", [])
            if mark in json.dumps(e) or body["name"].startswith("pub")
        ]
        assert not leftover, leftover[:3]
        for k in range(NETS):
            _, net = d.request("GET", f"/v1/networks/stress{k}")
            assert [e["container_id"] for e in net["endpoints"]] == ["probe"]
            assert net["ipam_usage"][SUBNETS[k]]["used"] == 1
        gone = [resolver.ask(GATEWAYS[i % NETS], f"pod-{i}")[0] for i in range(N)]
        assert set(gone) == {"NXDOMAIN"}, Counter(gone)
        print(f"total {time.monotonic() - started:.1f} s")
    finally:
        if resolver is not None:
            resolver.close()
        d.close_checked()

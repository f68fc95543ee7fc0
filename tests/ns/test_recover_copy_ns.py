"""After the database is lost, `netd recover` brings back what the user configured.

A real daemon (each firewall backend) holds networks with options, labels, ip ranges and
auxiliary addresses, an internal dual-stack network, and a rootless user's network; endpoints
with DNS names, aliases, hostnames, static addresses and MACs, published ports, and one in the
rootless user's own user namespace. `netd network inspect` of every network is saved, the
daemon stopped, the database deleted, `netd recover` run and the daemon started: inspect must
say the same again (timestamps aside), names and aliases resolve again through dig and glibc,
the published port answers, and the rootless user owns its network again, quota included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from netns_fixtures import HELLO_SERVER, Namespace, Sandbox, wait_for
from netns_fixtures.daemon import Daemon
from netns_fixtures.users import request_as, user_netns, write_client
from test_recover_ns import recover

ALICE = 4242
CONFIG = """
[policy]
rootless_users = [4242]
rootless_max_networks = 1
"""

NETWORKS: list[dict[str, Any]] = [
    {
        "name": "front",
        "subnets": [
            {
                "subnet": "10.150.0.0/24",
                "ip_range": "10.150.0.128/25",
                "aux_addresses": {"printer": "10.150.0.5"},
            }
        ],
        "labels": {"tier": "web", "com.example.team": "blue"},
        "options": {"mtu": "1400", "dns_servers": "192.0.2.53"},
    },
    {
        "name": "back",
        "internal": True,
        "ipv6": True,
        "subnets": [{"subnet": "10.151.0.0/24"}, {"subnet": "fd00:151::/64"}],
        "labels": {"tier": "data"},
    },
]


class World:
    """The daemon, its containers and a client that calls the API as another uid."""

    def __init__(self, d: Daemon, host: Namespace, sandbox: Sandbox) -> None:
        self.d, self.host, self.sandbox = d, host, sandbox
        self.client = write_client(d.socket.parent)
        self.etc: list[Path] = []

    def open_socket(self) -> None:
        """The socket is 0660 root:netd by default; the rootless user must reach it."""
        self.d.socket.parent.chmod(0o755)
        self.d.socket.chmod(0o666)

    def call(self, uid: int, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        """(status, answer) of one request made by a process running as ``uid``."""
        return request_as(uid, self.client, self.d.socket, method, url, body)

    def user_netns(self, uid: int) -> int:
        """Pid of a process in a new user + network namespace made by ``uid``."""
        return user_netns(self.host, uid)

    def resolv(self, ns: Namespace, server: str) -> None:
        """resolv.conf for glibc in ``ns`` (``ip netns exec`` bind-mounts /etc/netns/<ns>)."""
        etc = Path("/etc/netns") / ns.name
        etc.mkdir(parents=True)
        self.etc.append(etc)
        (etc / "resolv.conf").write_text(
            f"nameserver {server}\nsearch dns.netd\noptions ndots:0 timeout:2 attempts:2\n"
        )

    def inspect(self, names: list[str]) -> list[Any]:
        return list(json.loads(self.d.cli("network", "inspect", *names).stdout))

    def close(self) -> None:
        for etc in self.etc:
            shutil.rmtree(etc, ignore_errors=True)


def without_timestamps(value: Any) -> Any:
    """``value`` with every ``created`` key dropped (the issue's "except timestamps")."""
    if isinstance(value, dict):
        return {k: without_timestamps(v) for k, v in value.items() if k != "created"}
    if isinstance(value, list):
        return [without_timestamps(v) for v in value]
    return value


def delete_database(state_dir: Path) -> None:
    for side in ("", "-wal", "-shm"):
        Path(f"{state_dir}/netd.db{side}").unlink(missing_ok=True)


def fetch(ns: Namespace, address: str, port: int) -> str:
    """What a TCP server says to a client in ``ns`` (retries for a few seconds)."""
    client = (
        "import socket, sys, time\n"
        "for _ in range(40):\n"
        "    try:\n"
        "        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5)\n"
        "        sys.stdout.write(s.recv(16).decode()); break\n"
        "    except OSError:\n"
        "        time.sleep(0.05)\n"
    )
    proc = subprocess.run(
        ns.argv(sys.executable, "-c", client, address, str(port)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.stdout


def dig(ns: Namespace, server: str, name: str, qtype: str = "A") -> list[str]:
    out = ns.run("dig", f"@{server}", "+short", "+tries=2", "+time=2", name, qtype, timeout=20)
    return sorted(out.split())


@pytest.mark.parametrize(("firewall", "damage"), [("nftables", "deleted"), ("iptables", "corrupt")])
def test_recover_gives_back_the_configured_networks(
    host: Namespace, sandbox: Sandbox, firewall: str, damage: str
) -> None:
    d = Daemon(host, firewall=firewall)
    d.config_path().write_text(CONFIG)
    d.start()
    w = World(d, host, sandbox)
    try:
        w.open_socket()
        out = sandbox.add_ns("out")
        sandbox.wire(host, out, "192.0.2.1/24", "192.0.2.2/24")
        for body in NETWORKS:
            status, net = d.request("POST", "/v1/networks", body)
            assert status == 201, net
        status, mine = w.call(ALICE, "POST", "/v1/networks", {"name": "alice-net"})
        assert status == 201 and mine["owner_uid"] == ALICE, mine

        web, db, cli = sandbox.add_ns("web"), sandbox.add_ns("db"), sandbox.add_ns("cli")
        attach = [
            (
                "front",
                {
                    "netns": web.path,
                    "container_id": "web1",
                    "name": "web",
                    "hostname": "web-host",
                    "aliases": ["www", "frontend"],
                    "ips": ["10.150.0.200"],
                    "mac": "02:42:0a:96:00:c8",
                    "publish": [
                        {"host_port": 8080, "container_port": 80},
                        {"host_port": 5353, "container_port": 53, "protocol": "udp"},
                    ],
                },
            ),
            ("back", {"netns": web.path, "container_id": "web1", "aliases": ["api"]}),
            (
                "back",
                {
                    "netns": db.path,
                    "container_id": "db1",
                    "name": "db",
                    "aliases": ["database"],
                    "ips": ["10.151.0.50", "fd00:151::50"],
                    "dns_servers": ["10.151.0.1"],
                },
            ),
            ("front", {"netns": cli.path, "container_id": "cli1", "name": "client"}),
        ]
        for network, body in attach:
            status, ep = d.request("POST", f"/v1/networks/{network}/connect", body)
            assert status == 201, ep
        pid = w.user_netns(ALICE)
        body = {"netns": f"/proc/{pid}/ns/net", "container_id": "a1", "aliases": ["alice-app"]}
        status, ep = w.call(ALICE, "POST", "/v1/networks/alice-net/connect", body)
        assert status == 201, ep
        status, err = w.call(ALICE, "POST", "/v1/networks", {"name": "alice-two"})
        assert status == 403 and "quota" in err["error"]["message"], err

        web.spawn(sys.executable, "-c", HELLO_SERVER)
        assert fetch(out, "192.0.2.1", 8080) == "hello"
        names = ["front", "back", "alice-net"]
        before = w.inspect(names)
        alice_before = w.call(ALICE, "GET", "/v1/networks")
        web_ip = "10.150.0.200"
        assert dig(cli, "10.150.0.1", "www") == [web_ip]

        d.stop()
        copy_dir = d.state_dir / "recovery"
        assert len([p for p in copy_dir.iterdir() if p.is_dir()]) == 3
        if damage == "deleted":
            delete_database(d.state_dir)
        else:
            (d.state_dir / "netd.db").write_bytes(os.urandom(8192))
        with pytest.raises(RuntimeError, match="netd recover"):
            d.start(timeout=10)  # a new database beside the old state, or a damaged one: refused

        done = recover(host, d.state_dir)
        assert done.returncode == 0, done
        print(done.stdout)
        lines = done.stdout.splitlines()
        lost = [x for x in lines if x.startswith("not recovered") and "could not be read" not in x]
        assert lost == [] and "recovered-" not in done.stdout, done.stdout
        for net in before:
            line = next(
                x for x in lines if x.startswith(f"network {net['name']} ({net['id'][:12]})")
            )
            assert line.endswith("[copy]"), line

        d.start()
        w.open_socket()
        after = w.inspect(names)
        assert without_timestamps(after) == without_timestamps(before)
        assert [n["created"] for n in after] == [n["created"] for n in before]
        assert w.call(ALICE, "GET", "/v1/networks") == alice_before

        # Names, hostnames and aliases resolve again, with dig and with glibc.
        assert dig(cli, "10.150.0.1", "www") == [web_ip]
        assert dig(cli, "10.150.0.1", "web-host.dns.netd") == [web_ip]
        assert dig(cli, "10.150.0.1", "frontend") == [web_ip]
        assert dig(db, "10.151.0.1", "database", "AAAA") == ["fd00:151::50"]
        assert dig(db, "10.151.0.1", "api") != []  # web's alias on back only
        assert dig(cli, "10.150.0.1", "api") == []  # ... not on front
        w.resolv(cli, "10.150.0.1")
        got = subprocess.run(cli.argv("getent", "hosts", "www"), capture_output=True, text=True)
        assert got.returncode == 0 and web_ip in got.stdout, got
        w.resolv(db, "10.151.0.1")
        got = subprocess.run(
            db.argv("getent", "ahostsv4", "database"), capture_output=True, text=True
        )
        assert got.returncode == 0 and "10.151.0.50" in got.stdout, got

        # The published port answers; the internal network still cannot leave.
        assert fetch(out, "192.0.2.1", 8080) == "hello"
        assert not db.ping("192.0.2.2", timeout=1)
        # The rootless user owns its network again: its quota is used up, as before.
        status, err = w.call(ALICE, "POST", "/v1/networks", {"name": "alice-two"})
        assert status == 403 and "quota" in err["error"]["message"], err
        status, seen = w.call(ALICE, "GET", "/v1/networks/alice-net")
        assert status == 200 and [e["container_id"] for e in seen["endpoints"]] == ["a1"], seen
        # A new attach gets an address no recovered endpoint holds.
        extra = sandbox.add_ns("extra")
        status, ep = d.request("POST", "/v1/networks/front/connect", {"netns": extra.path})
        taken = {a for net in before for e in net["endpoints"] for a in e["addresses"]}
        assert status == 201 and not set(ep["addresses"]) & taken, ep
    finally:
        w.close()
        d.close_checked()


def test_copy_lags_the_database_by_one_commit(host: Namespace, sandbox: Sandbox) -> None:
    """Killed between a commit and its copy write, then the database lost: the kernel decides.

    The ADD that was killed after its "ready" commit left the copy at "creating": recovery
    keeps it as "creating", the daemon undoes it at start (the runtime never saw it succeed),
    and a retried ADD succeeds; the other endpoint is back whole.
    """
    d = Daemon(host, firewall="nftables").start()
    try:
        body = {"name": "lag", "subnets": [{"subnet": "10.152.0.0/24"}], "labels": {"k": "v"}}
        assert d.request("POST", "/v1/networks", body)[0] == 201
        c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
        status, ep1 = d.request(
            "POST", "/v1/networks/lag/connect", {"netns": c1.path, "name": "one"}
        )
        assert status == 201, ep1
        d.stop()
        # The 3rd mirrored write from now on: c2's "creating" (1), its "ready" (2)... the kill
        # comes after the "ready" commit, before its copy write.
        d.env = {"NETD_FAULTS": "mirror.committed=kill@2"}
        d.start()
        with contextlib.suppress(Exception):  # the daemon dies mid-request
            d.request("POST", "/v1/networks/lag/connect", {"netns": c2.path, "container_id": "two"})
        wait_for("the daemon to die", lambda: d.proc is not None and d.proc.poll() is not None, 10)
        d.stop()
        d.env = {}
        assert "eth0" in c2.links()  # plumbed and committed as ready, but not in the copy
        delete_database(d.state_dir)

        done = recover(host, d.state_dir)
        assert done.returncode == 0, done
        print(done.stdout)
        assert "network lag (" in done.stdout and "[creating: undone at the daemon's start]" in (
            done.stdout
        )
        d.start()
        shown = json.loads(d.cli("network", "inspect", "lag").stdout)[0]
        assert shown["labels"] == {"k": "v"}
        assert [e["container_id"] for e in shown["endpoints"]] == [ep1["container_id"]]
        assert shown["endpoints"][0]["name"] == "one"
        assert "eth0" not in c2.links()
        status, again = d.request(
            "POST", "/v1/networks/lag/connect", {"netns": c2.path, "container_id": "two"}
        )
        assert status == 201, again
    finally:
        d.close_checked()


def test_damaged_copy_falls_back_to_the_kernel(host: Namespace, sandbox: Sandbox) -> None:
    """A copy file that fails its checksum is named in the report; that network comes back
    from the kernel alone, the others from the copy."""
    d = Daemon(host).start()
    try:
        ids = {}
        for i, name in enumerate(("good", "bad")):
            body = {"name": name, "subnets": [{"subnet": f"10.{153 + i}.0.0/24"}]}
            status, net = d.request("POST", "/v1/networks", body)
            assert status == 201, net
            ids[name] = net["id"]
            c = sandbox.add_ns(name)
            body = {"netns": c.path, "container_id": name, "aliases": [f"{name}-alias"]}
            assert d.request("POST", f"/v1/networks/{name}/connect", body)[0] == 201
        d.stop()
        [damaged] = (d.state_dir / "recovery" / ids["bad"]).glob("network.*.json")
        data = bytearray(damaged.read_bytes())
        data[data.index(b'"bad"') + 1] = ord("B")  # one flipped byte in the record
        damaged.write_bytes(bytes(data))
        delete_database(d.state_dir)

        done = recover(host, d.state_dir)
        assert done.returncode == 0, done
        print(done.stdout)
        assert "checksum mismatch" in done.stdout and str(damaged) in done.stdout
        assert f"name of network {ids['bad'][:12]} (now 'recovered-{ids['bad'][:12]}')" in (
            done.stdout
        )
        d.start()
        status, good = d.request("GET", "/v1/networks/good")
        assert status == 200 and good["endpoints"][0]["aliases"] == ["good-alias"], good
        status, bad = d.request("GET", f"/v1/networks/recovered-{ids['bad'][:12]}")
        assert status == 200 and bad["endpoints"][0]["aliases"] == [], bad
        # The daemon rewrote the copy from the database (before it answered): whole again.
        [rewritten] = (d.state_dir / "recovery" / ids["bad"]).glob("network.*.json")
        assert rewritten != damaged and not damaged.exists()
        assert json.loads(rewritten.read_text())["record"]["name"] == f"recovered-{ids['bad'][:12]}"
    finally:
        d.close_checked()

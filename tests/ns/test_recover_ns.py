"""`netd recover` from the kernel alone, after the database *and* the recovery copy were lost.

Networks and endpoints are made through the API, the daemon is stopped (data plane up), the
database is deleted or overwritten and the recovery copy removed, `netd recover` runs inside
the host namespace, and the daemon is started again: the same networks and addresses are back,
a new attach does not reuse a recovered address, and detaching a recovered endpoint removes its
veth. (With the copy, everything the user configured comes back: test_recover_copy_ns.py.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from netns_fixtures import HELLO_SERVER, Namespace, Sandbox
from netns_fixtures.daemon import NETD, Daemon

NET = {"name": "app", "subnets": [{"subnet": "10.132.0.0/24"}]}
GATEWAY = "10.132.0.1"


def recover(host: Namespace, state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        host.argv(NETD, "recover", "--state-dir", str(state_dir), *args),
        capture_output=True,
        text=True,
        timeout=60,
    )


def lose_copy(state_dir: Path) -> None:
    """Remove the recovery copy, so that recovery has only the kernel to go by."""
    shutil.rmtree(state_dir / "recovery")


def endpoints(d: Daemon, network: str) -> dict[str, dict[str, object]]:
    status, info = d.request("GET", f"/v1/networks/{network}")
    assert status == 200, info
    return {e["container_id"]: e for e in info["endpoints"]}


@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
def test_recover_rebuilds_networks_and_endpoints(
    host: Namespace, sandbox: Sandbox, damage: str
) -> None:
    d = Daemon(host).start()
    try:
        status, net = d.request("POST", "/v1/networks", NET)
        assert status == 201, net
        c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
        for c in (c1, c2):
            assert d.request("POST", "/v1/networks/app/connect", {"netns": c.path})[0] == 201
        before = endpoints(d, "app")
        refused = recover(host, d.state_dir)
        assert refused.returncode == 1 and "holds" in refused.stderr, refused
        d.stop()

        db = d.state_dir / "netd.db"
        lose_copy(d.state_dir)
        names: list[str] = []
        if damage == "deleted":
            for side in ("", "-wal", "-shm"):
                Path(f"{db}{side}").unlink(missing_ok=True)
            name = f"recovered-{net['id'][:12]}"
        else:
            garbage = os.urandom(8192)
            db.write_bytes(garbage)
            with pytest.raises(RuntimeError, match="netd recover"):
                d.start()  # the daemon refuses, pointing at `netd recover`
            names = ["--name", f"{net['id'][:8]}=app"]
            name = "app"

        dry = recover(host, d.state_dir, "--dry-run", *names)
        assert dry.returncode == 0 and "dry run: nothing written" in dry.stdout, dry
        done = recover(host, d.state_dir, *names)
        assert done.returncode == 0, done
        print(done.stdout)
        assert "DNS names, aliases" in done.stdout
        assert "not recovered: the recovery copy: no recovery copy at" in done.stdout
        if damage == "corrupt":
            aside = [p for p in d.state_dir.iterdir() if p.name.startswith("netd.db.corrupt-")]
            assert len(aside) == 1 and aside[0].read_bytes() == garbage
        else:
            assert f"name of network {net['id'][:12]}" in done.stdout

        d.start()
        after = endpoints(d, name)
        assert set(after) == set(before)
        for cid, ep in before.items():
            for key in ("addresses", "host_ifname", "mac", "netns"):
                assert after[cid][key] == ep[key], (cid, key)
            assert after[cid]["state"] == "ready"
        assert c1.ping(GATEWAY) and c2.ping(GATEWAY)  # the veths were not taken as orphans

        c3 = sandbox.add_ns("c3")
        status, ep3 = d.request("POST", f"/v1/networks/{name}/connect", {"netns": c3.path})
        assert status == 201, ep3
        taken = {a for ep in before.values() for a in ep["addresses"]}  # type: ignore[attr-defined]
        assert not set(ep3["addresses"]) & taken

        cid1 = next(cid for cid, ep in before.items() if ep["netns"] == c1.path)
        veth = str(before[cid1]["host_ifname"])
        status, _ = d.request("POST", f"/v1/networks/{name}/disconnect", {"container_id": cid1})
        assert status == 200
        assert veth not in host.links() and "eth0" not in c1.links()
    finally:
        d.close_checked()


def test_recover_refuses_a_healthy_database(host: Namespace) -> None:
    d = Daemon(host).start()
    try:
        assert d.request("POST", "/v1/networks", NET)[0] == 201
        d.stop()
        out = recover(host, d.state_dir)
        assert out.returncode == 1 and "healthy" in out.stderr, out
    finally:
        d.close()


CLIENT = (
    "import socket, sys, time\n"
    "for _ in range(40):\n"
    "    try:\n"
    "        s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5)\n"
    "        sys.stdout.write(s.recv(16).decode()); break\n"
    "    except OSError:\n"
    "        time.sleep(0.05)\n"
)


def fetch(ns: Namespace, address: str, port: int) -> str:
    """What a TCP server at ``address:port`` says to a client in ``ns`` (retries for 2-3 s)."""
    proc = subprocess.run(
        ns.argv(sys.executable, "-c", CLIENT, address, str(port)),
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.stdout


@pytest.mark.parametrize("firewall", ["nftables", "iptables"])
def test_recover_reads_ports_internal_and_options_from_the_firewall(
    host: Namespace, sandbox: Sandbox, firewall: str
) -> None:
    d = Daemon(host, firewall=firewall).start()
    try:
        out = sandbox.add_ns("out")
        sandbox.wire(host, out, "192.0.2.1/24", "192.0.2.2/24")
        nets: list[dict[str, Any]] = [
            {"name": "web", "subnets": [{"subnet": "10.134.0.0/24"}]},
            {"name": "priv", "internal": True, "subnets": [{"subnet": "10.135.0.0/24"}]},
            {
                "name": "iso",
                "options": {"enable_icc": "false", "host_ipv4": "192.0.2.1"},
                "subnets": [{"subnet": "10.136.0.0/24"}],
            },
        ]
        ids = {}
        for body in nets:
            status, net = d.request("POST", "/v1/networks", body)
            assert status == 201, net
            ids[body["name"]] = net["id"]
        web, db, iso = sandbox.add_ns("web"), sandbox.add_ns("db"), sandbox.add_ns("iso")
        publish = [
            {"host_port": 8080, "container_port": 80},
            {"host_port": 5353, "container_port": 53, "protocol": "udp", "host_ip": "192.0.2.1"},
        ]
        for network, ns, ports in (("web", web, publish), ("priv", db, []), ("iso", iso, [])):
            body = {"netns": ns.path, "container_id": ns.name, "publish": ports}
            status, ep = d.request("POST", f"/v1/networks/{network}/connect", body)
            assert status == 201, ep
        web.spawn(sys.executable, "-c", HELLO_SERVER)
        assert fetch(out, "192.0.2.1", 8080) == "hello"
        d.stop()
        for side in ("", "-wal", "-shm"):
            Path(f"{d.state_dir}/netd.db{side}").unlink(missing_ok=True)
        lose_copy(d.state_dir)

        names = [f"--name={net_id[:12]}={name}" for name, net_id in ids.items()]
        done = recover(host, d.state_dir, *names)
        assert done.returncode == 0, done
        print(done.stdout)
        assert "publishes 192.0.2.1:5353/udp->53 publishes 8080/tcp->80" in done.stdout
        assert f"network priv ({ids['priv'][:12]}) internal:" in done.stdout
        assert "no recovered endpoint" not in done.stdout

        d.start()
        shown = json.loads(d.cli("network", "inspect", "web", "priv", "iso").stdout)
        by_name = {n["name"]: n for n in shown}
        assert by_name["priv"]["internal"] is True and by_name["web"]["internal"] is False
        assert by_name["iso"]["options"] == {"enable_icc": "false", "host_ipv4": "192.0.2.1"}
        [web_ep] = by_name["web"]["endpoints"]
        assert web_ep["port_mappings"] == [
            {"host_port": 5353, "container_port": 53, "protocol": "udp", "host_ip": "192.0.2.1"},
            {"host_port": 8080, "container_port": 80, "protocol": "tcp", "host_ip": None},
        ]
        # The restarted daemon rebuilt its rules from the recovered records: still published,
        # the internal network still cannot leave its subnet.
        assert fetch(out, "192.0.2.1", 8080) == "hello"
        assert not db.ping("192.0.2.2", timeout=1)
        # ...and the port is held: publishing it again is refused, naming the holder.
        c4 = sandbox.add_ns("c4")
        body = {"netns": c4.path, "publish": [{"host_port": 8080, "container_port": 80}]}
        status, err = d.request("POST", "/v1/networks/web/connect", body)
        assert status == 409 and web.name in err["error"]["message"], err
    finally:
        d.close_checked()

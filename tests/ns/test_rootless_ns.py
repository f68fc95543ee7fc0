"""Rootless networks end to end: a real `netd daemon` in a sandbox host, real unprivileged callers.

Users 4242 (Alice) and 4343 (Bob) are in ``policy.rootless_users``; 4444 is nobody special and
``others = "none"``. Each request is made by a client process running as that uid (``setpriv``),
so SO_PEERCRED is the kernel's. Each user's "container" is a real user namespace with a network
namespace, made by that uid (``unshare --user --map-root-user --net``) and reached as
``/proc/<pid>/ns/net``, as a rootless runtime would pass it. Assertions read the kernel back
(``nsenter ... ip -j``, ping) rather than trusting the API.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon
from netns_fixtures.users import request_as, user_netns, write_client

ALICE, BOB, STRANGER = 4242, 4343, 4444

CONFIG = """
[policy]
others = "none"
rootless_users = [4242, 4343]
rootless_max_networks = 2
rootless_max_addresses = 384
"""


class Rootless:
    """The daemon, a client per uid, and user-owned namespaces."""

    def __init__(self, daemon: Daemon, host: Namespace) -> None:
        self.daemon = daemon
        self.host = host
        self.dir = daemon.socket.parent
        self.client = write_client(self.dir)

    def call(self, uid: int, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        """(status, answer) of one request made by a process running as ``uid``."""
        return request_as(uid, self.client, self.daemon.socket, method, url, body)

    def user_netns(self, uid: int) -> int:
        """Pid of a process in a new user + network namespace created by ``uid``."""
        return user_netns(self.host, uid)


def nsrun(pid: int, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--target={pid}", "--net", *cmd], capture_output=True, text=True, timeout=30
    )


def addresses(pid: int, ifname: str = "eth0") -> list[str]:
    out = nsrun(pid, "ip", "-j", "addr", "show")
    return [
        f"{a['local']}/{a['prefixlen']}"
        for link in json.loads(out.stdout)
        if link["ifname"] == ifname
        for a in link.get("addr_info", [])
        if a.get("scope") == "global"
    ]


@contextlib.contextmanager
def rootless_daemon(host: Namespace, config: str, firewall: str = "none") -> Iterator[Rootless]:
    """A daemon with ``config`` whose socket every uid may reach, as a :class:`Rootless`."""
    d = Daemon(host, firewall=firewall)
    d.config_path().write_text(config)
    d.start()
    try:
        # The socket is 0660 root:netd by default; the policy, not the mode, is under test.
        d.socket.parent.chmod(0o755)
        d.socket.chmod(0o666)
        yield Rootless(d, host)
    finally:
        d.close_checked()


@pytest.fixture
def rl(sandbox: Sandbox, host: Namespace) -> Iterator[Rootless]:
    with rootless_daemon(host, CONFIG) as rootless:
        yield rootless


def test_owner_attaches_its_own_user_namespace_and_nothing_else(
    rl: Rootless, sandbox: Sandbox
) -> None:
    status, net = rl.call(ALICE, "POST", "/v1/networks", {"name": "a-net"})
    assert status == 201, net
    assert net["owner_uid"] == ALICE and net["subnets"][0]["subnet"] == "10.89.0.0/24"
    pid = rl.user_netns(ALICE)
    netns = f"/proc/{pid}/ns/net"
    status, ep = rl.call(
        ALICE, "POST", "/v1/networks/a-net/connect", {"netns": netns, "container_id": "a1"}
    )
    assert status == 201, ep
    assert addresses(pid) == ["10.89.0.2/24"]  # read back from the kernel
    ping = nsrun(pid, "ping", "-c", "1", "-W", "2", "10.89.0.1")
    assert ping.returncode == 0, ping.stdout + ping.stderr

    # a namespace made by root (ip netns add) is not Alice's
    c1 = sandbox.add_ns("c1")
    status, err = rl.call(
        ALICE, "POST", "/v1/networks/a-net/connect", {"netns": c1.path, "container_id": "c1"}
    )
    assert status == 403, err
    assert err["error"]["code"] == "permission_denied" and err["error"]["field"] == "netns"
    assert err["error"]["message"].startswith(
        f"attaching netns {c1.path!r}: uid {ALICE} does not own it; the kernel says its owner is "
        "the daemon's own user namespace (root)"
    )
    assert "eth0" not in c1.links()

    # nor is Bob's
    bob_pid = rl.user_netns(BOB)
    status, err = rl.call(
        ALICE,
        "POST",
        "/v1/networks/a-net/connect",
        {"netns": f"/proc/{bob_pid}/ns/net", "container_id": "b1"},
    )
    assert status == 403, err
    assert f"created by uid {BOB}" in err["error"]["message"]
    assert addresses(bob_pid) == []

    # Alice's own namespace through a root process she may not open (not ptrace-able by her)
    helper = rl.host.spawn("nsenter", f"--target={pid}", "--net", "sleep", "300")
    deadline = time.monotonic() + 10
    while os.stat(f"/proc/{helper.pid}/ns/net").st_ino != os.stat(netns).st_ino:
        assert time.monotonic() < deadline, "nsenter did not enter"
        time.sleep(0.02)
    status, err = rl.call(
        ALICE,
        "POST",
        "/v1/networks/a-net/connect",
        {"netns": f"/proc/{helper.pid}/ns/net", "container_id": "a2", "ifname": "eth1"},
    )
    assert status == 403, err
    assert "cannot open it itself (Permission denied)" in err["error"]["message"]
    assert "eth1" not in nsrun(pid, "ip", "-o", "link").stdout

    # CNI ADD with the root namespace is refused with CNI's "permission denied" code
    cni = {
        "command": "ADD",
        "containerId": "c1",
        "netns": c1.path,
        "ifname": "eth0",
        "config": {"cniVersion": "1.0.0", "name": "a-net", "type": "netd"},
    }
    status, err = rl.call(ALICE, "POST", "/v1/cni", cni)
    assert status == 422 and err["code"] == 105, err
    assert "eth0" not in c1.links()
    # ...and works with her own; CHECK too, DEL removes it
    mine = {**cni, "containerId": "a3", "netns": netns, "ifname": "eth2"}
    status, result = rl.call(ALICE, "POST", "/v1/cni", mine)
    assert status == 200, result
    assert addresses(pid, "eth2") == ["10.89.0.3/24"]
    check = {**mine, "command": "CHECK", "config": {**mine["config"], "prevResult": result}}
    assert rl.call(ALICE, "POST", "/v1/cni", check)[0] == 200
    status, err = rl.call(ALICE, "POST", "/v1/cni", {**check, "netns": c1.path})
    assert status == 422 and err["code"] == 105, err
    assert rl.call(ALICE, "POST", "/v1/cni", {**mine, "command": "DEL"})[0] == 200
    assert addresses(pid, "eth2") == []


def test_users_cannot_see_or_touch_each_others_networks(rl: Rootless) -> None:
    assert rl.call(ALICE, "POST", "/v1/networks", {"name": "a-net"})[0] == 201
    assert rl.call(BOB, "POST", "/v1/networks", {"name": "b-net"})[0] == 201
    a_pid, b_pid = rl.user_netns(ALICE), rl.user_netns(BOB)
    status, _ = rl.call(
        ALICE,
        "POST",
        "/v1/networks/a-net/connect",
        {"netns": f"/proc/{a_pid}/ns/net", "container_id": "a1"},
    )
    assert status == 201

    status, nets = rl.call(BOB, "GET", "/v1/networks")
    assert status == 200 and [n["name"] for n in nets] == ["b-net"]
    status, err = rl.call(BOB, "GET", "/v1/networks/a-net")
    assert status == 404 and err["error"]["message"] == "network 'a-net' not found"
    b_ns = {"netns": f"/proc/{b_pid}/ns/net", "container_id": "b1"}
    assert rl.call(BOB, "POST", "/v1/networks/a-net/connect", b_ns)[0] == 404
    assert rl.call(BOB, "POST", "/v1/networks/a-net/disconnect", {"container_id": "a1"})[0] == 404
    assert rl.call(BOB, "DELETE", "/v1/networks/a-net")[0] == 404
    assert rl.call(BOB, "POST", "/v1/networks/prune")[1] == {"removed": ["b-net"]}
    del_call = {
        "command": "DEL",
        "containerId": "a1",
        "netns": f"/proc/{b_pid}/ns/net",
        "ifname": "eth0",
        "config": {"cniVersion": "1.0.0", "name": "a-net", "type": "netd"},
    }
    assert rl.call(BOB, "POST", "/v1/cni", del_call)[0] == 200  # idempotent: "not there"
    assert addresses(a_pid) == ["10.89.0.2/24"]  # Alice's container untouched
    status, err = rl.call(BOB, "GET", "/v1/firewall")
    assert status == 403 and "a rootless owner may read only its own networks" in str(err)
    status, lookup = rl.call(BOB, "GET", "/v1/dns/lookup?name=a1")
    assert status == 200 and lookup["addresses"] == []  # Alice's container is not in his view
    status, lookup = rl.call(ALICE, "GET", "/v1/dns/lookup?name=a1")
    assert status == 200 and lookup["addresses"] == ["10.89.0.2"]
    status, st = rl.call(BOB, "GET", "/v1/status")
    assert status == 200 and st["networks"] == 0 and st["endpoints"] == 0

    # root sees every network and its owner, and still manages Alice's
    status, nets = rl.daemon.request("GET", "/v1/networks")
    assert [(n["name"], n["owner_uid"]) for n in nets] == [("a-net", ALICE)]
    inspect = rl.daemon.cli("network", "inspect", "a-net").stdout
    assert json.loads(inspect)[0]["owner_uid"] == ALICE
    # someone not in the policy gets nothing at all
    status, err = rl.call(STRANGER, "GET", "/v1/networks")
    assert status == 403 and "policy.others is 'none'" in err["error"]["message"]
    assert rl.daemon.request("POST", "/v1/networks/a-net/disconnect", {"container_id": "a1"})[0]
    assert addresses(a_pid) == []
    assert rl.daemon.request("DELETE", "/v1/networks/a-net")[0] == 200


def test_quotas_and_restrictions(rl: Rootless, host: Namespace) -> None:
    links = set(host.links())
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {"name": "x", "options": {"bridge": "br-mine"}},
            "options.bridge",
            "option 'bridge' is reserved to root and policy.admins",
        ),
        (
            {"name": "x", "options": {"com.docker.network.host_ipv4": "10.0.0.1"}},
            "options.host_ipv4",
            "option 'host_ipv4' is reserved",
        ),
        (
            {"name": "x", "subnets": [{"subnet": "192.168.77.0/24"}]},
            "subnet",
            "subnet 192.168.77.0/24 is not a block of the default address pools (10.89.0.0/16:24)",
        ),
    ]
    for body, field, words in cases:
        status, err = rl.call(ALICE, "POST", "/v1/networks", body)
        assert status == 403, err
        assert err["error"]["field"] == field and words in err["error"]["message"], err
    assert set(host.links()) == links  # nothing was made

    assert rl.call(ALICE, "POST", "/v1/networks", {"name": "one"})[0] == 201  # a /24: 256
    status, err = rl.call(ALICE, "POST", "/v1/networks", {"name": "two"})
    assert status == 403
    assert err["error"]["message"] == (
        'creating network "two" (10.89.1.0/24: 256 addresses): uid 4242 owns 256 IPv4 '
        "addresses; quota policy.rootless_max_addresses is 384"
    )
    small = {"name": "two", "subnets": [{"subnet": "10.89.200.0/25"}]}
    assert rl.call(ALICE, "POST", "/v1/networks", small)[0] == 201
    status, err = rl.call(
        ALICE, "POST", "/v1/networks", {"name": "three", "subnets": [{"subnet": "10.89.201.0/30"}]}
    )
    assert status == 403
    assert err["error"]["message"] == (
        'creating network "three": uid 4242 owns 2 networks; quota '
        "policy.rootless_max_networks is 2"
    )
    assert rl.call(BOB, "POST", "/v1/networks", {"name": "bobs"})[0] == 201  # his own quota

    pid = rl.user_netns(ALICE)
    publish = {"host_port": 80, "container_port": 80}
    status, err = rl.call(
        ALICE,
        "POST",
        "/v1/networks/one/connect",
        {"netns": f"/proc/{pid}/ns/net", "publish": [publish]},
    )
    assert status == 403 and err["error"]["field"] == "publish.host_port", err
    assert "ports below 1024 (net.ipv4.ip_unprivileged_port_start)" in err["error"]["message"]
    assert addresses(pid) == []
    status, ep = rl.call(
        ALICE,
        "POST",
        "/v1/networks/one/connect",
        {"netns": f"/proc/{pid}/ns/net", "publish": [{**publish, "host_port": 8080}]},
    )
    assert status == 201, ep
    assert addresses(pid) == ["10.89.0.2/24"]

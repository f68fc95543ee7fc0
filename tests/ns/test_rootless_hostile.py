"""Hostile owners (issue #14, "Owner (rootless) role"), end to end against a real daemon.

A real `netd daemon` with the nftables firewall in a sandbox host, requests from processes running
as the owners' uids (``setpriv``), containers that are user + network namespaces those uids made.
What is checked is read back from the kernel (sockets answering, ``ip -j link``) and from the
audit file, not taken from the API:

- a port a host socket holds is not published (TCP listen, UDP, address-specific binds), for
  owners and root alike; a host service that binds a published port later loses to the DNAT;
- published ports are bounded per request and per owner;
- owners cannot name the host's loopback, link-local or own addresses as DNS upstreams;
- conflicts tell an owner that a name, subnet or port is taken, never by whom; the same
  container id on two owners' networks gets two host veths;
- every owner-restriction refusal is audited as ``denied``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from netns_fixtures import Namespace, Sandbox, wait_for
from netns_fixtures.daemon import REQUEST_SCRIPT
from netns_fixtures.users import as_uid
from test_rootless_ns import ALICE, BOB, Rootless, addresses, rootless_daemon

CONFIG = """
[policy]
others = "none"
rootless_users = [4242, 4343]
rootless_max_networks = 3
rootless_max_ports = 6
rootless_max_ports_per_request = 4
"""
HOST_ADDR, OUTSIDE_ADDR = "172.31.250.1", "172.31.250.2"

# A server answering one word to each TCP connection (or UDP datagram), until killed.
SERVER = """
import socket, sys
word, proto, addr, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
if proto == "udp":
    s = socket.socket(fam, socket.SOCK_DGRAM); s.bind((addr, port))
    while True:
        _, peer = s.recvfrom(64); s.sendto(word.encode(), peer)
s = socket.socket(fam); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(word.encode()); c.close()
"""
CLIENT = """
import socket, sys
addr, port = sys.argv[1], int(sys.argv[2])
try:
    with socket.create_connection((addr, port), timeout=2) as c:
        print(c.recv(64).decode())
except OSError as exc:
    print(f"error: {exc}")
"""


@pytest.fixture
def rl(sandbox: Sandbox, host: Namespace) -> Iterator[Rootless]:
    with rootless_daemon(host, CONFIG, firewall="nftables") as rootless:
        yield rootless


def serve(ns_argv: list[str], sandbox: Sandbox, word: str, proto: str, addr: str, port: int) -> Any:
    """Start :data:`SERVER` (inside ``ns_argv``'s namespace); returns the process."""
    proc = subprocess.Popen(
        [*ns_argv, sys.executable, "-c", SERVER, word, proto, addr, str(port)],
        start_new_session=True,
    )
    sandbox.processes.append(proc)
    return proc


def answer(ns: Namespace, addr: str, port: int) -> str:
    """What a TCP connection from ``ns`` to ``addr:port`` reads."""
    return ns.run(sys.executable, "-c", CLIENT, addr, str(port)).strip()


def listening(ns: Namespace, proto: str, port: int) -> bool:
    out = ns.run("ss", "-H", "-ln", "--tcp" if proto == "tcp" else "--udp", f"sport = :{port}")
    return bool(out.strip())


def host_serves(rl: Rootless, word: str, proto: str, addr: str, port: int) -> None:
    serve(rl.host.argv(), rl.host.sandbox, word, proto, addr, port)
    wait_for(f"{proto} {addr}:{port} in the host", lambda: listening(rl.host, proto, port), 10)


def attach(rl: Rootless, uid: int, network: str, pid: int, cid: str, **extra: Any) -> Any:
    body = {"netns": f"/proc/{pid}/ns/net", "container_id": cid, **extra}
    return rl.call(uid, "POST", f"/v1/networks/{network}/connect", body)


def call_big(rl: Rootless, uid: int, method: str, url: str, body: Any) -> tuple[int, Any]:
    """:meth:`Rootless.call` with the body on stdin (a 660 KB body does not fit an argument)."""
    script = rl.dir / "client_stdin.py"
    script.write_text(
        REQUEST_SCRIPT.replace(
            "path, method, url, body = sys.argv[1:5]",
            "path, method, url = sys.argv[1:4]; body = sys.stdin.read()",
        )
    )
    argv = [*as_uid(uid), sys.executable, "-I", str(script), str(rl.daemon.socket), method, url]
    out = subprocess.run(
        argv, input=json.dumps(body), capture_output=True, text=True, timeout=120, check=True
    )
    data = json.loads(out.stdout)
    return data["status"], data["body"]


def audit_lines(rl: Rootless, count: int) -> list[dict[str, Any]]:
    path = rl.daemon.state_dir / "audit.log"

    def enough() -> bool:
        return path.exists() and len(path.read_text().splitlines()) >= count

    wait_for("audit lines", enough, 10)
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ports_held_by_host_sockets_are_not_published(rl: Rootless) -> None:
    assert rl.call(ALICE, "POST", "/v1/networks", {"name": "a-net"})[0] == 201
    pid = rl.user_netns(ALICE)
    host_serves(rl, "host-db", "tcp", "0.0.0.0", 5432)
    host_serves(rl, "host-udp", "udp", "127.0.0.1", 5399)
    host_serves(rl, "host-v6", "tcp", "::1", 7070)

    status, err = attach(
        rl, ALICE, "a-net", pid, "a1", publish=[{"host_port": 5432, "container_port": 80}]
    )
    assert status == 409, err
    assert err["error"]["message"] == (
        "publishing host port 5432/tcp: a tcp socket of the host listens on 0.0.0.0:5432; the "
        "port is in use (the kernel would refuse that bind: EADDRINUSE)"
    )
    assert err["error"]["field"] == "port_mappings[0].host_port"
    # a loopback-only UDP socket holds the port for a publication on every address...
    status, err = attach(
        rl,
        ALICE,
        "a-net",
        pid,
        "a1",
        publish=[{"host_port": 5399, "container_port": 53, "protocol": "udp"}],
    )
    assert status == 409 and "udp socket of the host is bound on 127.0.0.1:5399" in str(err), err
    # ...and an IPv6 loopback listener for a publication on every address, too
    status, err = attach(
        rl, ALICE, "a-net", pid, "a1", publish=[{"host_port": 7070, "container_port": 80}]
    )
    assert status == 409 and "listens on [::1]:7070" in str(err), err
    assert addresses(pid) == []  # nothing was plumbed
    # root is refused the same way (Docker's docker-proxy and Podman fail with EADDRINUSE too)
    root_ns = rl.host.sandbox.add_ns("rootc")
    status, err = rl.daemon.request(
        "POST",
        "/v1/networks/a-net/connect",
        {
            "netns": root_ns.path,
            "container_id": "r1",
            "publish": [{"host_port": 5432, "container_port": 80}],
        },
    )
    assert status == 409 and "listens on 0.0.0.0:5432" in str(err), err

    # a socket on another address does not hold the port for a publication on this one
    status, ep = attach(
        rl,
        ALICE,
        "a-net",
        pid,
        "a1",
        publish=[
            {"host_port": 5399, "container_port": 53, "protocol": "udp", "host_ip": HOST_ADDR}
        ],
    )
    assert status == 201, ep
    # the host service still answers on its port
    assert (
        rl.host.run(
            sys.executable,
            "-c",
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2);"
            "s.sendto(b'q', ('127.0.0.1', 5399)); print(s.recv(64).decode())",
        ).strip()
        == "host-udp"
    )
    assert answer(rl.host, "127.0.0.1", 5432) == "host-db"


def test_a_host_service_binding_a_published_port_later_loses_to_the_dnat(
    rl: Rootless, sandbox: Sandbox
) -> None:
    outside = sandbox.add_ns("outside")
    sandbox.wire(rl.host, outside, f"{HOST_ADDR}/24", f"{OUTSIDE_ADDR}/24")
    assert rl.call(ALICE, "POST", "/v1/networks", {"name": "a-net"})[0] == 201
    pid = rl.user_netns(ALICE)
    status, ep = attach(
        rl, ALICE, "a-net", pid, "a1", publish=[{"host_port": 15432, "container_port": 80}]
    )
    assert status == 201, ep
    serve(["nsenter", f"--target={pid}", "--net"], sandbox, "container", "tcp", "0.0.0.0", 80)
    wait_for("the container's server", lambda: answer(outside, HOST_ADDR, 15432) == "container", 10)
    # root binds the port afterwards: the kernel lets it (it knows nothing of DNAT rules)...
    host_serves(rl, "host", "tcp", "0.0.0.0", 15432)
    # ...but connections the DNAT rule matches still reach the container, from outside and from
    # the host's own loopback
    assert answer(outside, HOST_ADDR, 15432) == "container"
    assert answer(rl.host, "127.0.0.1", 15432) == "container"
    assert answer(rl.host, HOST_ADDR, 15432) == "container"
    # once the owner unpublishes (disconnects), the host service gets its port back
    status, _ = rl.call(ALICE, "POST", "/v1/networks/a-net/disconnect", {"container_id": "a1"})
    assert status == 200
    assert answer(outside, HOST_ADDR, 15432) == "host"
    assert answer(rl.host, "127.0.0.1", 15432) == "host"


def test_published_ports_are_bounded_per_request_and_per_owner(rl: Rootless) -> None:
    assert rl.call(ALICE, "POST", "/v1/networks", {"name": "a-net"})[0] == 201
    pid = rl.user_netns(ALICE)

    def ports(first: int, n: int) -> list[dict[str, int]]:
        return [{"host_port": p, "container_port": 80} for p in range(first, first + n)]

    # the hostile request of the issue: 15,000 ports in one 660 KB body
    body = {"netns": f"/proc/{pid}/ns/net", "container_id": "a1", "publish": ports(20000, 15000)}
    assert len(json.dumps(body)) > 600_000
    status, err = call_big(rl, ALICE, "POST", "/v1/networks/a-net/connect", body)
    assert status == 413, err
    assert err["error"] == {
        "code": "too_large",
        "message": f"POST /v1/networks/{{name}}/connect: a request body of {len(json.dumps(body))} "
        "bytes is over policy.rootless_max_body_bytes (65536)",
        "field": "policy.rootless_max_body_bytes",
        "value": 65536,
    }
    # a small body with too many ports for one request
    status, err = attach(rl, ALICE, "a-net", pid, "a1", publish=ports(20000, 5))
    assert status == 403, err
    assert err["error"] == {
        "code": "permission_denied",
        "message": "publishing 5 ports for container 'a1': a request may publish at most 4 "
        "(policy.rootless_max_ports_per_request)",
        "field": "policy.rootless_max_ports_per_request",
        "value": 4,
    }
    assert addresses(pid) == []
    assert attach(rl, ALICE, "a-net", pid, "a1", publish=ports(20000, 4))[0] == 201
    pid2 = rl.user_netns(ALICE)  # one connect per namespace and network (Docker's rule)
    status, err = attach(rl, ALICE, "a-net", pid2, "a2", ifname="eth1", publish=ports(20010, 3))
    assert status == 403, err
    assert err["error"]["message"] == (
        "publishing 3 ports for container 'a2': uid 4242 holds 4 published ports; quota "
        "policy.rootless_max_ports is 6"
    )
    assert attach(rl, ALICE, "a-net", pid2, "a2", ifname="eth1", publish=ports(20010, 2))[0] == 201
    ruleset = rl.host.run("nft", "-j", "list", "table", "inet", "netd")
    assert "20012" not in ruleset and "20011" in ruleset
    # the quota is per owner: Bob has his own, and root is not bounded
    assert rl.call(BOB, "POST", "/v1/networks", {"name": "b-net"})[0] == 201
    assert attach(rl, BOB, "b-net", rl.user_netns(BOB), "b1", publish=ports(21000, 4))[0] == 201
    root_ns = rl.host.sandbox.add_ns("rootc")
    status, _ = rl.daemon.request(
        "POST",
        "/v1/networks/a-net/connect",
        {"netns": root_ns.path, "container_id": "r1", "publish": ports(22000, 10)},
    )
    assert status == 201
    # freeing ports makes room again
    rl.call(ALICE, "POST", "/v1/networks/a-net/disconnect", {"container_id": "a1"})
    assert attach(rl, ALICE, "a-net", pid, "a3", ifname="eth2", publish=ports(20020, 4))[0] == 201


def test_owners_cannot_point_dns_forwarding_into_the_host(rl: Rootless, host: Namespace) -> None:
    host.run("ip", "addr", "add", "172.31.251.1/24", "dev", "lo")  # an address of the host
    for value, words in [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("10.1.2.3,127.0.0.53", "127.0.0.53 is a loopback address"),
        ("169.254.169.254", "a link-local address"),
        ("172.31.251.1", "an address of the host"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),
        ("224.0.0.251", "a multicast or broadcast address"),
    ]:
        body = {"name": "x", "options": {"dns_servers": value}}
        status, err = rl.call(ALICE, "POST", "/v1/networks", body)
        assert status == 403, (value, err)
        assert err["error"]["field"] == "options.dns_servers", err
        assert words in err["error"]["message"], err
    assert rl.daemon.request("GET", "/v1/networks")[1] == []
    status, net = rl.call(
        ALICE, "POST", "/v1/networks", {"name": "a-net", "options": {"dns_servers": "10.1.2.3"}}
    )
    assert status == 201, net
    gateway = net["subnets"][0]["gateway"]
    pid = rl.user_netns(ALICE)
    for servers in (
        ["127.0.0.1:5399"],
        ["[::1]:53"],
        ["fe80::1"],
        [f"{gateway}:53"],
        ["172.31.251.1"],
    ):
        status, err = attach(rl, ALICE, "a-net", pid, "a1", dns_servers=servers)
        assert status == 403, (servers, err)
        assert err["error"]["field"] == "dns_servers" and err["error"]["value"] == servers[0], err
    assert addresses(pid) == []
    # the same through CNI: runtimeConfig.dns
    cni = {
        "command": "ADD",
        "containerId": "a2",
        "netns": f"/proc/{pid}/ns/net",
        "ifname": "eth0",
        "config": {
            "cniVersion": "1.0.0",
            "name": "a-net",
            "type": "netd",
            "runtimeConfig": {"dns": {"servers": ["127.0.0.1"]}},
        },
    }
    status, err = rl.call(ALICE, "POST", "/v1/cni", cni)
    assert status == 422 and err["code"] == 105 and "loopback" in err["msg"], err
    # nor into a network that is not hers (the host reaches every bridge)
    status, r_net = rl.daemon.request("POST", "/v1/networks", {"name": "r0"})
    assert status == 201, r_net
    inside = r_net["subnets"][0]["subnet"].replace(".0/24", ".7")
    status, err = attach(rl, ALICE, "a-net", pid, "a1", dns_servers=[inside])
    assert status == 403 and "a network that is not yours" in err["error"]["message"], err
    # an ordinary upstream, or a resolver container on her own network, is fine
    assert attach(rl, ALICE, "a-net", pid, "a1", dns_servers=["10.1.2.4:5353"])[0] == 201
    own = gateway.rsplit(".", 1)[0] + ".53"
    pid2 = rl.user_netns(ALICE)  # one connect per namespace and network
    assert attach(rl, ALICE, "a-net", pid2, "a2", ifname="eth1", dns_servers=[own])[0] == 201
    # root may name the host's loopback explicitly
    status, net = rl.daemon.request(
        "POST", "/v1/networks", {"name": "r-net", "options": {"dns_servers": "127.0.0.1"}}
    )
    assert status == 201, net


def test_conflicts_do_not_tell_an_owner_whose_object_it_is(rl: Rootless, sandbox: Sandbox) -> None:
    status, fa = rl.daemon.request(
        "POST", "/v1/networks", {"name": "fa", "subnets": [{"subnet": "10.89.1.0/24"}]}
    )
    assert status == 201, fa
    status, err = rl.call(
        ALICE, "POST", "/v1/networks", {"name": "x", "subnets": [{"subnet": "10.89.1.0/24"}]}
    )
    assert (
        status == 409
        and err["error"]["message"] == 'creating network "x": subnet 10.89.1.0/24 is not available'
    ), err
    status, err = rl.call(ALICE, "POST", "/v1/networks", {"name": "fa"})
    assert (
        status == 409
        and err["error"]["message"] == 'creating network "fa": the name "fa" is already taken'
    ), err
    assert fa["id"][:6] not in json.dumps(err)
    # root still gets the whole story
    status, err = rl.daemon.request(
        "POST", "/v1/networks", {"name": "y", "subnets": [{"subnet": "10.89.1.0/25"}]}
    )
    assert status == 409 and 'of network "fa"' in err["error"]["message"], err


def test_port_conflicts_name_no_other_users_container(rl: Rootless) -> None:
    assert rl.call(ALICE, "POST", "/v1/networks", {"name": "a-net"})[0] == 201
    assert rl.call(BOB, "POST", "/v1/networks", {"name": "b-net"})[0] == 201
    a_pid, b_pid = rl.user_netns(ALICE), rl.user_netns(BOB)
    status, b_ep = attach(
        rl, BOB, "b-net", b_pid, "bobs-web", publish=[{"host_port": 18080, "container_port": 80}]
    )
    assert status == 201, b_ep
    # a port Bob published: Alice learns it is taken, not by whom
    status, err = attach(
        rl,
        ALICE,
        "a-net",
        a_pid,
        "a2",
        ifname="eth1",
        publish=[{"host_port": 18080, "container_port": 80}],
    )
    assert status == 409, err
    assert err["error"]["message"] == "publishing host port 18080/tcp: the port is not available"
    assert "bobs-web" not in json.dumps(err)
    # her own container holding a port: the full message
    status, _ = attach(
        rl,
        ALICE,
        "a-net",
        a_pid,
        "a3",
        ifname="eth2",
        publish=[{"host_port": 18081, "container_port": 80}],
    )
    assert status == 201
    status, err = attach(
        rl,
        ALICE,
        "a-net",
        rl.user_netns(ALICE),  # another namespace: one connect per namespace and network
        "a4",
        ifname="eth3",
        publish=[{"host_port": 18081, "container_port": 80}],
    )
    assert status == 409 and "already published by container a3" in err["error"]["message"], err


def test_owner_restriction_refusals_are_audited_as_denied(rl: Rootless) -> None:
    assert rl.call(ALICE, "POST", "/v1/networks", {"name": "a-net"})[0] == 201
    pid = rl.user_netns(ALICE)
    refusals = [
        ("POST", "/v1/networks", {"name": "x", "options": {"bridge": "br0"}}),
        (
            "POST",
            "/v1/networks/a-net/connect",
            {"netns": f"/proc/{pid}/ns/net", "publish": [{"host_port": 80, "container_port": 80}]},
        ),
        ("POST", "/v1/networks", {"name": "y", "options": {"dns_servers": "127.0.0.1"}}),
    ]
    for method, url, body in refusals:
        assert rl.call(ALICE, method, url, body)[0] == 403
    cni = {
        "command": "ADD",
        "containerId": "c1",
        "netns": rl.host.sandbox.add_ns("rootc").path,
        "ifname": "eth0",
        "config": {"cniVersion": "1.0.0", "name": "a-net", "type": "netd"},
    }
    assert rl.call(ALICE, "POST", "/v1/cni", cni)[1]["code"] == 105
    # a plain failure stays "error"
    assert rl.call(ALICE, "POST", "/v1/networks", {"name": "a-net"})[0] == 409
    lines = audit_lines(rl, 6)
    outcomes = [(line["action"], line["outcome"], line["status"]) for line in lines[1:]]
    assert outcomes == [
        ("POST /v1/networks", "denied", 403),
        ("POST /v1/networks/{name}/connect", "denied", 403),
        ("POST /v1/networks", "denied", 403),
        ("POST /v1/cni", "denied", 422),
        ("POST /v1/networks", "error", 409),
    ]
    assert lines[1]["reason"].startswith("creating network \"x\": option 'bridge' is reserved")
    assert "does not own it" in lines[4]["reason"]


def test_the_same_container_id_on_two_owners_networks_does_not_collide(rl: Rootless) -> None:
    # both choose the same container id: two host veths, no collision, no 500
    assert rl.call(ALICE, "POST", "/v1/networks", {"name": "a-net"})[0] == 201
    assert rl.call(BOB, "POST", "/v1/networks", {"name": "b-net"})[0] == 201
    a_pid, b_pid = rl.user_netns(ALICE), rl.user_netns(BOB)
    status, b_ep = attach(
        rl, BOB, "b-net", b_pid, "shared-id", publish=[{"host_port": 18080, "container_port": 80}]
    )
    assert status == 201, b_ep
    status, a_ep = attach(rl, ALICE, "a-net", a_pid, "shared-id")
    assert status == 201, a_ep
    assert a_ep["host_ifname"] != b_ep["host_ifname"]
    links = rl.host.links()
    assert a_ep["host_ifname"] in links and b_ep["host_ifname"] in links
    assert addresses(a_pid) and addresses(b_pid)

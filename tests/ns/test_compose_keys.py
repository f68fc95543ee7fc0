"""Every networking key of `netd compose` with real traffic, and errors that change nothing."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon
from test_compose_up import Compose, compose_project


@pytest.fixture
def compose(sandbox: Sandbox, daemon: Daemon, tmp_path: Path) -> Iterator[Compose]:
    """A compose project bound to the test's daemon (see test_compose_up)."""
    yield from compose_project(sandbox, daemon, tmp_path)


KEYS = """
    services:
      web:
        networks:
          front:
            ipv4_address: 10.232.0.10
            mac_address: "02:00:00:aa:bb:cc"
            interface_name: fe0
            aliases: [www, site]
            link_local_ips: [169.254.10.10]
        hostname: webhost
        domainname: example.org
        dns: [10.232.0.99]
        dns_search: [corp.example]
        dns_opt: ["ndots:1"]
        extra_hosts: ["gw:host-gateway", "static.example=10.9.9.9"]
        ports:
          - "18080:80"
          - target: 53
            published: "15353"
            protocol: udp
      side:
        network_mode: "service:web"
      worker:
        scale: 2
        networks: [front]
      lonely:
        network_mode: none
      named:
        container_name: the-named-one
        networks: [front]
    networks:
      front:
        ipam:
          config:
            - subnet: 10.232.0.0/24
              gateway: 10.232.0.1
"""


def test_every_key(compose: Compose) -> None:
    compose.write(KEYS)
    compose.up()
    web = compose.sb("web")
    links = web.links()
    assert "fe0" in links and links["fe0"]["address"] == "02:00:00:aa:bb:cc"
    assert web.addresses("fe0") == ["10.232.0.10/24", "169.254.10.10/16"]  # + link_local_ips
    # scale: two replicas, each reachable, round-robin name
    w1, w2 = compose.addr("front", "worker", 1), compose.addr("front", "worker", 2)
    assert w1 != w2 and compose.sb("worker", 2).ping("10.232.0.10")
    # DNS: aliases, container_name, replica names, hostname
    for name, want in (
        ("www", "10.232.0.10"),
        ("site", "10.232.0.10"),
        ("the-named-one", None),
        (f"{compose.name}-worker-2", w2),
        ("webhost", "10.232.0.10"),
    ):
        got = compose.exec("worker", "getent", "hosts", name)
        assert got.returncode == 0, (name, got)
        assert want is None or want in got.stdout, (name, got.stdout)
    both = compose.exec("web", "getent", "ahostsv4", "worker").stdout
    assert w1 in both and w2 in both
    # resolv.conf and hosts through `exec`
    resolv = compose.exec("web", "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.232.0.1\nnameserver 10.232.0.99\n" in resolv
    assert "search corp.example" in resolv and "options ndots:1" in resolv
    hosts = compose.exec("web", "cat", "/etc/hosts").stdout
    assert "10.232.0.10\twebhost.example.org webhost" in hosts
    assert "10.232.0.1\tgw" in hosts and "10.9.9.9\tstatic.example" in hosts
    # network_mode: service:web shares web's namespace
    assert "fe0" in compose.exec("side", "ip", "-o", "link").stdout
    # network_mode: none: only lo
    assert list(compose.sb("lonely").links()) == ["lo"]
    # ports on the first network
    ep = next(e for e in compose.network("front")["endpoints"] if e["name"] == "web")
    assert {(p["host_port"], p["container_port"], p["protocol"]) for p in ep["port_mappings"]} == {
        (18080, 80, "tcp"),
        (15353, 53, "udp"),
    }
    assert "nothing changed" in compose.up()


def test_published_port_answers(sandbox: Sandbox, host: Namespace, tmp_path: Path) -> None:
    # Publishing is DNAT: it needs a firewall backend, so this test runs its own daemon.
    daemon = Daemon(host, firewall="nftables").start()
    compose = Compose(sandbox, daemon, tmp_path)
    try:
        compose.write("services: {web: {ports: ['18081:8000']}}\n")
        compose.up()
        outside = sandbox.add_ns("outside")
        sandbox.wire(host, outside, "192.0.2.1/24", "192.0.2.2/24")
        web = compose.sb("web")
        server = web.spawn(sys.executable, "-m", "http.server", "-b", "0.0.0.0", "8000")
        for _ in range(50):
            if web.ok("curl", "-s", "-m", "1", "http://127.0.0.1:8000/"):
                break
            time.sleep(0.1)
        url = "http://192.0.2.1:18081/"
        got = ""
        for _ in range(5):  # a loaded CI machine may be slow to start the server
            got = outside.run(
                "curl", "-s", "-m", "3", "-o", "/dev/null", "-w", "%{http_code}", url, check=False
            )
            if got == "200":
                break
            time.sleep(0.5)
        assert got == "200"
        server.kill()
        server.wait()
    finally:
        compose.cleanup()
        daemon.close()
    assert not compose.leftovers()


def test_changed_definition_is_reapplied(compose: Compose) -> None:
    compose.write("services: {web: {networks: {n: {aliases: [a1]}}}}\nnetworks: {n: {}}\n")
    compose.up()
    compose.write(
        "services: {web: {networks: {n: {aliases: [a2]}}}}\nnetworks: {n: {internal: true}}\n"
    )
    out = compose.up()
    assert "removed changed network" in out and "connected" in out
    net = compose.network("n")
    assert net["internal"] is True
    assert net["endpoints"][0]["aliases"] == [f"{compose.name}-web-1", "a2"]
    # scale down: the replica goes away
    compose.write("services: {web: {scale: 0, networks: [n]}}\nnetworks: {n: {internal: true}}\n")
    compose.up()
    assert compose.network("n")["endpoints"] == []
    assert not [p for p in compose.leftovers() if "/run/netns/" in p]


def _snapshot(compose: Compose) -> tuple[object, list[str]]:
    _, nets = compose.daemon.request("GET", "/v1/networks")
    return sorted(n["name"] for n in nets), compose.leftovers()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "services: {web: {networks: {n: {ipv4_address: 10.233.0.9}}}}\n"
            "networks: {n: {name: EXT, external: true}}\n",
            'compose.yaml:1: services.web.networks.n.ipv4_address: "10.233.0.9" is not in any '
            'subnet of network "n" (10.233.1.0/24)',
        ),
        (
            "services: {web: {}}\nnetworks: {default: {driver: weave}}\n",
            'compose.yaml:2: networks.default.driver: "weave" is not a known network driver '
            "(netd supports: bridge, macvlan, ipvlan, overlay)",
        ),
        (
            "services: {web: {networks: [x]}}\n"
            "networks: {x: {external: true, name: missing-net}}\n",
            'compose.yaml:2: networks.x: "missing-net" is an external network that does not exist '
            "(create it first: netd network create)",
        ),
        (
            "services:\n  a: {networks: {n: {ipv4_address: 10.233.2.5}}}\n"
            "  b: {networks: {n: {ipv4_address: 10.233.2.5}}}\n"
            "networks: {n: {ipam: {config: [{subnet: 10.233.2.0/24}]}}}\n",
            'compose.yaml:3: services.b.networks.n.ipv4_address: "10.233.2.5" is already used on '
            'network "n" by P-a-1',
        ),
    ],
    ids=["outside-subnet", "unknown-driver", "external-missing", "duplicate-static"],
)
def test_errors_change_nothing(compose: Compose, text: str, message: str) -> None:
    ext = f"{compose.name}-ext"
    compose.daemon.cli("network", "create", ext, "--subnet", "10.233.1.0/24")
    try:
        compose.write(text.replace("EXT", ext))
        before = _snapshot(compose)
        got = compose.run("up", check=False)
        assert got.returncode == 1
        want = message.replace("P-", f"{compose.name}-")  # run from the project directory
        assert got.stderr.strip() == "Error: " + want, got
        assert _snapshot(compose) == before
    finally:
        compose.daemon.cli("network", "rm", ext)

"""The periodic pass puts back firewall state others delete: a published port heals.

Topology (sandbox only): ``out`` (192.0.2.2) --veth-- ``host`` (192.0.2.1, runs netd with
``reconcile_interval = 0.5``) --bridge-- ``c1`` (a TCP server on port 80, published as host
port 8080). The client in ``out`` connects to 192.0.2.1:8080. The test deletes the port's
element (nftables: ``nft delete element``; iptables: ``iptables -t nat -D NETD-DNAT``) and the
host veth behind the daemon's back, and checks with real connections that the port works again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest
from netns_fixtures import HELLO_SERVER, Namespace, Sandbox
from netns_fixtures import wait_for as fixtures_wait_for
from netns_fixtures.daemon import Daemon

NET = {"name": "pubnet", "subnets": [{"subnet": "10.133.0.0/24"}]}
INTERVAL = 0.5
CLIENT = (
    "import socket, sys\n"
    "s = socket.create_connection(('192.0.2.1', 8080), timeout=0.5)\n"
    "sys.stdout.write(s.recv(16).decode())\n"
)


def answers(out: Namespace) -> bool:
    proc = subprocess.run(
        out.argv(sys.executable, "-c", CLIENT), capture_output=True, text=True, timeout=10
    )
    return proc.returncode == 0 and proc.stdout == "hello"


def wait_for(what: str, check: Callable[[], bool]) -> float:
    return fixtures_wait_for(what, check, timeout=10 * INTERVAL)


@pytest.fixture(params=["nftables", "iptables"])
def published(
    request: pytest.FixtureRequest, host: Namespace, sandbox: Sandbox
) -> Iterator[tuple[Daemon, Namespace, dict[str, object]]]:
    d = Daemon(host, firewall=request.param)
    d.config_path().write_text(f"reconcile_interval = {INTERVAL}\n")
    d.start()
    try:
        out = sandbox.add_ns("out")
        sandbox.wire(host, out, "192.0.2.1/24", "192.0.2.2/24")
        assert d.request("POST", "/v1/networks", NET)[0] == 201
        c1 = sandbox.add_ns("c1")
        body = {"netns": c1.path, "publish": [{"host_port": 8080, "container_port": 80}]}
        status, ep = d.request("POST", "/v1/networks/pubnet/connect", body)
        assert status == 201, ep
        c1.spawn(sys.executable, "-c", HELLO_SERVER)
        wait_for("the server starting", lambda: answers(out))
        yield d, out, ep
    finally:
        d.close_checked()


def test_deleted_port_element_is_re_added(
    published: tuple[Daemon, Namespace, dict[str, object]], host: Namespace
) -> None:
    d, out, _ = published
    assert d.proc is not None
    # Freeze the daemon while tampering, so that the breakage is seen before any repair.
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        if d.firewall == "nftables":
            host.run("nft", "delete", "element", "inet", "netd", "pub4_any", "{ tcp . 8080 }")
            assert "8080" not in host.run("nft", "list", "map", "inet", "netd", "pub4_any")
        else:
            host.run("iptables", "-t", "nat", "-D", "NETD-DNAT", "1")  # the only DNAT rule
            assert "8080" not in host.run("iptables-save", "-t", "nat")
        assert not answers(out)
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    took = wait_for("published port element deleted", lambda: answers(out))
    print(f"{d.firewall}: port answers again after {took:.2f} s")
    log = d.log()
    if d.firewall == "nftables":
        # The monitor counts rules, not elements: the periodic pass put it back.
        assert "10.133.0.2" in host.run("nft", "list", "map", "inet", "netd", "pub4_any")
        assert "reconcile: re-adding" in log and "pub4_any { tcp . 8080 : 10.133.0.2 }" in log
    else:
        # A deleted rule changes NETD-DNAT's count: the monitor or the periodic pass restores it.
        # The repair logs once it has finished, which can be just after the port answers.
        wait_for(
            "the repair logged",
            lambda: any(
                m in d.log() for m in ("restored netd's iptables chains", "reconcile: re-adding")
            ),
        )
        assert "--dport 8080" in host.run("iptables-save", "-t", "nat")


def test_port_works_after_its_veth_is_re_plumbed(
    published: tuple[Daemon, Namespace, dict[str, object]], host: Namespace
) -> None:
    d, out, ep = published
    host.run("ip", "link", "del", str(ep["host_ifname"]))
    took = wait_for("host veth deleted", lambda: answers(out))
    print(f"{d.firewall}: port answers again after {took:.2f} s")
    assert "reconcile: re-plumbing" in d.log()

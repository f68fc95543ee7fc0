"""`netd doctor` inside a sandbox host namespace, after breaking things there on purpose."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from netns_fixtures import Namespace
from netns_fixtures.daemon import NETD, Daemon


def doctor(host: Namespace, daemon: Daemon) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run `netd doctor --format json` in ``host``; (exit code, findings by check)."""
    argv = host.argv(
        NETD,
        "--socket",
        str(daemon.socket),
        "doctor",
        "--format",
        "json",
        "--config",
        str(daemon.config_path()),
    )
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.stderr == "", proc.stderr
    return proc.returncode, {f["check"]: f for f in json.loads(proc.stdout)}


def test_doctor_reports_broken_host_then_healthy(daemon: Daemon, host: Namespace) -> None:
    status, _ = daemon.request(
        "POST", "/v1/networks", {"name": "web", "subnets": [{"subnet": "10.94.0.0/24"}]}
    )
    assert status == 201
    # Break the sandbox host: forwarding off, Docker- and firewalld-style tables, open socket.
    host.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
    host.run("nft", "add table ip filter; add chain ip filter DOCKER-USER")
    host.run("nft", "add table inet firewalld")
    os.chmod(daemon.socket, 0o666)

    code, found = doctor(host, daemon)
    assert code == 1
    assert found["ip_forward"]["status"] == "fail"
    assert "net.ipv4.ip_forward=0 while netd has 1 network(s)" in found["ip_forward"]["detail"]
    assert "sysctl -w net.ipv4.ip_forward=1" in found["ip_forward"]["fix"]
    assert found["conflicts.docker"]["status"] == "warn"
    assert "chain ip filter DOCKER-USER" in found["conflicts.docker"]["detail"]
    assert "DOCKER-USER" in found["conflicts.docker"]["fix"]
    assert found["conflicts.firewalld"]["status"] == "warn"
    assert "table inet firewalld" in found["conflicts.firewalld"]["detail"]
    assert found["socket"]["status"] == "fail"
    assert "mode 0666" in found["socket"]["detail"]
    assert found["daemon"]["status"] == "ok"
    assert "1 network(s)" in found["daemon"]["detail"]
    assert found["nftables"]["status"] == "ok"
    assert "inet firewalld" in found["nftables"]["detail"]
    for check in ("kernel.bridge", "kernel.veth", "ipv6"):
        assert found[check]["status"] == "ok", found[check]

    # Repair everything that was broken: no failure left, exit 0.
    host.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
    host.run("nft", "delete table ip filter; delete table inet firewalld")
    os.chmod(daemon.socket, 0o660)
    code, found = doctor(host, daemon)
    assert [f for f in found.values() if f["status"] == "fail"] == []
    assert code == 0
    assert found["ip_forward"]["status"] == "ok"
    assert found["conflicts"]["status"] == "ok"
    assert found["socket"]["status"] == "ok"


def test_doctor_without_daemon(host: Namespace) -> None:
    d = Daemon(host)  # never started: no socket, nobody answering
    try:
        host.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=0")
        code, found = doctor(host, d)
        assert code == 1
        assert found["daemon"]["status"] == "fail"
        assert str(d.socket) in found["daemon"]["detail"]
        assert found["socket"]["status"] == "warn"
        # no daemon to say networks exist: netd would turn forwarding on itself
        assert found["ip_forward"]["status"] == "warn"
    finally:
        d.close()


def test_doctor_table_output_lists_fixes(daemon: Daemon, host: Namespace) -> None:
    host.run("sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1")
    proc = subprocess.run(
        host.argv(
            NETD, "--socket", str(daemon.socket), "doctor", "--config", str(daemon.config_path())
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    ipv6 = next(line for line in lines if line.startswith("ipv6 "))
    assert "WARN" in ipv6 and "disable_ipv6=1" in ipv6
    assert "  ipv6: sysctl -w net.ipv6.conf.all.disable_ipv6=0" in lines


def test_doctor_reports_which_drivers_this_kernel_runs(daemon: Daemon, host: Namespace) -> None:
    """Probed in throwaway namespaces: the host namespace gains no link."""
    before = set(host.links())
    _, found = doctor(host, daemon)
    drivers = found["drivers"]
    assert drivers["status"] == "ok"
    assert drivers["detail"].startswith("this kernel runs drivers bridge, ipam, macvlan, null")
    assert set(host.links()) == before
    # The kernel asked independently (in the sandbox host): can it make an ipvlan link?
    host.run("ip", "link", "add", "probe-a", "type", "veth", "peer", "name", "probe-b")
    made = host.ok("ip", "link", "add", "probe0", "link", "probe-a", "type", "ipvlan")
    host.run("ip", "link", "del", "probe-a")  # takes probe-b and probe0 along
    if made:
        assert "ipvlan" in drivers["detail"].split(";")[0]
    else:
        assert "not ipvlan (this kernel has no ipvlan links (CONFIG_IPVLAN))" in drivers["detail"]

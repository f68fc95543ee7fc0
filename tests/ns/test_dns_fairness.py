"""One container cannot starve the others' DNS (issue #14, "DNS fairness").

A real `netd daemon` in a sandbox host; network "app" (10.77.0.0/24) with containers:
"flood" (upstream 10.60.0.2, which swallows every query), "good" (upstream 10.60.0.3, which
answers every query) and "web". The upstreams run in an "up" namespace wired to the host
(netns_fixtures/dnsupstream.py). Clients are netns_fixtures/dnsflood.py (random names, so
every query is forwarded) and tcphog.py; `dig` checks single answers. The worker's pid,
descriptors and log lines are read from /proc and the daemon's log, not through netd.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_fixtures import Namespace, Sandbox, wait_for
from netns_fixtures.daemon import Daemon

PY = sys.executable
FIXTURES = Path(__file__).resolve().parents[2] / "netns-fixtures" / "netns_fixtures"
GW = "10.77.0.1"
SWALLOW, ANSWER = "10.60.0.2", "10.60.0.3"
TCP_PER_CLIENT = 16  # netd.dns.limits.TCP.per_client, restated: the test reads the kernel


class App:
    """The daemon, the upstreams and three containers."""

    def __init__(self, d: Daemon, sandbox: Sandbox) -> None:
        self.d = d
        up = sandbox.add_ns("up")
        sandbox.wire(d.host, up, "10.60.0.1/24", f"{SWALLOW}/24")
        up.run("ip", "addr", "add", f"{ANSWER}/24", "dev", "down0")
        self.upstream = up.spawn(
            PY, str(FIXTURES / "dnsupstream.py"), "--swallow", SWALLOW, "--answer", ANSWER,
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.upstream.stdout is not None
        assert self.upstream.stdout.readline() == "ready\n"
        self.upstream.stdout.close()  # it prints nothing else
        d.cli("network", "create", "app", "--subnet", "10.77.0.0/24")
        self.flood = sandbox.add_ns("flood")
        self.good = sandbox.add_ns("good")
        self.web = sandbox.add_ns("web")
        self.flood_addr = self.connect(self.flood, "flood", "--dns", SWALLOW)
        self.good_addr = self.connect(self.good, "good", "--dns", ANSWER)
        self.web_addr = self.connect(self.web, "web")

    def connect(self, ns: Namespace, name: str, *extra: str) -> str:
        out = self.d.cli(
            "network", "connect", "app", "--netns", ns.path, "--name", name, *extra,
            "--format", "json",
        ).stdout  # fmt: skip
        return str(json.loads(out)["addresses"][0].split("/")[0])

    def dnsflood(self, ns: Namespace, suffix: str, rate: int, seconds: float, **kw: Any) -> Any:
        return ns.spawn(
            PY, str(FIXTURES / "dnsflood.py"), GW, suffix, "--rate", str(rate),
            "--seconds", str(seconds), "--timeout", "3", stdout=subprocess.PIPE, text=True, **kw,
        )  # fmt: skip


@pytest.fixture
def app(host: Namespace, sandbox: Sandbox) -> Iterator[App]:
    d = Daemon(host)
    d.config_path().write_text('log_format = "json"\n')
    d.start()
    try:
        yield App(d, sandbox)
    finally:
        d.close_checked()
        assert not d.dns_worker_pids()


def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=60)
    return dict(json.loads(out))


def worker_lines(d: Daemon) -> list[dict[str, Any]]:
    """The daemon's JSON log lines that carry a DNS worker's records."""
    out = []
    for line in d.log().splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            if doc.get("logger") == "netd.dns.worker" and "dns_worker" in doc:
                out.append(doc)
    return out


@pytest.mark.parametrize("flooders", [1, 4])
def test_flooding_container_does_not_starve_its_neighbour(
    app: App, sandbox: Sandbox, flooders: int
) -> None:
    [worker] = app.d.dns_worker_pids()
    nss = [app.flood]
    for i in range(1, flooders):
        nss.append(sandbox.add_ns(f"flood{i}"))
        app.connect(nss[-1], f"flood{i}", "--dns", SWALLOW)
    # 3,000 q/s of names whose upstream never answers (the case), from one container
    # or four on the same network, and beside them a well-behaved container at 50 q/s whose
    # upstream answers; every name is new (no cache).
    floods = [app.dnsflood(ns, "void.test", 3000 // flooders, 4) for ns in nss]
    good = app.dnsflood(app.good, "ok.test", 50, 4)
    g = result(good)
    fs = [result(f) for f in floods]
    f = {k: sum(x[k] for x in fs) for k in ("sent", "servfail", "unanswered")}
    print("good:", g, "\nflood:", f)
    assert g["sent"] >= 150 and g["noerror"] == g["sent"], g  # no failure, every one answered
    # The flooder is held at its share and told so: SERVFAIL at once, not silence.
    assert f["sent"] >= 3000, f
    assert f["servfail"] >= 0.9 * f["sent"], f
    assert f["unanswered"] <= 0.05 * f["sent"], f
    # The worker said so in the daemon's log, through its channel, in the daemon's format.
    lines = [x for x in worker_lines(app.d) if "over its share of forwarded" in x["msg"]]
    assert lines and all(x["dns_worker"] == worker for x in lines), worker_lines(app.d)
    assert [x for x in lines if app.flood_addr in x["msg"] and x["level"] == "warning"], lines
    # Local names still resolve for the flooder (only forwarding is shared).
    out = app.flood.run("dig", "+short", "+time=2", "+tries=1", f"@{GW}", "web")
    assert out.split() == [app.web_addr]


def test_one_container_cannot_hold_every_tcp_connection(app: App, tmp_path: Path) -> None:
    # Extra addresses inside the container's own namespace (no anti-spoofing on this bridge):
    # 48 of them plus its own, 16 connections each, 784 in all, against 512 in the worker.
    extra = [f"10.77.0.{i}" for i in range(150, 198)]
    for addr in extra:
        app.flood.run("ip", "addr", "add", f"{addr}/24", "dev", "eth0")
    stop = tmp_path / "stop"
    hog = app.flood.spawn(
        PY, str(FIXTURES / "tcphog.py"), GW, "--sources", ",".join([app.flood_addr, *extra]),
        "--per-source", str(TCP_PER_CLIENT), "--stop-file", str(stop),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert hog.stdout is not None
        held = json.loads(hog.stdout.readline())
        print("hog:", held)
        # its own address is one client, the addresses netd never gave out share one more
        assert held["held"] <= 2 * TCP_PER_CLIENT, held
        assert held["opened"] + held["failed"] == 49 * TCP_PER_CLIENT
        # while it holds them, others' TCP queries are answered
        for ns in (app.good, app.web):
            out = ns.run("dig", "+tcp", "+short", "+time=3", "+tries=1", f"@{GW}", "web")
            assert out.split() == [app.web_addr], out
    finally:
        stop.touch()
        hog.communicate(timeout=30)
    lines = [x for x in worker_lines(app.d) if "over its share of TCP" in x["msg"]]
    assert lines, worker_lines(app.d)


def _fd_targets(pid: int) -> dict[str, str]:
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
    return out


def test_worker_logs_through_the_daemon_and_cannot_write_its_log(app: App) -> None:
    [worker] = app.d.dns_worker_pids()
    assert app.d.proc is not None
    fds = _fd_targets(worker)
    assert fds["2"] == "/dev/null" and fds["1"] == "/dev/null", fds
    assert str(app.d.log_path) not in fds.values(), fds
    # Its log channel is a pipe whose other end the daemon holds.
    daemon_pipes = {t for t in _fd_targets(app.d.proc.pid).values() if t.startswith("pipe:")}
    assert {t for t in fds.values() if t.startswith("pipe:")} & daemon_pipes, (fds, daemon_pipes)
    # A line logged while no daemon runs waits in the worker and reaches the next daemon.
    app.d.stop(signal.SIGTERM)
    app.d.start()
    assert app.d.dns_worker_pids() == [worker]  # adopted
    wait_for(
        "the worker's line from while the daemon was down",
        lambda: any("control connection closed" in x["msg"] for x in worker_lines(app.d)),
        10,
    )
    # ... and the new daemon holds its channel now.
    fds = _fd_targets(worker)
    daemon_pipes = {t for t in _fd_targets(app.d.proc.pid).values() if t.startswith("pipe:")}
    assert {t for t in fds.values() if t.startswith("pipe:")} & daemon_pipes, (fds, daemon_pipes)
    assert fds["2"] == "/dev/null"

"""The real DNS worker runs under its seccomp filter and still resolves (local and forwarded).

Topology (one sandbox): host ns 10.88.0.1/24 --veth-- c1 10.88.0.2 (network "front", one
endpoint "web"); host 10.90.0.1/24 --veth-- up ns 10.90.0.2 running dnsmasq as the upstream.
The DNS manager runs in the host ns via ``python -m netd.dns.standalone``.
"""

from __future__ import annotations

import ipaddress
import json
import select
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_fixtures import Namespace, Sandbox

from netd.model import Endpoint, Network, Subnet, to_json

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]


def _status_field(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {key} in /proc/{pid}/status")


@pytest.fixture
def dns(sandbox: Sandbox) -> Iterator[tuple[Namespace, Namespace, int]]:
    host = sandbox.add_host()
    c1 = sandbox.add_ns("c1")
    up = sandbox.add_ns("up")
    sandbox.wire(host, c1, "10.88.0.1/24", "10.88.0.2/24", a_if="h-c1", b_if="eth0")
    sandbox.wire(host, up, "10.90.0.1/24", "10.90.0.2/24", a_if="h-up", b_if="eth0")
    sandbox.processes.append(
        subprocess.Popen(
            up.argv(
                "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts", "--port=53",
                "--listen-address=10.90.0.2", "--bind-interfaces", "--user=root", "--pid-file=",
                "--address=/example.test/1.2.3.4",
            ),
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    )  # fmt: skip
    net = Network(
        id="f" * 64,
        name="front",
        driver="bridge",
        subnets=(Subnet(ipaddress.ip_network("10.88.0.0/24"), ipaddress.ip_address("10.88.0.1")),),
    )
    ep = Endpoint(
        network_id=net.id,
        container_id="c1",
        ifname="eth0",
        netns=c1.path,
        host_ifname="h-c1",
        addresses=(ipaddress.ip_interface("10.88.0.2/24"),),
        name="web",
        state="ready",
    )
    # The worker runs as nobody and reads the upstream list itself: the directory must be 0755.
    tmp = Path(tempfile.mkdtemp(prefix="netd-seccomp-"))
    tmp.chmod(0o755)
    proc: subprocess.Popen[str] | None = None
    try:
        (tmp / "resolv.conf").write_text("nameserver 10.90.0.2\n")
        (tmp / "state.json").write_text(
            json.dumps([{"network": to_json(net), "endpoints": [to_json(ep)]}])
        )
        proc = host.spawn(
            PY, "-m", "netd.dns.standalone", str(tmp / "state.json"),
            "--upstreams-from", str(tmp / "resolv.conf"),
            stdout=subprocess.PIPE, text=True, cwd=str(ROOT),
        )  # fmt: skip
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 15)
        assert ready, "standalone DNS printed no status"
        worker = int(json.loads(proc.stdout.readline())["worker_pid"])
        yield host, c1, worker
    finally:
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_worker_is_filtered_and_still_resolves(dns: tuple[Namespace, Namespace, int]) -> None:
    _host, c1, worker = dns
    assert _status_field(worker, "Seccomp") == "2"  # SECCOMP_MODE_FILTER
    assert _status_field(worker, "Seccomp_filters") == "1"
    assert _status_field(worker, "NoNewPrivs") == "1"
    assert _status_field(worker, "CapEff") == "0000000000000000"

    def dig(*args: str) -> list[str]:
        out = c1.run("dig", "@10.88.0.1", "+short", "+tries=1", "+time=3", *args, timeout=15)
        return out.split()

    assert dig("web") == ["10.88.0.2"]  # local record over UDP
    assert dig("+tcp", "web") == ["10.88.0.2"]  # TCP: accept() on the handed-over socket
    # Forwarded to the upstream: the worker creates and connects sockets of its own.
    assert dig("example.test") == ["1.2.3.4"]
    assert dig("+tcp", "www.example.test") == ["1.2.3.4"]
    assert dig("-x", "10.88.0.2") == ["web.dns.netd."]
    # Still the same worker: nothing it needed was refused fatally (else it would have exited).
    assert _status_field(worker, "Seccomp") == "2"

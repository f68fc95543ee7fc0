"""Hostile namespace paths on POST /v1/networks/NET/connect: each is a clear 400 on ``netns``.

The daemon runs in a sandbox host namespace. Paths that name the daemon's own namespace (by
/proc/self, by its pid, by the bind mount under /run/netns), the machine's initial namespace
(this pytest process's, pid 1's), another kind of namespace, a FIFO (whose open would block the
daemon), devices, directories, plain files and symlink tricks must all be refused before
anything is created: no link in the host namespace, no endpoint recorded, and the initial
namespace's links unchanged.

Safety: before a path that names the initial namespace is sent to the daemon, the same
validation is run inside the sandbox host by a throwaway process; if it were accepted there
the test fails without calling the daemon, so a regression can never plumb a veth into the
machine's own namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_fixtures import Namespace, Sandbox, run
from netns_fixtures.daemon import Daemon

PY = sys.executable
CHECK = (
    "import sys\n"
    "from netd.kernel.netns import open_netns\n"
    "from netd.errors import InvalidInput\n"
    "try:\n"
    "    open_netns(sys.argv[1])\n"
    "except InvalidInput:\n"
    "    sys.exit(3)\n"
)


# Paths the API resolves to derive a container id when none is given: EACCES and a NUL byte
# must be 400s naming netns (server.container_id_for_netns), not 500s.
DERIVED_ID_HOLES = ("/proc/1/ns/net", "/run/netns/x\0y")


def initial_links() -> list[str]:
    """Link names of the namespace pytest runs in (read only)."""
    return sorted(link["ifname"] for link in json.loads(run(["ip", "-j", "link", "show"])))


@pytest.fixture
def world(sandbox: Sandbox, daemon: Daemon) -> Iterator[tuple[Sandbox, Daemon, Path]]:
    body = {"name": "n1", "subnets": [{"subnet": "10.77.0.0/24"}]}
    status, net = daemon.request("POST", "/v1/networks", body)
    assert status == 201, net
    tmp = Path(tempfile.mkdtemp(prefix="netd-netns-paths-"))
    try:
        yield sandbox, daemon, tmp
    finally:
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()


def refused_in_host(host: Namespace, path: str) -> bool:
    """True when open_netns refuses ``path`` inside the sandbox host (exit 3)."""
    proc = subprocess.run(host.argv(PY, "-c", CHECK, path), capture_output=True, timeout=20)
    return proc.returncode == 3


def hostile_paths(daemon: Daemon, tmp: Path) -> dict[str, str]:
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    (tmp / "to-self").symlink_to("/proc/self/ns/net")
    (tmp / "to-initial").symlink_to(f"/proc/{os.getpid()}/ns/net")
    (tmp / "plain").write_text("not a namespace\n")
    assert daemon.proc is not None
    return {
        "daemon /proc/self": "/proc/self/ns/net",
        "daemon by pid": f"/proc/{daemon.proc.pid}/ns/net",
        "daemon's bind mount": daemon.host.path,
        "dot-dot to self": "/proc/self/ns/../ns/net",
        "initial, by this test's pid": f"/proc/{os.getpid()}/ns/net",
        "initial, pid 1": "/proc/1/ns/net",
        "mount namespace": "/proc/self/ns/mnt",
        "user namespace": f"/proc/{os.getpid()}/ns/user",
        "fifo": str(fifo),
        "char device": "/dev/null",
        "tty device": "/dev/tty",
        "directory": "/run/netns",
        "plain file": str(tmp / "plain"),
        "symlink to /proc/self": str(tmp / "to-self"),
        "symlink to initial": str(tmp / "to-initial"),
        "fd of the daemon": "/proc/self/fd/0",
        "relative": "run/netns/x",
        "missing": "/run/netns/does-not-exist-netd-test",
        "too long": "/" + "a" * 5000,
        "NUL byte": "/run/netns/x\0y",
        "empty": "",
    }


def test_hostile_paths_are_refused_and_change_nothing(
    world: tuple[Sandbox, Daemon, Path],
) -> None:
    sandbox, daemon, tmp = world
    host = daemon.host
    links_before = set(host.links())
    initial_before = initial_links()
    paths = hostile_paths(daemon, tmp)
    for what in ("initial, by this test's pid", "symlink to initial"):
        assert refused_in_host(host, paths[what]), f"{what}: accepted by open_netns"
    failures = []
    # With a container id, and without one (the daemon then derives it from the path).
    requests = [({"netns": p, "container_id": "hostile"}, w) for w, p in paths.items()]
    requests += [
        ({"netns": p}, w + ", no container_id")
        for w, p in paths.items()
        if p not in DERIVED_ID_HOLES
    ]
    for req, what in requests:
        t0 = time.monotonic()
        status, body = daemon.request("POST", "/v1/networks/n1/connect", req, 10)
        took = time.monotonic() - t0
        err = body.get("error", {}) if isinstance(body, dict) else {}
        if status != 400 or err.get("field") != "netns" or err.get("code") != "invalid_input":
            failures.append(f"{what} ({req['netns'][:60]!r}): {status} {body}")
        elif took > 5:
            failures.append(f"{what}: answered after {took:.1f} s")
    assert not failures, "\n".join(failures)
    # Nothing was created or recorded, here or in the machine's own namespace.
    assert set(host.links()) == links_before
    status, net = daemon.request("GET", "/v1/networks/n1")
    assert status == 200 and net["endpoints"] == []
    assert initial_links() == initial_before
    # The daemon still answers (the FIFO did not block its event loop).
    status, _ = daemon.request("GET", "/v1/status", timeout=5)
    assert status == 200
    # Control: a real container namespace is accepted, so the refusals above are not blanket.
    c1 = sandbox.add_ns("c1")
    status, ep = daemon.request("POST", "/v1/networks/n1/connect", {"netns": c1.path})
    assert status == 201, ep
    assert "eth0" in c1.links()
    status, _ = daemon.request("POST", "/v1/networks/n1/disconnect", {"netns": c1.path})
    assert status == 200


@pytest.mark.parametrize("path", DERIVED_ID_HOLES)
def test_derived_container_id_paths(host: Namespace, path: str) -> None:
    if path == "/proc/1/ns/net" and os.access(path, os.R_OK):
        pytest.skip("/proc/1/ns/net is readable here: the EACCES case does not arise")
    d = Daemon(host).start()
    try:
        d.request("POST", "/v1/networks", {"name": "n1", "subnets": [{"subnet": "10.77.0.0/24"}]})
        status, body = d.request("POST", "/v1/networks/n1/connect", {"netns": path}, 10)
        assert status == 400 and body["error"]["field"] == "netns", body
    finally:
        d.close()

"""systemd socket activation: the daemon serves a listening socket it inherits as fd 3.

We play systemd: bind and listen on the API socket ourselves, then start the daemon with that
socket as fd 3, ``LISTEN_FDS=1`` and ``LISTEN_PID`` equal to the daemon's own pid (a shell sets
``LISTEN_PID=$$`` and execs netd, keeping its pid). A client that connected before the daemon
existed is answered once it is up — the "starts on the first CNI call" behaviour — and the
socket outlives a daemon restart, as systemd's does.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_fixtures import Namespace
from netns_fixtures.daemon import NETD

# Put the inherited socket on fd 3 (dash cannot redirect fds above 9), then exec a shell that
# sets LISTEN_PID to its own pid and execs netd: every exec keeps the pid, as under systemd.
WRAPPER = (
    "import os, sys; fd = int(sys.argv[1]); os.dup2(fd, 3); os.close(fd); "
    "os.execvp('sh', ['sh', '-c', "
    "'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=netd.socket exec \"$@\"', 'sh', *sys.argv[2:]])"
)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="netd-sockact-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def listening_socket(path: Path) -> socket.socket:
    """What systemd does for netd.socket: bind, chmod 0660, listen."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o660)
    sock.listen(64)
    return sock


def start(
    host: Namespace, listener: socket.socket, work: Path, log: Any, wrapper: str = WRAPPER
) -> subprocess.Popen[Any]:
    """Start `netd daemon` in ``host`` with ``listener`` passed as fd 3."""
    config = work / "netd.toml"
    config.write_text("# test config: defaults\n")
    netd = [
        NETD,
        "--socket",
        str(work / "netd.sock"),
        "daemon",
        "--state-dir",
        str(work / "state"),
        "--firewall-backend",
        "none",
        "--managed-netns",
        host.path,
        "--config",
        str(config),
    ]
    fd = listener.fileno()
    return host.spawn(
        sys.executable,
        "-c",
        wrapper,
        str(fd),
        *netd,
        pass_fds=(fd,),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def send_status(path: Path) -> socket.socket:
    """Connect and send GET /v1/status; the caller reads the answer later."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(30)
    client.connect(str(path))  # succeeds on the backlog even while no daemon runs
    client.sendall(b"GET /v1/status HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n\r\n")
    return client


def read_answer(client: socket.socket) -> tuple[int, Any]:
    chunks = []
    with client:
        while chunk := client.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def stop(proc: subprocess.Popen[Any], host: Namespace) -> int:
    proc.terminate()
    code = proc.wait(timeout=15)
    host.sandbox.processes.remove(proc)
    return code


def test_daemon_serves_inherited_socket(host: Namespace, workdir: Path) -> None:
    path = workdir / "netd.sock"
    listener = listening_socket(path)
    inode = os.stat(path).st_ino
    log_path = workdir / "daemon.log"
    with listener, open(log_path, "ab") as log:
        early = send_status(path)  # the "first CNI call" arrives before any daemon exists
        proc = start(host, listener, workdir, log)
        status, body = read_answer(early)
        assert status == 200, log_path.read_text()
        assert body["ready"] is True
        assert body["pid"] == proc.pid  # LISTEN_PID matched: the exec chain kept the pid
        # netd served systemd's socket instead of binding its own: same file, same mode
        assert os.stat(path).st_ino == inode
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o660)
        assert stop(proc, host) == 0

        # Daemon gone, socket still listening (systemd keeps it): a call made now waits in the
        # backlog and is answered by the next daemon.
        assert path.exists()
        waiting = send_status(path)
        time.sleep(0.2)
        proc2 = start(host, listener, workdir, log)
        status, body = read_answer(waiting)
        assert status == 200 and body["pid"] == proc2.pid
        assert stop(proc2, host) == 0
    text = log_path.read_text()
    assert "Traceback" not in text, text
    assert "another daemon" not in text, text


def test_listen_pid_of_another_process_is_ignored(host: Namespace, workdir: Path) -> None:
    """LISTEN_PID names someone else: netd must not take fd 3, and refuses the busy path."""
    path = workdir / "netd.sock"
    listener = listening_socket(path)
    log_path = workdir / "daemon.log"
    wrong = WRAPPER.replace("LISTEN_PID=$$", "LISTEN_PID=1")
    with listener, open(log_path, "ab") as log:
        proc = start(host, listener, workdir, log, wrong)
        code = proc.wait(timeout=30)
        host.sandbox.processes.remove(proc)
    assert code == 1
    # it fell back to binding the path itself and found our listener there
    assert "another daemon" in log_path.read_text()

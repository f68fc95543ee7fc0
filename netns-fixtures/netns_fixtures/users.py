"""Acting as another user in namespace tests: API requests and rootless "containers".

A request is made by a client process running as ``uid`` (``setpriv``), so the daemon's
SO_PEERCRED is the kernel's, not a claim. A rootless container is a user namespace with a network
namespace made by that uid (``unshare --user --map-root-user --net``), reached as
``/proc/<pid>/ns/net`` as a rootless runtime would pass it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import Namespace, wait_for
from .daemon import REQUEST_SCRIPT


def as_uid(uid: int) -> list[str]:
    """The argv prefix that runs a command as ``uid`` (and that gid), with no other groups."""
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]


def write_client(directory: Path) -> Path:
    """The request script, where every uid can read it (next to the daemon's socket)."""
    client = directory / "client.py"
    client.write_text(REQUEST_SCRIPT)
    return client


def request_as(
    uid: int, client: Path, socket: Path, method: str, url: str, body: Any = None
) -> tuple[int, Any]:
    """(status, answer) of one request made by a process running as ``uid``."""
    argv = [*as_uid(uid), sys.executable, "-I", str(client), str(socket)]
    argv += [method, url, json.dumps(body) if body is not None else ""]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    data = json.loads(out.stdout)
    return data["status"], data["body"]


def user_netns(host: Namespace, uid: int) -> int:
    """Pid of a process (in ``host``) in a new user + network namespace made by ``uid``."""
    proc = host.spawn(*as_uid(uid), "unshare", "--user", "--map-root-user", "--net", "sleep", "300")
    ours = os.stat("/proc/self/ns/user").st_ino

    def moved() -> bool:
        assert proc.poll() is None, "unshare --user failed"
        try:
            return os.stat(f"/proc/{proc.pid}/ns/user").st_ino != ours
        except OSError:
            return False

    wait_for("the user namespace", moved, timeout=10)
    return proc.pid

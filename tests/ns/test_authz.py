"""Authorisation and audit against a real API server in a sandbox host namespace.

The server is the daemon's own app (``make_app`` over a service with the real bridge driver)
with the security middleware added, as ``netd daemon`` will wire it; it runs inside the sandbox
host. Callers are real processes with real credentials: root (this test), ``nobody`` and
``nobody`` with the ``users`` group as a supplementary group (``setpriv``), so SO_PEERCRED and
/proc are the kernel's. Assertions read the kernel (``ip -j``) and the audit file back.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import NETD, REQUEST_SCRIPT

NOBODY = 65534
USERS_GID = grp.getgrnam("users").gr_gid

# Wires the app exactly as the daemon should (see docs/security.md): API middleware first, then
# the authorisation/audit middleware.
SERVER = """
import asyncio, ipaddress, json, os, signal, socket, sys
from pathlib import Path
from aiohttp import web
from netd.api.server import make_app
from netd.drivers import get_driver
from netd.firewall.base import NullFirewall
from netd.ipam.subnets import parse_pool
from netd.security import AuditLog, AuthzHook, Policy, PolicyConfig
from netd.security.middleware import make_auth_middleware
from netd.service import Service
from netd.store import open_store

cfg = json.loads(sys.argv[1])
state = Path(cfg["state_dir"])

async def main():
    service = Service(
        store=open_store("sqlite", state),
        drivers={"bridge": get_driver("bridge")},
        firewall=NullFirewall(),
        pools=[parse_pool("10.89.0.0/16:24")],
        ula=ipaddress.IPv6Network("fd00:1234:5678::/48"),
    )
    await service.start()
    policy_cfg = PolicyConfig(**cfg["policy"])
    audit = AuditLog(state / "audit.log").start()
    hook = AuthzHook(policy_cfg.authz_command, policy_cfg.authz_timeout)
    app = make_app(service)
    app.middlewares.append(make_auth_middleware(Policy(policy_cfg), audit, hook))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(cfg["socket"])
    os.chmod(cfg["socket"], 0o666)  # the policy, not the socket mode, is under test here
    sock.listen(64)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    audit.close()

asyncio.run(main())
"""


HOOK = """#!/bin/sh
# Deny any network whose name starts with "forbidden"; allow the rest.
if grep -q '"name": "forbidden'; then
  echo '{"allow": false, "reason": "forbidden networks are forbidden"}'
else
  echo '{"allow": true, "reason": "ok by hook"}'
fi
"""


class Server:
    """The API server process in the host namespace, and callers with chosen credentials."""

    def __init__(self, host: Namespace, workdir: Path) -> None:
        self.dir = workdir
        self.socket = str(workdir / "netd.sock")
        self.audit_path = workdir / "state" / "audit.log"
        (workdir / "client.py").write_text(REQUEST_SCRIPT)
        hook = workdir / "hook.sh"
        hook.write_text(HOOK)
        hook.chmod(0o755)
        cfg = {
            "state_dir": str(workdir / "state"),
            "socket": self.socket,
            "policy": {"manage_group": "users", "authz_command": [str(hook)]},
        }
        self.log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = host.spawn(
            sys.executable, "-c", SERVER, json.dumps(cfg), stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket) or self.call([], "GET", "/v1/status")[0] != 200:
            assert self.proc.poll() is None, (workdir / "server.log").read_text()
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)

    def call(
        self, as_user: list[str], method: str, url: str, body: Any = None
    ) -> tuple[int, Any, int]:
        """(status, answer, client pid) of one request made by a process with ``as_user`` creds."""
        argv = [
            *as_user,
            "/usr/bin/python3",
            str(self.dir / "client.py"),
            self.socket,
            method,
            url,
            json.dumps(body) if body is not None else "",
        ]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            return -1, out.stderr, 0
        data = json.loads(out.stdout)
        return data["status"], data["body"], data["pid"]

    def audit(self) -> list[dict[str, Any]]:
        """The audit lines written so far (waits briefly for the writer thread)."""
        time.sleep(0.3)
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    def close(self) -> None:
        self.log.close()


ROOT: list[str] = []
NOBODY_USER = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
MEMBER = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", f"--groups={USERS_GID}"]


@pytest.fixture
def server(sandbox: Sandbox, host: Namespace) -> Iterator[Server]:
    workdir = Path(tempfile.mkdtemp(prefix="netd-authz-"))
    workdir.chmod(0o755)  # nobody must reach the socket and the client script
    srv = Server(host, workdir)
    try:
        yield srv
        log = (workdir / "server.log").read_text(errors="replace")
        assert "Traceback" not in log, log
    finally:
        srv.close()
        shutil.rmtree(workdir, ignore_errors=True)


def test_unprivileged_callers_read_but_cannot_mutate(server: Server, host: Namespace) -> None:
    links_before = set(host.links())
    status, nets, _ = server.call(NOBODY_USER, "GET", "/v1/networks")
    assert status == 200 and nets == []
    status, err, pid = server.call(
        NOBODY_USER,
        "POST",
        "/v1/networks",
        {"name": "web", "subnets": [{"subnet": "10.91.0.0/24"}]},
    )
    assert status == 403, err
    assert err["error"]["code"] == "permission_denied"
    assert err["error"]["message"] == (
        "uid 65534 may not POST /v1/networks: uid 65534 is not root, not in policy.admins and "
        "not in group 'users'; others may only read (policy.others = 'read')"
    )
    assert set(host.links()) == links_before  # nothing made in the kernel

    status, net, _ = server.call(
        ROOT, "POST", "/v1/networks", {"name": "web", "subnets": [{"subnet": "10.91.0.0/24"}]}
    )
    assert status == 201, net
    assert net["bridge"] in host.links()
    status, err, _ = server.call(NOBODY_USER, "DELETE", "/v1/networks/web")
    assert status == 403, err
    assert net["bridge"] in host.links()  # still there
    status, _, _ = server.call(NOBODY_USER, "GET", "/v1/networks/web")
    assert status == 200

    lines = server.audit()
    assert [(r["caller"]["uid"], r["action"], r["outcome"], r["status"]) for r in lines] == [
        (NOBODY, "POST /v1/networks", "denied", 403),
        (0, "POST /v1/networks", "ok", 201),
        (NOBODY, "DELETE /v1/networks/{name}", "denied", 403),
    ]
    denied = lines[0]
    assert denied["caller"]["pid"] == pid and denied["caller"]["gid"] == NOBODY
    assert denied["caller"]["cmdline"].startswith("/usr/bin/python3 ")
    assert "client.py" in denied["caller"]["cmdline"]
    assert denied["target"] == {"network": "web"}
    assert denied["parameters"] == {"name": "web", "subnets": [{"subnet": "10.91.0.0/24"}]}
    assert lines[1]["reason"] == "uid 0 is root; authz hook: ok by hook"
    assert lines[2]["target"] == {"network": "web"}


def test_group_member_manages_endpoints_and_hook_can_deny(
    server: Server, sandbox: Sandbox, host: Namespace
) -> None:
    c1 = sandbox.add_ns("c1")
    # supplementary group only: visible in /proc/<pid>/status, not in SO_PEERCRED
    status, net, _ = server.call(
        MEMBER, "POST", "/v1/networks", {"name": "team", "subnets": [{"subnet": "10.92.0.0/24"}]}
    )
    assert status == 201, net
    status, ep, _ = server.call(
        MEMBER, "POST", "/v1/networks/team/connect", {"netns": c1.path, "container_id": "c1"}
    )
    assert status == 201, ep
    assert c1.addresses("eth0") == ["10.92.0.2/24"]
    status, err, _ = server.call(MEMBER, "POST", "/v1/networks", {"name": "forbidden-1"})
    assert status == 403
    assert err["error"]["message"] == (
        "uid 65534 may not POST /v1/networks: authz hook: forbidden networks are forbidden"
    )
    status, err, _ = server.call(
        NOBODY_USER, "POST", "/v1/networks/team/disconnect", {"container_id": "c1"}
    )
    assert status == 403
    assert c1.addresses("eth0") == ["10.92.0.2/24"]
    status, _, _ = server.call(
        MEMBER, "POST", "/v1/networks/team/disconnect", {"container_id": "c1"}
    )
    assert status == 200
    assert "eth0" not in c1.links()
    status, _, _ = server.call(MEMBER, "DELETE", "/v1/networks/team")
    assert status == 200
    assert net["bridge"] not in host.links()

    lines = server.audit()
    member_reason = f"uid {NOBODY} is in group 'users' (gid {USERS_GID})"
    got = [(r["action"], r["outcome"], r["status"], r["target"]) for r in lines]
    assert got == [
        ("POST /v1/networks", "ok", 201, {"network": "team"}),
        (
            "POST /v1/networks/{name}/connect",
            "ok",
            201,
            {"network": "team", "container_id": "c1", "netns": c1.path},
        ),
        ("POST /v1/networks", "denied", 403, {"network": "forbidden-1"}),
        (
            "POST /v1/networks/{name}/disconnect",
            "denied",
            403,
            {"network": "team", "container_id": "c1"},
        ),
        (
            "POST /v1/networks/{name}/disconnect",
            "ok",
            200,
            {"network": "team", "container_id": "c1"},
        ),
        ("DELETE /v1/networks/{name}", "ok", 200, {"network": "team"}),
    ]
    assert lines[3]["reason"].startswith(f"uid {NOBODY} is not root")
    assert lines[2]["reason"] == "authz hook: forbidden networks are forbidden"
    assert all(r["caller"]["uid"] == NOBODY for r in lines)
    # the hook is consulted after the policy allowed: both reasons are kept
    assert lines[0]["reason"] == f"{member_reason}; authz hook: ok by hook"

    # `netd audit` reads the same trail back
    out = subprocess.run(
        [NETD, "audit", "--file", str(server.audit_path), "--format", "json", "--since", "5m"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert [json.loads(x) for x in out.stdout.splitlines()] == lines
    table = subprocess.run(
        [NETD, "audit", "--file", str(server.audit_path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.splitlines()
    assert len(table) == 7 and "denied" in table[3] and "forbidden networks" in table[3]

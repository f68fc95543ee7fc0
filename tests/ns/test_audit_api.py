"""`netd audit` reads the trail of the daemon it talks to, through GET /v1/audit.

The daemon runs with its state directory in a temporary directory (not /var/lib/netd), so a
reader that guessed the default path would find nothing; the records are those the daemon's
middleware wrote for the requests this test made.
"""

from __future__ import annotations

import json
import subprocess
import threading
from typing import Any

from netns_fixtures import Namespace, wait_for
from netns_fixtures.daemon import NETD, Daemon


def test_audit_through_the_api(daemon: Daemon, host: Namespace) -> None:
    assert not str(daemon.state_dir).startswith("/var/lib/netd")
    assert daemon.request("POST", "/v1/networks", {"name": "web"})[0] == 201
    assert daemon.request("POST", "/v1/networks", {"name": "web"})[0] == 409

    def records() -> list[dict[str, Any]]:
        out = daemon.cli("audit", "--format", "json").stdout
        return [json.loads(line) for line in out.splitlines()]

    wait_for("two audit lines", lambda: len(records()) == 2, timeout=10)
    got = records()
    assert [(r["action"], r["outcome"], r["status"]) for r in got] == [
        ("POST /v1/networks", "ok", 201),
        ("POST /v1/networks", "error", 409),
    ]
    assert got[1]["error"].startswith("network 'web' already exists (id ")
    # The same lines as the file the daemon writes, read directly with --file.
    direct = daemon.cli("audit", "--file", str(daemon.state_dir / "audit.log"), "--format", "json")
    assert [json.loads(line) for line in direct.stdout.splitlines()] == got
    table = daemon.cli("audit", "--since", "10m").stdout.splitlines()
    assert table[0].split()[:4] == ["TIME", "UID", "PID", "ACTION"] and len(table) == 3
    status, page = daemon.request("GET", "/v1/audit?limit=1")
    assert status == 200 and page["records"] == got[-1:]
    assert page["path"] == str(daemon.state_dir / "audit.log")
    status, err = daemon.request("GET", "/v1/audit?since=later")
    assert status == 400 and err["error"]["field"] == "since"
    bad = daemon.cli("audit", "--since", "later", check=False)
    assert bad.returncode == 2 and "--since 'later'" in bad.stderr


def test_audit_follow_streams_new_records(daemon: Daemon) -> None:
    assert daemon.request("POST", "/v1/networks", {"name": "before"})[0] == 201
    follower = subprocess.Popen(
        [NETD, "--socket", str(daemon.socket), "audit", "--follow", "--format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[dict[str, Any]] = []

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.append(json.loads(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for("the past line", lambda: len(lines) == 1, timeout=10)
        assert lines[0]["target"] == {"network": "before"}
        assert daemon.request("POST", "/v1/networks", {"name": "after"})[0] == 201
        wait_for("the new line", lambda: len(lines) == 2, timeout=10)
        assert lines[1]["target"] == {"network": "after"}
        # A follower connected does not hold up the daemon's stop.
        assert daemon.stop() == 0
        assert follower.wait(timeout=10) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
        reader.join(5)
        for pipe in (follower.stdout, follower.stderr):
            if pipe is not None:
                pipe.close()
    assert len(lines) == 2

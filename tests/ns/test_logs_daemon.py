"""A real daemon with ``log_format = "json"``: one request id in the answer, audit and logs."""

from __future__ import annotations

import json
import socket
from typing import Any

from netns_fixtures import Namespace, Sandbox, wait_for
from netns_fixtures.daemon import Daemon


def post(d: Daemon, path: str, body: Any, request_id: str | None) -> tuple[int, str, Any]:
    """One request with an optional X-Request-Id; returns status, returned id and body."""
    payload = json.dumps(body).encode()
    extra = f"X-Request-Id: {request_id}\r\n" if request_id else ""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(d.socket))
        sock.sendall(head + payload)
        raw = b"".join(iter(lambda: sock.recv(65536), b""))
    header, _, content = raw.partition(b"\r\n\r\n")
    lines = header.decode().split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), fields["x-request-id"], json.loads(content or b"null")


def test_cni_add_ties_answer_audit_and_json_logs(host: Namespace, sandbox: Sandbox) -> None:
    d = Daemon(host)
    d.config_path().write_text('log_format = "json"\n')
    d.start()
    try:
        status, _, _ = post(
            d, "/v1/networks", {"name": "web", "subnets": [{"subnet": "10.142.0.0/24"}]}, None
        )
        assert status == 201
        c1 = sandbox.add_ns("c1")
        call = {
            "command": "ADD",
            "containerId": "c1",
            "netns": c1.path,
            "ifname": "eth0",
            "config": {"cniVersion": "1.0.0", "name": "web", "type": "netd"},
        }
        status, rid, result = post(d, "/v1/cni", call, "runtime-add-c1")
        assert status == 200 and rid == "runtime-add-c1", result
        status, fresh, _ = post(d, "/v1/cni", {**call, "command": "DEL"}, "bad id;rm -rf")
        assert status == 200 and fresh not in ("", "bad id;rm -rf") and len(fresh) == 16
        audit_path = d.state_dir / "audit.log"

        def audited() -> dict[str, Any]:
            return {
                json.loads(ln)["request_id"]: json.loads(ln)
                for ln in audit_path.read_text().splitlines()
            }

        # The audit trail is written by its own thread, just after the answer goes out.
        wait_for("the DEL's audit record", lambda: fresh in audited(), timeout=5)
        by_id = audited()
        assert by_id["runtime-add-c1"]["target"]["cni_command"] == "ADD"
        assert by_id[fresh]["target"]["cni_command"] == "DEL"
    finally:
        d.stop()
        log = d.log()
        d.close()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert records and len(records) == len([ln for ln in log.splitlines() if ln.strip()]), log
    add_lines = [r for r in records if r.get("request_id") == "runtime-add-c1"]
    assert add_lines and all(r["level"] in ("info", "debug", "warning") for r in add_lines), log
    assert any("c1" in r["msg"] for r in add_lines), add_lines
    assert any(r.get("request_id") == fresh for r in records), log
    assert all("time" in r and "logger" in r for r in records)

"""The plugin executable end to end: the installed launcher against a fake daemon socket.

The fake daemon is a stdlib HTTP server on a Unix socket that runs the real handler over the
in-memory backend, so these tests cover plugin → transport → handler → result as a runtime sees
it. The general API client (``netd.client``, the CLI's) is tested against the same fake daemon.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from netd import client
from netd.cni import plugin, spec
from netd.cni.fake import FakeCniBackend
from netd.cni.handler import handle_cni
from netd.cni.install import install_plugin

CONF = {"cniVersion": "1.0.0", "name": "web", "type": "netd", "ipam": {"subnet": "10.44.0.0/24"}}
UNAVAILABLE = b'{"error": {"code": "unavailable", "message": "starting"}}'


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _handler(respond: Callable[[BaseHTTPRequestHandler, Any], None]) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            respond(self, json.loads(self.rfile.read(length)))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes, chunked: bool = False) -> None:
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    if chunked:
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for i in range(0, len(body), 7):
            piece = body[i : i + 7]
            h.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")
    else:
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="ndcni"))
    yield path
    shutil.rmtree(path)


def serve(workdir: Path, respond: Callable[[BaseHTTPRequestHandler, Any], None]) -> Iterator[str]:
    path = str(workdir / "netd.sock")
    server = _Server(path, _handler(respond))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def backend() -> FakeCniBackend:
    return FakeCniBackend()


@pytest.fixture
def daemon(workdir: Path, backend: FakeCniBackend) -> Iterator[str]:
    def respond(h: BaseHTTPRequestHandler, call: Any) -> None:
        assert h.path == "/v1/cni"
        status, body = asyncio.run(handle_cni(call, backend))
        _send(h, 200 if status == 0 else 400, json.dumps(body).encode())

    yield from serve(workdir, respond)


@pytest.fixture(params=["c", "python"])
def launcher(workdir: Path, request: pytest.FixtureRequest) -> Path:
    # Both plugin executables must behave identically, down to the error messages.
    return install_plugin(workdir / "bin", client=request.param)[0]


def execute(
    launcher: Path, command: str, config: Any, sock: str | None = None, **env: str
) -> tuple[int, Any]:
    full = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin"}
    if command in ("ADD", "DEL", "CHECK"):
        full |= {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/c1", "CNI_IFNAME": "eth0"}
    if sock:
        full["NETD_SOCKET"] = sock
    full |= env
    stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
    proc = subprocess.run([str(launcher)], input=stdin, env=full, capture_output=True, timeout=30)
    assert proc.stderr == b"", proc.stderr
    out = proc.stdout.decode()
    return proc.returncode, (json.loads(out) if out.strip() else None)


def test_lifecycle_through_launcher(launcher: Path, daemon: str, backend: FakeCniBackend) -> None:
    rc, result = execute(
        launcher, "ADD", CONF, daemon, CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAME=web1"
    )
    assert rc == 0, result
    assert result["cniVersion"] == "1.0.0"
    assert result["ips"] == [{"interface": 1, "address": "10.44.0.2/24", "gateway": "10.44.0.1"}]
    assert result["interfaces"][1] == {
        "name": "eth0",
        "mac": backend.endpoint("web", "c1", "eth0").mac,
        "sandbox": "/run/netns/c1",
    }
    assert backend.endpoint("web", "c1", "eth0").name == "web1"
    assert execute(launcher, "CHECK", {**CONF, "prevResult": result}, daemon) == (0, None)
    rc, err = execute(launcher, "ADD", CONF, daemon)
    assert rc == 1 and err["code"] == spec.ATTACHMENT_CONFLICT and err["cniVersion"] == "1.0.0"
    assert execute(launcher, "DEL", CONF, daemon, CNI_NETNS="") == (0, None)
    assert execute(launcher, "DEL", CONF, daemon) == (0, None)
    assert not backend.endpoints
    conf11 = {**CONF, "cniVersion": "1.1.0", "cni.dev/valid-attachments": []}
    assert execute(launcher, "GC", conf11, daemon) == (0, None)
    assert execute(launcher, "STATUS", conf11, daemon) == (0, None)
    backend.ready = False
    rc, err = execute(launcher, "STATUS", conf11, daemon)
    assert rc == 1 and err["code"] == spec.PLUGIN_NOT_AVAILABLE


def test_version_is_answered_without_daemon(launcher: Path) -> None:
    rc, out = execute(launcher, "VERSION", {"cniVersion": "0.4.0"}, "/nonexistent.sock")
    assert (rc, out) == (
        0,
        {"cniVersion": "0.4.0", "supportedVersions": list(spec.SUPPORTED_VERSIONS)},
    )
    assert execute(launcher, "VERSION", b"")[1]["cniVersion"] == "1.1.0"


def test_daemon_down_is_11(launcher: Path, workdir: Path) -> None:
    sock = str(workdir / "absent.sock")
    rc, err = execute(launcher, "ADD", CONF, sock)
    assert rc == 1 and err["code"] == spec.TRY_AGAIN_LATER and err["cniVersion"] == "1.0.0"
    assert f"netd daemon not reachable at {sock}" in err["msg"]
    assert "netd daemon" in err["msg"] and "systemctl start netd" in err["msg"]


def test_daemon_down_on_status_is_50(workdir: Path) -> None:
    conf = {**CONF, "cniVersion": "1.1.0", "socket": str(workdir / "absent.sock")}
    code, out = run_inprocess({"CNI_COMMAND": "STATUS"}, conf)
    assert code == 1 and out["code"] == spec.PLUGIN_NOT_AVAILABLE and "absent.sock" in out["msg"]


def test_missing_env_is_4(launcher: Path) -> None:
    rc, err = execute(launcher, "ADD", CONF, "/nonexistent.sock", CNI_NETNS="", CNI_IFNAME="")
    assert rc == 1 and err["code"] == spec.INVALID_ENVIRONMENT
    assert "CNI_NETNS, CNI_IFNAME" in err["msg"]


def test_bad_stdin_is_6(launcher: Path) -> None:
    rc, err = execute(launcher, "ADD", b"{not json", "/nonexistent.sock")
    assert rc == 1 and err["code"] == spec.DECODE_FAILURE and err["cniVersion"] == "1.1.0"


def run_inprocess(env: dict[str, str], config: Any, timeout: float = 5.0) -> tuple[int, Any]:
    out = io.StringIO()
    stdin = config if isinstance(config, bytes) else json.dumps(config).encode()
    code = plugin.run(env, stdin, out, timeout=timeout)
    text = out.getvalue()
    return code, (json.loads(text) if text.strip() else None)


ADD_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/n", "CNI_IFNAME": "e"}


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({}, "CNI_COMMAND is missing"),
        ({"CNI_COMMAND": "INIT"}, "unknown CNI_COMMAND 'INIT'"),
        ({"CNI_COMMAND": "DEL", "CNI_IFNAME": "eth0"}, "CNI_CONTAINERID"),
    ],
)
def test_env_errors(env: dict[str, str], needle: str) -> None:
    code, out = run_inprocess(env, CONF)
    assert code == 1 and out["code"] == spec.INVALID_ENVIRONMENT and needle in out["msg"]


@pytest.mark.parametrize("stdin", [b"", b"[1]", b"\xff"])
def test_stdin_errors(stdin: bytes) -> None:
    code, out = run_inprocess(ADD_ENV, stdin)
    assert code == 1 and out["code"] == spec.DECODE_FAILURE


def test_socket_key_beats_environment(daemon: str, backend: FakeCniBackend) -> None:
    env = {**ADD_ENV, "NETD_SOCKET": "/nonexistent.sock"}
    code, out = run_inprocess(env, {**CONF, "socket": daemon})
    assert code == 0, out
    ipam_conf = {
        **CONF,
        "name": "ref",
        "type": "bridge",
        "ipam": {"type": "netd", "socket": daemon, "subnet": "10.45.0.0/24"},
    }
    code, out = run_inprocess({**env, "CNI_CONTAINERID": "e"}, ipam_conf)
    assert code == 0, out


@pytest.mark.parametrize(
    ("status", "body", "code", "needle"),
    [
        (503, b'{"error": {"code": "unavailable", "message": "starting"}}', 11, "starting"),
        (403, b'{"error": {"code": "permission_denied", "message": "uid 7"}}', 105, "uid 7"),
        (500, b"oops", 999, "not JSON"),
        (400, b'{"cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": "d"}', 7, "bad"),
    ],
)
def test_daemon_answers_mapped(
    workdir: Path, status: int, body: bytes, code: int, needle: str
) -> None:
    for sock in serve(workdir, lambda h, call: _send(h, status, body)):
        out_code, out = run_inprocess({**ADD_ENV, "NETD_SOCKET": sock}, CONF)
    assert out_code == 1 and out["code"] == code and needle in out["msg"]


@pytest.mark.parametrize("chunked", [False, True])
def test_unusual_answers_through_the_executable_are_sent_once(
    launcher: Path, workdir: Path, chunked: bool
) -> None:
    # The compiled client hands a 503 (or a chunked 200) to the Python path with the raw answer:
    # the message is Python's, and the daemon saw exactly one request. The chunked 200 is read
    # and judged: it is not a CNI result (no ips).
    calls: list[Any] = []

    def respond(h: BaseHTTPRequestHandler, call: Any) -> None:
        calls.append(call)
        status, body = (200, b'{"cniVersion":"1.0.0"}') if chunked else (503, UNAVAILABLE)
        _send(h, status, body, chunked=chunked)

    for sock in serve(workdir, respond):
        rc, out = execute(launcher, "ADD", CONF, sock)
    assert len(calls) == 1
    if chunked:
        assert rc == 1 and out["code"] == 999 and "not a CNI result: ips" in out["msg"]
    else:
        assert rc == 1 and out["code"] == spec.TRY_AGAIN_LATER and "starting" in out["msg"]


def test_socket_key_through_the_executable(launcher: Path, daemon: str) -> None:
    rc, result = execute(launcher, "ADD", {**CONF, "socket": daemon}, "/nonexistent.sock")
    assert rc == 0 and result["ips"][0]["address"] == "10.44.0.2/24", result
    rc, err = execute(launcher, "ADD", {**CONF, "socket": "/nonexistent/x.sock"}, daemon)
    assert rc == 1 and "not reachable at /nonexistent/x.sock" in err["msg"]


def test_silent_daemon_times_out_with_11(workdir: Path) -> None:
    path = str(workdir / "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        code, out = run_inprocess({**ADD_ENV, "NETD_SOCKET": path}, CONF, timeout=0.2)
    assert code == 1 and out["code"] == spec.TRY_AGAIN_LATER
    assert "did not answer CNI ADD within 0.2 s" in out["msg"]


def test_client_chunked_and_http_client_flavour(workdir: Path) -> None:
    payload = {"hello": "world" * 20, "n": [1, 2, 3]}
    for sock in serve(workdir, lambda h, call: _send(h, 201, json.dumps(call).encode(), True)):
        assert client.request_json(sock, "POST", "/echo", payload) == (201, payload)
        conn = client.open_connection(sock, timeout=5)
        conn.request("POST", "/echo", body=b"[1]", headers={"Content-Length": "3"})
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (201, [1])
        conn.close()


def test_client_truncated_answer_is_connection_error(workdir: Path) -> None:
    def respond(h: BaseHTTPRequestHandler, call: Any) -> None:
        h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{}")

    for sock in serve(workdir, respond):
        with pytest.raises(ConnectionError, match="truncated"):
            client.request_json(sock, "POST", "/", {})


def test_plugin_imports_only_the_standard_library() -> None:
    root = str(Path(plugin.__file__).resolve().parents[2])
    probe = (
        f"import sys; sys.path.insert(0, {root!r}); import netd.cni.plugin; "
        "print(sorted(m for m in sys.modules if m.startswith(('netd', 'typing', 'http', 'email'))))"
    )
    out = subprocess.run(
        [sys.executable, "-IS", "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str(
        [
            "netd",
            "netd.cni",
            "netd.cni.answer",
            "netd.cni.environment",
            "netd.cni.plugin",
            "netd.cni.spec",
            "netd.cni.strict",
            "netd.cni.transport",
        ]
    )


def test_the_api_client_is_cheap_to_import() -> None:
    # Every CLI command imports it: no http.client (email, ssl), no typing, no daemon module.
    root = str(Path(plugin.__file__).resolve().parents[2])
    probe = (
        f"import sys; sys.path.insert(0, {root!r}); import netd.client; "
        "print(sorted(m for m in sys.modules if m.startswith(('netd', 'typing', 'http', 'email'))))"
    )
    out = subprocess.run(
        [sys.executable, "-IS", "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == str(["netd", "netd.client", "netd.cni", "netd.cni.transport"])

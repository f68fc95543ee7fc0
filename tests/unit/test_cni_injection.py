"""Issue #14, CNI plugin: stdin can only ever be the ``config`` of the call, for both clients.

Both installed executables (the compiled client and the Python launcher) run against a fake
daemon that records every raw request body. A hostile stdin must either be refused locally
(code 6, or 7 when too large) with nothing sent, or arrive as the ``config`` value and nothing
else: the call's other keys are the environment's. The daemon's half (``decode_call``) refuses
a body with a duplicated or unknown key, as an older plugin that pasted stdin would send it.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from netd.cni import spec, strict
from netd.cni.install import install_plugin
from netd.cni.request import CallRefused, decode_call

CONF = {"cniVersion": "1.0.0", "name": "web", "type": "netd", "ipam": {"subnet": "10.44.0.0/24"}}
CONF_TEXT = json.dumps(CONF)
BODY = CONF_TEXT[1:-1]  # the members, to build variants around
RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "sandbox": "/run/netns/a1"}],
    "ips": [{"interface": 0, "address": "10.44.0.2/24", "gateway": "10.44.0.1"}],
}
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "a1",
    "CNI_NETNS": "/run/netns/a1",
    "CNI_IFNAME": "eth0",
    "CNI_PATH": "/opt/cni/bin",
}
INJECTION = ',"command":"DEL","containerId":"victim","ifname":"eth0","netns":"","zz":{}'

# stdin that is not exactly one strict JSON object: refused with code 6, nothing sent.
REFUSED: dict[str, bytes] = {
    "trailing keys (the reported case)": (CONF_TEXT + INJECTION).encode(),
    "trailing config key": (CONF_TEXT + ',"config":' + CONF_TEXT[:-1] + ',"x":{}').encode(),
    "trailing nested objects": (
        CONF_TEXT + ',"a":{"b":{"c":[{}]}},"command":"DEL","q":{}'
    ).encode(),
    "second object": (CONF_TEXT + CONF_TEXT).encode(),
    "second object after newline": (CONF_TEXT + "\n" + CONF_TEXT).encode(),
    "two objects joined by a comma": (CONF_TEXT + "," + CONF_TEXT).encode(),
    "duplicated key": ('{"name":"victim",' + BODY + "}").encode(),
    "duplicated key by escape": ('{"\\u006eame":"victim",' + BODY + "}").encode(),
    "duplicated nested key": (
        '{"x":{"subnet":"10.1.0.0/24","subnet":"10.2.0.0/24"},' + BODY + "}"
    ).encode(),
    "block comment": ("{/* c */" + BODY + "}").encode(),
    "line comment": ("// c\n" + CONF_TEXT).encode(),
    "NaN": ("{" + BODY + ',"mtu":NaN}').encode(),
    "Infinity": ("{" + BODY + ',"mtu":-Infinity}').encode(),
    "number out of range": ("{" + BODY + ',"mtu":1e999}').encode(),
    "BOM": b"\xef\xbb\xbf" + CONF_TEXT.encode(),
    "UTF-16": CONF_TEXT.encode("utf-16"),
    "invalid UTF-8 in a string": ("{" + BODY + ',"x":"').encode() + b"\xc3\x28" + b'"}',
    "UTF-8 surrogate": ("{" + BODY + ',"x":"').encode() + b"\xed\xa0\x80" + b'"}',
    "control character in a string": ("{" + BODY + ',"x":"a\tb"}').encode(),
    "trailing comma": ("{" + BODY + ",}").encode(),
    "single quotes": b"{'cniVersion':'1.0.0'}",
    "trailing garbage": (CONF_TEXT + "x").encode(),
    "trailing NUL": CONF_TEXT.encode() + b"\0",
    "form feed is not JSON whitespace": b"\x0c" + CONF_TEXT.encode(),
    "top-level array": ("[" + CONF_TEXT + "]").encode(),
    "deep nesting": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "65 levels": ("{" + BODY + ',"x":' + "[" * 64 + "]" * 64 + "}").encode(),
    "unterminated": CONF_TEXT[:-1].encode(),
    "bad escape": ("{" + BODY + ',"x":"\\q"}').encode(),
    "leading zero": ("{" + BODY + ',"mtu":01500}').encode(),
}
# stdin that is one strict object however odd: sent, as the config and nothing else.
SENT: dict[str, bytes] = {
    "injection inside a string": (
        "{" + BODY + ',"x":"\\"}' + INJECTION.replace('"', '\\"') + '"}'
    ).encode(),
    "64 levels": ("{" + BODY + ',"x":' + "[" * 63 + "]" * 63 + "}").encode(),
    "escaped key that is not a duplicate": ("{" + BODY + ',"\\u0078":1}').encode(),
    "long number": ("{" + BODY + ',"n":' + "9" * 100 + "}").encode(),
    "whitespace around": b" \t\r\n" + CONF_TEXT.encode() + b"\n\n",
    "unicode": ("{" + BODY + ',"x":"\u00e9\u4e2d\U0001f600"}').encode(),
}


@dataclass
class FakeDaemon:
    """A Unix socket that records each raw request body and answers ``answer`` verbatim."""

    path: str
    answer: bytes
    bodies: list[bytes] = field(default_factory=list)

    def serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    body += chunk
                self.bodies.append(body)
                conn.sendall(self.answer)


def http(status: int, body: bytes, extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="ndinj"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def fake(workdir: Path) -> Iterator[FakeDaemon]:
    daemon = FakeDaemon(str(workdir / "netd.sock"), http(200, json.dumps(RESULT).encode()))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(daemon.path)
    listener.listen(8)
    thread = threading.Thread(target=daemon.serve, args=(listener,), daemon=True)
    thread.start()
    yield daemon
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join()


@pytest.fixture(scope="module", params=["c", "python"])
def client(request: pytest.FixtureRequest) -> Iterator[Path]:
    # Both plugin executables must behave identically, down to the error messages.
    bindir = Path(tempfile.mkdtemp(prefix="ndinjbin"))
    yield install_plugin(bindir, client=request.param)[0]
    shutil.rmtree(bindir)


def run(client: Path, stdin: bytes, sock: str, **env: str | bytes) -> tuple[int, Any, bytes]:
    import subprocess

    full: dict[str | bytes, str | bytes] = {**ENV, "NETD_SOCKET": sock, **env}
    proc = subprocess.run(
        [str(client)],
        input=stdin,
        env=full,  # type: ignore[arg-type]  # bytes values carry non-UTF-8 variables
        capture_output=True,
        timeout=60,
    )
    out = proc.stdout.decode()
    return proc.returncode, json.loads(out) if out.strip() else None, proc.stderr


@pytest.mark.parametrize("case", REFUSED)
def test_hostile_stdin_is_refused_and_nothing_sent(
    client: Path, fake: FakeDaemon, case: str
) -> None:
    rc, out, stderr = run(client, REFUSED[case], fake.path)
    assert stderr == b""
    assert rc == 1 and out["code"] == spec.DECODE_FAILURE, out
    assert out["msg"].startswith("CNI ADD: "), out
    assert fake.bodies == []


@pytest.mark.parametrize("case", SENT)
def test_odd_but_valid_stdin_is_only_ever_the_config(
    client: Path, fake: FakeDaemon, case: str
) -> None:
    rc, out, _ = run(client, SENT[case], fake.path)
    assert (rc, out) == (0, RESULT)
    [body] = fake.bodies
    call = strict.loads(body, spec.MAX_JSON_DEPTH + 1)  # what the daemon reads
    assert list(call) == ["command", "containerId", "netns", "ifname", "args", "path", "config"]
    assert (call["command"], call["containerId"], call["ifname"]) == ("ADD", "a1", "eth0")
    assert call["config"] == strict.loads(SENT[case], spec.MAX_JSON_DEPTH)


def test_the_sent_body_is_the_same_from_both_clients(client: Path, fake: FakeDaemon) -> None:
    stdin = b' {"cniVersion":"1.0.0", "name":"web","type":"netd"}\n'
    run(client, stdin, fake.path, CNI_ARGS='K8S_POD_NAME=a"b\\c')
    assert fake.bodies == [
        b'{"command":"ADD","containerId":"a1","netns":"/run/netns/a1","ifname":"eth0",'
        b'"args":"K8S_POD_NAME=a\\"b\\\\c","path":"/opt/cni/bin",'
        b'"config":{"cniVersion":"1.0.0", "name":"web","type":"netd"}}'
    ]


# --- environment and size limits: the spec's codes, not 999 ---


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CNI_CONTAINERID": "x" * 257}, "invalid CNI_CONTAINERID 'xxx"),
        ({"CNI_CONTAINERID": "x" * 100_000}, "(100000 bytes): at most 256 characters"),
        ({"CNI_CONTAINERID": "-leading-dash"}, "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"),
        ({"CNI_CONTAINERID": "a b"}, "invalid CNI_CONTAINERID 'a b'"),
        ({"CNI_CONTAINERID": "a\u00e9"}, "invalid CNI_CONTAINERID"),
        ({"CNI_IFNAME": "e" * 16}, "at most 15 characters (IFNAMSIZ is 16)"),
        ({"CNI_IFNAME": "eth0/x"}, "invalid CNI_IFNAME"),
        ({"CNI_NETNS": "run/netns/a1"}, "must be an absolute path"),
        ({"CNI_NETNS": "/" + "n" * 5000}, "at most 4096 bytes (PATH_MAX)"),
        ({"CNI_PATH": "/opt/cni/bin:" * 2000}, "invalid CNI_PATH"),
        ({"CNI_PATH": "/x" * 60_000}, "at most 8192 bytes"),
        ({"CNI_ARGS": "K8S_POD_NAME=" + "a" * 9000}, "invalid CNI_ARGS"),
        ({"CNI_ARGS": b"IgnoreUnknown=1;K8S_POD_NAME=\xff"}, "is not UTF-8"),
        ({"CNI_PATH": b"/opt/\xc3"}, "invalid CNI_PATH"),
    ],
)
def test_bad_environment_is_4_and_nothing_sent(
    client: Path, fake: FakeDaemon, env: dict[str, str | bytes], needle: str
) -> None:
    rc, out, _ = run(client, CONF_TEXT.encode(), fake.path, **env)
    assert rc == 1 and out["code"] == spec.INVALID_ENVIRONMENT, out
    assert needle in out["msg"] and out["cniVersion"] == "1.0.0", out
    assert fake.bodies == []


@pytest.mark.parametrize("size", [spec.MAX_CONFIG_BYTES + 1, 3 << 20])
def test_oversized_config_is_7_and_nothing_sent(client: Path, fake: FakeDaemon, size: int) -> None:
    stdin = ("{" + BODY + ',"pad":"').encode()
    stdin += b"p" * (size - len(stdin) - 2) + b'"}'
    assert len(stdin) == size
    rc, out, _ = run(client, stdin, fake.path)
    assert rc == 1 and out["code"] == spec.INVALID_CONFIG, out
    assert f"larger than {spec.MAX_CONFIG_BYTES} bytes" in out["msg"]
    assert fake.bodies == []


def test_config_at_the_limit_is_sent(client: Path, fake: FakeDaemon) -> None:
    stdin = ("{" + BODY + ',"pad":"').encode()
    stdin += b"p" * (spec.MAX_CONFIG_BYTES - len(stdin) - 2) + b'"}'
    rc, out, _ = run(client, stdin, fake.path)
    assert (rc, out) == (0, RESULT)
    assert len(fake.bodies) == 1


# --- the daemon's answer: print only a valid CNI result ---

BAD_RESULTS = {
    "text": b"garbage",
    "empty": b"",
    "empty object": b"{}",
    "null": b"null",
    "array": b"[]",
    "string": b'"ok"',
    "html": b"<html><body>hello</body></html>",
    "truncated": json.dumps(RESULT).encode()[:-5],
    "two objects": json.dumps(RESULT).encode() * 2,
    "no ips": b'{"cniVersion":"1.0.0"}',
    "empty ips": b'{"cniVersion":"1.0.0","ips":[]}',
    "ips not objects": b'{"cniVersion":"1.0.0","ips":[1,"x"]}',
    "interfaces not array": b'{"cniVersion":"1.0.0","ips":[{}],"interfaces":{}}',
    "dns not object": b'{"cniVersion":"1.0.0","ips":[{}],"dns":[]}',
    "other version": json.dumps({**RESULT, "cniVersion": "0.4.0"}).encode(),
    "unsupported version": json.dumps({**RESULT, "cniVersion": "9.9.9"}).encode(),
    "error object": b'{"cniVersion":"1.0.0","code":7,"msg":"x","ips":[{}]}',
    "duplicated key": b'{"cniVersion":"1.0.0","ips":[{}],"ips":[{}]}',
    "NaN": b'{"cniVersion":"1.0.0","ips":[{"x":NaN}]}',
}


@pytest.mark.parametrize("case", BAD_RESULTS)
def test_garbage_200_to_add_is_an_error(client: Path, fake: FakeDaemon, case: str) -> None:
    fake.answer = http(200, BAD_RESULTS[case])
    rc, out, _ = run(client, CONF_TEXT.encode(), fake.path)
    assert rc == 1 and out["code"] == spec.INTERNAL, out
    assert out["msg"].startswith(f"netd daemon at {fake.path} answered CNI ADD with HTTP 200"), out
    assert len(fake.bodies) == 1  # never sent twice


@pytest.mark.parametrize("command", ["DEL", "CHECK", "GC", "STATUS"])
@pytest.mark.parametrize("body", [b"garbage", json.dumps(RESULT).encode(), b"[]", b"{} {}"])
def test_200_with_a_body_where_none_belongs_is_an_error(
    client: Path, fake: FakeDaemon, command: str, body: bytes
) -> None:
    fake.answer = http(200, body)
    conf = {**CONF, "cniVersion": "1.1.0", "cni.dev/valid-attachments": [], "prevResult": RESULT}
    rc, out, _ = run(client, json.dumps(conf).encode(), fake.path, CNI_COMMAND=command)
    assert rc == 1 and out["code"] == spec.INTERNAL, out
    assert f"answered CNI {command} with HTTP 200 and a body where none belongs" in out["msg"]


@pytest.mark.parametrize(
    "raw",
    [
        b"hello\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n",
        b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\n" + json.dumps(RESULT).encode(),
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n" + json.dumps(RESULT).encode(),
        b"",
    ],
)
def test_answer_that_is_not_http_is_an_error(client: Path, fake: FakeDaemon, raw: bytes) -> None:
    fake.answer = raw
    rc, out, _ = run(client, CONF_TEXT.encode(), fake.path)
    assert rc == 1 and out["code"] == spec.INTERNAL, out
    assert out["msg"].startswith(f"netd daemon at {fake.path} answered CNI ADD with"), out


@pytest.mark.parametrize(
    "body",
    [
        b"garbage",
        b'{"code":0,"msg":"x"}',
        b'{"code":"7","msg":"x"}',
        b'{"code":7}',
        b'{"code":7.5,"msg":"x"}',
        b'{"code":7,"msg":"x","code":1}',
        b"[]",
    ],
)
def test_422_without_a_cni_error_object_is_an_error(
    client: Path, fake: FakeDaemon, body: bytes
) -> None:
    fake.answer = http(422, body)
    rc, out, _ = run(client, CONF_TEXT.encode(), fake.path)
    assert rc == 1 and out["code"] == spec.INTERNAL, out
    assert f"netd daemon at {fake.path} answered CNI ADD with HTTP 422" in out["msg"], out


def test_valid_answers_are_printed(client: Path, fake: FakeDaemon) -> None:
    chunked = json.dumps(RESULT).encode()
    fake.answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(chunked):x}\r\n".encode()
        + chunked
        + b"\r\n0\r\n\r\n"
    )
    assert run(client, CONF_TEXT.encode(), fake.path)[:2] == (0, RESULT)
    error = {"cniVersion": "1.0.0", "code": 7, "msg": "bad subnet", "details": "d"}
    fake.answer = http(422, json.dumps(error).encode())
    assert run(client, CONF_TEXT.encode(), fake.path)[:2] == (1, error)
    fake.answer = http(200, b"{}")
    assert run(client, CONF_TEXT.encode(), fake.path, CNI_COMMAND="DEL")[:2] == (0, None)


# --- the daemon's half: decode_call refuses what an older plugin could have pasted ---

CALL = {
    "command": "ADD",
    "containerId": "a1",
    "netns": "/run/netns/a1",
    "ifname": "eth0",
    "args": "",
    "path": "",
}


def old_plugin_body(stdin: str) -> bytes:
    """The body an unpatched plugin built: the environment, then stdin pasted as config."""
    return (json.dumps(CALL)[:-1] + ',"config":' + stdin + "}").encode()


@pytest.mark.parametrize(
    ("raw", "code", "needle"),
    [
        (old_plugin_body(CONF_TEXT + INJECTION), 6, "key 'command' appears more than once"),
        (old_plugin_body(CONF_TEXT + ',"zz":{}'), 6, "unknown key 'zz'"),
        (old_plugin_body(CONF_TEXT + ',"config":{}'), 6, "key 'config' appears more than once"),
        (old_plugin_body('{"a":NaN}'), 6, "NaN is not a JSON value"),
        (old_plugin_body('{"name":"a","name":"b"}'), 6, "key 'name' appears more than once"),
        (b"\xef\xbb\xbf" + old_plugin_body(CONF_TEXT), 6, "byte order mark"),
        (old_plugin_body("[1]"), 6, "config must be a JSON object"),
        (json.dumps({**CALL, "containerId": 5, "config": CONF}).encode(), 4, "must be a string"),
        (json.dumps({**CALL, "path": "p" * 9000, "config": CONF}).encode(), 4, "CNI_PATH (path)"),
        (json.dumps({**CALL, "ifname": "e" * 16, "config": CONF}).encode(), 4, "CNI_IFNAME"),
        (b"[]", 6, "expected a JSON object, not list"),
    ],
)
def test_daemon_refuses_ambiguous_calls(raw: bytes, code: int, needle: str) -> None:
    with pytest.raises(CallRefused) as refused:
        decode_call(raw)
    assert refused.value.code == code and needle in refused.value.msg, refused.value.msg


def test_daemon_accepts_what_the_plugins_send() -> None:
    assert decode_call(old_plugin_body(CONF_TEXT)) == {**CALL, "config": CONF}
    assert decode_call(json.dumps({"command": "STATUS", "config": CONF}).encode())["command"]


def test_the_published_schema_has_the_limits_the_route_enforces() -> None:
    from netd.api.schemas import CniCall
    from netd.cni.request import ENV_KEYS

    schema = CniCall.model_json_schema()
    assert schema["additionalProperties"] is False
    for key, (_, limit) in ENV_KEYS.items():
        assert schema["properties"][key]["maxLength"] == limit, key


def test_both_clients_print_the_same_errors(fake: FakeDaemon, workdir: Path) -> None:
    c = install_plugin(workdir / "c", client="c")[0]
    py = install_plugin(workdir / "py", client="python")[0]
    cases: list[tuple[bytes, dict[str, str | bytes]]] = [
        *((stdin, {}) for stdin in REFUSED.values()),
        (CONF_TEXT.encode(), {"CNI_CONTAINERID": "x" * 300}),
        (CONF_TEXT.encode(), {"CNI_PATH": b"/opt/\xff"}),
        (CONF_TEXT.encode(), {"CNI_IFNAME": "e" * 16}),
    ]
    for stdin, env in cases:
        assert run(c, stdin, fake.path, **env) == run(py, stdin, fake.path, **env), stdin[:80]
    for body in [b"garbage", b'{"cniVersion":"1.0.0"}', b"{}"]:
        fake.answer = http(200, body)
        assert run(c, CONF_TEXT.encode(), fake.path) == run(py, CONF_TEXT.encode(), fake.path)

"""The plugin's entry points and transport: VERSION answered locally, HTTP framing, the body."""

from __future__ import annotations

import io
import json

import pytest

from netd.cni.fast import run_fast, version_answer
from netd.cni.plugin import encode_call, run
from netd.cni.spec import SUPPORTED_VERSIONS
from netd.cni.transport import build_request, parse_answer

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/run/netns/c1",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": 'K8S_POD_NAME=a"b\\c\n',
    "CNI_PATH": "/opt/cni/bin",
}


def test_request_body_is_the_call_the_daemon_expects() -> None:
    config = b'{"cniVersion":"1.0.0","name":"n","type":"netd"}'
    raw = build_request("/v1/cni", encode_call("ADD", b"\n " + config + b"\n", ENV))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/cni HTTP/1.1")
    assert f"Content-Length: {len(body)}".encode() in head
    call = json.loads(body)
    assert call["command"] == "ADD" and call["args"] == ENV["CNI_ARGS"]
    assert call["config"] == {"cniVersion": "1.0.0", "name": "n", "type": "netd"}
    assert body.endswith(b',"config":' + config + b"}")


def test_parse_answer() -> None:
    assert parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}") == (200, b"{}")
    chunked = b"HTTP/1.1 201 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    assert parse_answer(chunked) == (201, b"{}")
    for broken in [
        b"garbage",
        b"HTTP/1.1 200\r\nContent-Length: 9\r\n\r\n{}",
        b"HTTP/1.1 x\r\n\r\n",
    ]:
        with pytest.raises(ConnectionError):
            parse_answer(broken)


def test_version_is_answered_without_the_full_plugin() -> None:
    out = io.BytesIO()
    assert run_fast({"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"0.4.0"}', out) == 0
    assert json.loads(out.getvalue()) == {
        "cniVersion": "0.4.0",
        "supportedVersions": list(SUPPORTED_VERSIONS),
    }
    assert version_answer(b'{"cniVersion":"9.9.9"}') is None
    assert run_fast(ENV, b"{}", io.BytesIO()) is None  # every other verb: plugin.run


def test_unreachable_daemon_is_code_11() -> None:
    out = io.StringIO()
    env = {**ENV, "NETD_SOCKET": "/nonexistent/netd.sock"}
    assert run(env, b'{"cniVersion":"1.0.0","name":"n"}', out) == 1
    err = json.loads(out.getvalue())
    assert err["code"] == 11 and "/nonexistent/netd.sock" in err["msg"]
    assert err["cniVersion"] == "1.0.0"

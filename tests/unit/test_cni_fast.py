"""The plugin's fast path: request building, answer handling, and when it steps aside."""

from __future__ import annotations

import io
import json

from netd.cni.fast import build_request, json_string, run_fast, split_answer

ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c1",
    "CNI_NETNS": "/run/netns/c1",
    "CNI_IFNAME": "eth0",
    "CNI_ARGS": 'K8S_POD_NAME=a"b\\c\n',
    "CNI_PATH": "/opt/cni/bin",
}


def test_json_string_escapes_like_json() -> None:
    for value in ["plain", 'q"uote', "back\\slash", "ctl\x01\n\t", "ünï"]:
        assert json.loads(json_string(value)) == value


def test_request_body_is_the_call_the_daemon_expects() -> None:
    raw = build_request(ENV, "ADD", b'{"cniVersion":"1.0.0","name":"n","type":"netd"}')
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/cni HTTP/1.1")
    assert f"Content-Length: {len(body)}".encode() in head
    call = json.loads(body)
    assert call["command"] == "ADD" and call["args"] == ENV["CNI_ARGS"]
    assert call["config"] == {"cniVersion": "1.0.0", "name": "n", "type": "netd"}


def test_split_answer() -> None:
    assert split_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}") == (200, b"{}")
    assert split_answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") is None
    assert split_answer(b"garbage") is None


def test_steps_aside_for_unusual_calls() -> None:
    out = io.BytesIO()
    assert run_fast({**ENV, "CNI_COMMAND": "VERSION"}, b"{}", out) is None
    assert run_fast({**ENV, "CNI_CONTAINERID": ""}, b"{}", out) is None
    assert run_fast(ENV, b"[1]", out) is None
    assert run_fast(ENV, b'{"socket": "/x.sock"}', out) is None
    assert out.getvalue() == b""


def test_unreachable_daemon_is_code_11(tmp_path: object) -> None:
    out = io.BytesIO()
    env = {**ENV, "NETD_SOCKET": "/nonexistent/netd.sock"}
    assert run_fast(env, b'{"cniVersion":"1.0.0","name":"n"}', out) == 1
    err = json.loads(out.getvalue())
    assert err["code"] == 11 and "/nonexistent/netd.sock" in err["msg"]
    assert err["cniVersion"] == "1.0.0"

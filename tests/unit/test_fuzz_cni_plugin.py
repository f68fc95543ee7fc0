"""Regressions found by fuzzing the CNI plugin (tests/fuzz/test_fuzz_cni.py), pure: no daemon."""

from __future__ import annotations

import io
import json

from netd.cni.plugin import run

DEEP = b'{"a":' * 50_000 + b"1" + b"}" * 50_000  # 300 KB: under the size limit
ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "c",
    "CNI_NETNS": "/run/netns/c",
    "CNI_IFNAME": "eth0",
    "NETD_SOCKET": "/nonexistent/netd.sock",
}


def test_deeply_nested_config_is_a_decode_error_not_a_traceback() -> None:
    """json.loads raises RecursionError (not ValueError) past ~1000 levels."""
    out = io.StringIO()
    assert run(ENV, DEEP, out) == 1
    body = json.loads(out.getvalue())
    assert body["code"] == 6, body
    assert body["msg"] == "CNI ADD: decoding the config on stdin: nested deeper than 64 levels"

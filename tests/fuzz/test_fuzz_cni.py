"""The CNI plugin executable under hostile stdin and CNI_* environment, against a real daemon.

The plugin (``netd-cni``: the fast path in netd/cni/fast.py, falling back to plugin.py) is
exec'd inside the sandbox host the way a runtime does. Whatever it is given — random bytes,
garbled or huge configs, arbitrary JSON, CNI_* values with control characters, non-UTF-8 bytes
or 100 KB of text — it must print one CNI error object with a valid code on stdout and exit 1
(or, for the verbs whose success has no output — DEL, GC, STATUS — exit 0 printing nothing),
never a traceback, and the daemon's networks and the host's links must not change.
``NETD_FUZZ_EXAMPLES`` (default 50) sets the examples per property.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netns_fixtures import Namespace
from netns_fixtures.daemon import Daemon

# Examples per operation and mode / per property; raise for longer runs.
EXAMPLES = int(os.environ.get("NETD_FUZZ_EXAMPLES") or 50)
PLUGIN = str(Path(sys.executable).parent / "netd-cni")
CNI_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51}
COMMANDS = ["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"]
# A config that would work with good variables: mutations of it reach deep validation.
GOOD = {
    "cniVersion": "1.0.0",
    "name": "fuzz",
    "type": "netd",
    "ipam": {"ranges": [[{"subnet": "10.78.0.0/24"}]]},
}
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# Environment values as bytes: anything but NUL (execve cannot carry it), up to 100 KB.
ENV_VALUE = st.one_of(
    st.binary(max_size=64).map(lambda b: b.replace(b"\0", b"")),
    st.text(max_size=64).map(lambda s: s.replace("\0", "").encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            b"",
            b"ADD",
            b"DEL",
            b"VERSION",
            b"\xff\xfe",
            b"eth0\n",
            b"../../../../proc/1/ns/net",
            b"/proc/self/ns/net",
            b"/run/netns/\x1b[31m",
            b"IgnoreUnknown=1;K8S_POD_NAME=\xc3",
            b"x" * 100_000,
        ]
    ),
)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: (
        st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture
def net(daemon: Daemon) -> Daemon:
    """The daemon with GOOD's network already made.

    Made first because a CNI ADD whose config defines a new network creates it before the
    netns is checked, and keeps it when the ADD then fails (reported in docs/reliability.md).
    """
    status, body = daemon.request(
        "POST", "/v1/networks", {"name": "fuzz", "subnets": [{"subnet": "10.78.0.0/24"}]}
    )
    assert status == 201, body
    return daemon


def environ(daemon: Daemon, overrides: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """A runtime's environment with ``overrides``; the socket always points at the sandbox."""
    env = {
        b"PATH": b"/usr/bin:/bin",
        b"CNI_COMMAND": b"ADD",
        b"CNI_CONTAINERID": b"fuzz-container",
        b"CNI_NETNS": b"/run/netns/fuzz-absent",
        b"CNI_IFNAME": b"eth0",
        b"CNI_PATH": b"/usr/lib/cni",
        **overrides,
    }
    env[b"NETD_SOCKET"] = str(daemon.socket).encode()
    return env


def snapshot(daemon: Daemon, host: Namespace) -> tuple[Any, Any]:
    """What a failed call must not change: the daemon's networks and the host's links."""
    status, nets = daemon.request("GET", "/v1/networks")
    assert status == 200, nets
    return nets, sorted((name, link.get("ifalias")) for name, link in host.links().items())


def exec_plugin(
    daemon: Daemon, host: Namespace, stdin: bytes, env: dict[bytes, bytes]
) -> tuple[int, bytes, bytes]:
    """Run the plugin once in the host namespace; (exit code, stdout, stderr)."""
    proc = subprocess.run(
        host.argv(PLUGIN),
        input=stdin,
        env=env,
        capture_output=True,
        timeout=90,  # type: ignore[arg-type]
    )
    return proc.returncode, proc.stdout, proc.stderr


def check_call(daemon: Daemon, host: Namespace, stdin: bytes, env: dict[bytes, bytes]) -> None:
    """One hostile call: a CNI error object and exit 1 (or a silent success), state unchanged."""
    before = snapshot(daemon, host)
    code, out, err = exec_plugin(daemon, host, stdin, env)
    assert b"Traceback" not in err and b"Traceback" not in out, (out, err)
    command = env.get(b"CNI_COMMAND", b"")
    if code == 0:
        # Success without output is right for a DEL of nothing, a GC, a STATUS; VERSION answers.
        assert command in (b"DEL", b"GC", b"STATUS", b"VERSION"), (command, out, err)
        if command == b"VERSION":
            assert "supportedVersions" in json.loads(out), out
        else:
            assert out.strip() == b"", out
    else:
        assert code == 1, (code, out, err)
        lines = out.strip().splitlines()
        assert len(lines) == 1, out
        body = json.loads(lines[0])
        assert isinstance(body["code"], int), body
        assert body["code"] in CNI_CODES or body["code"] >= 100, body
        assert isinstance(body["msg"], str) and body["msg"], body
    assert snapshot(daemon, host) == before, (command, stdin[:200], out)


def test_hostile_stdin(net: Daemon, host: Namespace) -> None:
    daemon = net

    @FUZZ
    @given(
        st.sampled_from(COMMANDS),
        st.one_of(
            st.binary(max_size=2000),
            JSON.map(lambda v: json.dumps(v).encode()),
            st.dictionaries(
                st.sampled_from(
                    ["cniVersion", "type", "ipam", "plugins", "prevResult", "args", "dns"]
                ),
                JSON,
            ).map(lambda d: json.dumps({**GOOD, **d}).encode()),
        ),
    )
    def fuzz(command: str, stdin: bytes) -> None:
        check_call(daemon, host, stdin, environ(daemon, {b"CNI_COMMAND": command.encode()}))

    fuzz()


@st.composite
def garbled(draw: st.DrawFn) -> bytes:
    """The good config's JSON with a few bytes flipped, cut, duplicated or inserted."""
    data = bytearray(json.dumps(GOOD).encode())
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "dup", "insert"]))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[i:]
        elif op == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 20))]
        else:
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        if not data:
            data = bytearray(b"{")
    return bytes(data)


def test_garbled_configs(net: Daemon, host: Namespace) -> None:
    daemon = net

    @FUZZ
    @given(st.sampled_from(["ADD", "DEL", "CHECK"]), garbled())
    def fuzz(command: str, stdin: bytes) -> None:
        check_call(daemon, host, stdin, environ(daemon, {b"CNI_COMMAND": command.encode()}))

    fuzz()


def test_hostile_environment(net: Daemon, host: Namespace) -> None:
    daemon = net
    names = [b"CNI_COMMAND", b"CNI_CONTAINERID", b"CNI_NETNS", b"CNI_IFNAME", b"CNI_ARGS"]

    @FUZZ
    @given(st.dictionaries(st.sampled_from([*names, b"CNI_PATH"]), ENV_VALUE, min_size=1))
    def fuzz(overrides: dict[bytes, bytes]) -> None:
        check_call(daemon, host, json.dumps(GOOD).encode(), environ(daemon, overrides))

    fuzz()


def test_huge_configs(net: Daemon, host: Namespace) -> None:
    """Configs past the daemon's 1 MiB body limit, deep nesting, and many keys."""
    daemon = net
    cases = [
        json.dumps({**GOOD, "pad": "x" * (2 << 20)}).encode(),
        json.dumps({**GOOD, "args": {str(i): i for i in range(200_000)}}).encode(),
        (b'{"a":' * 100_000) + b"1" + b"}" * 100_000,
        b"[" * 1_000_000,
        b" " * (3 << 20) + b"{}",
    ]
    for stdin in cases:
        for command in (b"ADD", b"DEL"):
            check_call(daemon, host, stdin, environ(daemon, {b"CNI_COMMAND": command}))

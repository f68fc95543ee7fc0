"""The CNI plugin's fast path: forward a well-formed call to the daemon with minimal imports.

Every container start execs the plugin, so its start-up is paid on every ADD and DEL. Measured
on the 2-vCPU machines: ``python3 -IS`` alone takes ~10-15 ms; importing ``socket`` adds ~15 ms
and ``json`` ~11 ms. This module imports only ``os``, ``sys`` and the C module ``_socket``. It
builds the request JSON around the raw stdin bytes (the daemon parses and validates them) and
prints the daemon's answer without parsing it: 200 is the CNI result, 422 a CNI error object.

Anything unusual — VERSION, a missing variable, stdin that is not an object, a ``socket`` key in
the config, a daemon that cannot be reached, any other answer — goes to :mod:`netd.cni.plugin`,
the full standard-library path with complete error reporting. The request is never sent twice.
"""

from __future__ import annotations

import _socket
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import IO

DEFAULT_SOCKET = "/run/netd/netd.sock"
TIMEOUT = 60.0
MAX_ANSWER = 64 * 1024 * 1024

# SPEC.md "Parameters": variables each verb needs (VERSION is always the full path).
REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
}
_ESCAPES = {i: f"\\u{i:04x}" for i in range(0x20)} | {ord("\\"): "\\\\", ord('"'): '\\"'}


def json_string(value: str) -> bytes:
    """``value`` as a JSON string literal (RFC 8259 §7)."""
    return b'"' + value.translate(_ESCAPES).encode("utf-8", "surrogateescape") + b'"'


def build_request(env: dict[str, str], command: str, config: bytes) -> bytes:
    """The HTTP request carrying one CNI call (the body the daemon's ``CniCall`` expects)."""
    fields = (
        ("command", command),
        ("containerId", env.get("CNI_CONTAINERID", "")),
        ("netns", env.get("CNI_NETNS", "")),
        ("ifname", env.get("CNI_IFNAME", "")),
        ("args", env.get("CNI_ARGS", "")),
        ("path", env.get("CNI_PATH", "")),
    )
    body = b"{" + b",".join(json_string(k) + b":" + json_string(v) for k, v in fields)
    body += b',"config":' + config + b"}"
    head = (
        "POST /v1/cni HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def exchange(path: str, request: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send the request and read the whole answer (the daemon closes after it)."""
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(request)
        chunks = []
        size = 0
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_ANSWER:
                raise ConnectionError("answer too large")
        return b"".join(chunks)
    finally:
        sock.close()


def split_answer(raw: bytes) -> tuple[int, bytes] | None:
    """(status, body) of a plain Content-Length answer; None for anything else."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.") or len(head) < 12 or not head[9:12].isdigit():
        return None
    if b"chunked" in head.lower():
        return None
    return int(head[9:12]), body


def requested_version(config: bytes) -> str | None:
    """The config's top-level-looking ``"cniVersion": "X"`` when it occurs exactly once."""
    key = b'"cniVersion"'
    if config.count(key) != 1:
        return None
    rest = config[config.index(key) + len(key) :].lstrip()
    if not rest.startswith(b":"):
        return None
    rest = rest[1:].lstrip()
    if not rest.startswith(b'"'):
        return None
    value = rest[1 : rest.find(b'"', 1)]
    return value.decode("ascii", "replace")


def version_answer(config: bytes) -> bytes | None:
    """VERSION's answer (asked of every plugin on every container start) or None if unusual."""
    from .spec import SUPPORTED_VERSIONS  # stdlib-free constants module

    version = requested_version(config)
    if version not in SUPPORTED_VERSIONS:
        return None
    listed = ",".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
    return f'{{"cniVersion":"{version}","supportedVersions":[{listed}]}}'.encode()


def run_fast(env: dict[str, str], raw: bytes, out: IO[bytes]) -> int | None:
    """Exit code after handling the call, or None when the full path must handle it."""
    command = env.get("CNI_COMMAND", "")
    if command == "VERSION":
        version = version_answer(raw.strip())
        if version is None:
            return None
        out.write(version + b"\n")
        return 0
    needed = REQUIRED.get(command)
    if needed is None or any(not env.get(name) for name in needed):
        return None
    config = raw.strip()
    if not (config.startswith(b"{") and config.endswith(b"}")) or b'"socket"' in config:
        return None
    path = env.get("NETD_SOCKET") or DEFAULT_SOCKET
    try:
        answer = split_answer(exchange(path, build_request(env, command, config)))
    except OSError as exc:
        from .plugin import report_unreachable

        return report_unreachable(command, config, path, exc, out, env)
    if answer is None or answer[0] not in (200, 422):
        from .plugin import report_answer

        return report_answer(command, config, answer, out)
    status, body = answer
    # 422 carries a CNI error object; 200 a result, except DEL/CHECK/GC/STATUS print nothing.
    if status == 422 or body.strip() not in (b"", b"{}", b"null"):
        out.write(body + b"\n")
    return 0 if status == 200 else 1


def handoff() -> None:
    """Entry point the compiled client (``client.c``) execs for a call it does not handle.

    Stdin is the original config, replayed. ``NETD_CNI_UNREACHABLE`` (an errno) says the daemon
    at ``NETD_CNI_SOCKET`` could not be reached and nothing was sent; ``NETD_CNI_ANSWER_FD``
    holds an answer that was not a plain 200/422. Without either, the call is unusual and the
    full path handles it.
    """
    raw = sys.stdin.buffer.read()
    env = os.environ
    command = env.get("CNI_COMMAND", "")
    config = raw.strip()
    out = sys.stdout.buffer
    answer_fd = env.get("NETD_CNI_ANSWER_FD", "")
    unreachable = env.get("NETD_CNI_UNREACHABLE", "")
    if answer_fd.isdigit():
        from .plugin import report_answer

        with os.fdopen(int(answer_fd), "rb") as answer:
            code = report_answer(command, config, split_answer(answer.read()), out)
    elif unreachable.isdigit():
        from .plugin import report_unreachable

        error = OSError(int(unreachable), os.strerror(int(unreachable)))
        path = env.get("NETD_CNI_SOCKET") or DEFAULT_SOCKET
        code = report_unreachable(command, config, path, error, out)
    else:
        from .plugin import run

        code = run(env, raw, sys.stdout)
    sys.stdout.flush()
    sys.exit(code)


def main() -> None:
    """Entry point of the ``netd`` CNI plugin executable."""
    raw = sys.stdin.buffer.read()
    code = run_fast(dict(os.environ), raw, sys.stdout.buffer)
    if code is None:
        from .plugin import run

        code = run(os.environ, raw, sys.stdout)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()

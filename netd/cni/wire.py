"""JSON over HTTP/1.1 on a Unix socket: the client half shared by the CNI plugin and the CLI.

STANDARD LIBRARY ONLY (the plugin imports it under ``python3 -I -S``). ``request_json`` speaks
the little HTTP it needs (one request, ``Connection: close``, a Content-Length or chunked answer)
directly on the socket: importing ``http.client`` drags in ``email`` and ``ssl`` and would
double the plugin's start-up time. ``UnixHTTPConnection`` is the ``http.client`` flavour for
callers that want a full client (streaming, keep-alive); it is built on first use for the same
reason. This module moves one request and one response; it does not retry, authenticate or
interpret netd's error objects — callers do.
"""

from __future__ import annotations

import json
import socket

from .transport import parse_answer

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here anyway
    from typing import Any

DEFAULT_SOCKET = "/run/netd/netd.sock"
DEFAULT_TIMEOUT = 60.0
MAX_ANSWER = 64 * 1024 * 1024  # a runaway answer must not eat the plugin's memory


def request_json(
    socket_path: str,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[int, Any]:
    """Send ``body`` as JSON and return ``(HTTP status, decoded JSON or None)``.

    Raises OSError (FileNotFoundError, ConnectionRefusedError, PermissionError, TimeoutError,
    ConnectionError for a broken answer) when the daemon cannot be reached or does not answer
    within ``timeout`` seconds of silence, and ValueError when the answer is not JSON.
    """
    data = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
        f"Connection: close\r\nContent-Length: {len(data)}\r\n"
    )
    if body is not None:
        head += "Content-Type: application/json\r\n"
    chunks: list[bytes] = []
    received = 0
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        sock.sendall(head.encode() + b"\r\n" + data)
        while chunk := sock.recv(65536):
            received += len(chunk)
            if received > MAX_ANSWER:
                raise ConnectionError(f"{method} {path}: answer larger than {MAX_ANSWER} bytes")
            chunks.append(chunk)
    status, raw = parse_answer(b"".join(chunks))
    if not raw.strip():
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{method} {path}: answer is not JSON: {raw[:200]!r}") from exc


def _build_connection_class() -> type:
    import http.client

    class UnixHTTPConnection(http.client.HTTPConnection):
        """An ``http.client`` connection whose transport is a Unix stream socket."""

        def __init__(self, socket_path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
            # The host only fills the Host header.
            super().__init__("localhost", timeout=timeout)
            self.socket_path = socket_path

        def connect(self) -> None:
            """Connect to the Unix socket instead of a TCP address."""
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
            except BaseException:
                sock.close()
                raise
            self.sock = sock

    return UnixHTTPConnection


def __getattr__(name: str) -> Any:
    """Build ``UnixHTTPConnection`` (an ``http.client.HTTPConnection``) on first access."""
    if name == "UnixHTTPConnection":
        cls = _build_connection_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

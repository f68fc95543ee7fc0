"""The client of netd's API: JSON over HTTP/1.1 on the daemon's Unix socket.

Used by the CLI (``netd.cli``), compose (``netd.compose.client``) and ``netd doctor``. STANDARD
LIBRARY ONLY, and cheap to import: ``request_json`` speaks the little HTTP it needs (one request,
``Connection: close``, a Content-Length or chunked answer) directly on the socket, parsing the
answer with the CNI plugin's own parser (``netd.cni.transport``, standard library only);
importing ``http.client`` drags in ``email`` and ``ssl`` and costs every CLI command start-up
time. :func:`open_connection` gives the ``http.client`` flavour to callers that want a full
client (a streamed answer), importing it on first use for the same reason. This module moves
one request and one response; it does not retry, authenticate or interpret netd's error
objects — callers do. The CNI plugin does not use it (``netd.cni.transport`` is its transport).
"""

from __future__ import annotations

import json
import socket

from .cni.transport import parse_answer

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and http.client cost start-up time; annotations are strings here
    from http.client import HTTPConnection
    from typing import Any

DEFAULT_TIMEOUT = 60.0
MAX_ANSWER = 64 * 1024 * 1024  # a runaway answer must not eat the client's memory


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


def open_connection(socket_path: str, timeout: float | None = DEFAULT_TIMEOUT) -> HTTPConnection:
    """An ``http.client`` connection to the daemon at ``socket_path`` (connects on first use).

    ``timeout`` is seconds of silence on the socket; None waits for ever (a followed stream).
    """
    import http.client

    class UnixHTTPConnection(http.client.HTTPConnection):
        """An ``http.client`` connection whose transport is a Unix stream socket."""

        def connect(self) -> None:
            """Connect to the Unix socket instead of a TCP address."""
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(socket_path)
            except BaseException:
                sock.close()
                raise
            self.sock = sock

    # The host only fills the Host header.
    return UnixHTTPConnection("localhost", timeout=timeout)

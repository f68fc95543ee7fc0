"""JSON over HTTP/1.1 on a Unix socket: the client half shared by the CNI plugin and the CLI.

STANDARD LIBRARY ONLY (the plugin imports it under ``python3 -I -S``). It moves one request and
one response; it does not retry, authenticate or interpret netd's error objects — callers do.
"""

from __future__ import annotations

import http.client
import json
import socket
from typing import Any

DEFAULT_SOCKET = "/run/netd/netd.sock"
DEFAULT_TIMEOUT = 60.0


class UnixHTTPConnection(http.client.HTTPConnection):
    """An ``http.client`` connection whose transport is a Unix stream socket."""

    def __init__(self, socket_path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        # The host only fills the Host header; "localhost" keeps servers that check it happy.
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


def request_json(
    socket_path: str,
    method: str,
    path: str,
    body: Any = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[int, Any]:
    """Send ``body`` as JSON and return ``(HTTP status, decoded JSON or None)``.

    Raises OSError (FileNotFoundError, ConnectionRefusedError, PermissionError, TimeoutError)
    when the daemon cannot be reached or does not answer in time, and ValueError when the
    answer is not JSON.
    """
    conn = UnixHTTPConnection(socket_path, timeout=timeout)
    try:
        headers = {"Accept": "application/json"}
        data: bytes | None = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        status = response.status
    except http.client.HTTPException as exc:
        # A daemon that closes the connection mid-answer is as unreachable as one that is down.
        raise ConnectionError(f"{method} {path}: {exc!r}") from exc
    finally:
        conn.close()
    if not raw.strip():
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{method} {path}: answer is not JSON: {raw[:200]!r}") from exc

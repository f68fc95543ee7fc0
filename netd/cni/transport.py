"""One HTTP/1.1 exchange on the daemon's Unix socket, as raw bytes: the CNI plugin's transport.

STANDARD LIBRARY ONLY, and only the C module ``_socket``: the ``socket`` module pulls in
``enum`` and ``selectors`` (~10 ms of start-up on every container start). :func:`exchange` moves
one request and reads until the daemon closes; :func:`parse_answer` splits the status from the
body (Content-Length or chunked). ``netd.client`` (the CLI's client) parses with the same
function. Nothing here interprets the body: ``netd.cni.answer`` does.
"""

from __future__ import annotations

import _socket

DEFAULT_SOCKET = "/run/netd/netd.sock"
TIMEOUT = 60.0  # seconds of daemon silence; an ADD may queue behind others under load
MAX_ANSWER = 64 * 1024 * 1024  # a runaway answer must not eat the plugin's memory


def build_request(path: str, body: bytes) -> bytes:
    """A ``POST`` of a JSON ``body`` that asks the daemon to close after answering."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


def exchange(path: str, request: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send ``request`` and read the whole answer; OSError when the socket fails or times out."""
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
                raise ConnectionError(f"answer larger than {MAX_ANSWER} bytes")
        return b"".join(chunks)
    finally:
        sock.close()


def _dechunk(data: bytes) -> bytes:
    """Decode a ``Transfer-Encoding: chunked`` body (RFC 9112 §7.1)."""
    out: list[bytes] = []
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        if not sep:
            raise ConnectionError("truncated chunked HTTP answer")
        try:
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        except ValueError:
            raise ConnectionError(f"bad chunk size {size_line[:20]!r}") from None
        if size == 0:
            return b"".join(out)
        if len(data) < size + 2:
            raise ConnectionError("truncated chunked HTTP answer")
        out.append(data[:size])
        data = data[size + 2 :]


def parse_answer(raw: bytes) -> tuple[int, bytes]:
    """``(status, body)`` of an HTTP/1.x answer; ConnectionError when it is not one."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ConnectionError(
            f"the daemon closed the connection before a full HTTP answer: {raw[:80]!r}"
        )
    lines = head.split(b"\r\n")
    parts = lines[0].split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP answer: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        return int(parts[1]), _dechunk(rest)
    length = headers.get(b"content-length")
    if length is not None:
        if not length.isdigit():
            raise ConnectionError(f"bad Content-Length {length[:20]!r}")
        if len(rest) < int(length):
            raise ConnectionError("truncated HTTP answer")
        rest = rest[: int(length)]
    return int(parts[1]), rest

"""The control channel between the daemon and the DNS worker: framed JSON plus passed fds.

A SOCK_SEQPACKET socketpair keeps message boundaries; a message larger than one packet is sent
as several frames (first byte 1 = more frames follow, 0 = last), and file descriptors
(SCM_RIGHTS) ride on the first frame. Used by both sides; knows nothing of DNS.
"""

from __future__ import annotations

import json
import socket
from typing import Any

FRAME = 60000  # payload bytes per packet, below the default socket buffer
MAX_FDS = 200  # below SCM_MAX_FD (253)
MAX_MESSAGE = 64 * 1024 * 1024


class ChannelClosed(Exception):
    """The peer closed the control socket."""


def send_message(sock: socket.socket, msg: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send one JSON message (and up to MAX_FDS descriptors) as one or more frames."""
    data = json.dumps(msg, separators=(",", ":")).encode()
    fds = fds or []
    if len(fds) > MAX_FDS:
        raise ValueError(f"sending {len(fds)} descriptors: at most {MAX_FDS} per message")
    chunks = [data[i : i + FRAME] for i in range(0, len(data), FRAME)] or [b""]
    for i, chunk in enumerate(chunks):
        frame = (b"\x01" if i < len(chunks) - 1 else b"\x00") + chunk
        if i == 0 and fds:
            socket.send_fds(sock, [frame], fds)
        else:
            sock.sendall(frame)


class Receiver:
    """Reassembles frames into messages; feed it whenever the socket is readable."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = bytearray()
        self._fds: list[int] = []

    def read(self) -> tuple[dict[str, Any], list[int]] | None:
        """Read one frame; return a complete (message, fds) or None if more frames are due."""
        frame, fds, _flags, _addr = socket.recv_fds(self.sock, FRAME + 1, MAX_FDS)
        if not frame:
            for fd in fds:
                socket.close(fd)
            raise ChannelClosed("control socket closed")
        self._fds.extend(fds)
        self._buf += frame[1:]
        if len(self._buf) > MAX_MESSAGE:
            raise ChannelClosed("control message too large")
        if frame[0]:
            return None
        msg = json.loads(bytes(self._buf))
        out = (msg, self._fds)
        self._buf = bytearray()
        self._fds = []
        return out

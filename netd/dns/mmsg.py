"""Batched UDP receive and send with Linux ``recvmmsg(2)`` / ``sendmmsg(2)`` through ctypes.

The DNS worker's UDP threads (:mod:`netd.dns.server`) spend most of their CPU per answer on two
system calls and the Python objects around them (a ``(host, port)`` tuple per ``recvfrom``, an
address parse per ``sendto``). :class:`Batcher` takes up to ``batch`` datagrams in one
``recvmmsg`` and sends up to ``batch`` answers in one ``sendmmsg``, into and out of buffers that
are allocated once and reused: per received datagram there is one copy (the payload as
``bytes``) and one dict look-up (the source address's text form, cached by its raw bytes).

The calls go through :class:`ctypes.CDLL`, which releases the GIL for their duration, so a
thread blocked in :meth:`Batcher.recv` does not stop the event loop. It does not bind, connect
or configure sockets, and it knows nothing of DNS. :func:`available` says whether libc has the
calls; without them the server keeps its one-datagram loop.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import errno
import os
import socket
import sys
from typing import Any

MSG_TRUNC = 0x20  # linux/socket.h: the datagram was longer than the buffer
MSG_WAITFORONE = 0x10000  # block for the first datagram only, then take what is queued
BATCH = 32  # datagrams per call
SIZE = 4096  # receive buffer per datagram (as the one-datagram loop's recvfrom(4096))
_NAME = 28  # sizeof(struct sockaddr_in6), the largest address a UDP socket reports
_CACHE_MAX = 4096  # source addresses remembered (clients are containers: few)


class _IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("hdr", _MsgHdr), ("len", ctypes.c_uint))


# The hot path reads and writes the headers through memoryviews of unsigned ints ("I") and
# pointers ("P", also size_t's size on Linux) instead of ctypes attributes (several times
# cheaper per access); these are the fields' indexes in those views, derived from the
# structures so no offset is hard-coded.
_HDR = ctypes.sizeof(_MMsgHdr)
_U, _Z = ctypes.sizeof(ctypes.c_uint), ctypes.sizeof(ctypes.c_void_p)
assert ctypes.sizeof(ctypes.c_size_t) == _Z
_I_NAMELEN = _MsgHdr.namelen.offset // _U
_I_FLAGS = _MsgHdr.flags.offset // _U
_I_LEN = _MMsgHdr.len.offset // _U
_Z_NAME = _MsgHdr.name.offset // _Z
assert _HDR % _Z == 0 and _MsgHdr.flags.offset % _U == 0 and _MMsgHdr.len.offset % _U == 0


def _libc() -> Any:
    path = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(path, use_errno=True)  # CDLL: the GIL is released during calls
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    recv.restype = ctypes.c_int
    send.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    send.restype = ctypes.c_int
    return libc


_LIBC = _libc()


def _bytes_offset() -> int | None:
    # Where a bytes object's data starts relative to id(obj) (CPython's ob_sval): lets send()
    # point an iovec at an answer without a ctypes object per answer. Checked, not assumed.
    probe = b"netd-mmsg-probe"
    addr = ctypes.cast(ctypes.c_char_p(probe), ctypes.c_void_p).value
    if addr is None:
        return None
    off = addr - id(probe)
    if ctypes.string_at(id(probe) + off, len(probe)) != probe:
        return None
    return off


_BYTES_OFF = _bytes_offset()


def available() -> bool:
    """True if libc exports recvmmsg and sendmmsg (and bytes can be sent without copies)."""
    return _LIBC is not None and _BYTES_OFF is not None


def _text(raw: bytes) -> str:
    # raw is sockaddr_in's 4 address bytes or sockaddr_in6's address + scope id (20 bytes)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    ip = socket.inet_ntop(socket.AF_INET6, raw[:16])
    scope = int.from_bytes(raw[16:], sys.byteorder)
    return f"{ip}%{scope}" if scope else ip


class Batcher:
    """recvmmsg/sendmmsg on one UDP socket (IPv4 or IPv6), with buffers reused across calls.

    Not thread-safe: one serving thread per instance. :meth:`recv` returns
    ``(payload, source ip, slot)`` triples; an answer is sent back to a received datagram's
    source by handing its slot to :meth:`send` before the next :meth:`recv` (which reuses
    the slots).
    """

    def __init__(self, sock: socket.socket, batch: int = BATCH, size: int = SIZE) -> None:
        if not available():
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg: not available in libc")
        if batch < 1 or size < 1:
            raise ValueError(f"mmsg batch {batch} and size {size} must be positive")
        assert _BYTES_OFF is not None  # available() checked it
        self._off = _BYTES_OFF
        self.sock = sock
        self.batch = batch
        self.size = size
        self._recvmmsg = _LIBC.recvmmsg
        self._sendmmsg = _LIBC.sendmmsg
        self._data = (ctypes.c_char * (batch * size))()
        self._names = (ctypes.c_char * (batch * _NAME))()
        self._riov = (_IoVec * batch)()
        self._rhdr = (_MMsgHdr * batch)()
        self._siov = (_IoVec * batch)()
        self._shdr = (_MMsgHdr * batch)()
        data, names = ctypes.addressof(self._data), ctypes.addressof(self._names)
        self._name_addr = [names + i * _NAME for i in range(batch)]
        for i in range(batch):
            self._riov[i].base, self._riov[i].len = data + i * size, size
            rh = self._rhdr[i].hdr
            rh.name, rh.iov, rh.iovlen = self._name_addr[i], ctypes.addressof(self._riov[i]), 1
            sh = self._shdr[i].hdr
            sh.iov, sh.iovlen = ctypes.addressof(self._siov[i]), 1
        self._rhdr_addr = ctypes.addressof(self._rhdr)
        self._shdr_addr = ctypes.addressof(self._shdr)
        self._data_v = memoryview(self._data).cast("B")
        self._names_v = memoryview(self._names).cast("B")
        self._rhdr_u = memoryview(self._rhdr).cast("B").cast("I")
        self._rhdr_z = memoryview(self._rhdr).cast("B").cast("P")
        self._shdr_u = memoryview(self._shdr).cast("B").cast("I")
        self._shdr_z = memoryview(self._shdr).cast("B").cast("P")
        self._siov_z = memoryview(self._siov).cast("B").cast("P")
        self._ips: dict[bytes, str] = {}
        self._namelens: list[int] = []  # as the last recv() found them, by slot
        self._namelen_fill = memoryview(array.array("I", [_NAME] * batch))
        self._rhdr_u[_I_NAMELEN :: _HDR // _U] = self._namelen_fill

    def recv(self) -> list[tuple[bytes, str, int]]:
        """Block until at least one datagram is queued, then take up to ``batch`` of them.

        Returns ``(payload, source ip, slot)`` per datagram. Datagrams longer than ``size``
        (MSG_TRUNC) and address-less wake-ups (the socket was shut down) are left out, so the
        list can be empty: callers check whether they should stop. Raises OSError as
        ``recvfrom`` would (EINTR is retried).
        """
        while True:
            n = self._recvmmsg(
                self.sock.fileno(), self._rhdr_addr, self.batch, MSG_WAITFORONE, None
            )
            if n >= 0:
                break
            err = ctypes.get_errno()
            if err != errno.EINTR:
                raise OSError(err, f"recvmmsg: {os.strerror(err)}")
        if not n:
            return []
        # Whole columns at once (strided views, one list each) and the n source addresses as
        # one bytes object: per datagram only the payload, its address key and the triple.
        u, step = self._rhdr_u, _HDR // _U
        end = n * step
        lens = u[_I_LEN:end:step].tolist()
        namelens = self._namelens = u[_I_NAMELEN:end:step].tolist()  # for address(), send()
        flags = u[_I_FLAGS:end:step].tolist()
        u[_I_NAMELEN:end:step] = self._namelen_fill[:n]  # the kernel overwrote them
        names = ctypes.string_at(self._name_addr[0], n * _NAME)
        out: list[tuple[bytes, str, int]] = []
        data, ips, size = self._data_v, self._ips, self.size
        for i in range(n):
            if namelens[i] == 16:  # sockaddr_in: the address is bytes 4..8
                key = names[i * _NAME + 4 : i * _NAME + 8]
            elif namelens[i] == _NAME:  # sockaddr_in6: address and scope id, bytes 8..28
                key = names[i * _NAME + 8 : i * _NAME + 28]
            else:
                continue  # no source: shut down
            if flags[i] & MSG_TRUNC:
                continue  # longer than any query we answer: dropped
            ip = ips.get(key)
            if ip is None:
                if len(ips) >= _CACHE_MAX:
                    ips.clear()
                ip = ips[key] = _text(key)
            start = i * size
            out.append((bytes(data[start : start + lens[i]]), ip, i))
        return out

    def address(self, slot: int) -> tuple[Any, ...]:
        """The source of the datagram in ``slot`` as ``recvfrom`` gives it: ``(ip, port)``
        or ``(ip, port, flowinfo, scope_id)``. For the rare paths; valid until the next
        :meth:`recv`."""
        off = slot * _NAME
        raw = bytes(self._names_v[off : off + _NAME])
        port = int.from_bytes(raw[2:4], "big")
        if self._namelens[slot] == 16:
            return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
        flow = int.from_bytes(raw[4:8], "big")
        scope = int.from_bytes(raw[24:28], sys.byteorder)
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope)

    def send(self, answers: list[tuple[bytes, int]]) -> int:
        """Send each ``(payload, slot)`` to the source of the datagram received in ``slot``.

        One ``sendmmsg`` per call when all goes well (at most ``batch`` answers). A message
        the kernel refuses is skipped (as a failed ``sendto`` would be dropped) and the rest
        are retried. Returns how many were sent. Payloads must be ``bytes`` exactly (the
        iovecs point into the objects themselves).
        """
        count = len(answers)
        if count > self.batch:
            raise ValueError(f"mmsg send of {count} answers: more than the batch {self.batch}")
        su, sz, iov, off = self._shdr_u, self._shdr_z, self._siov_z, self._off
        namelens = self._namelens
        ustep, zstep = _HDR // _U, _HDR // _Z
        names = self._name_addr
        for k, (payload, slot) in enumerate(answers):
            # answers holds every payload until we return, so the pointers stay valid
            if payload.__class__ is not bytes:
                raise TypeError(f"mmsg send: payload {type(payload).__name__}, not bytes")
            iov[2 * k] = id(payload) + off
            iov[2 * k + 1] = len(payload)
            sz[k * zstep + _Z_NAME] = names[slot]
            su[k * ustep + _I_NAMELEN] = namelens[slot]
        fd, done, sent = self.sock.fileno(), 0, 0
        while done < count:
            n = self._sendmmsg(fd, self._shdr_addr + done * _HDR, count - done, 0)
            if n > 0:
                done += n
                sent += n
                continue
            if n < 0 and ctypes.get_errno() == errno.EINTR:
                continue
            done += 1  # the kernel refused this one (or sent nothing): drop it, go on
        return sent

"""A VXLAN device's FDB and neighbour entries, read and written in batches on a raw socket.

An overlay network's VXLAN device holds two entries per remote container (``MAC → VTEP`` in
its FDB, ``IP → MAC`` in its neighbour table; :mod:`netd.kernel.vxlan`), so a cluster of a few
thousand containers means thousands of entries, re-read on every resync. pyroute2 spends
~0.2 ms of Python per message decoded and ~0.5 ms per request; here requests are encoded with
``struct`` and sent in batches (acks read back per batch, in order), and dumps decode only the
two attributes needed — the same approach as :class:`~netd.kernel.rtnl.Rtnl`, whose wire
methods this reuses. ``benchmarks/bench_overlay_sync.py`` measures both.

Entries are what ``bridge fdb append <mac> dev <dev> dst <vtep> self permanent`` and ``ip neigh
replace <ip> lladdr <mac> dev <dev> nud permanent`` make. No policy: what to add and remove is
:mod:`netd.drivers.overlay_peers`'. It never opens namespaces: pass a socket from
:func:`netd.kernel.rtnl.host_socket`.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Sequence
from ipaddress import IPv4Address

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_APPEND,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
)
from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_GETNEIGH, RTM_NEWNEIGH

from ..model import IPAddress
from .rtnl import _NLA, Rtnl, RtnlError, _mac, _nla, _Pending

# linux/neighbour.h
_NDMSG = struct.Struct("=BBHiHBB")  # family, pad1, pad2, ifindex, state, flags, type
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
NUD_NOARP, NUD_PERMANENT = 0x40, 0x80
NTF_SELF = 0x02
AF_BRIDGE = 7  # PF_BRIDGE: the FDB family
BATCH = 256  # requests sent before their acks are read: the acks stay well inside SO_RCVBUF


def _family(ip: IPAddress) -> int:
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def _mac_text(raw: bytes) -> str:
    return raw.hex(":")  # in C: a resync decodes one per remote entry


class NeighTable(Rtnl):
    """The FDB and neighbour entries of one device, over one NETLINK_ROUTE socket."""

    def __enter__(self) -> NeighTable:
        return self

    # --- reading ----------------------------------------------------------------------------

    def remote_fdb(self, index: int) -> dict[str, set[IPv4Address]]:
        """The device's own (``self``) FDB entries that name an IPv4 remote: MAC → VTEPs."""
        out: dict[str, set[IPv4Address]] = {}
        for ndm, attrs in self._dump(AF_BRIDGE, index):
            _, _, _, ifindex, _, flags, _ = ndm
            dst, mac = attrs.get(NDA_DST), attrs.get(NDA_LLADDR)
            if ifindex == index and flags & NTF_SELF and dst and len(dst) == 4 and mac:
                out.setdefault(_mac_text(mac), set()).add(IPv4Address(dst))
        return out

    def permanent_neighbours(self, index: int) -> dict[IPAddress, str]:
        """The device's permanent neighbour entries (IPv4 and IPv6): IP → MAC."""
        out: dict[IPAddress, str] = {}
        for family in (socket.AF_INET, socket.AF_INET6):
            for ndm, attrs in self._dump(family, index):
                _, _, _, ifindex, state, _, _ = ndm
                dst, mac = attrs.get(NDA_DST), attrs.get(NDA_LLADDR)
                if ifindex == index and state & NUD_PERMANENT and dst and mac:
                    out[ipaddress.ip_address(dst)] = _mac_text(mac)
        return out

    def _dump(self, family: int, index: int) -> list[tuple[tuple[int, ...], dict[int, bytes]]]:
        """Every RTM_NEWNEIGH of a ``family`` dump: (ndmsg fields, {NDA type: payload}).

        NDA_IFINDEX asks the kernel to send only ``index``'s entries (neighbour dumps honour
        it; FDB dumps may not, so callers filter too)."""
        body = _NDMSG.pack(family, 0, 0, 0, 0, 0, 0) + _nla(NDA_IFINDEX, struct.pack("=I", index))
        seq = self._send_raw(body, RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP)
        out = []
        for mtype, reply in self._replies(seq):
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", reply)[0]
                if code:
                    raise RtnlError(code, f"listing neighbours of link {index}")
                continue
            if mtype != RTM_NEWNEIGH or len(reply) < _NDMSG.size:
                continue
            out.append((_NDMSG.unpack_from(reply), _attrs(reply, _NDMSG.size)))
        return out

    # --- writing ----------------------------------------------------------------------------

    def apply(
        self,
        index: int,
        name: str,
        *,
        fdb_del: Sequence[tuple[str, IPv4Address]] = (),
        neigh_del: Sequence[IPAddress] = (),
        fdb_add: Sequence[tuple[str, IPv4Address]] = (),
        neigh_set: Sequence[tuple[IPAddress, str]] = (),
    ) -> None:
        """Remove, then add, in this order (stale answers go first; an FDB entry exists before
        the neighbour entry that makes the device answer ARP for it). An entry already gone
        is not an error; the first other refusal raises RtnlError naming the entry."""
        batch: list[tuple[bytes, int, int, str, int]] = []
        for mac, vtep in fdb_del:
            batch.append((_fdb(index, mac, vtep), RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK,
                          f'removing FDB {mac} dst {vtep} of "{name}"', errno.ENOENT))  # fmt: skip
        for ip in neigh_del:
            body = _NDMSG.pack(_family(ip), 0, 0, index, 0, 0, 0) + _nla(NDA_DST, ip.packed)
            batch.append((body, RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK,
                          f'removing neighbour {ip} of "{name}"', errno.ENOENT))  # fmt: skip
        for mac, vtep in fdb_add:
            flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND
            batch.append((_fdb(index, mac, vtep), RTM_NEWNEIGH, flags,
                          f'adding FDB {mac} dst {vtep} to "{name}"', 0))  # fmt: skip
        for ip, mac in neigh_set:
            body = _NDMSG.pack(_family(ip), 0, 0, index, NUD_PERMANENT, 0, 0)
            body += _nla(NDA_DST, ip.packed) + _nla(NDA_LLADDR, _mac(mac))
            flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
            batch.append((body, RTM_NEWNEIGH, flags,
                          f'setting neighbour {ip} lladdr {mac} on "{name}"', 0))  # fmt: skip
        for start in range(0, len(batch), BATCH):
            self._run(batch[start : start + BATCH])

    def _run(self, batch: list[tuple[bytes, int, int, str, int]]) -> None:
        """Send a batch, then read its acks in order; raise the first unexpected refusal."""
        pending = [
            (_Pending(self._send_raw(body, mtype, flags), what), ignored)
            for body, mtype, flags, what, ignored in batch
        ]
        first: RtnlError | None = None
        for item, ignored in pending:
            for mtype, reply in self._replies(item.seq):
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", reply)[0]
                    if code and code != ignored and first is None:
                        first = RtnlError(code, item.what)
        if first is not None:
            raise first


def _fdb(index: int, mac: str, vtep: IPv4Address) -> bytes:
    """An FDB entry's request body: ``<mac> dst <vtep> self permanent`` on ``index``."""
    head = _NDMSG.pack(AF_BRIDGE, 0, 0, index, NUD_PERMANENT | NUD_NOARP, NTF_SELF, 0)
    return head + _nla(NDA_LLADDR, _mac(mac)) + _nla(NDA_DST, vtep.packed)


def _attrs(data: bytes, offset: int) -> dict[int, bytes]:
    """Top-level attributes of a message body from ``offset``: {type: payload}."""
    out: dict[int, bytes] = {}
    while offset + _NLA.size <= len(data):
        length, kind = _NLA.unpack_from(data, offset)
        if length < _NLA.size:
            break
        out[kind & 0x3FFF] = data[offset + _NLA.size : offset + length]
        offset += (length + 3) & ~3
    return out

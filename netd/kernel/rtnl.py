"""A minimal rtnetlink client for the hot path: batches of requests on one socket.

pyroute2's ``IPRoute`` spends ~0.6 ms of Python (an asyncio round per call) on each request;
configuring a container takes seven of them. Here a whole step (all addresses, all links up)
goes out in one ``send`` per message and the kernel's acks are read back in order: ~0.05 ms per
request.

It knows seven requests (get link index, add address, set link up, add route, add a veth pair with
its peer in another namespace, add a macvlan/ipvlan link born in another namespace, set a bridge
port's alias and hairpin mode) and nothing else; everything else uses ``IPRoute`` through
:mod:`netd.kernel.links`. Messages are encoded (and the one reply read, a link index) with
``struct``: pyroute2's message classes cost more Python than the kernel spends on the request. It
never opens namespaces: pass it a socket from :func:`netd.kernel.netns.netlink_socket_in` or
:func:`host_socket`."""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.rtnl import RTM_GETLINK, RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE

from ..model import IPAddress, IPInterface

IFF_UP = 0x1
LOOPBACK_IFINDEX = 1  # the kernel gives every namespace's "lo" index 1 (include/net/flow.h)
IFA_F_NODAD = 0x02
RT_TABLE_MAIN = 254
RTPROT_STATIC = 4
RT_SCOPE_UNIVERSE = 0
RTN_UNICAST = 1
MAX_DEFAULT_ROUTES = 64  # per family in one namespace: more networks than a container has
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (linux/netlink.h)
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change (linux/rtnetlink.h)
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index (linux/if_addr.h)
_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # family, dst_len, src_len, tos, table, proto, scope, type, flags
_NLA = struct.Struct("=HH")  # len, type
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS = 1, 2, 8
RTA_OIF, RTA_GATEWAY, RTA_PRIORITY = 4, 5, 6
_CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
NLA_F_NESTED = 0x8000
# linux/if_link.h
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_LINKINFO, IFLA_IFALIAS, IFLA_AF_SPEC, IFLA_NET_NS_FD = 18, 20, 26, 28
IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE = 8, 1
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_INFO_SLAVE_KIND, IFLA_INFO_SLAVE_DATA = 1, 2, 4, 5
VETH_INFO_PEER = 1
IFLA_BRPORT_MODE = 4  # hairpin
IFLA_MACVLAN_MODE = 1  # u32 (linux/if_link.h)
IFLA_IPVLAN_MODE, IFLA_IPVLAN_FLAGS = 1, 2  # u16 each


def _nla(kind: int, payload: bytes, nested: bool = False) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = _NLA.size + len(payload)
    head = _NLA.pack(length, kind | (NLA_F_NESTED if nested else 0))
    return head + payload + b"\0" * (-length % 4)


def _name(value: str) -> bytes:
    return value.encode() + b"\0"


def _mac(value: str) -> bytes:
    return bytes.fromhex(value.replace(":", ""))


def host_socket() -> socket.socket:
    """A NETLINK_ROUTE socket in the calling thread's namespace (the daemon's host)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.bind((0, 0))
    return sock


@dataclass(frozen=True)
class VethSpec:
    """A veth pair: the host end enslaved to a bridge and up, the peer created in a namespace."""

    host: str
    host_mac: str
    mtu: int
    master: int
    peer: str
    peer_netns_fd: int
    peer_mac: str


@dataclass(frozen=True)
class LowerLinkSpec:
    """A macvlan or ipvlan link on host link ``parent``, created inside namespace ``netns_fd``.

    ``mode`` is IFLA_MACVLAN_MODE (macvlan) or IFLA_IPVLAN_MODE (ipvlan); ``flags`` is
    IFLA_IPVLAN_FLAGS (ipvlan only). ``mac`` "" and ``mtu`` 0: the kernel's choice (a random
    MAC for macvlan, the parent's for ipvlan; the parent's MTU).
    """

    kind: str
    name: str
    parent: int
    netns_fd: int
    mode: int
    flags: int = 0
    mac: str = ""
    mtu: int = 0


class RtnlError(OSError):
    """A request in a batch was refused; ``errno`` is the kernel's, ``request`` says which."""

    def __init__(self, code: int, request: str) -> None:
        super().__init__(code, f"{request}: {os.strerror(code)}")
        self.request = request


@dataclass
class _Pending:
    seq: int
    what: str


class Rtnl:
    """Requests on one NETLINK_ROUTE socket (owned: :meth:`close` closes it)."""

    def __init__(self, sock: socket.socket) -> None:
        """Wrap ``sock``, a NETLINK_ROUTE socket (any namespace)."""
        self.sock = sock
        self._seq = itertools.count(1)

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- requests ---------------------------------------------------------------------------

    def link_index(self, ifname: str) -> int:
        """Index of link ``ifname`` (RTM_GETLINK by name); RtnlError ENODEV if missing.

        Only the fixed ifinfomsg header of the reply is read: decoding the whole link message
        with pyroute2 cost ~0.3 ms, ten times the kernel's work.
        """
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + _nla(IFLA_IFNAME, _name(ifname))
        seq = self._send_raw(body, RTM_GETLINK, NLM_F_REQUEST)
        for mtype, reply in self._replies(seq):
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", reply)[0]
                raise RtnlError(code or errno.EIO, f'looking up link "{ifname}"')
            if mtype == RTM_NEWLINK and len(reply) >= _IFINFOMSG.size:
                return int(_IFINFOMSG.unpack_from(reply)[2])
        raise RtnlError(errno.EIO, f'looking up link "{ifname}"')

    def add_addresses(self, index: int, ifname: str, addresses: tuple[IPInterface, ...]) -> None:
        """Add every address to link ``index`` (IPv6 with IFA_F_NODAD), in one round."""
        pending = []
        for iface in addresses:
            v6 = iface.version == 6
            packed = iface.ip.packed
            body = _IFADDRMSG.pack(
                socket.AF_INET6 if v6 else socket.AF_INET, iface.network.prefixlen, 0, 0, index
            )
            body += _nla(IFA_LOCAL, packed) + _nla(IFA_ADDRESS, packed)
            if v6:
                body += _nla(IFA_FLAGS, struct.pack("=I", IFA_F_NODAD))
            seq = self._send_raw(body, RTM_NEWADDR, _CREATE)
            pending.append(_Pending(seq, f'adding address {iface} to "{ifname}"'))
        self._check(pending)

    def set_up(self, links: dict[int, str], *, no_link_local: tuple[int, ...] = ()) -> None:
        """Bring up each link ``{index: name}``, in one round of requests.

        Links in ``no_link_local`` first get IPv6 address generation mode "none" (no fe80::
        address, so no DAD, router solicitation or MLD report when the link comes up). It must
        precede the link going up: the kernel generates the link-local address at that moment.
        """
        pending = []
        for index in no_link_local:
            mode = _nla(IFLA_INET6_ADDR_GEN_MODE, struct.pack("=B", IN6_ADDR_GEN_MODE_NONE))
            spec = _nla(IFLA_AF_SPEC, _nla(socket.AF_INET6, mode, nested=True), nested=True)
            body = _IFINFOMSG.pack(0, 0, index, 0, 0) + spec
            seq = self._send_raw(body, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
            what = f'turning off IPv6 link-local addressing on "{links.get(index, index)}"'
            pending.append(_Pending(seq, what))
        for index, name in links.items():
            body = _IFINFOMSG.pack(0, 0, index, IFF_UP, IFF_UP)
            seq = self._send_raw(body, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
            pending.append(_Pending(seq, f'setting "{name}" up'))
        self._check(pending)

    def add_default_route(self, gateway: IPAddress, index: int, metric: int) -> None:
        """``ip route add default via <gateway> dev <index> metric <metric>`` (EEXIST raises)."""
        family = socket.AF_INET if gateway.version == 4 else socket.AF_INET6
        body = _RTMSG.pack(
            family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
        )
        body += _nla(RTA_GATEWAY, gateway.packed)
        body += _nla(RTA_OIF, struct.pack("=I", index))
        body += _nla(RTA_PRIORITY, struct.pack("=I", metric))
        seq = self._send_raw(body, RTM_NEWROUTE, _CREATE)
        self._check([_Pending(seq, f"adding default route via {gateway}")])

    def add_veth(self, veth: VethSpec) -> None:
        """``ip link add HOST address .. mtu .. master .. up type veth peer PEER netns FD ..``.

        Creating the peer directly in its namespace (IFLA_NET_NS_FD inside VETH_INFO_PEER) is
        several times cheaper for the kernel than creating it here and moving it.
        """
        peer = _IFINFOMSG.pack(0, 0, 0, 0, 0) + b"".join(
            (
                _nla(IFLA_IFNAME, _name(veth.peer)),
                _nla(IFLA_NET_NS_FD, struct.pack("=I", veth.peer_netns_fd)),
                _nla(IFLA_MTU, struct.pack("=I", veth.mtu)),
                _nla(IFLA_ADDRESS, _mac(veth.peer_mac)),
            )
        )
        info = _nla(IFLA_INFO_KIND, _name("veth")) + _nla(
            IFLA_INFO_DATA, _nla(VETH_INFO_PEER, peer), nested=True
        )
        body = _IFINFOMSG.pack(0, 0, 0, IFF_UP, IFF_UP) + b"".join(
            (
                _nla(IFLA_IFNAME, _name(veth.host)),
                _nla(IFLA_ADDRESS, _mac(veth.host_mac)),
                _nla(IFLA_MTU, struct.pack("=I", veth.mtu)),
                _nla(IFLA_MASTER, struct.pack("=I", veth.master)),
                _nla(IFLA_LINKINFO, info, nested=True),
            )
        )
        seq = self._send_raw(body, RTM_NEWLINK, _CREATE)
        self._check([_Pending(seq, f'creating veth "{veth.host}"')])

    def add_lower_link(self, spec: LowerLinkSpec) -> None:
        """``ip link add link PARENT name NAME netns FD [address ..] [mtu ..] type KIND mode ..``.

        The link is born in the container's namespace under its final name, as the veth peer
        is: no temporary name in the host, no move.
        """
        if spec.kind == "macvlan":
            data = _nla(IFLA_MACVLAN_MODE, struct.pack("=I", spec.mode))
        else:
            data = _nla(IFLA_IPVLAN_MODE, struct.pack("=H", spec.mode)) + _nla(
                IFLA_IPVLAN_FLAGS, struct.pack("=H", spec.flags)
            )
        info = _nla(IFLA_INFO_KIND, _name(spec.kind)) + _nla(IFLA_INFO_DATA, data, nested=True)
        attrs = [
            _nla(IFLA_IFNAME, _name(spec.name)),
            _nla(IFLA_LINK, struct.pack("=I", spec.parent)),
            _nla(IFLA_NET_NS_FD, struct.pack("=I", spec.netns_fd)),
        ]
        if spec.mac:
            attrs.append(_nla(IFLA_ADDRESS, _mac(spec.mac)))
        if spec.mtu:
            attrs.append(_nla(IFLA_MTU, struct.pack("=I", spec.mtu)))
        attrs.append(_nla(IFLA_LINKINFO, info, nested=True))
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + b"".join(attrs)
        seq = self._send_raw(body, RTM_NEWLINK, _CREATE)
        self._check([_Pending(seq, f'creating {spec.kind} link "{spec.name}"')])

    def set_bridge_port(self, ifname: str, alias: str, hairpin: bool) -> None:
        """Set port ``ifname``'s ifalias (ignored at creation) and hairpin mode."""
        slave = _nla(IFLA_BRPORT_MODE, struct.pack("=B", int(hairpin)))
        info = _nla(IFLA_INFO_SLAVE_KIND, _name("bridge")) + _nla(
            IFLA_INFO_SLAVE_DATA, slave, nested=True
        )
        body = _IFINFOMSG.pack(0, 0, 0, 0, 0) + b"".join(
            (
                _nla(IFLA_IFNAME, _name(ifname)),
                _nla(IFLA_IFALIAS, alias.encode()),
                _nla(IFLA_LINKINFO, info, nested=True),
            )
        )
        seq = self._send_raw(body, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
        self._check([_Pending(seq, f'configuring bridge port "{ifname}"')])

    # --- wire -------------------------------------------------------------------------------

    def _send_raw(self, body: bytes, mtype: int, flags: int) -> int:
        seq = next(self._seq)
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, flags, seq, 0) + body)
        return seq

    def _replies(self, seq: int) -> Iterator[tuple[int, bytes]]:
        """(type, body) of each reply message to ``seq``, until its ack/error or DONE."""
        while True:
            data = self.sock.recv(65536)
            offset = 0
            while offset + _NLMSGHDR.size <= len(data):
                length, mtype, _flags, rseq, _pid = _NLMSGHDR.unpack_from(data, offset)
                body = data[offset + _NLMSGHDR.size : offset + length]
                offset += (length + 3) & ~3
                if rseq != seq:
                    continue  # a stale reply to an earlier, abandoned request
                yield mtype, body
                if mtype in (NLMSG_ERROR, NLMSG_DONE):
                    return

    def _check(self, pending: list[_Pending]) -> None:
        """Read one ack per pending request, in order; raise the first refusal."""
        first: RtnlError | None = None
        for item in pending:
            for mtype, body in self._replies(item.seq):
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", body)[0]
                    if code and first is None:
                        first = RtnlError(code, item.what)
        if first is not None:
            raise first


def add_default_route(rtnl: Rtnl, gateway: IPAddress, index: int) -> int:
    """A default route via ``gateway`` on link ``index``; returns the metric used.

    A container on several networks gets one default route per network: the first keeps the
    kernel's default metric (0 for IPv4, 1024 for IPv6), later ones the next free metric, so
    the first network stays the default and the next takes over when it is detached.
    """
    base = 0 if gateway.version == 4 else 1024
    for metric in range(base, base + MAX_DEFAULT_ROUTES):
        try:
            rtnl.add_default_route(gateway, index, metric)
        except RtnlError as exc:
            if exc.errno == errno.EEXIST:
                continue
            raise
        return metric
    raise RtnlError(errno.EEXIST, f"adding default route via {gateway}: all metrics taken")

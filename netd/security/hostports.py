"""Host ports already in use: published ports must not take over a socket of the host.

A published port is a DNAT rule, and a DNAT rule wins over a socket: once ``5432/tcp`` is
published, connections to the host's port 5432 (from outside, and from the host itself through
the output chain) reach the container, and a host service listening there no longer gets them.
The kernel would refuse the same user a ``bind()`` to that port (``EADDRINUSE``), so netd
refuses the publication: the line it draws is the kernel's. Docker (docker-proxy binds every
published port) and Podman (it holds published ports open) refuse the same way, for root too.

What counts as "in use" is read from the daemon's own network namespace (the managed one) at
publish time: TCP sockets in LISTEN state, every bound UDP socket, and SCTP endpoints, from
``/proc/self/net/{tcp,tcp6,udp,udp6,sctp/eps}`` (world-readable, so naming the socket's
address tells the caller nothing a ``cat`` would not). Addresses are compared the way bind()
conflicts are: a publication on every address (no ``host_ip``) clashes with any socket on the
port; one on a given address clashes with a socket on that address or on a wildcard.

What it does not do: hold the port afterwards. A host service that binds the port *later*
succeeds (the kernel knows nothing of DNAT rules) and receives no connection that the DNAT
rule matches (docs/security.md "Published ports and host sockets").
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import Conflict
from ..model import IPAddress, PortMapping

log = logging.getLogger("netd.security.hostports")

PROC_NET = Path("/proc/self/net")
TCP_LISTEN = "0A"  # include/net/tcp_states.h: TCP_LISTEN = 10
WILDCARDS = (ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::"))


@dataclass(frozen=True)
class HostSocket:
    """A socket of the host holding a port: protocol, local address, port."""

    protocol: str
    address: IPAddress
    port: int

    def describe(self) -> str:
        """``address:port`` as ``ss`` prints it."""
        if self.address.version == 6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


def _hex_address(text: str) -> IPAddress:
    """An address of /proc/net/{tcp,udp}[6]: 32-bit words in the kernel's (native) byte order."""
    words = [int(text[i : i + 8], 16) for i in range(0, len(text), 8)]
    raw = b"".join(struct.pack("=I", w) for w in words)
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return ipaddress.ip_address(socket.inet_ntop(family, raw))


def parse_proc_net(text: str, protocol: str) -> list[HostSocket]:
    """Sockets holding a port in one /proc/net/{tcp,tcp6,udp,udp6} table.

    TCP: listening sockets only (a connection's local port takes no new connections, and its
    replies are matched by conntrack, not by DNAT). UDP: every socket with a local port.
    Malformed lines are skipped.
    """
    out: list[HostSocket] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 4 or ":" not in parts[1]:
            continue
        if protocol == "tcp" and parts[3] != TCP_LISTEN:
            continue
        addr, _, port = parts[1].partition(":")
        try:
            sock = HostSocket(protocol, _hex_address(addr), int(port, 16))
        except (ValueError, OSError):
            continue
        if sock.port:
            out.append(sock)
    return out


def parse_sctp_eps(text: str) -> list[HostSocket]:
    """SCTP endpoints of /proc/net/sctp/eps (``... LPORT UID INODE LADDRS...``)."""
    out: list[HostSocket] = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 9:
            continue
        try:
            port = int(parts[5])
            addrs = [ipaddress.ip_address(a) for a in parts[8:]]
        except ValueError:
            continue
        out += [HostSocket("sctp", a, port) for a in addrs if port]
    return out


def host_sockets(proc_net: Path = PROC_NET) -> list[HostSocket]:
    """Every socket of the daemon's network namespace that holds a port (see the docstring)."""
    tables = (("tcp", "tcp"), ("tcp6", "tcp"), ("udp", "udp"), ("udp6", "udp"))
    out: list[HostSocket] = []
    for name, protocol in tables:
        try:
            out += parse_proc_net((proc_net / name).read_text(), protocol)
        except OSError as exc:  # IPv6 disabled: no tcp6/udp6
            log.debug("reading %s: %s", proc_net / name, exc)
    # Without the sctp module loaded, the file is missing and no SCTP socket exists.
    with contextlib.suppress(OSError):
        out += parse_sctp_eps((proc_net / "sctp" / "eps").read_text())
    return out


def _unmapped(addr: IPAddress) -> IPAddress:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def clashes(mapping: PortMapping, sock: HostSocket) -> bool:
    """Whether publishing ``mapping`` would take connections meant for ``sock``.

    Like bind(): no ``host_ip`` (every address) clashes with any socket on the port; an address
    clashes with a socket on the same address or a wildcard one (``::`` may be dual-stack, so it
    counts for IPv4 too).
    """
    if mapping.protocol != sock.protocol or mapping.host_port != sock.port:
        return False
    if mapping.host_ip is None or mapping.host_ip in WILDCARDS or sock.address in WILDCARDS:
        return True
    return _unmapped(sock.address) == _unmapped(mapping.host_ip)


def describe_mapping(mapping: PortMapping) -> str:
    """``[host_ip:]port/proto`` as a user wrote it."""
    ip = ""
    if mapping.host_ip is not None:
        ip = f"[{mapping.host_ip}]:" if mapping.host_ip.version == 6 else f"{mapping.host_ip}:"
    return f"{ip}{mapping.host_port}/{mapping.protocol}"


def check_ports_free(
    ports: Iterable[PortMapping],
    sockets: Sequence[HostSocket],
    exempt: Collection[tuple[IPAddress, int]] = (),
) -> None:
    """Conflict naming the first publication a host socket already holds the port of.

    Sockets at an ``exempt`` (address, port) are left out: netd's own DNS on its gateways,
    which the firewall never DNATs (so a published port 53 cannot take its traffic).
    """
    by_port: dict[tuple[str, int], list[HostSocket]] = {}
    for sock in sockets:
        if (_unmapped(sock.address), sock.port) in exempt:
            continue
        by_port.setdefault((sock.protocol, sock.port), []).append(sock)
    for i, mapping in enumerate(ports):
        for sock in by_port.get((mapping.protocol, mapping.host_port), ()):
            if clashes(mapping, sock):
                what = "listens" if sock.protocol == "tcp" else "is bound"
                raise Conflict(
                    f"publishing host port {describe_mapping(mapping)}: a {sock.protocol} socket "
                    f"of the host {what} on {sock.describe()}; the port is in use (the kernel "
                    "would refuse that bind: EADDRINUSE)",
                    field=f"port_mappings[{i}].host_port",
                    value=describe_mapping(mapping),
                )


def refuse_ports_in_use(
    ports: Sequence[PortMapping], exempt: Collection[tuple[IPAddress, int]] = ()
) -> None:
    """The service's publish check: Conflict if a socket of this namespace holds a port."""
    if ports:
        check_ports_free(ports, host_sockets(), exempt)

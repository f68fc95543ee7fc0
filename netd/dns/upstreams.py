"""Which upstream resolvers to ask, and which of them are currently failing.

The host's list comes from resolv.conf, skipping loopback stubs (a 127.0.0.53 systemd-resolved
stub is unreachable from a container's point of view and would loop): when only stubs are
listed, the real upstream list is read from /run/systemd/resolve/resolv.conf. The file is
re-read when its mtime changes (checked at most once a second). :class:`Health` remembers
upstreams that timed out so the next queries try the others first. Nothing here sends packets.
"""

from __future__ import annotations

import ipaddress
import logging
import os

from ..errors import InvalidInput

log = logging.getLogger(__name__)

SYSTEMD_RESOLV = "/run/systemd/resolve/resolv.conf"
BAD_FOR = 30.0  # seconds an unresponsive upstream is tried last


def parse_server(text: str) -> tuple[str, int]:
    """``addr``, ``addr:port`` (IPv4) or ``[addr]:port`` / bare IPv6 as (address, port)."""
    s = text.strip()
    port = 53
    try:
        if s.startswith("["):
            host, _, rest = s[1:].partition("]")
            if rest:
                port = int(rest.removeprefix(":"))
            s = host
        elif s.count(":") == 1:
            s, p = s.split(":")
            port = int(p)
        addr = ipaddress.ip_address(s.split("%")[0])
    except ValueError as exc:
        raise InvalidInput("dns_servers", text, "must be an IP address, optionally :port") from exc
    if not 0 < port < 65536:
        raise InvalidInput("dns_servers", text, "port must be 1-65535")
    return str(addr), port


def _is_loopback(text: str) -> bool:
    try:
        return ipaddress.ip_address(text.split("%")[0]).is_loopback
    except ValueError:
        return False


def read_nameservers(path: str) -> tuple[list[str], bool]:
    """Non-loopback ``nameserver`` entries of a resolv.conf and whether a stub was skipped."""
    servers: list[str] = []
    stub = False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read(65536).splitlines()
    except FileNotFoundError:
        return [], False
    except OSError as exc:
        log.warning("reading upstream resolvers from %s: %s", path, exc)
        return [], False
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            if _is_loopback(parts[1]):
                stub = True
            elif parts[1] not in servers:
                try:
                    parse_server(parts[1])
                except InvalidInput:
                    continue
                servers.append(parts[1])
    return servers, stub


def host_nameservers(path: str, systemd_path: str = SYSTEMD_RESOLV) -> list[str]:
    """The host's upstreams from ``path``, falling back to systemd-resolved's real list."""
    servers, stub = read_nameservers(path)
    if not servers and stub:
        servers, _ = read_nameservers(systemd_path)
    return servers


class HostUpstreams:
    """The host's resolver list, following changes of the file."""

    def __init__(self, path: str, systemd_path: str = SYSTEMD_RESOLV) -> None:
        self.path = path
        self.systemd_path = systemd_path
        self._checked = -1.0
        self._mtime: tuple[float, float] | None = None
        self.servers: list[str] = []

    def get(self, now: float) -> list[str]:
        """Current list; stat()s the files at most once a second."""
        if now - self._checked >= 1.0:
            self._checked = now
            stamp = (_mtime(self.path), _mtime(self.systemd_path))
            if stamp != self._mtime:
                self._mtime = stamp
                self.servers = host_nameservers(self.path, self.systemd_path)
        return self.servers


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


class Health:
    """Remembers upstreams that did not answer, to try them last for a while."""

    def __init__(self, bad_for: float = BAD_FOR) -> None:
        self.bad_for = bad_for
        self._bad_until: dict[str, float] = {}
        self.failures = 0  # upstream exchanges that failed (the event loop is the only writer)

    def order(self, servers: list[str], now: float) -> list[str]:
        """``servers`` with currently-bad ones moved to the end (stable otherwise)."""
        bad = self._bad_until
        if not bad:
            return list(servers)
        good = [s for s in servers if bad.get(s, 0.0) <= now]
        return good + [s for s in servers if bad.get(s, 0.0) > now]

    def failed(self, server: str, now: float) -> None:
        """Mark ``server`` as not answering."""
        self.failures += 1
        self._bad_until[server] = now + self.bad_for

    def answered(self, server: str) -> None:
        """Mark ``server`` as healthy again."""
        self._bad_until.pop(server, None)

    def is_bad(self, server: str, now: float) -> bool:
        """Whether ``server`` is currently considered down."""
        return self._bad_until.get(server, 0.0) > now

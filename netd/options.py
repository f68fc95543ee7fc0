"""Network options, parsed once into a typed, frozen object (pure; no kernel access).

A network's options arrive as a string map, spelt the netd way (``mtu``) or Docker's way
(``com.docker.network.driver.mtu``, :data:`DOCKER_ALIASES`). Three kinds of keys:

- network-wide (every driver): ``mtu``, ``dns``, ``dns_servers``, ``dns_forward_internal``;
- firewall (drivers whose traffic passes the host firewall, ``Capabilities.firewall``):
  ``enable_icc``, ``enable_ip_masquerade``, ``host_ipv4``, ``host_ipv6``, ``isolate``,
  ``anti_spoof``;
- the driver's own, declared by the driver in a :class:`DriverKeys` (the bridge: ``bridge``;
  macvlan: ``parent``, ``macvlan_mode``), each with a value kind from here and, where the kind
  is not the whole rule, a check of the driver's (``OptionDef.check``: a parent's VLAN id).

Every driver declares its :class:`DriverKeys` (``Driver.option_keys``): the API document's
options schema is built from them (:func:`netd.api.formats.options_schema`), and
:func:`parse_options` checks a request against them. An external driver's own keys cannot be
declared (the plugin checks them): its keys are ``open``, passed through unchanged.

:func:`parse_options` checks a request's map at create time and returns :class:`NetworkOptions`:
typed values, plus ``canonical``, the string map the store keeps (canonical keys only, values
normalised: ``"On"`` → ``"true"``, ``" 1400"`` → ``"1400"``), so a record is the same whichever
spelling was used. Parsing ``canonical`` again gives an equal object. :func:`stored_options`
reads a stored record's map with the same rules (``Network.opts`` caches it per record), so the
firewall, DNS and the drivers all read one typed object, never the strings.

There is one rule per kind of value: booleans are true/false, yes/no, on/off, 1/0 in any case;
addresses are parsed by :mod:`ipaddress`; DNS servers are written as an endpoint's
(``addr``, ``IPv4:port``, ``[IPv6]:port``). Errors name ``options.<key>`` as the user spelt it,
the value and the rule. Not checked here: what depends on the rest of the request (``mtu`` of
at least 1280 with IPv6, :mod:`netd.spec`), on the firewall backend (``anti_spoof``,
:mod:`netd.firewall.policy`) or on the caller (rootless owners, :mod:`netd.security.rootless`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from .errors import InvalidInput
from .names import check_ifname

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MIN_MTU = 68  # RFC 791: every IPv4 host must handle 68-octet datagrams; the kernel's ETH_MIN_MTU
MAX_MTU = 65535  # IP_MAX_MTU
MIN_VNI, MAX_VNI = 1, 2**24 - 1  # a 24-bit VXLAN network identifier (RFC 7348 §5); 0 unused

# Docker's option names (libnetwork drivers/bridge/labels.go and netlabel) → netd's. An alias
# counts only where its canonical key is accepted (a macvlan network has no ``bridge``).
DOCKER_ALIASES: dict[str, str] = {
    "com.docker.network.bridge.name": "bridge",
    "com.docker.network.driver.mtu": "mtu",
    "com.docker.network.bridge.enable_icc": "enable_icc",
    "com.docker.network.bridge.enable_ip_masquerade": "enable_ip_masquerade",
    "com.docker.network.host_ipv4": "host_ipv4",
    "com.docker.network.host_ipv6": "host_ipv6",
}

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def _ascii_digits(text: str) -> bool:
    """Only 0-9: ``str.isdigit`` also takes "²" (which ``int`` refuses) and "٣" (which it reads
    as 3), neither of which a user means as a number here."""
    return text.isascii() and text.isdigit()


# The syntax of a value; each kind has one check (:meth:`OptionDef.normalise`), one typed
# reading (:func:`_typed`) and one published pattern (netd.api.formats).
Kind = Literal["bool", "mtu", "vni", "ipv4", "ipv6", "servers", "ifname", "choice"]
Scope = Literal["network", "firewall", "driver"]


@dataclass(frozen=True)
class DnsServer:
    """An upstream resolver: an address and a port (53 unless given)."""

    address: IPAddress
    port: int = 53

    def __str__(self) -> str:
        """``addr``, ``addr:port`` or ``[addr]:port``: what dns.upstreams.parse_server reads."""
        if self.port == 53:
            return str(self.address)
        if self.address.version == 6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"


def parse_dns_server(text: str) -> DnsServer | None:
    """``addr``, ``IPv4:port``, ``[IPv6]`` or ``[IPv6]:port``; None if ``text`` is none of them.

    The syntax of an endpoint's ``dns_servers`` too, so a network's upstreams may sit on
    another port as an endpoint's may.
    """
    host, port = text.strip(), "53"
    if host.startswith("["):
        host, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port = rest[1:] or "53"
        if ":" not in host:
            return None  # brackets are for IPv6 only
    elif host.count(":") == 1:
        host, port = host.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return DnsServer(address, int(port))


def parse_bool(text: str) -> bool | None:
    """The one boolean rule: True, False, or None when ``text`` is not a boolean word."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


@dataclass(frozen=True)
class OptionDef:
    """One accepted option key: its canonical name, the kind of its value and who reads it."""

    key: str
    kind: Kind
    scope: Scope
    doc: str = ""
    choices: tuple[str, ...] = ()  # kind "choice": the accepted words (lower case)
    # A driver's rule on top of the kind's: (field name, kind-normalised value) -> canonical
    # value, raising InvalidInput (macvlan's parent: a VLAN id from 1 to 4094). The API
    # document publishes the kind's pattern and states this rule in ``doc``.
    check: Callable[[str, str], str] | None = field(default=None, compare=False)

    def normalise(self, given: str, value: str) -> str:
        """The canonical string of ``value``; InvalidInput naming ``options.<given>``."""
        normalised = self._kind_normalise(given, value)
        if self.check is None:
            return normalised
        try:
            return self.check(f"options.{given}", normalised)
        except InvalidInput as exc:
            raise InvalidInput(f"options.{given}", value, exc.rule) from None

    def _kind_normalise(self, given: str, value: str) -> str:
        field_name = f"options.{given}"
        text = value.strip()
        if self.kind == "bool":
            flag = parse_bool(value)
            if flag is None:
                raise InvalidInput(field_name, value, 'must be "true" or "false"')
            return "true" if flag else "false"
        if self.kind == "mtu":
            if not _ascii_digits(text) or not MIN_MTU <= int(text) <= MAX_MTU:
                raise InvalidInput(
                    field_name, value, f"must be an integer from {MIN_MTU} to {MAX_MTU}"
                )
            return str(int(text))
        if self.kind == "vni":
            if not _ascii_digits(text) or not MIN_VNI <= int(text) <= MAX_VNI:
                raise InvalidInput(
                    field_name, value, f"must be an integer from {MIN_VNI} to {MAX_VNI} (24 bits)"
                )
            return str(int(text))
        if self.kind in ("ipv4", "ipv6"):
            version = 4 if self.kind == "ipv4" else 6
            try:
                addr: IPAddress | None = ipaddress.ip_address(text)
            except ValueError:
                addr = None
            if addr is None or addr.version != version:
                raise InvalidInput(field_name, value, f"must be an IPv{version} address")
            return str(addr)
        if self.kind == "servers":
            out: list[str] = []
            for item in (part.strip() for part in value.split(",")):
                server = parse_dns_server(item)
                if server is None:
                    raise InvalidInput(
                        field_name,
                        value,
                        f"must be a comma-separated list of IP addresses; {item!r} is not one",
                    )
                out.append(str(server))
            return ",".join(out)
        if self.kind == "ifname":
            try:
                return check_ifname(text, field_name)
            except InvalidInput as exc:
                raise InvalidInput(field_name, value, exc.rule) from None
        word = text.lower()  # "choice"
        if word not in self.choices:
            raise InvalidInput(field_name, value, "must be one of " + ", ".join(self.choices))
        return word


# Network-wide and firewall keys, in the order error messages and the API document list them.
COMMON_OPTIONS: tuple[OptionDef, ...] = (
    OptionDef("mtu", "mtu", "network", "link MTU"),
    OptionDef("enable_icc", "bool", "firewall", "traffic between containers of the network"),
    OptionDef("enable_ip_masquerade", "bool", "firewall", "masquerade outbound traffic"),
    OptionDef("host_ipv4", "ipv4", "firewall", "source address of outbound IPv4 (SNAT)"),
    OptionDef("host_ipv6", "ipv6", "firewall", "source address of outbound IPv6 (SNAT)"),
    OptionDef(
        "dns_servers",
        "servers",
        "network",
        "upstream resolvers of the network: addresses, IPv4:port or [IPv6]:port",
    ),
    OptionDef("dns", "bool", "network", '"false" turns the network\'s DNS server off'),
    OptionDef(
        "dns_forward_internal",
        "bool",
        "network",
        "an internal network forwards queries upstream only if true",
    ),
    OptionDef(
        "isolate", "bool", "firewall", "accepted for compatibility: networks are always isolated"
    ),
    OptionDef(
        "anti_spoof",
        "bool",
        "firewall",
        "containers send only from their own addresses; true needs the nftables firewall backend",
    ),
)
FIREWALL_KEYS = frozenset(o.key for o in COMMON_OPTIONS if o.scope == "firewall")
COMMON_KEYS = frozenset(o.key for o in COMMON_OPTIONS)  # netd's own: never a driver's
_COMMON = {o.key: o for o in COMMON_OPTIONS}


@dataclass(frozen=True)
class DriverKeys:
    """What a driver declares about options: its own keys, and whether the firewall keys apply.

    ``firewall`` is the driver's ``Capabilities.firewall``: a driver whose traffic never passes
    a host interface netd filters (macvlan, ipvlan) refuses ``enable_icc`` and the other
    firewall keys instead of accepting and ignoring them.
    """

    driver: str
    own: tuple[OptionDef, ...] = ()
    firewall: bool = True
    # The network-wide keys it takes; None: all of them (an IPAM-only network takes ``dns``).
    network: tuple[str, ...] | None = None
    # Canonical keys the driver refuses with its reason (macvlan: ``bridge``, "there is no
    # bridge on this driver..."), instead of calling them unknown.
    refused: tuple[tuple[str, str], ...] = ()
    # Keys it does not declare are its own, kept as given and checked elsewhere (an external
    # driver's plugin); False: they are refused as unknown.
    open: bool = False

    def accepted(self) -> dict[str, OptionDef]:
        """Every canonical key this driver takes, its own first, by canonical name."""
        out = {o.key: o for o in self.own}
        for opt in COMMON_OPTIONS:
            if opt.scope == "firewall" and not self.firewall:
                continue
            if opt.scope == "network" and self.network is not None and opt.key not in self.network:
                continue
            out.setdefault(opt.key, opt)
        return out

    def known(self) -> list[str]:
        """Every key a user may write: canonical ones first, then the Docker aliases."""
        accepted = self.accepted()
        return [*accepted, *(a for a, key in DOCKER_ALIASES.items() if key in accepted)]


def _empty() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True)
class FirewallOptions:
    """The firewall keys, typed, with Docker's defaults."""

    enable_icc: bool = True
    enable_ip_masquerade: bool = True
    host_ipv4: ipaddress.IPv4Address | None = None
    host_ipv6: ipaddress.IPv6Address | None = None
    isolate: bool = False
    anti_spoof: bool = False


@dataclass(frozen=True)
class NetworkOptions:
    """A network's options, typed; built by :func:`parse_options` or :func:`stored_options`.

    ``canonical`` is what the store keeps (only the keys given, canonical names, normalised
    strings); every typed field is read from it, so two objects with equal ``canonical`` are
    equal. ``driver`` holds the driver's own keys (``bridge``; ``parent``...).
    """

    dns: bool = True
    dns_servers: tuple[DnsServer, ...] = ()
    dns_forward_internal: bool = False
    mtu: int | None = None
    firewall: FirewallOptions = field(default_factory=FirewallOptions)
    driver: Mapping[str, str] = field(default_factory=_empty)
    canonical: Mapping[str, str] = field(default_factory=_empty)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.canonical.items())))

    def __reduce__(self) -> tuple[object, tuple[dict[str, str]]]:
        # Copied and pickled as its canonical map (a mappingproxy cannot be pickled).
        return (stored_options, (dict(self.canonical),))

    def as_dict(self) -> dict[str, str]:
        """The canonical string map (``Network.options``), a fresh copy."""
        return dict(self.canonical)


def _build(canonical: dict[str, str]) -> NetworkOptions:
    """The typed object of an already normalised canonical map."""

    def flag(key: str, default: bool) -> bool:
        return canonical[key] == "true" if key in canonical else default

    def addr(key: str) -> IPAddress | None:
        return ipaddress.ip_address(canonical[key]) if key in canonical else None

    host4, host6 = addr("host_ipv4"), addr("host_ipv6")
    servers = canonical.get("dns_servers", "")
    return NetworkOptions(
        dns=flag("dns", True),
        dns_servers=tuple(_server(s) for s in servers.split(",") if s),
        dns_forward_internal=flag("dns_forward_internal", False),
        mtu=int(canonical["mtu"]) if "mtu" in canonical else None,
        firewall=FirewallOptions(
            enable_icc=flag("enable_icc", True),
            enable_ip_masquerade=flag("enable_ip_masquerade", True),
            host_ipv4=host4 if isinstance(host4, ipaddress.IPv4Address) else None,
            host_ipv6=host6 if isinstance(host6, ipaddress.IPv6Address) else None,
            isolate=flag("isolate", False),
            anti_spoof=flag("anti_spoof", False),
        ),
        driver=MappingProxyType({k: v for k, v in canonical.items() if k not in _COMMON}),
        canonical=MappingProxyType(dict(canonical)),
    )


def _server(text: str) -> DnsServer:
    server = parse_dns_server(text)
    assert server is not None, text  # normalised by OptionDef.normalise
    return server


def _parse(raw: Mapping[str, str], keys: DriverKeys | None) -> NetworkOptions:
    """Shared by both entry points; ``keys`` None: a stored record, other keys are the
    driver's (checked by it when the network was created) and kept as they are."""
    accepted = keys.accepted() if keys is not None else dict(_COMMON)
    out: dict[str, str] = {}
    # Canonical spellings first, so a conflict names the alias.
    for key in sorted(raw, key=lambda k: (k in DOCKER_ALIASES, k)):
        value = raw[key]
        canonical = DOCKER_ALIASES.get(key, key)
        opt = accepted.get(canonical)
        if opt is None and keys is not None:
            _refuse(keys, key, canonical, value)
        if not isinstance(value, str):
            raise InvalidInput(f"options.{key}", value, "must be a string")
        if opt is None:
            # The driver's own: a stored record's by its canonical name, an open driver's
            # (an external plugin checks them) as given.
            out[canonical if keys is None else key] = value
            continue
        normalised = opt.normalise(key, value)
        if canonical in out and out[canonical] != normalised:
            raise InvalidInput(
                f"options.{key}", value, f"conflicts with options.{canonical}={out[canonical]!r}"
            )
        out[canonical] = normalised
    return _build(out)


def _refuse(keys: DriverKeys, key: str, canonical: str, value: str) -> None:
    """Raise the InvalidInput for a key ``keys`` does not take, unless its keys are open."""
    reasons = dict(keys.refused)
    if canonical in FIREWALL_KEYS and not keys.firewall:
        reasons.setdefault(
            canonical,
            "its containers' traffic does not pass a host interface that netd's firewall filters",
        )
    if canonical in reasons:
        raise InvalidInput(
            f"options.{key}", value, f"not supported by driver {keys.driver}: {reasons[canonical]}"
        )
    if keys.open and canonical not in _COMMON:
        return
    raise InvalidInput(
        f"options.{key}",
        value,
        f"unknown option for driver {keys.driver}; known: " + ", ".join(keys.known()),
    )


def parse_options(raw: Mapping[str, str], keys: DriverKeys) -> NetworkOptions:
    """Check a request's options for the driver declaring ``keys``; InvalidInput naming the
    first unknown key or bad value. A key given under both spellings must agree."""
    return _parse(raw, keys)


def stored_options(raw: Mapping[str, str]) -> NetworkOptions:
    """The typed options of a stored record (``Network.options``): the network-wide and
    firewall keys by the same rules as at create, the rest kept as the driver's."""
    return _parse(raw, None)

"""Read netd's firewall back: internal networks, NAT and ICC options, published ports.

``netd recover`` rebuilds networks from tagged bridges and endpoints from tagged veths; what
only the firewall knows comes from here. Both backends are read:

- nftables (``inet netd``/``bridge netd``): every element carries an owner comment,
  ``netd:<net12>`` for a network's, ``netd:<net12>:<container id>`` for a published port's.
  ``internal_ifs`` says internal, ``masq4/6`` and ``snat4/6`` say outbound NAT (and the SNAT
  address), ``no_icc_ports`` says ICC off (only while the network has a container), the
  ``pub*`` maps give host [address,] protocol, port → container address and port.
- iptables (NETD-* chains in ``iptables-save``/``ip6tables-save`` text): ``NETD-I-<net12>``
  says internal, ``-s <subnet> ! -o <bridge> -j MASQUERADE|SNAT`` outbound NAT,
  ``-i <br> -o <br> ... ! --ctstate DNAT -j DROP`` ICC off (not to be confused with the
  direct-routing drop ``! -i <br> -o <br> ...``, which follows from outbound NAT and says
  nothing new), and each NETD-DNAT rule (commented ``netd:<container id>``) one published
  port.

The parsers are pure (``parse_nft``, ``parse_iptables_save``); :func:`read_firewall` lists the
kernel's tables or chains and never changes them. This module does not build records.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FirewallError
from ..model import IPAddress, PortMapping
from . import ruleset
from .policy import PROTOCOLS


@dataclass(frozen=True)
class PublishedPort:
    """One DNAT read back: ``mapping`` forwards to ``dest`` of container ``owner``.

    ``net12`` is the owning network's id prefix when the rule says it (nftables comments do,
    iptables comments carry the container id only; ``owner`` may then be cut to 64 chars).
    """

    owner: str
    net12: str | None
    dest: IPAddress
    mapping: PortMapping


@dataclass
class NetworkFacts:
    """What the firewall says about one network; ``nat`` maps 4/6 to "masquerade" or an address."""

    internal: bool = False
    icc_off: bool = False
    nat: dict[int, str] = field(default_factory=dict)


@dataclass
class FirewallFacts:
    """Everything read back, networks keyed by 12-character id prefix."""

    backend: str = ""  # "nftables", "iptables", or "" when netd's rules were not found
    networks: dict[str, NetworkFacts] = field(default_factory=dict)
    ports: list[PublishedPort] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def network(self, net12: str) -> NetworkFacts:
        """The facts of one network (created empty on first use)."""
        return self.networks.setdefault(net12, NetworkFacts())


# --- nftables --------------------------------------------------------------------------------


def _owner(elem: Any) -> tuple[str, str] | None:
    """(net12, container id or "") from an element's ``netd:...`` comment."""
    if isinstance(elem, list):
        elem = elem[0]
    comment = elem.get("elem", {}).get("comment", "") if isinstance(elem, dict) else ""
    parts = str(comment or "").split(":", 2)
    if len(parts) < 2 or parts[0] != "netd" or not parts[1]:
        return None
    return parts[1], parts[2] if len(parts) == 3 else ""


def _key(elem: Any) -> Any:
    """The key value of a listed element (``{"elem": {"val": ...}}`` unwrapped)."""
    if isinstance(elem, list):
        elem = elem[0]
    if isinstance(elem, dict) and "elem" in elem:
        return elem["elem"].get("val")
    return elem


def _concat(value: Any) -> list[Any]:
    return list(value["concat"]) if isinstance(value, dict) and "concat" in value else [value]


def _port_of(
    key: list[Any], version: int, dest: Any, dest_port: Any, owner: tuple[str, str]
) -> PublishedPort:
    """A PublishedPort from a ``pub*`` map key ([host ip,] proto, port) and its two data."""
    host_ip = ipaddress.ip_address(key[0]) if len(key) == 3 else None
    proto, port = key[-2], key[-1]
    if proto not in PROTOCOLS or (host_ip is not None and host_ip.version != version):
        raise ValueError(f"unexpected key {key!r}")
    mapping = PortMapping(int(port), int(dest_port), proto, host_ip)
    return PublishedPort(owner[1], owner[0], ipaddress.ip_address(dest), mapping)


def parse_nft(listing: Iterable[dict[str, Any]]) -> FirewallFacts:
    """Facts from a libnftables JSON listing of ``inet netd`` and ``bridge netd``."""
    facts = FirewallFacts(backend="nftables")
    sets: dict[str, list[Any]] = {}
    for obj in listing:
        body = obj.get("set") or obj.get("map")
        if body is not None and body.get("table") == ruleset.TABLE:
            sets[body["name"]] = list(body.get("elem", []))
    for elem in sets.get("internal_ifs", []):
        if (owner := _owner(elem)) is not None:
            facts.network(owner[0]).internal = True
    for elem in sets.get("no_icc_ports", []):
        if (owner := _owner(elem)) is not None:
            facts.network(owner[0]).icc_off = True
    for v in (4, 6):
        for elem in sets.get(f"masq{v}", []):
            if (owner := _owner(elem)) is not None:
                facts.network(owner[0]).nat[v] = "masquerade"
        for elem in sets.get(f"snat{v}", []):
            if (owner := _owner(elem)) is not None and isinstance(elem, list):
                facts.network(owner[0]).nat[v] = str(ipaddress.ip_address(elem[1]))
        for kind in ("any", "ip"):
            name = f"pub{v}_{kind}"
            ports = {
                repr(_key(e)): e[1] for e in sets.get(f"{name}_port", []) if isinstance(e, list)
            }
            for elem in sets.get(name, []):
                owner = _owner(elem)
                dest_port = ports.get(repr(_key(elem)))
                if owner is None or not owner[1] or dest_port is None or not isinstance(elem, list):
                    facts.problems.append(f"{name}: element {elem!r} has no owner or no port")
                    continue
                try:
                    facts.ports.append(_port_of(_concat(_key(elem)), v, elem[1], dest_port, owner))
                except (ValueError, TypeError) as exc:
                    facts.problems.append(f"{name}: element {elem!r}: {exc}")
    return facts


# --- iptables --------------------------------------------------------------------------------


def _dnat(words: list[str], version: int) -> PublishedPort:
    """A PublishedPort from one ``-A NETD-DNAT ...`` rule split into words."""
    opts: dict[str, str] = {}
    for i, word in enumerate(words[:-1]):
        if word in ("-d", "-p", "--dport", "--comment", "--to-destination"):
            opts[word] = words[i + 1]
    host_ip = ipaddress.ip_interface(opts["-d"]).ip if "-d" in opts else None
    to = opts["--to-destination"]
    addr, _, port = to.rpartition(":")
    dest = ipaddress.ip_address(addr.strip("[]"))
    comment = opts.get("--comment", "")
    if not comment.startswith("netd:") or dest.version != version or opts["-p"] not in PROTOCOLS:
        raise ValueError("not a netd DNAT rule")
    mapping = PortMapping(int(opts["--dport"]), int(port), opts["-p"], host_ip)  # type: ignore[arg-type]
    return PublishedPort(comment[len("netd:") :], None, dest, mapping)


def parse_iptables_save(texts: dict[int, str], bridges: dict[str, str]) -> FirewallFacts:
    """Facts from ``iptables-save`` (4) and ``ip6tables-save`` (6) text.

    ``bridges`` maps a bridge name to its network's id prefix: iptables rules name bridges,
    not networks.
    """
    facts = FirewallFacts(backend="iptables")
    for version, text in sorted(texts.items()):
        for line in text.splitlines():
            if line.startswith(":NETD-I-"):
                facts.network(line[len(":NETD-I-") :].split()[0]).internal = True
            if not line.startswith("-A NETD-"):
                continue
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            chain = words[1]
            opt = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("-")}
            negated = {w for i, w in enumerate(words[1:], 1) if words[i - 1] == "!"}
            bridge = opt.get("-o") or opt.get("-i")
            net12 = bridges.get(bridge or "")
            if chain == "NETD-DNAT" and "DNAT" in words:
                try:
                    facts.ports.append(_dnat(words, version))
                except (KeyError, ValueError) as exc:
                    facts.problems.append(f"rule {line!r}: {exc}")
            elif net12 is None:
                continue
            elif chain == "NETD-FORWARD" and opt.get("-i") == opt.get("-o") and "!" in words:
                # ICC off is "-i br -o br ... ! --ctstate DNAT -j DROP"; the direct-routing
                # drop "! -i br -o br ..." of every NATed network is not.
                if words[-2:] == ["-j", "DROP"] and "DNAT" in words and "-i" not in negated:
                    facts.network(net12).icc_off = True
            elif chain == "NETD-POSTROUTING" and "!" in words and "DNAT" not in words:
                target = opt.get("--to-source") or "masquerade"
                facts.network(net12).nat[version] = target
    return facts


# --- reading the kernel -------------------------------------------------------------------------


def _list_nft() -> list[dict[str, Any]] | None:
    from .nft import list_tables, load_nftables

    listing, families = list_tables(load_nftables())
    return listing if ruleset.INET in families else None


def _iptables_save() -> dict[int, str] | None:
    from .iptables_tools import VARIANTS, iptables_available, run_tool

    if not iptables_available():
        return None
    texts = {
        version: run_tool([f"{tool}-save"], "reading netd's iptables chains")
        for version, tool in zip((4, 6), VARIANTS["auto"], strict=True)
    }
    return texts if any(":NETD-" in t for t in texts.values()) else None


def read_firewall(bridges: dict[str, str]) -> FirewallFacts:
    """netd's nftables tables if present, else its iptables chains; ``backend=""`` if neither.

    Only lists; FirewallError if a tool fails. ``bridges`` is for the iptables reading.
    """
    problems: list[str] = []
    try:
        listing = _list_nft()
    except FirewallError as exc:
        listing, problems = None, [str(exc)]
    if listing is not None:
        return parse_nft(listing)
    texts = _iptables_save()
    if texts is not None:
        return parse_iptables_save(texts, bridges)
    return FirewallFacts(problems=problems)

"""Validation of the networking fields of ``services.<name>`` (pure).

Turns one service mapping into a :class:`Service`: its attachments (list or map form, ordered
by ``gw_priority`` then ``priority`` descending, then as written, so the first one gives the
default route), ``network_mode``, replicas (``scale`` / ``deploy.replicas``), names, DNS
settings, ``extra_hosts`` and ports. Static addresses are checked against the compose file's own
subnets here; against the daemon's networks in :mod:`netd.compose.plan`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from ..errors import InvalidInput
from ..names import check_dns_name, check_ifname
from .model import Attachment, NetworkDef, Port, Service
from .parse import ATTACH_KEYS, _address, _at, _Ctx, _int, _map, _strings
from .ports import parse_expose, parse_port
from .source import LocDict, Where, position

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}\Z")
_SERVICE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]*\Z")
MAX_REPLICAS = 64  # each replica is a network namespace; more is surely a typo here


def _dns_name(c: _Ctx, value: Any) -> str:
    try:
        return check_dns_name(str(value))
    except InvalidInput as exc:
        raise c.fail(value, exc.rule) from None


def _hostname(c: _Ctx, value: Any) -> str:
    name = _dns_name(c, value)
    if len(name) >= 64:  # HOST_NAME_MAX: sethostname() in the sandbox's UTS namespace
        raise c.fail(value, "is longer than 63 characters (HOST_NAME_MAX)")
    return name


def _in_subnets(c: _Ctx, addr: str, net: NetworkDef) -> None:
    subnets = [ipaddress.ip_network(s.subnet) for s in net.ipam if s.subnet]
    ip = ipaddress.ip_address(addr)
    same = [s for s in subnets if s.version == ip.version]
    if same and not any(ip in s for s in same):
        shown = ", ".join(str(s) for s in same)
        raise c.fail(addr, f'is not in any subnet of network "{net.key}" ({shown})')


def _attachment(
    svc: dict[Any, Any], nets_raw: Any, key: str, networks: dict[str, NetworkDef], path: str
) -> Attachment:
    c = _Ctx(nets_raw, key, f"{path}.{key}")
    if key not in networks:
        raise c.fail(None, "is not defined in the top-level networks")
    raw = nets_raw.get(key) if isinstance(nets_raw, dict) else None
    raw = raw or {}
    if not isinstance(raw, dict):
        raise c.fail(raw, "must be a mapping")
    sub = f"{path}.{key}"
    for k in raw:
        if k not in ATTACH_KEYS and not str(k).startswith("x-"):
            raise _at(raw, k, sub).fail(None, "is not a service network attribute")
    net = networks[key]
    kw: dict[str, Any] = {}
    for field, version in (("ipv4_address", 4), ("ipv6_address", 6)):
        if raw.get(field) is not None:
            fc = _at(raw, field, sub)
            kw[field] = _address(fc, raw[field], version)
            if version == 6 and not net.enable_ipv6 and not net.external:
                raise fc.fail(raw[field], f'needs enable_ipv6 on network "{key}"')
            _in_subnets(fc, kw[field], net)
    if raw.get("mac_address") is not None:
        mc = _at(raw, "mac_address", sub)
        if not _MAC.match(str(raw["mac_address"])):
            raise mc.fail(raw["mac_address"], "is not a MAC address (xx:xx:xx:xx:xx:xx)")
        kw["mac_address"] = str(raw["mac_address"]).lower().replace("-", ":")
    if raw.get("interface_name") is not None:
        ic = _at(raw, "interface_name", sub)
        try:
            kw["interface_name"] = check_ifname(str(raw["interface_name"]))
        except InvalidInput as exc:
            raise ic.fail(raw["interface_name"], exc.rule) from None
    aliases = _strings(_at(raw, "aliases", sub), raw.get("aliases"))
    kw["aliases"] = tuple(
        _dns_name(_Ctx(raw.get("aliases"), i, f"{sub}.aliases[{i}]"), a)
        for i, a in enumerate(aliases)
    )
    for field in ("priority", "gw_priority"):
        if raw.get(field) is not None:
            kw[field] = _int(_at(raw, field, sub), raw[field])
    lls = _strings(_at(raw, "link_local_ips", sub), raw.get("link_local_ips"))
    for i, ip in enumerate(lls):
        lc = _Ctx(raw.get("link_local_ips"), i, f"{sub}.link_local_ips[{i}]")
        try:
            parsed = ipaddress.ip_address(ip)
        except ValueError:
            raise lc.fail(ip, "is not an IP address") from None
        if not parsed.is_link_local:
            raise lc.fail(ip, "is not a link-local address (169.254.0.0/16 or fe80::/10)")
    kw["link_local_ips"] = lls
    return Attachment(network=key, **kw)


def _replicas(svc: dict[Any, Any], path: str) -> int:
    deploy = svc.get("deploy") or {}
    n = 1
    if isinstance(deploy, dict) and deploy.get("replicas") is not None:
        n = _int(_at(deploy, "replicas", f"{path}.deploy"), deploy["replicas"], 0)
    if svc.get("scale") is not None:
        n = _int(_at(svc, "scale", path), svc["scale"], 0)
    if n > MAX_REPLICAS:
        raise _at(svc, "scale", path).fail(n, f"netd compose supports at most {MAX_REPLICAS}")
    return n


def _extra_hosts(svc: dict[Any, Any], path: str) -> tuple[tuple[str, str], ...]:
    c = _at(svc, "extra_hosts", path)
    out = []
    for host, ips in _map(c, svc.get("extra_hosts"), "extra_hosts").items():
        hc = (
            _at(svc["extra_hosts"], host, f"{path}.extra_hosts")
            if isinstance(svc["extra_hosts"], dict)
            else c
        )
        for ip in ips if isinstance(ips, list) else [ips]:
            text = str(ip or "").strip("[]")
            if text != "host-gateway":
                try:
                    text = str(ipaddress.ip_address(text))
                except ValueError:
                    raise hc.fail(f"{host}:{ip}", f"{ip!r} is not an IP address") from None
            out.append((_dns_name(hc, host), text))
    return tuple(out)


def _record(positions: dict[str, Where], container: Any, key: Any, path: str) -> None:
    where = position(container, key)
    if where is not None:
        positions[path] = where


def _positions(svc: dict[Any, Any], path: str, positions: dict[str, Where]) -> None:
    """Where the service's networking keys were written (for errors raised later)."""
    for key in ("ports", "networks", "hostname", "mac_address", "dns", "extra_hosts"):
        if key in svc:
            _record(positions, svc, key, f"{path}.{key}")
    if isinstance(svc.get("networks"), dict):
        for net, raw in svc["networks"].items():
            _record(positions, svc["networks"], net, f"{path}.networks.{net}")
            for k in raw if isinstance(raw, dict) else ():
                _record(positions, raw, k, f"{path}.networks.{net}.{k}")
    if isinstance(svc.get("ports"), list):
        for i in range(len(svc["ports"])):
            _record(positions, svc["ports"], i, f"{path}.ports[{i}]")


def _profiles(svc: dict[Any, Any], path: str) -> tuple[str, ...]:
    # Names are not checked against the documented pattern: compose-go does not either, and
    # public files carry `profiles: [""]` (a service no profile flag can enable).
    return _strings(_at(svc, "profiles", path), svc.get("profiles"))


def _depends_on(svc: dict[Any, Any], path: str) -> tuple[tuple[str, bool], ...]:
    raw = svc.get("depends_on")
    c = _at(svc, "depends_on", path)
    if raw is None:
        return ()
    if isinstance(raw, list):
        return tuple((name, True) for name in _strings(c, raw))
    if not isinstance(raw, dict):
        raise c.fail(raw, "must be a list or a mapping")
    out = []
    for name, spec in raw.items():
        sc = _at(raw, name, f"{path}.depends_on")
        if spec is not None and not isinstance(spec, dict):
            raise sc.fail(spec, "must be a mapping (condition, required, restart)")
        required = (spec or {}).get("required", True)
        if not isinstance(required, bool):
            raise _at(spec, "required", f"{path}.depends_on.{name}").fail(
                required, "must be true or false"
            )
        out.append((str(name), required))
    return tuple(out)


def _links(svc: dict[Any, Any], path: str) -> tuple[tuple[str, str], ...]:
    out = []
    raw = svc.get("links")
    for i, text in enumerate(_strings(_at(svc, "links", path), raw)):
        target, _, alias = text.partition(":")
        lc = _Ctx(raw, i, f"{path}.links[{i}]")
        if not _SERVICE.match(target):
            raise lc.fail(text, "must be SERVICE or SERVICE:ALIAS")
        out.append((target, _dns_name(lc, alias or target)))
    return tuple(out)


def _check_replica_ports(svc: dict[Any, Any], path: str, ports: list[Port], n: int) -> None:
    """Every replica publishes its own host port: a fixed one cannot serve two replicas."""
    if n < 2:
        return
    raw_ports = svc.get("ports") or []
    for i, p in enumerate(raw_ports):
        pc = _Ctx(raw_ports, i, f"{path}.ports[{i}]")
        for port in parse_port(p, position(raw_ports, i), f"{path}.ports[{i}]"):
            if port.host_port is None:
                continue
            if port.host_port_end is None:
                raise pc.fail(
                    p,
                    f"host port {port.host_port} cannot be published by {n} replicas (each "
                    f'needs its own: give a range, e.g. "{port.host_port}-'
                    f'{port.host_port + n - 1}:{port.container_port}")',
                )
            if port.host_port_end - port.host_port + 1 < n:
                raise pc.fail(
                    p,
                    f"host port range {port.host_port}-{port.host_port_end} has fewer ports "
                    f"than the {n} replicas",
                )


def parse_service(
    services: dict[Any, Any],
    name: str,
    networks: dict[str, NetworkDef],
    used: set[str],
    positions: dict[str, Where] | None = None,
) -> Service:
    """One service; adds the network keys it uses to ``used``, key positions to ``positions``."""
    path = f"services.{name}"
    c = _at(services, name, "services")
    if not _SERVICE.match(name):
        raise c.fail(name, "is not a valid service name ([a-zA-Z0-9][a-zA-Z0-9._-]*)")
    svc = services[name]
    if svc is None:
        svc = LocDict()
    if not isinstance(svc, dict):
        raise c.fail(svc, "must be a mapping")
    mode = svc.get("network_mode")
    nets_raw = svc.get("networks")
    attachments: list[Attachment] = []
    if mode is not None:
        mc = _at(svc, "network_mode", path)
        mode = str(mode)
        if nets_raw:
            raise mc.fail(mode, "cannot be combined with networks")
        if mode == "bridge":
            mode = None  # compose's "bridge" is Docker's default network: here the project's
        elif mode.startswith("container:"):
            raise mc.fail(mode, "is not supported (netd has no containers); use service:NAME")
        elif mode not in ("none", "host") and not mode.startswith("service:"):
            raise mc.fail(mode, "must be none, host, bridge or service:NAME")
    if mode is None:
        if not nets_raw:
            nets_raw = LocDict({"default": None})
        if not isinstance(nets_raw, (dict, list)):
            raise _at(svc, "networks", path).fail(nets_raw, "must be a list or a mapping")
        keys = list(nets_raw) if isinstance(nets_raw, dict) else [str(k) for k in nets_raw]
        mapped = nets_raw if isinstance(nets_raw, dict) else _listed(nets_raw)
        for key in keys:
            attachments.append(_attachment(svc, mapped, str(key), networks, f"{path}.networks"))
            used.add(str(key))
        order = {a.network: i for i, a in enumerate(attachments)}
        attachments.sort(key=lambda a: (-a.gw_priority, -a.priority, order[a.network]))
    if svc.get("mac_address") is not None and attachments and not attachments[0].mac_address:
        first = _attachment(
            svc,
            LocDict({attachments[0].network: {"mac_address": svc["mac_address"]}}),
            attachments[0].network,
            networks,
            path,
        )
        attachments[0] = Attachment(**{**attachments[0].__dict__, "mac_address": first.mac_address})
    ports: list[Port] = []
    raw_ports = svc.get("ports") or []
    if not isinstance(raw_ports, list):
        raise _at(svc, "ports", path).fail(raw_ports, "must be a list")
    for i, p in enumerate(raw_ports):
        ports += parse_port(p, position(raw_ports, i), f"{path}.ports[{i}]")
    if any(p.host_port for p in ports) and mode is not None and mode != "host":
        raise _at(svc, "ports", path).fail(None, f"cannot publish ports with network_mode {mode}")
    published = any(p.host_port for p in ports) and mode is None
    if published and all(networks[a.network].internal for a in attachments):
        # Docker publishes nothing on an internal network: say so rather than show ports
        # in `ps` that nothing answers on.
        shown = ", ".join(a.network for a in attachments)
        raise _at(svc, "ports", path).fail(
            None,
            f"cannot be published: every network of service {name!r} is internal ({shown}); "
            "attach it to a non-internal network too",
        )
    expose: list[str] = []
    raw_expose = svc.get("expose") or []
    if not isinstance(raw_expose, list):  # `expose: 5000` raised TypeError: found by fuzzing
        raise _at(svc, "expose", path).fail(raw_expose, "must be a list")
    for i, e in enumerate(raw_expose):
        expose += parse_expose(e, position(raw_expose, i), f"{path}.expose[{i}]")
    replicas = _replicas(svc, path)
    _check_replica_ports(svc, path, ports, replicas)
    if positions is not None:
        _record(positions, services, name, path)
        _positions(svc, path, positions)
    container_name = svc.get("container_name")
    if container_name is not None:
        container_name = _dns_name(_at(svc, "container_name", path), container_name)
        if replicas > 1:
            raise _at(svc, "container_name", path).fail(
                container_name, "cannot be used with more than one replica"
            )
    hostname = svc.get("hostname")
    domainname = svc.get("domainname")
    dns = _strings(_at(svc, "dns", path), svc.get("dns"))
    for i, server in enumerate(dns):
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise _Ctx(svc.get("dns"), i, f"{path}.dns").fail(
                server, "is not an IP address"
            ) from None
    search = _strings(_at(svc, "dns_search", path), svc.get("dns_search"))
    return Service(
        name=name,
        replicas=replicas,
        network_mode=mode,
        attachments=tuple(attachments),
        container_name=container_name,
        hostname=_hostname(_at(svc, "hostname", path), hostname) if hostname else None,
        domainname=_dns_name(_at(svc, "domainname", path), domainname) if domainname else None,
        dns=tuple(str(ipaddress.ip_address(s)) for s in dns),
        dns_search=tuple(_dns_name(_at(svc, "dns_search", path), s) for s in search),
        dns_opt=_strings(_at(svc, "dns_opt", path), svc.get("dns_opt")),
        extra_hosts=_extra_hosts(svc, path),
        ports=tuple(ports),
        expose=tuple(expose),
        profiles=_profiles(svc, path),
        depends_on=_depends_on(svc, path),
        links=_links(svc, path),
    )


def _listed(items: Any) -> LocDict:
    out = LocDict(where=getattr(items, "where", None))
    for i, k in enumerate(items):
        out[str(k)] = None
        where = position(items, i)
        if where:
            out.lines[str(k)] = where
    return out


def check_shared(services: dict[str, Service], raw: dict[Any, Any]) -> None:
    """``network_mode: service:NAME`` must name a service that has its own sandbox."""
    for svc in services.values():
        target = svc.shares
        if target is None:
            continue
        c = _at(raw[svc.name], "network_mode", f"services.{svc.name}")
        if target not in services:
            raise c.fail(svc.network_mode, f"service {target!r} is not defined")
        if services[target].shares is not None or services[target].network_mode == "host":
            raise c.fail(svc.network_mode, f"service {target!r} has no sandbox of its own")
        if services[target].replicas == 0:
            raise c.fail(svc.network_mode, f"service {target!r} has no replicas")


def link_warnings(services: dict[str, Service]) -> list[str]:
    """A ``links`` entry whose two services share no network cannot resolve: say so."""

    def nets(name: str) -> set[str]:
        svc = services[name]
        owner = services.get(svc.shares or "", svc)
        return {a.network for a in owner.attachments}

    out = []
    for svc in services.values():
        for target, alias in svc.links:
            if target in services and not nets(svc.name) & nets(target):
                out.append(
                    f"services.{svc.name}.links: {target}:{alias}: {svc.name!r} and "
                    f"{target!r} share no network, so {alias!r} cannot resolve"
                )
    return out

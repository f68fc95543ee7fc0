"""Parse one CNI call (environment, CNI_ARGS, plugin config, runtimeConfig) into typed records.

Pure: no I/O, no daemon state. Every failure is a :class:`~netd.cni.spec.CniError` carrying the
spec's code (1 version, 2 unsupported field, 4 environment, 6 decode, 7 invalid config) and a
message naming the field and the value. The inline network definition lives in
``netd.cni.netdef``; turning records into results in ``netd.cni.result``.

Unknown fields pass through (are ignored), as the spec asks of ``args`` and ``runtimeConfig``;
unknown CNI_ARGS keys are an error unless ``IgnoreUnknown`` is set, as in libcni's LoadArgs.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput
from ..model import AttachRequest, PortMapping
from ..names import check_container_id, check_dns_name, check_ifname, check_network_name
from . import spec
from .spec import CniError

# The runtime-provided verbs that carry an attachment key (GC and STATUS act on the network).
ATTACHMENT_COMMANDS = ("ADD", "DEL", "CHECK")
# CNI_ARGS keys netd understands (CONVENTIONS.md; the K8S_* keys are what kubelet, CRI-O,
# containerd and Podman send).
KNOWN_CNI_ARGS = frozenset(
    {
        "IgnoreUnknown",
        "IP",
        "MAC",
        "K8S_POD_NAME",
        "K8S_POD_NAMESPACE",
        "K8S_POD_INFRA_CONTAINER_ID",
        "K8S_POD_UID",
    }
)
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")
_PROTOCOLS = ("tcp", "udp", "sctp")


def invalid(code: int, field: str, value: object, rule: str) -> CniError:
    """A CniError worded like InvalidInput: ``invalid <field> <value>: <rule>``."""
    return CniError(code, f"invalid {field} {value!r}: {rule}")


@dataclass(frozen=True)
class CniCall:
    """One call after the generic checks: verb, spoken version, attachment key, plugin config."""

    command: str
    version: str
    network: str
    container_id: str
    ifname: str
    netns: str
    cni_args: str
    config: dict[str, Any]
    ipam_only: bool


@dataclass(frozen=True)
class CniArgs:
    """What netd reads from CNI_ARGS."""

    ips: tuple[str, ...] = ()
    mac: str | None = None
    pod_name: str | None = None
    pod_namespace: str | None = None


@dataclass(frozen=True)
class RuntimeOptions:
    """Per-container options: runtimeConfig capabilities, ``args.cni`` and CNI_ARGS merged."""

    static_ips: tuple[str, ...] = ()
    mac: str | None = None
    name: str | None = None
    aliases: tuple[str, ...] = ()
    port_mappings: tuple[PortMapping, ...] = ()
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()


def check_version(config: dict[str, Any], command: str) -> str:
    """The config's ``cniVersion`` if netd speaks it and it allows ``command``; else code 1."""
    version = config.get("cniVersion")
    supported = ", ".join(spec.SUPPORTED_VERSIONS)
    if not isinstance(version, str) or not version:
        raise CniError(
            spec.INCOMPATIBLE_VERSION,
            f"CNI {command}: the config has no cniVersion; netd supports {supported}",
        )
    if version not in spec.SUPPORTED_VERSIONS:
        raise CniError(
            spec.INCOMPATIBLE_VERSION,
            f"CNI {command}: unsupported cniVersion {version!r}; netd supports {supported}",
        )
    # CHECK appeared in 0.4.0, GC and STATUS in 1.1.0 (as libcni's skel enforces).
    needs = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}.get(command)
    if needs and spec.version_key(version) < spec.version_key(needs):
        raise CniError(
            spec.INCOMPATIBLE_VERSION,
            f"CNI {command} needs cniVersion {needs} or later; the config says {version}",
        )
    return version


def parse_call(call: object) -> CniCall:
    """Check the forwarded call's shape, the version and the environment; flatten the config."""
    if not isinstance(call, dict):
        raise CniError(spec.DECODE_FAILURE, "CNI call: expected a JSON object")
    command = call.get("command")
    if command not in spec.COMMANDS:
        raise invalid(
            spec.INVALID_ENVIRONMENT,
            "CNI_COMMAND",
            command,
            f"expected one of {', '.join(spec.COMMANDS)}",
        )
    raw_config = call.get("config")
    if not isinstance(raw_config, dict):
        raise CniError(
            spec.DECODE_FAILURE, f"CNI {command}: the network config must be a JSON object"
        )
    config = spec.flatten_config(raw_config)
    if command == "VERSION":
        return CniCall(command, spec.reply_version(config), "", "", "", "", "", config, False)
    version = check_version(config, command)
    try:
        network = check_network_name(config.get("name"), "name")
    except InvalidInput as exc:
        raise CniError(spec.INVALID_CONFIG, f"CNI {command}: network config {exc.message}") from exc
    container_id = ifname = netns = ""
    if command in ATTACHMENT_COMMANDS:
        container_id = _env(call, "containerId", "CNI_CONTAINERID", check_container_id)
        ifname = _env(call, "ifname", "CNI_IFNAME", check_ifname)
        netns = call.get("netns") or ""
        if not isinstance(netns, str) or (netns and not netns.startswith("/")):
            raise invalid(spec.INVALID_ENVIRONMENT, "CNI_NETNS", netns, "must be an absolute path")
        if not netns and command != "DEL":  # containerd may DEL after the netns is gone
            raise CniError(spec.INVALID_ENVIRONMENT, f"CNI {command}: CNI_NETNS is required")
    cni_args = call.get("args") or ""
    if not isinstance(cni_args, str):
        raise invalid(spec.INVALID_ENVIRONMENT, "CNI_ARGS", cni_args, "must be a string")
    return CniCall(
        command=command,
        version=version,
        network=network,
        container_id=container_id,
        ifname=ifname,
        netns=netns,
        cni_args=cni_args,
        config=config,
        ipam_only=_ipam_only(config),
    )


def _env(call: dict[str, Any], key: str, var: str, check: Any) -> str:
    value = call.get(key)
    if not value:
        raise CniError(spec.INVALID_ENVIRONMENT, f"required env variable {var} is missing")
    try:
        return str(check(value, var))
    except InvalidInput as exc:
        raise CniError(spec.INVALID_ENVIRONMENT, exc.message) from exc


def _ipam_only(config: dict[str, Any]) -> bool:
    """True when another main plugin delegates IPAM to netd (``"ipam": {"type": "netd"}``)."""
    if config.get("type") == "netd":
        return False
    ipam = config.get("ipam")
    if isinstance(ipam, dict) and ipam.get("type") == "netd":
        return True
    raise invalid(
        spec.INVALID_CONFIG,
        "type",
        config.get("type"),
        'netd runs as type "netd" or as an IPAM plugin ("ipam": {"type": "netd"})',
    )


def parse_cni_args(raw: str) -> CniArgs:
    """Parse ``K=V;K=V``; unknown keys are code 2 unless ``IgnoreUnknown`` is 1/true."""
    pairs: dict[str, str] = {}
    for item in filter(None, raw.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise invalid(spec.INVALID_ENVIRONMENT, "CNI_ARGS", raw, f"{item!r} is not KEY=VALUE")
        pairs[key] = value
    ignore_unknown = pairs.get("IgnoreUnknown", "").lower() in ("1", "true")
    unknown = sorted(set(pairs) - KNOWN_CNI_ARGS)
    if unknown and not ignore_unknown:
        raise CniError(
            spec.UNSUPPORTED_FIELD,
            f"unsupported CNI_ARGS key {unknown[0]!r} (value {pairs[unknown[0]]!r}); "
            "set IgnoreUnknown=1 to ignore keys netd does not know",
        )
    ips = tuple(ip for ip in pairs.get("IP", "").split(",") if ip)
    return CniArgs(
        ips=tuple(_static_ip("CNI_ARGS IP", ip) for ip in ips),
        mac=_mac("CNI_ARGS MAC", pairs["MAC"]) if pairs.get("MAC") else None,
        pod_name=pairs.get("K8S_POD_NAME") or None,
        pod_namespace=pairs.get("K8S_POD_NAMESPACE") or None,
    )


def _static_ip(field: str, value: object) -> str:
    """An address from ``ips``-style input: ``10.0.0.5`` or ``10.0.0.5/24`` (prefix ignored)."""
    if not isinstance(value, str):
        raise invalid(spec.INVALID_CONFIG, field, value, "must be an IP address string")
    try:
        return str(ipaddress.ip_interface(value).ip)
    except ValueError as exc:
        raise invalid(spec.INVALID_CONFIG, field, value, "not an IP address") from exc


def _mac(field: str, value: object) -> str:
    """A unicast MAC address, lower-cased."""
    if not isinstance(value, str) or not _MAC.match(value):
        raise invalid(spec.INVALID_CONFIG, field, value, "must be a MAC like 02:42:ac:11:00:02")
    if int(value[:2], 16) & 1:
        raise invalid(spec.INVALID_CONFIG, field, value, "a multicast MAC cannot name an interface")
    return value.lower()


def _strings(field: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(spec.INVALID_CONFIG, field, value, "must be a list of strings")
    return list(value)


def _port(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise invalid(spec.INVALID_CONFIG, field, value, "must be a port number 1-65535")
    return value


def parse_port_mappings(value: object) -> tuple[PortMapping, ...]:
    """``runtimeConfig.portMappings``: ``[{hostPort, containerPort, protocol, hostIP}]``."""
    field = "runtimeConfig.portMappings"
    if value is None:
        return ()
    if not isinstance(value, list):
        raise invalid(spec.INVALID_CONFIG, field, value, "must be a list of port mappings")
    out: list[PortMapping] = []
    for i, item in enumerate(value):
        at = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise invalid(spec.INVALID_CONFIG, at, item, "must be an object")
        protocol = item.get("protocol") or "tcp"
        if not isinstance(protocol, str) or protocol.lower() not in _PROTOCOLS:
            raise invalid(spec.INVALID_CONFIG, f"{at}.protocol", protocol, "tcp, udp or sctp")
        host_ip = item.get("hostIP") or None
        try:
            address = ipaddress.ip_address(host_ip) if host_ip is not None else None
            if not isinstance(host_ip, str | None):
                raise ValueError(host_ip)
        except ValueError as exc:
            raise invalid(
                spec.INVALID_CONFIG, f"{at}.hostIP", host_ip, "not an IP address"
            ) from exc
        out.append(
            PortMapping(
                host_port=_port(f"{at}.hostPort", item.get("hostPort")),
                container_port=_port(f"{at}.containerPort", item.get("containerPort")),
                protocol=protocol.lower(),  # type: ignore[arg-type]  # checked against _PROTOCOLS
                host_ip=address,
            )
        )
    return tuple(out)


def parse_aliases(value: object, network: str) -> tuple[str, ...]:
    """``runtimeConfig.aliases``: a list, or Podman's map of network name → list."""
    field = "runtimeConfig.aliases"
    if value is None:
        return ()
    if isinstance(value, dict):
        field = f"{field}.{network}"
        value = value.get(network, [])
    names = []
    for i, alias in enumerate(_strings(field, value)):
        try:
            name = check_dns_name(alias, f"{field}[{i}]")
        except InvalidInput as exc:
            raise CniError(spec.INVALID_CONFIG, exc.message) from exc
        if name not in names:
            names.append(name)
    return tuple(names)


def _dns(value: object) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """``runtimeConfig.dns``: ``{servers, searches, options}``."""
    field = "runtimeConfig.dns"
    if value is None:
        return (), (), ()
    if not isinstance(value, dict):
        raise invalid(spec.INVALID_CONFIG, field, value, "must be an object")
    servers = []
    for server in _strings(f"{field}.servers", value.get("servers", [])):
        try:
            servers.append(str(ipaddress.ip_address(server)))
        except ValueError as exc:
            raise invalid(spec.INVALID_CONFIG, f"{field}.servers", server, "not an IP") from exc
    searches = _strings(f"{field}.searches", value.get("searches", []))
    options = _strings(f"{field}.options", value.get("options", []))
    return tuple(servers), tuple(searches), tuple(options)


def parse_runtime_options(call: CniCall) -> RuntimeOptions:
    """Merge runtimeConfig, ``args.cni`` and CNI_ARGS into the per-container options."""
    runtime = call.config.get("runtimeConfig")
    runtime = {} if runtime is None else runtime
    if not isinstance(runtime, dict):
        raise invalid(spec.INVALID_CONFIG, "runtimeConfig", runtime, "must be an object")
    args = call.config.get("args") or {}
    cni = args.get("cni") if isinstance(args, dict) else None
    cni_args = parse_cni_args(call.cni_args)
    ips: list[str] = []
    sources = [("runtimeConfig.ips", runtime.get("ips"))]
    if isinstance(cni, dict):
        sources.append(("args.cni.ips", cni.get("ips")))
    for field, value in sources:
        if value is not None:
            ips += [_static_ip(field, v) for v in _strings(field, value)]
    ips += cni_args.ips
    mac = _mac("runtimeConfig.mac", runtime["mac"]) if runtime.get("mac") else cni_args.mac
    name = None
    if cni_args.pod_name:
        try:
            name = check_dns_name(cni_args.pod_name, "CNI_ARGS K8S_POD_NAME")
        except InvalidInput as exc:
            raise CniError(spec.INVALID_CONFIG, exc.message) from exc
    servers, searches, options = _dns(runtime.get("dns"))
    return RuntimeOptions(
        static_ips=tuple(dict.fromkeys(ips)),
        mac=mac,
        name=name,
        aliases=parse_aliases(runtime.get("aliases"), call.network),
        port_mappings=parse_port_mappings(runtime.get("portMappings")),
        dns_servers=servers,
        dns_searches=searches,
        dns_options=options,
    )


def attach_request(call: CniCall, options: RuntimeOptions) -> AttachRequest:
    """The backend request for an ADD."""
    return AttachRequest(
        network=call.network,
        container_id=call.container_id,
        ifname=call.ifname,
        netns=call.netns,
        name=options.name,
        aliases=options.aliases,
        static_ips=options.static_ips,
        mac=options.mac,
        port_mappings=options.port_mappings,
        dns_servers=options.dns_servers,
        origin="cni",
    )


def parse_valid_attachments(config: dict[str, Any]) -> set[tuple[str, str]]:
    """GC's ``cni.dev/valid-attachments`` (or the legacy ``cni.dev/attachments``)."""
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        if key in config:
            break
    else:
        # Without the list every attachment would look stale; refuse rather than guess.
        raise CniError(spec.INVALID_CONFIG, "CNI GC: the config has no cni.dev/valid-attachments")
    value = config[key]
    if not isinstance(value, list):
        raise invalid(spec.INVALID_CONFIG, key, value, "must be a list of {containerID, ifname}")
    valid = set()
    for i, item in enumerate(value):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("containerID"), str)
            or not isinstance(item.get("ifname"), str)
        ):
            raise invalid(
                spec.INVALID_CONFIG,
                f"{key}[{i}]",
                item,
                "must be an object with string containerID and ifname",
            )
        valid.add((item["containerID"], item["ifname"]))
    return valid

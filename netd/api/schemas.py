"""Request and response bodies of the HTTP API, as pydantic models.

Models validate shape, types and the syntax of every string (unknown fields are refused, so a
typo is an error rather than silently ignored); the patterns come from ``netd.api.formats`` and
are published in the OpenAPI document (``netd.api.openapi``) exactly as they are enforced, so a
request the document calls valid is never refused for its syntax. The rules of the request as a
whole (a subnet's host bits, overlaps, an address inside its subnet, an existing namespace)
are checked by the service, which raises InvalidInput naming the field; the field descriptions
say so.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from ..model import Endpoint, Network, to_json
from ..names import MAX_CONTAINER_ID, MAX_IFNAME, MAX_NETWORK_NAME, NAME_PATTERN
from ..spec import MAX_LABEL_LEN, MAX_LABELS
from .formats import (
    CIDR,
    DNS_SERVER,
    IP,
    MAC,
    MAX_PATH,
    NETNS_PATH,
    SUBNET,
    ZERO_MAC,
    anchored,
    builtin_options_schema,
)

_STRICT = ConfigDict(extra="forbid", str_max_length=4096)


def _not_zero_mac(value: str) -> str:
    if value.replace("-", ":").strip(":0") == "":
        raise ValueError("must not be all zeros")
    return value


NetworkName = Annotated[
    str, Field(min_length=1, max_length=MAX_NETWORK_NAME, pattern=anchored(NAME_PATTERN))
]
ContainerId = Annotated[
    str, Field(min_length=1, max_length=MAX_CONTAINER_ID, pattern=anchored(NAME_PATTERN))
]
IfName = Annotated[str, Field(min_length=1, max_length=MAX_IFNAME, pattern=anchored(NAME_PATTERN))]
NetnsPath = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_PATH,
        pattern=anchored(NETNS_PATH),
        description="absolute path of an existing network namespace file (e.g. /run/netns/x); "
        "not the daemon's own namespace nor the machine's initial one",
    ),
]
IpText = Annotated[str, Field(max_length=64, pattern=anchored(IP))]
Cidr = Annotated[str, Field(max_length=64, pattern=anchored(CIDR))]
Mac = Annotated[
    str,
    Field(
        pattern=anchored(MAC),
        json_schema_extra={"not": {"pattern": anchored(ZERO_MAC)}},
        description="a unicast MAC address, not all zeros",
    ),
    AfterValidator(_not_zero_mac),
]


class SubnetIn(BaseModel):
    """One subnet of a network create request."""

    # gateway, ip_range and aux_addresses live inside a subnet: without one they are refused.
    model_config = ConfigDict(
        extra="forbid",
        str_max_length=4096,
        json_schema_extra={
            "anyOf": [
                {"required": ["subnet"], "properties": {"subnet": {"type": "string"}}},
                {
                    "properties": {
                        "gateway": {"type": "null"},
                        "ip_range": {"type": "null"},
                        "aux_addresses": {"maxProperties": 0},
                    }
                },
            ]
        },
    )
    subnet: Annotated[str, Field(max_length=64, pattern=anchored(SUBNET))] | None = Field(
        None,
        examples=["10.90.0.0/24"],
        description="at most /30 (IPv4) or /126 (IPv6), with no host bits set; must not "
        "overlap another network or a host route; IPv6 needs ipv6: true, IPv4 needs ipv4: true",
    )
    gateway: IpText | None = Field(None, description="inside the subnet (needs subnet)")
    ip_range: Cidr | None = Field(None, description="inside the subnet (needs subnet)")
    aux_addresses: dict[Annotated[str, Field(min_length=1)], IpText] = Field(
        default_factory=dict,
        max_length=256,
        description="name → address reserved inside the subnet (not its gateway), each once",
    )


class NetworkCreate(BaseModel):
    """POST /v1/networks."""

    model_config = ConfigDict(
        extra="forbid",
        str_max_length=4096,
        # A network needs IPv4 or IPv6 (the service refuses ipv4: false without ipv6: true).
        json_schema_extra={
            "anyOf": [
                {"properties": {"ipv4": {"const": True}}},
                {"required": ["ipv6"], "properties": {"ipv6": {"const": True}}},
            ]
        },
    )
    name: NetworkName
    driver: str = Field(
        "bridge", max_length=64, description="one of the daemon's drivers (enum in the document)"
    )
    subnets: list[SubnetIn] = Field(default_factory=list, max_length=16)
    ipv6: bool = False
    ipv4: bool = True
    internal: bool = False
    options: Annotated[
        dict[str, str], Field(max_length=64, json_schema_extra=builtin_options_schema())
    ] = Field(default_factory=dict)
    labels: dict[
        Annotated[str, Field(min_length=1, max_length=MAX_LABEL_LEN)],
        Annotated[str, Field(max_length=MAX_LABEL_LEN)],
    ] = Field(default_factory=dict, max_length=MAX_LABELS)


class PortIn(BaseModel):
    """One published port (a range is expanded by the client or the CNI handler)."""

    model_config = _STRICT
    host_port: int = Field(..., ge=1, le=65535)
    container_port: int = Field(..., ge=1, le=65535)
    protocol: str = Field("tcp", pattern="^(tcp|udp|sctp)$")
    host_ip: IpText | None = None


class ConnectIn(BaseModel):
    """POST /v1/networks/{name}/connect: attach a namespace the caller manages."""

    model_config = _STRICT
    netns: NetnsPath
    container_id: ContainerId | None = None
    ifname: IfName | None = None
    name: str | None = Field(None, max_length=253)
    hostname: str | None = Field(None, max_length=253)
    aliases: list[str] = Field(default_factory=list, max_length=64)
    ips: list[Annotated[str, Field(max_length=64, pattern=anchored(f"{IP}|{CIDR}"))]] = Field(
        default_factory=list,
        max_length=8,
        description="static addresses, each inside one of the network's subnets, one per family",
    )
    mac: Mac | None = None
    publish: list[PortIn] = Field(default_factory=list, max_length=65536)
    dns_servers: list[Annotated[str, Field(max_length=64, pattern=anchored(DNS_SERVER))]] = Field(
        default_factory=list, max_length=8
    )


class DisconnectIn(BaseModel):
    """POST /v1/networks/{name}/disconnect: by container id or namespace path."""

    model_config = ConfigDict(
        extra="forbid",
        str_max_length=4096,
        json_schema_extra={
            "anyOf": [
                {"required": ["container_id"], "properties": {"container_id": {"type": "string"}}},
                {"required": ["netns"], "properties": {"netns": {"type": "string"}}},
            ]
        },
    )
    netns: NetnsPath | None = None
    container_id: ContainerId | None = None
    ifname: IfName | None = None


class CniCall(BaseModel):
    """POST /v1/cni: one CNI invocation forwarded by the plugin executable."""

    # netd.cni.request.decode_call enforces this shape (and refuses duplicated keys).
    model_config = ConfigDict(extra="forbid")
    command: str = Field(..., max_length=16)
    containerId: str = Field("", max_length=256)
    netns: str = Field("", max_length=4096)
    ifname: str = Field("", max_length=15)
    args: str = Field("", max_length=8192)
    path: str = Field("", max_length=8192)
    config: dict[str, Any]


class CniErrorOut(BaseModel):
    """A CNI error object (SPEC.md "Error"), answered with HTTP 422 by /v1/cni."""

    cniVersion: str
    code: int
    msg: str
    details: str | None = None


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: ``{"error": {...}}``."""

    class Detail(BaseModel):
        code: str
        message: str
        field: str | None = None
        value: Any = None

    error: Detail


class EndpointOut(BaseModel):
    """An endpoint as shown by inspect and returned by connect."""

    container_id: str
    ifname: str
    netns: str
    host_ifname: str
    addresses: list[str]
    mac: str | None = None
    host_mac: str | None = None
    name: str | None = None
    hostname: str | None = None
    aliases: list[str] = []
    port_mappings: list[dict[str, Any]] = []
    state: str
    origin: str
    node: str = Field(
        "", description="the cluster node that runs it (global networks; empty otherwise)"
    )


class NetworkOut(BaseModel):
    """A network as shown by ls/inspect (``endpoints`` only in inspect)."""

    id: str
    name: str
    driver: str
    created: float
    ipv6: bool
    internal: bool
    dns_enabled: bool
    subnets: list[dict[str, Any]]
    options: dict[str, str]
    labels: dict[str, str]
    bridge: str
    owner_uid: int = Field(0, description="uid that created the network (0: root)")
    endpoints: list[EndpointOut] | None = None
    ipam_usage: dict[str, dict[str, int]] | None = None


def endpoint_out(ep: Endpoint) -> dict[str, Any]:
    """Serialise an endpoint for the API."""
    d = to_json(ep)
    keep = EndpointOut.model_fields.keys()
    return {k: v for k, v in d.items() if k in keep}


def network_out(
    net: Network,
    bridge: str,
    endpoints: list[Endpoint] | None = None,
    usage: dict[str, tuple[int, int]] | None = None,
) -> dict[str, Any]:
    """Serialise a network for the API."""
    d = to_json(net)
    d["bridge"] = bridge
    if endpoints is not None:
        d["endpoints"] = [endpoint_out(e) for e in endpoints]
    if usage is not None:
        d["ipam_usage"] = {k: {"used": u, "size": s} for k, (u, s) in usage.items()}
    return d

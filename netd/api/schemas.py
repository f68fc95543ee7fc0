"""Request and response bodies of the HTTP API, as pydantic models.

Models validate shape and types (unknown fields are refused, so a typo is an error rather than
silently ignored); the semantic checks (CIDR rules, overlaps, driver options) happen in the
service, which raises InvalidInput naming the field. The same models generate the OpenAPI
document (``netd.api.openapi``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..model import Endpoint, Network, to_json

_STRICT = ConfigDict(extra="forbid", str_max_length=4096)


class SubnetIn(BaseModel):
    """One subnet of a network create request."""

    model_config = _STRICT
    subnet: str | None = Field(None, examples=["10.90.0.0/24"])
    gateway: str | None = None
    ip_range: str | None = None
    aux_addresses: dict[str, str] = Field(default_factory=dict, max_length=256)


class NetworkCreate(BaseModel):
    """POST /v1/networks."""

    model_config = _STRICT
    name: str = Field(..., max_length=256)
    driver: str = Field("bridge", max_length=64)
    subnets: list[SubnetIn] = Field(default_factory=list, max_length=16)
    ipv6: bool = False
    ipv4: bool = True
    internal: bool = False
    options: dict[str, str] = Field(default_factory=dict, max_length=64)
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)


class PortIn(BaseModel):
    """One published port (a range is expanded by the client or the CNI handler)."""

    model_config = _STRICT
    host_port: int = Field(..., ge=1, le=65535)
    container_port: int = Field(..., ge=1, le=65535)
    protocol: str = Field("tcp", pattern="^(tcp|udp|sctp)$")
    host_ip: str | None = None


class ConnectIn(BaseModel):
    """POST /v1/networks/{name}/connect: attach a namespace the caller manages."""

    model_config = _STRICT
    netns: str = Field(..., max_length=4096)
    container_id: str | None = Field(None, max_length=256)
    ifname: str | None = Field(None, max_length=64)
    name: str | None = Field(None, max_length=253)
    hostname: str | None = Field(None, max_length=253)
    aliases: list[str] = Field(default_factory=list, max_length=64)
    ips: list[str] = Field(default_factory=list, max_length=8)
    mac: str | None = Field(None, max_length=32)
    publish: list[PortIn] = Field(default_factory=list, max_length=65536)
    dns_servers: list[str] = Field(default_factory=list, max_length=8)


class DisconnectIn(BaseModel):
    """POST /v1/networks/{name}/disconnect: by container id or namespace path."""

    model_config = _STRICT
    netns: str | None = Field(None, max_length=4096)
    container_id: str | None = Field(None, max_length=256)
    ifname: str | None = Field(None, max_length=64)


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

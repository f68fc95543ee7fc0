"""The HTTP/JSON API on the Unix socket (aiohttp).

Every request is attributed to the caller's kernel-verified credentials: the middleware reads
SO_PEERCRED from the connection's socket and stores a :class:`Caller` on the request (for
authorisation and audit). Bodies are validated by pydantic models (``schemas``); errors leave as
``{"error": {"code", "message", "field", "value"}}`` with a 4xx/5xx status. The route table
doubles as the source of the OpenAPI document served at ``/openapi.json``.

A rootless caller (policy role "owner") finds a :class:`~netd.security.rootless.Confinement`
under ``OWNER`` on its request; the handlers then work through an ``OwnerScope`` instead of the
service itself, so every network, endpoint and namespace they touch is the caller's own.

It does not listen on TCP: the daemon hands it a Unix socket (or systemd's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from .. import __version__
from ..cni.backend import BackendProxy
from ..core.dns_publish import NullDns
from ..errors import InvalidInput, NetdError, NotFound
from ..logs import make_request_id_middleware
from ..metrics import Metrics
from ..model import (
    AttachRequest,
    Caller,
    Endpoint,
    Network,
    NetworkSpec,
    PortMapping,
    SubnetRequest,
)
from ..names import check_container_id
from ..security.rootless import OwnerScope
from ..service import Service
from . import nodes_route, schemas
from .audit_route import QUERY_SCHEMAS as AUDIT_QUERY
from .audit_route import AuditPage, get_audit
from .body import loads as load_json
from .formats import options_schema
from .keys import CALLER, OWNER
from .limits import make_limits_middleware
from .metrics_route import install
from .openapi import Route, build_openapi

log = logging.getLogger("netd.api")
M = TypeVar("M", bound=BaseModel)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICE: web.AppKey[Service] = web.AppKey("service", Service)
_PEERCRED = struct.Struct("3i")
_BODY_HEADERS = {"content-type", "content-length", "content-encoding"}  # replaced by ours


def peer_caller(request: web.Request) -> Caller | None:
    """SO_PEERCRED of the request's connection (None if the transport is not a Unix socket)."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    pid, uid, gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    return Caller(uid=uid, gid=gid, pid=pid)


def error_response(exc: NetdError) -> web.Response:
    """The API's error shape for a NetdError."""
    return web.json_response({"error": exc.to_dict()}, status=exc.http_status)


def _validation_error(exc: ValidationError) -> InvalidInput:
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    value = err.get("input")
    if isinstance(value, dict | list):
        value = json.dumps(value)[:200]
    return InvalidInput(field, value, err["msg"])


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Attach the caller; turn every failure into the JSON error shape."""
    request[CALLER] = peer_caller(request)
    try:
        return await handler(request)
    except NetdError as exc:
        return error_response(exc)
    except ValidationError as exc:
        return error_response(_validation_error(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "http_error"
        )
        # The exception's own headers say more than the status: 405's Allow (RFC 9110 §15.5.6).
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
        return web.json_response(
            {"error": {"code": code, "message": exc.reason}}, status=exc.status, headers=kept
        )
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return web.json_response(
            {"error": {"code": "internal", "message": "internal error; see the daemon log"}},
            status=500,
        )


async def read_body(request: web.Request, model: type[M]) -> M:
    """Parse and validate a JSON body (InvalidInput naming the field on failure)."""
    raw = await request.read()
    try:
        data = load_json(raw or b"{}")
    except ValueError as exc:
        raise InvalidInput("body", raw[:80].decode("utf-8", "replace"), f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput("body", type(data).__name__, "must be a JSON object")
    return model.model_validate(data)


def _service(request: web.Request) -> Service | OwnerScope:
    """The service, or for a rootless owner the service confined to the owner's networks."""
    svc = request.app[SERVICE]
    limits = request.get(OWNER)
    return svc if limits is None else OwnerScope(svc, limits)


# --- handlers -------------------------------------------------------------------------------


async def get_status(request: web.Request) -> web.Response:
    """Health and counts; ``ready`` is false (with ``reason``) while the store cannot write."""
    svc = _service(request)
    nets = svc.list_networks()
    store = await request.app[SERVICE].store_health()
    body: dict[str, Any] = {
        "version": __version__,
        "ready": svc.ready and store.ok,
        "networks": len(nets),
        "endpoints": sum(len(svc.endpoints(n)) for n in nets),
        "firewall": svc.firewall.name,
        "pid": os.getpid(),
        "store": {"ok": store.ok, "error": store.reason or None, "since": store.since or None},
        # Endpoints whose namespace is gone (reaped, awaiting release) or unmounted but alive.
        **request.app[SERVICE].reaper.status(nets, svc.endpoints),
    }
    if not svc.ready:
        body["reason"] = "netd is starting"
    elif not store.ok:
        body["reason"] = f"the state store cannot write: {store.reason}"
    return web.json_response(body)


async def list_networks(request: web.Request) -> web.Response:
    """All networks."""
    svc = _service(request)
    return web.json_response(
        [schemas.network_out(n, svc.host_interface(n)) for n in svc.list_networks()]
    )


async def create_network(request: web.Request) -> web.Response:
    """Create a network."""
    body = await read_body(request, schemas.NetworkCreate)
    spec = NetworkSpec(
        name=body.name,
        driver=body.driver,
        subnets=tuple(
            SubnetRequest(s.subnet, s.gateway, s.ip_range, dict(s.aux_addresses))
            for s in body.subnets
        ),
        ipv6=body.ipv6,
        ipv4=body.ipv4,
        internal=body.internal,
        options=dict(body.options),
        labels=dict(body.labels),
    )
    svc = _service(request)
    net = await svc.create_network(spec, request[CALLER])
    return web.json_response(schemas.network_out(net, svc.host_interface(net)), status=201)


async def inspect_network(request: web.Request) -> web.Response:
    """One network with its endpoints, IPAM usage and (``plumbing``) its live kernel state."""
    from .plumbing import plumbing

    svc = _service(request)
    net = svc.find_network(request.match_info["name"])
    bridge, endpoints = svc.host_interface(net), svc.endpoints(net)
    # A global network's endpoints on other nodes are listed too (with their node), as the
    # cluster view has them; only this node's have plumbing here.
    remote = request.app[SERVICE].remote_endpoints(net)
    out = schemas.network_out(net, bridge, endpoints + remote, svc.utilisation(net))
    if request.query.get("plumbing", "1") not in ("0", "false", "no"):
        out["plumbing"] = await asyncio.to_thread(
            plumbing, net, svc.driver(net), endpoints, svc.firewall, svc.dns
        )
    return web.json_response(out)


async def remove_network(request: web.Request) -> web.Response:
    """Remove a network without endpoints."""
    net = await _service(request).remove_network(request.match_info["name"])
    return web.json_response({"removed": net.name, "id": net.id})


async def list_nodes(request: web.Request) -> web.Response:
    """The cluster's nodes (store = "etcd" only)."""
    return await nodes_route.list_nodes(request.app[SERVICE], request)


async def remove_node(request: web.Request) -> web.Response:
    """Forget a node of the cluster and free what it held."""
    return await nodes_route.remove_node(request.app[SERVICE], request)


async def prune_networks(request: web.Request) -> web.Response:
    """Remove all networks without endpoints."""
    return web.json_response({"removed": await _service(request).prune()})


def container_id_for_netns(netns: str) -> str:
    """Stable container id for a user-managed namespace: its /run/netns name, else a hash."""
    base = os.path.basename(netns)
    try:
        resolved = os.path.realpath(netns, strict=False)
    except (OSError, ValueError) as exc:
        raise InvalidInput("netns", netns, f"cannot resolve the path: {exc}") from exc
    if os.path.dirname(resolved) in ("/run/netns", "/var/run/netns"):
        try:
            return check_container_id(base)
        except InvalidInput:
            pass
    return "ns-" + hashlib.sha256(resolved.encode()).hexdigest()[:20]


async def connect(request: web.Request) -> web.Response:
    """Attach a namespace the caller manages."""
    body = await read_body(request, schemas.ConnectIn)
    svc = _service(request)
    net = svc.find_network(request.match_info["name"])
    cid = body.container_id or container_id_for_netns(body.netns)
    ifname = body.ifname
    if ifname is None:
        used = {e.ifname for n in svc.list_networks() for e in svc.find_endpoints(n, cid)}
        ifname = next(f"eth{i}" for i in range(len(used) + 1) if f"eth{i}" not in used)
    ports = tuple(
        PortMapping(
            host_port=p.host_port,
            container_port=p.container_port,
            protocol=p.protocol,  # type: ignore[arg-type]
            host_ip=_ip(p.host_ip, "publish.host_ip") if p.host_ip else None,
        )
        for p in body.publish
    )
    req = AttachRequest(
        network=net.name,
        container_id=cid,
        ifname=ifname,
        netns=body.netns,
        name=body.name or (cid if not cid.startswith("ns-") else None),
        hostname=body.hostname,
        aliases=tuple(body.aliases),
        static_ips=tuple(body.ips),
        mac=body.mac,
        port_mappings=ports,
        dns_servers=tuple(body.dns_servers),
        origin="api",
    )
    known = {e.key for e in svc.find_endpoints(net, cid) if e.state == "ready"}
    _, ep = await svc.attach(req, caller=request[CALLER])
    out = schemas.endpoint_out(ep)
    out["dns"] = svc.dns_for(net)
    # A retry of a connect that succeeded (same interface name and settings) gets that
    # endpoint back with 200; a second interface on the network is refused (409).
    return web.json_response(out, status=200 if ep.key in known else 201)


def _ip(value: str, field: str) -> Any:
    import ipaddress

    try:
        return ipaddress.ip_address(value)
    except ValueError as exc:
        raise InvalidInput(field, value, "not an IP address") from exc


async def disconnect(request: web.Request) -> web.Response:
    """Detach a container (by id or namespace path) from a network."""
    body = await read_body(request, schemas.DisconnectIn)
    svc = _service(request)
    net = svc.find_network(request.match_info["name"])
    if not body.container_id and not body.netns:
        raise InvalidInput("container_id", None, "give container_id or netns")
    cid = body.container_id or container_id_for_netns(body.netns or "")
    eps = [e for e in svc.find_endpoints(net, cid) if body.ifname in (None, e.ifname)]
    if not eps:
        raise NotFound(
            f"container {cid!r} is not attached to network {net.name!r}",
            field="container_id",
            value=cid,
        )
    for ep in eps:
        await svc.detach(net.name, ep.container_id, ep.ifname, body.netns)
    return web.json_response({"disconnected": [f"{e.container_id}/{e.ifname}" for e in eps]})


async def firewall_show(request: web.Request) -> web.Response:
    """The live ruleset of netd's tables/chains, as text."""
    fw = _service(request).firewall
    text = await asyncio.to_thread(fw.show)
    return web.json_response({"backend": fw.name, "ruleset": text})


async def dns_lookup(request: web.Request) -> web.Response:
    """Resolve a container name as netd's DNS would (host-side lookup)."""
    name = request.query.get("name", "")
    if not name:
        raise InvalidInput("name", name, "give ?name=")
    network = request.query.get("network") or None
    svc = _service(request)
    if network is not None:
        network = svc.find_network(network).id
    lookup = svc.dns.lookup
    if isinstance(svc.dns, NullDns):
        raise NotFound("DNS is disabled in this daemon", field="name", value=name)
    if network is None and isinstance(svc, OwnerScope):
        # Confined: the host-wide view would show other users' containers.
        addresses = []
        for net in svc.list_networks():
            addresses += await asyncio.to_thread(lookup, name, net.id)
        return web.json_response({"name": name, "addresses": addresses})
    addresses = await asyncio.to_thread(lookup, name, network)
    return web.json_response({"name": name, "addresses": addresses})


class _CniBackend(BackendProxy):
    """The service as seen by the CNI handler: attachments it makes are marked origin=cni."""

    def __init__(self, service: Service | OwnerScope, caller: Caller | None) -> None:
        super().__init__(service)
        self._svc = service
        self._caller = caller

    async def attach(self, req: AttachRequest, *, plumb: bool = True) -> tuple[Network, Endpoint]:
        req = dataclasses.replace(req, origin="cni")
        return await self._svc.attach(req, plumb=plumb, caller=self._caller)


async def cni(request: web.Request) -> web.Response:
    """One CNI call forwarded by the plugin; answers the CNI result or error object."""
    from ..cni.handler import handle_cni
    from ..cni.request import CallRefused, decode_call

    # Not read_body: the call is decoded strictly (duplicate and unknown keys refused) and every
    # refusal is a CNI error object the plugin prints (issue #14). schemas.CniCall documents it.
    try:
        call = decode_call(await request.read())
    except CallRefused as exc:
        return web.json_response(exc.to_result(exc.version), status=422)
    backend = _CniBackend(_service(request), request[CALLER])
    status, result = await handle_cni(call, backend)
    if status == 0:
        return web.json_response(result)  # the CNI result itself (null for DEL/CHECK/GC)
    # The plugin prints a CNI error object from any non-200 body carrying ``code`` and ``msg``.
    return web.json_response(result, status=422)


ROUTES: list[Route] = [
    Route("GET", "/v1/status", get_status, "Daemon health and counts"),
    Route("GET", "/v1/networks", list_networks, "List networks", None, list[schemas.NetworkOut]),
    Route(
        "POST",
        "/v1/networks",
        create_network,
        "Create a network",
        schemas.NetworkCreate,
        schemas.NetworkOut,
        201,
    ),
    Route("POST", "/v1/networks/prune", prune_networks, "Remove networks without endpoints"),
    Route(
        "GET", "/v1/networks/{name}", inspect_network, "Inspect a network", None, schemas.NetworkOut
    ),
    Route("DELETE", "/v1/networks/{name}", remove_network, "Remove a network"),
    Route(
        "POST",
        "/v1/networks/{name}/connect",
        connect,
        "Attach a namespace",
        schemas.ConnectIn,
        schemas.EndpointOut,
        201,
        responses=((200, "a retry: the endpoint already connected so", schemas.EndpointOut),),
    ),
    Route(
        "POST",
        "/v1/networks/{name}/disconnect",
        disconnect,
        "Detach a container",
        schemas.DisconnectIn,
    ),
    Route(
        "GET",
        "/v1/dns/lookup",
        dns_lookup,
        "Resolve a container name as netd's DNS does",
        query=(("name", True), ("network", False)),
    ),
    Route("GET", "/v1/firewall", firewall_show, "The live ruleset of netd's firewall"),
    Route(
        "GET",
        "/v1/nodes",
        list_nodes,
        "The cluster's nodes (store etcd; 409 otherwise)",
        None,
        list[nodes_route.NodeOut],
    ),
    Route(
        "DELETE",
        "/v1/nodes/{name}",
        remove_node,
        "Forget a node that is down (force=1: even a ready one) and free its addresses",
        query=(("force", False),),
        query_schemas={"force": {"type": "string", "enum": ["0", "1", "true", "false"]}},
    ),
    Route(
        "GET",
        "/v1/audit",
        get_audit,
        "The daemon's audit trail (root and policy.admins); follow=1 streams NDJSON",
        None,
        AuditPage,
        query=(("since", False), ("limit", False), ("follow", False)),
        query_schemas=AUDIT_QUERY,
    ),
    Route(
        "POST",
        "/v1/cni",
        cni,
        "Forwarded CNI call (used by the netd CNI plugin)",
        schemas.CniCall,
        responses=((422, "the CNI error object", schemas.CniErrorOut),),
    ),
]


def make_app(
    service: Service, *, max_body: int = 1 << 20, metrics: Metrics | None = None
) -> web.Application:
    """The aiohttp application with every route and /openapi.json."""
    # Outermost first: request id (so every later layer, log line and audit record sees it and
    # error answers carry it too), errors shaped and caller attributed, then per-caller limits
    # (512 concurrent requests: a runtime starting a burst of containers must not be refused).
    app = web.Application(
        middlewares=[
            make_request_id_middleware(),
            middleware,
            make_limits_middleware(512, caller_key=CALLER),  # type: ignore[list-item]
        ],
        client_max_size=max_body,
    )
    app[SERVICE] = service
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    document = build_openapi(ROUTES, __version__)
    # The drivers are the daemon's, not the code's: the document lists exactly those.
    create = document["paths"]["/v1/networks"]["post"]["requestBody"]["content"]
    properties = create["application/json"]["schema"]["properties"]
    properties["driver"]["enum"] = sorted(service.drivers)
    properties["driver"]["description"] = (
        "one of the daemon's drivers; one this host's kernel cannot run is refused (\"not "
        'supported on this host", naming the missing kernel feature: `netd doctor` lists them)'
    )
    # The options each of those drivers takes (an external plugin's own keys: any string).
    properties["options"].update(
        options_schema(*(driver.option_keys for driver in service.drivers.values()))
    )

    async def openapi(_: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/openapi.json", openapi)
    install(app, service, metrics)  # /metrics and the metrics middleware
    return app

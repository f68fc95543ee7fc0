"""Prometheus metrics of the daemon: one dedicated registry, the API middleware, the endpoint.

Series (all prefixed ``netd_``):

- ``cni_operations_total{command,result}`` and ``cni_operation_seconds{command}`` — every
  forwarded CNI call (ADD/DEL/CHECK/GC/STATUS/VERSION), result ``ok`` or ``error``;
- ``api_requests_total{method,route,status}`` — every API request, ``route`` being the route
  *template* (``/v1/networks/{name}``), never the raw path, so names cannot explode cardinality;
- ``ipam_addresses_used{network,subnet}`` / ``ipam_addresses_size{network,subnet}`` — gauges
  read from :meth:`Service.utilisation` at scrape time (a custom collector, so they are never
  stale and cost nothing between scrapes);
- ``reconcile_repairs_total{kind}``, ``firewall_restores_total``;
- ``dns_queries_total{result}``, ``dns_query_seconds``, ``dns_upstream_failures_total``,
  ``dns_cache_hits_total`` — defined here, fed by the DNS side.

Producers elsewhere in the daemon use the process-wide :data:`METRICS`
(``METRICS.firewall_restores.inc()``). Tests build their own :class:`Metrics` so they never see
each other's counts. The registry is never prometheus_client's global one: a library import
must not add series to our exposition, and ours must not leak into an embedding process.

What it does not do: decide *when* something counts (the producers do), or listen on anything
except through :func:`install` (the API's Unix socket) and :func:`serve_tcp` (127.0.0.1 only).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .errors import ConfigError

if TYPE_CHECKING:
    from .service import Service

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The CNI spec's verbs; anything else is counted as "other" so a buggy client cannot create
# unbounded label values.
CNI_COMMANDS = frozenset({"ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"})
CNI_PATH = "/v1/cni"
METRICS_PATH = "/metrics"
# Network operations take milliseconds to seconds (netlink + nftables + SQLite fsync).
_OP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A cached DNS answer takes microseconds, a forwarded one up to the upstream timeout.
_DNS_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0)


class IpamCollector(Collector):
    """Per-subnet address use of every network, read from the bound service at scrape time."""

    def __init__(self) -> None:
        self.service: Service | None = None

    def collect(self) -> Iterator[Metric]:
        """Yield the used/size gauge families (empty until a service is bound)."""
        used = GaugeMetricFamily(
            "netd_ipam_addresses_used",
            "Addresses held by endpoints, per network and subnet",
            labels=["network", "subnet"],
        )
        size = GaugeMetricFamily(
            "netd_ipam_addresses_size",
            "Addresses an endpoint could hold (subnet size less reserved), per network and subnet",
            labels=["network", "subnet"],
        )
        service = self.service
        if service is not None:
            for net in service.list_networks():
                try:
                    usage = service.utilisation(net)
                except KeyError:  # removed between listing and reading: skip, not a scrape error
                    continue
                for subnet, (n_used, n_size) in sorted(usage.items()):
                    used.add_metric([net.name, subnet], n_used)
                    size.add_metric([net.name, subnet], n_size)
        yield used
        yield size


class Metrics:
    """Every netd series in one dedicated registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.cni_operations = Counter(
            "netd_cni_operations",
            "CNI calls served, by command and result (ok or error)",
            ["command", "result"],
            registry=reg,
        )
        self.cni_seconds = Histogram(
            "netd_cni_operation_seconds",
            "Time to serve one CNI call, by command",
            ["command"],
            buckets=_OP_BUCKETS,
            registry=reg,
        )
        self.api_requests = Counter(
            "netd_api_requests",
            "API requests, by method, route template and HTTP status",
            ["method", "route", "status"],
            registry=reg,
        )
        self.reconcile_repairs = Counter(
            "netd_reconcile_repairs",
            "Kernel objects the reconciler found missing or wrong and repaired, by kind",
            ["kind"],
            registry=reg,
        )
        self.firewall_restores = Counter(
            "netd_firewall_restores",
            "Times netd's firewall ruleset was restored after someone else changed or flushed it",
            registry=reg,
        )
        self.dns_queries = Counter(
            "netd_dns_queries",
            "DNS queries answered, by result (noerror, nxdomain, servfail, refused, ...)",
            ["result"],
            registry=reg,
        )
        self.dns_seconds = Histogram(
            "netd_dns_query_seconds",
            "Time to answer one DNS query (local or forwarded)",
            buckets=_DNS_BUCKETS,
            registry=reg,
        )
        self.dns_upstream_failures = Counter(
            "netd_dns_upstream_failures",
            "Forwarded DNS queries an upstream server did not answer (timeout or error)",
            registry=reg,
        )
        self.dns_cache_hits = Counter(
            "netd_dns_cache_hits",
            "Forwarded DNS queries answered from the cache",
            registry=reg,
        )
        self.ipam = IpamCollector()
        reg.register(self.ipam)

    def bind_service(self, service: Service) -> None:
        """Read IPAM gauges from ``service`` from now on."""
        self.ipam.service = service

    def observe_cni(self, command: str, ok: bool, seconds: float) -> None:
        """Count one CNI call and its duration."""
        cmd = command if command in CNI_COMMANDS else "other"
        self.cni_operations.labels(cmd, "ok" if ok else "error").inc()
        self.cni_seconds.labels(cmd).observe(seconds)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


METRICS = Metrics()
METRICS_KEY: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


def _route_label(request: web.Request) -> str:
    """The matched route template, or ``unmatched`` (404s must not mint label values)."""
    info = request.match_info
    route = getattr(info, "route", None)
    resource = getattr(route, "resource", None)
    if resource is None:
        return "unmatched"
    return str(resource.canonical)


async def _cni_command(request: web.Request) -> str:
    """The ``command`` of a CNI call body (aiohttp caches the body for the handler)."""
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError, web.HTTPException):
        return "other"  # the handler answers the bad body with a 400
    command = body.get("command") if isinstance(body, dict) else None
    return command if isinstance(command, str) and command in CNI_COMMANDS else "other"


def _metrics_of(request: web.Request) -> Metrics:
    return request.app.get(METRICS_KEY) or METRICS


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every request by route template and status; time and count CNI calls."""
    metrics = _metrics_of(request)
    is_cni = request.method == "POST" and request.path == CNI_PATH
    command = await _cni_command(request) if is_cni else ""
    start = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        metrics.api_requests.labels(request.method, _route_label(request), str(status)).inc()
        if is_cni:
            # The CNI handler answers 200 with the result, anything else carries a CNI error.
            metrics.observe_cni(command, status < 400, time.perf_counter() - start)


async def metrics_handler(request: web.Request) -> web.Response:
    """GET /metrics: the exposition text."""
    body = _metrics_of(request).exposition()
    # CONTENT_TYPE_LATEST carries a charset, which aiohttp wants in its own argument.
    mime, _, params = CONTENT_TYPE_LATEST.partition(";")
    charset = "utf-8" if "utf-8" in params.lower() else None
    response = web.Response(body=body, content_type=mime.strip(), charset=charset)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def install(app: web.Application, service: Service, metrics: Metrics | None = None) -> Metrics:
    """Add GET /metrics and the (outermost) metrics middleware to ``app``; returns the metrics.

    Call before the app starts (middlewares freeze then); a second call is a no-op. ``metrics``
    defaults to the process-wide :data:`METRICS`.
    """
    if METRICS_KEY in app:  # already installed (idempotent: the daemon and a test may both call)
        return app[METRICS_KEY]
    chosen = metrics or METRICS
    chosen.bind_service(service)
    app[METRICS_KEY] = chosen
    # Outermost, so it sees the status the error middleware finally chose.
    app.middlewares.insert(0, metrics_middleware)
    app.router.add_get(METRICS_PATH, metrics_handler)
    return chosen


def serve_tcp(port: int, metrics: Metrics | None = None) -> Any:
    """Also serve the metrics on http://127.0.0.1:``port``/ (never another address).

    Returns prometheus_client's ``(server, thread)``; ``server.shutdown()`` stops it.
    """
    if not 0 < port < 65536:
        raise ConfigError(f"metrics port {port!r}: must be 1-65535")
    try:
        return start_http_server(port, addr="127.0.0.1", registry=(metrics or METRICS).registry)
    except OSError as exc:
        raise ConfigError(f"serving metrics on 127.0.0.1:{port}: {exc.strerror}") from exc

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
  ``dns_cache_hits_total``, ``dns_over_share_total{kind}`` — counted by the DNS worker
  processes, read at scrape time.

Producers elsewhere in the daemon use the process-wide :data:`METRICS`
(``METRICS.firewall_restores.inc()``). Tests build their own :class:`Metrics` so they never see
each other's counts. The registry is never prometheus_client's global one: a library import
must not add series to our exposition, and ours must not leak into an embedding process.

What it does not do: decide *when* something counts (the producers do), or listen on anything
except through :func:`install` (the API's Unix socket) and :func:`serve_tcp` (127.0.0.1 only).
"""

from __future__ import annotations

import logging
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
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .api.body import loads as load_json
from .errors import ConfigError

if TYPE_CHECKING:
    from .service import Service

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The CNI spec's verbs; anything else is counted as "other" so a buggy client cannot create
# unbounded label values.
CNI_COMMANDS = frozenset({"ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"})
CNI_PATH = "/v1/cni"
log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
# Network operations take milliseconds to seconds (netlink + nftables + SQLite fsync).
_OP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class DnsCollector(Collector):
    """The DNS worker processes' query counters, fetched over their control channel at scrape.

    The workers count (they serve the queries; see netd/dns/stats.py); this only exposes their
    totals, so counters restart from zero when a worker is restarted, as Prometheus expects of
    a process restart.
    """

    def __init__(self) -> None:
        self.source: Callable[[], dict[str, Any] | None] | None = None

    def collect(self) -> Iterator[Metric]:
        """Yield the four DNS families (zero until DNS runs)."""
        stats: dict[str, Any] = {}
        if self.source is not None:
            try:
                stats = self.source() or {}
            except Exception:  # a scrape must not fail because a worker is restarting
                log.warning("reading DNS query counters failed", exc_info=True)
        queries = CounterMetricFamily(
            "netd_dns_queries",
            "DNS queries answered, by result (noerror, nxdomain, servfail, refused, ...)",
            labels=["result"],
        )
        for result, n in sorted(stats.get("results", {}).items()):
            queries.add_metric([result], n)
        yield queries
        bounds, counts = stats.get("bounds", []), stats.get("buckets", [])
        cumulative, running = [], 0
        for bound, n in zip([*bounds, float("inf")], counts, strict=False):
            running += n
            cumulative.append((_le(bound), running))
        yield HistogramMetricFamily(
            "netd_dns_query_seconds",
            "Time to answer one DNS query in the worker (local, cached or forwarded)",
            buckets=cumulative or [("+Inf", 0)],
            sum_value=stats.get("sum", 0.0),
        )
        yield CounterMetricFamily(
            "netd_dns_upstream_failures",
            "Upstream DNS exchanges that failed (timeout or error)",
            value=stats.get("upstream_failures", 0),
        )
        yield CounterMetricFamily(
            "netd_dns_cache_hits",
            "Forwarded DNS queries answered from the cache",
            value=stats.get("cache_hits", 0),
        )
        over = CounterMetricFamily(
            "netd_dns_over_share",
            "DNS requests refused because their container or network was over its fair share "
            "(forward: answered SERVFAIL, tcp: connection closed)",
            labels=["kind"],
        )
        for kind, n in sorted(stats.get("over_share", {}).items()):
            over.add_metric([kind], n)
        yield over


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


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
        self.ipam = IpamCollector()
        reg.register(self.ipam)
        self.dns = DnsCollector()
        reg.register(self.dns)

    def bind_service(self, service: Service) -> None:
        """Read IPAM gauges and DNS counters from ``service`` from now on."""
        self.ipam.service = service
        self.dns.source = service.dns.query_stats

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
        body = load_json(await request.read() or b"{}")
    except (ValueError, web.HTTPException):
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

"""Prometheus metrics of the daemon: one dedicated registry, its series and collectors.

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

What it does not do: decide *when* something counts (the producers do), know the web
framework, or listen on anything except through :func:`serve_tcp` (127.0.0.1 only). The API's
``GET /metrics`` and the middleware counting requests live in :mod:`netd.api.metrics_route`,
so the domain core (the service and the reaper count here) never imports aiohttp.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import (
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

from .errors import ConfigError
from .model import Network

# The CNI spec's verbs; anything else is counted as "other" so a buggy client cannot create
# unbounded label values.
CNI_COMMANDS = frozenset({"ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION"})
log = logging.getLogger(__name__)

# Network operations take milliseconds to seconds (netlink + nftables + SQLite fsync).
_OP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class QueryStats(Protocol):
    """The part of the DNS seam (``netd.core.dns_publish.DnsSink``) the DNS counters read."""

    def query_stats(self) -> dict[str, Any] | None:
        """The DNS workers' counters (None when DNS does not run)."""
        ...


class MetricsSource(Protocol):
    """What the gauges read from the service at scrape time (``netd.service.Service``)."""

    @property
    def dns(self) -> QueryStats:
        """The DNS seam."""
        ...

    def list_networks(self) -> list[Network]:
        """Every network."""
        ...

    def utilisation(self, network: Network) -> dict[str, tuple[int, int]]:
        """``{subnet: (used, size)}`` of ``network``; KeyError once it is removed."""
        ...


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
        self.service: MetricsSource | None = None

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


class ClusterCollector(Collector):
    """What this node asked of etcd (a cluster node only), read at scrape time."""

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int] | None] = lambda: None

    def collect(self) -> Iterator[Metric]:
        """Yield the etcd counters (no family on a daemon without a cluster)."""
        stats = self.source()
        if stats is None:
            return
        help_of = {
            "transactions": "etcd transactions sent (round trips), reads and writes",
            "compare_failures": "etcd transactions whose compares failed (lost a race; retried)",
            "claims": "IPAM address blocks this node claimed",
            "borrows": "addresses this node took from another node's block",
        }
        for key, text in help_of.items():
            family = CounterMetricFamily(f"netd_etcd_{key}", text)
            family.add_metric([], stats.get(key, 0))
            yield family


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
        self.cluster = ClusterCollector()
        reg.register(self.cluster)

    def bind_service(self, service: MetricsSource) -> None:
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

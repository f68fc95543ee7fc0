"""``GET /metrics`` on the API socket, and the middleware that counts every API request.

The aiohttp half of the metrics: the registry, its series and collectors are in
:mod:`netd.metrics`, which the domain core imports without pulling in the web framework.
:func:`install` binds a :class:`~netd.metrics.Metrics` to an app (the process-wide
:data:`~netd.metrics.METRICS` by default).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from ..metrics import CNI_COMMANDS, METRICS, Metrics, MetricsSource
from .body import loads as load_json

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CNI_PATH = "/v1/cni"
METRICS_PATH = "/metrics"
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


def install(
    app: web.Application, service: MetricsSource, metrics: Metrics | None = None
) -> Metrics:
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

"""Request limits for the HTTP API: concurrent requests per caller, and time per request.

:func:`make_limits_middleware` returns an aiohttp middleware that

- caps the requests one caller (kernel-verified uid, ``request[keys.CALLER]``) may have in
  progress; one more gets ``503 {"error": {"code": "too_many_requests", ...}}`` with
  ``Retry-After: 1`` at once, so a flood from one user never queues ahead of another user;
- answers ``503 {"error": {"code": "timeout", ...}}`` when a request has not finished within
  ``request_timeout`` seconds.

On a timeout the handler is NOT cancelled: it may be half way through a kernel operation
(a veth created, its address not yet set) running in a worker thread that cancellation could not
stop anyway; interrupting the service's orchestration there would race its own undo with that
thread. The operation finishes (or undoes itself) in the background, and the caller's slot stays
taken until it has, so timing out cannot be used to pile up work beyond the cap.

It must run after the middleware that sets the caller (netd.api.server.middleware):
``web.Application(middlewares=[middleware, make_limits_middleware()])``; aiohttp runs the list
outermost first. Body size is capped by aiohttp's ``client_max_size``; slow clients that trickle
headers are cut by the server's ``keepalive_timeout`` (docs/security.md, "Defence in depth").
It does not authorise anything and does not limit connections that have sent no request yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ..errors import ConfigError
from .keys import CALLER

log = logging.getLogger("netd.api.limits")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def _error(code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, **extra}},
        status=503,
        headers={"Retry-After": "1"},
    )


def make_limits_middleware(
    max_concurrent_per_caller: int = 64,
    request_timeout: float = 120.0,
    *,
    caller_key: Any = None,
) -> Middleware:
    """An aiohttp middleware enforcing the per-caller concurrency cap and the per-request time.

    Callers are told apart by uid, read from ``request[caller_key]`` (default: the key server.py's
    middleware stores the Caller under, ``keys.CALLER``); requests without a caller (a TCP
    transport) share one slot pool. Raises ConfigError for a cap below 1 or a timeout that is
    not positive.
    """
    key_of_caller = CALLER if caller_key is None else caller_key
    if isinstance(max_concurrent_per_caller, bool) or max_concurrent_per_caller < 1:
        raise ConfigError(
            f"max_concurrent_per_caller: {max_concurrent_per_caller!r} must be at least 1",
            field="max_concurrent_per_caller",
            value=max_concurrent_per_caller,
        )
    if not request_timeout > 0:
        raise ConfigError(
            f"request_timeout: {request_timeout!r} must be a positive number of seconds",
            field="request_timeout",
            value=request_timeout,
        )
    active: dict[int | None, int] = {}
    abandoned: set[asyncio.Future[web.StreamResponse]] = set()  # answered "timeout", still running

    def release(key: int | None, task: asyncio.Future[web.StreamResponse]) -> None:
        left = active[key] - 1
        if left:
            active[key] = left
        else:
            del active[key]  # no entry per uid ever seen: the map stays as small as the load
        if task in abandoned:
            abandoned.discard(task)
            exc = None if task.cancelled() else task.exception()
            log.warning("a request answered with a timeout has now ended: %s", exc or "success")

    @web.middleware
    async def limits(request: web.Request, handler: Handler) -> web.StreamResponse:
        if key_of_caller not in request:
            # Misordered middlewares would silently put every caller in one pool: fail loudly.
            raise RuntimeError("the limits middleware must run after the caller middleware")
        caller = request[key_of_caller]
        key: int | None = caller.uid if caller is not None else None
        if active.get(key, 0) >= max_concurrent_per_caller:
            log.warning("caller uid %s over %d concurrent requests", key, max_concurrent_per_caller)
            return _error(
                "too_many_requests",
                f"caller uid {key} already has {max_concurrent_per_caller} requests in progress;"
                " retry later",
                field="caller",
                value=key,
            )
        active[key] = active.get(key, 0) + 1
        task = asyncio.ensure_future(handler(request))
        task.add_done_callback(lambda t: release(key, t))
        try:
            # shield: a timeout (or our own cancellation) leaves the operation running.
            return await asyncio.wait_for(asyncio.shield(task), request_timeout)
        except TimeoutError:
            abandoned.add(task)
            log.warning(
                "%s %s by uid %s timed out after %g s; it continues in the background",
                request.method,
                request.path,
                key,
                request_timeout,
            )
            return _error(
                "timeout",
                f"{request.method} {request.path} timed out after {request_timeout:g} s; the"
                " operation may still complete: check its state before retrying",
            )

    return limits

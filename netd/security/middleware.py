"""The aiohttp middleware that authorises every API request and audits changes and denials.

Order in ``make_app``: after the API's own middleware (which sets ``request["caller"]`` from
SO_PEERCRED and turns exceptions into the JSON error shape), so this one sees handler exceptions
first, records their outcome and re-raises them unchanged.

For each request: route template (``/v1/networks/{name}``) → for non-GET requests, the body
(``request.read()`` caches it, so the handler reads it again) → :meth:`Policy.authorize` → for
allowed mutations, the optional hook → 403 ``permission_denied`` (audited) or the handler
(mutations audited with their outcome). Reads that are allowed are not audited.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import ValidationError

from ..api.body import loads as load_json
from ..api.keys import CALLER, OWNER
from ..cni.spec import PERMISSION_DENIED as CNI_PERMISSION_DENIED
from ..errors import NetdError, PermissionDenied
from ..logs import current_request_id
from ..model import Caller
from .audit import AuditLog, Outcome, make_record
from .authz_hook import AuthzHook, hook_document
from .policy import CNI_ROUTE, Decision, Policy, is_mutation
from .procinfo import read_cmdline
from .rootless import Confinement

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_template(request: web.Request) -> str:
    """The matched route's template (``/v1/networks/{name}``), else the raw path."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


def parse_body(raw: bytes) -> Any:
    """The body as JSON when it is JSON, else as (replacement-decoded) text; None if empty."""
    if not raw:
        return None
    try:
        return load_json(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def cni_verb(route: str, body: Any) -> str | None:
    """The CNI verb of a ``POST /v1/cni`` body (None for other routes or a malformed body)."""
    if route != CNI_ROUTE or not isinstance(body, dict):
        return None
    command = body.get("command")
    return command if isinstance(command, str) else None


def audit_target(match_info: Mapping[str, str], body: Any) -> dict[str, Any]:
    """What a request acts on: network name, container id, namespace, CNI verb (where given)."""
    target: dict[str, Any] = {}
    if "name" in match_info:
        target["network"] = match_info["name"]
    if isinstance(body, dict):
        config = body.get("config")
        if "network" not in target:
            name = body.get("name")
            if name is None and isinstance(config, dict):
                name = config.get("name")  # CNI: the network config's name
            if isinstance(name, str):
                target["network"] = name
        cid = body.get("container_id", body.get("containerId"))
        if isinstance(cid, str) and cid:
            target["container_id"] = cid
        if isinstance(body.get("netns"), str) and body["netns"]:
            target["netns"] = body["netns"]
        if isinstance(body.get("command"), str):
            target["cni_command"] = body["command"]
    return target


def failure_of(exc: BaseException) -> tuple[int, str]:
    """The HTTP status and message the API's own middleware will answer for ``exc``."""
    if isinstance(exc, NetdError):
        return exc.http_status, exc.message
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        return 400, f"invalid {field}: {err['msg']}"
    if isinstance(exc, web.HTTPException):
        return exc.status, exc.reason
    if isinstance(exc, asyncio.CancelledError):
        return 499, "request cancelled (client went away)"
    return 500, f"internal error: {type(exc).__name__}"


def response_error(response: web.StreamResponse) -> str | None:
    """The error message inside a ≥400 JSON response (API or CNI error shape)."""
    if response.status < 400 or not isinstance(response, web.Response):
        return None
    try:
        data = json.loads(response.body) if isinstance(response.body, bytes) else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(data.get("msg"), str):
            return str(data["msg"])
    return response.reason


def refused(status: int, error: NetdError | None = None, body: Any = None) -> bool:
    """Whether an allowed request's failure is a refusal (audited as ``denied``, not ``error``).

    The policy let the request through, but a rule behind it said no: an owner restriction or
    quota (``PermissionDenied``, 403), or the same as a CNI error object with code 105.
    """
    if isinstance(error, PermissionDenied) or status == 403:
        return True
    return isinstance(body, dict) and body.get("code") == CNI_PERMISSION_DENIED


def response_json(response: web.StreamResponse) -> Any:
    """The JSON body of a response, or None."""
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return None
    try:
        return json.loads(response.body)
    except ValueError:
        return None


def denied_response(caller: Caller | None, method: str, route: str, reason: str) -> web.Response:
    """The 403 answer, naming who may not do what and why."""
    who = f"uid {caller.uid}" if caller is not None else "this caller"
    message = f"{who} may not {method} {route}: {reason}"
    return web.json_response(
        {"error": {"code": "permission_denied", "message": message}}, status=403
    )


def make_auth_middleware(
    policy: Policy,
    audit: AuditLog | None = None,
    hook: AuthzHook | None = None,
    *,
    max_param_bytes: int = 4096,
    caller_of: Callable[[web.Request], Caller | None] | None = None,
) -> Middleware:
    """The middleware authorising each request with ``policy`` (+ ``hook``) and auditing it.

    ``caller_of`` finds the SO_PEERCRED caller the API's middleware stored on the request
    (``request[netd.api.keys.CALLER]`` by default).
    """
    if caller_of is None:

        def default_caller(request: web.Request) -> Caller | None:
            return request.get(CALLER)

    get_caller: Callable[[web.Request], Caller | None] = caller_of or default_caller

    def record(
        caller: Caller | None,
        cmdline: str | None,
        action: str,
        target: dict[str, Any],
        body: Any,
        outcome: Outcome,
        status: int,
        error: str | None,
        reason: str,
        started: float,
    ) -> None:
        if audit is None:
            return
        who = None
        if caller is not None:
            who = {"uid": caller.uid, "gid": caller.gid, "pid": caller.pid, "cmdline": cmdline}
        rec = make_record(
            caller=who,
            action=action,
            target=target,
            parameters=body,
            outcome=outcome,
            status=status,
            error=error,
            reason=reason,
            duration_ms=(time.monotonic() - started) * 1000,
            max_param_bytes=max_param_bytes,
        )
        # Ties the audit line to the request's log lines and the X-Request-Id answer.
        rec["request_id"] = current_request_id()
        audit.write(rec)

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.monotonic()
        caller = get_caller(request)
        method = request.method
        route = route_template(request)
        body: Any = None
        size = 0
        if method not in ("GET", "HEAD"):
            try:
                raw = await request.read()
                size = len(raw)
                body = parse_body(raw)
            except web.HTTPException as exc:  # too large: the handler answers it again
                body = {"unreadable": exc.reason}
        cni_command = cni_verb(route, body)
        mutation = is_mutation(method, route, cni_command)
        decision = policy.authorize(caller, method, route, cni_command)
        # Read at request time: the caller may be gone by the time the writer runs.
        cmdline = (
            read_cmdline(caller.pid)
            if caller is not None and (mutation or not decision.allowed)
            else None
        )
        if decision.allowed and mutation and hook is not None and caller is not None:
            verdict = await hook.check(
                hook_document(caller, cmdline, method, request.path, route, body)
            )
            # A denial names only the hook's reason; an approval keeps the policy's as well.
            reason = f"{decision.reason}; {verdict.reason}" if verdict.allowed else verdict.reason
            decision = Decision(verdict.allowed, reason, decision.role)
        action = f"{method} {route}"
        target = audit_target(request.match_info, body)
        if not decision.allowed:
            reply = denied_response(caller, method, route, decision.reason)
            record(
                caller, cmdline, action, target, body, "denied", 403, None, decision.reason, started
            )
            return reply
        if decision.role == "owner" and caller is not None:
            limit = policy.config.rootless_max_body_bytes
            if size > limit:
                # Bounds what one owner's request makes the daemon parse, audit and validate.
                message = (
                    f"{method} {route}: a request body of {size} bytes is over "
                    f"policy.rootless_max_body_bytes ({limit})"
                )
                refusal: dict[str, Any] = {"code": "too_large", "message": message}
                refusal |= {"field": "policy.rootless_max_body_bytes", "value": limit}
                record(
                    caller, cmdline, action, target, body, "denied", 413, message, message, started
                )
                return web.json_response({"error": refusal}, status=413)
            # The handlers confine a rootless owner to its own networks (rootless.OwnerScope).
            request[OWNER] = Confinement.from_policy(caller, policy.config)
        if not mutation:
            return await handler(request)
        try:
            response = await handler(request)
        except BaseException as exc:
            status, message = failure_of(exc)
            denied = refused(status, exc if isinstance(exc, NetdError) else None)
            record(
                caller,
                cmdline,
                action,
                target,
                body,
                "denied" if denied else "error",
                status,
                message,
                message if denied else decision.reason,
                started,
            )
            raise
        error = response_error(response)
        outcome: Outcome = "ok"
        if response.status >= 400:
            outcome = (
                "denied" if refused(response.status, None, response_json(response)) else "error"
            )
        reason = error if outcome == "denied" and error else decision.reason
        record(
            caller,
            cmdline,
            action,
            target,
            body,
            outcome,
            response.status,
            error,
            reason,
            started,
        )
        return response

    return authorize

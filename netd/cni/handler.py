"""The daemon side of CNI: one forwarded call in, a CNI result or error object out.

``handle_cni`` is what ``POST /v1/cni`` runs. It parses the call (``netd.cni.config``,
``netd.cni.netdef``), resolves or creates the network, calls the backend, and answers in the
cniVersion the runtime asked for (``netd.cni.result``). Every failure becomes the spec's error
object; netd errors are mapped to codes here and nowhere else (table in docs/cni.md). It makes
no kernel calls itself and keeps no state.

Verbs: ADD, DEL, CHECK, GC, STATUS, VERSION. As an IPAM plugin (another main plugin names
``"ipam": {"type": "netd"}``) ADD only allocates (``attach(plumb=False)``) and DEL releases.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import (
    AddressExhausted,
    Conflict,
    FirewallError,
    InvalidInput,
    KernelError,
    NetdError,
    NotFound,
    PermissionDenied,
    StoreError,
    StoreUnreachable,
    Unavailable,
)
from ..model import Network
from . import spec
from .backend import CniBackend
from .config import (
    CniCall,
    attach_request,
    parse_call,
    parse_runtime_options,
    parse_valid_attachments,
)
from .netdef import conflicts, parse_definition, parse_routes, to_spec
from .result import build_dns, build_result
from .spec import CniError

log = logging.getLogger("netd.cni")

# Fields that come from the CNI environment rather than the config: errors about them are
# "invalid environment" (code 4), not "invalid config" (code 7).
_ENV_FIELDS = {"container_id", "ifname", "netns"}


def map_error(exc: NetdError, call: CniCall) -> CniError:
    """The CNI error for a netd error raised while serving ``call``."""
    where = f"CNI {call.command} on network {call.network!r}"
    details = f"netd error code: {exc.code}"
    code: int
    if isinstance(exc, AddressExhausted):
        code = spec.ADDRESS_EXHAUSTED
    elif isinstance(exc, Conflict):
        port = "port" in (exc.field or "") or "port" in exc.message
        code = spec.PORT_CONFLICT if port else spec.ATTACHMENT_CONFLICT
    elif isinstance(exc, NotFound) and call.command == "CHECK":
        code = spec.UNKNOWN_CONTAINER
    elif isinstance(exc, InvalidInput | NotFound):
        code = spec.INVALID_ENVIRONMENT if exc.field in _ENV_FIELDS else spec.INVALID_CONFIG
    elif call.command == "STATUS":
        # 51: not available, and existing containers may be affected (the data plane failed).
        failing = isinstance(exc, KernelError | FirewallError | StoreError)
        code = spec.PLUGIN_NOT_AVAILABLE_LIMITED if failing else spec.PLUGIN_NOT_AVAILABLE
    elif isinstance(exc, Unavailable | StoreUnreachable):
        # etcd down or partitioned away: the runtime retries the call later (CNI 1.1 code 11).
        code = spec.TRY_AGAIN_LATER
    elif isinstance(exc, KernelError):
        code = spec.KERNEL_FAILURE
    elif isinstance(exc, FirewallError):
        code = spec.FIREWALL_FAILURE
    elif isinstance(exc, PermissionDenied):
        code = spec.PERMISSION_DENIED
    elif isinstance(exc, StoreError):
        code = spec.IO_FAILURE
    else:
        code = spec.INTERNAL
    return CniError(code, f"{where}: {exc.message}", details)


async def _network(call: CniCall, backend: CniBackend, *, create: bool = True) -> Network:
    """The call's network, created from the inline definition when missing; code 7 on conflict."""
    definition = parse_definition(call.config, call.ipam_only)
    try:
        network = await backend.get_network(call.network)
    except NotFound:
        if not create:
            raise
        if not definition.defines:
            raise CniError(
                spec.INVALID_CONFIG,
                f"CNI {call.command}: network {call.network!r} does not exist in netd; create it "
                f"(`netd network create {call.network}`) or define it in the plugin config "
                "(ipam.ranges or ipam.subnet)",
            ) from None
        try:
            network = await backend.ensure_network(to_spec(call.network, definition))
        except (InvalidInput, Conflict) as exc:
            # Overlaps and bad subnets are faults of the config, whatever netd calls them.
            raise CniError(
                spec.INVALID_CONFIG,
                f"CNI {call.command}: creating network {call.network!r} from the config: "
                f"{exc.message}",
                f"netd error code: {exc.code}",
            ) from exc
    plumbs = backend.driver(network).capabilities.plumbs
    problems = conflicts(network, definition, backend.host_interface(network), plumbs)
    if problems:
        raise CniError(
            spec.INVALID_CONFIG,
            f"CNI {call.command}: network {call.network!r} exists with a different definition: "
            + "; ".join(problems),
        )
    return network


async def _add(call: CniCall, backend: CniBackend) -> dict[str, Any]:
    options = parse_runtime_options(call)
    routes = parse_routes(call.config, call.ipam_only)
    if not call.ipam_only:
        backend.check_netns(call.netns)  # before an inline network is created
    await _network(call, backend)
    network, endpoint = await backend.attach(
        attach_request(call, options), plumb=not call.ipam_only
    )
    driver = backend.driver(network)
    interfaces = [] if call.ipam_only else driver.cni_interfaces(network, endpoint)
    return build_result(
        call.version,
        network,
        endpoint,
        dns=build_dns(backend.dns_for(network), options.dns_searches, options.dns_options),
        interfaces=interfaces,
        # As the main plugin netd installs the routes itself: only defaults, already listed.
        extra_routes=routes if call.ipam_only else (),
    )


async def _del(call: CniCall, backend: CniBackend) -> dict[str, Any]:
    # Nothing but the attachment key matters: DEL must succeed even with a config that changed
    # since ADD, or a netns that is already gone (containerd sends an empty CNI_NETNS).
    await backend.detach(call.network, call.container_id, call.ifname, call.netns or None)
    return {}


async def _check(call: CniCall, backend: CniBackend) -> dict[str, Any]:
    prev = call.config.get("prevResult")
    if prev is None:
        raise CniError(
            spec.INVALID_CONFIG,
            "CNI CHECK: the config has no prevResult (required since cniVersion 0.4.0)",
        )
    if not isinstance(prev, dict) or not isinstance(prev.get("ips", []), list):
        raise CniError(spec.DECODE_FAILURE, "CNI CHECK: prevResult is not a CNI result object")
    await _network(call, backend, create=False)  # CHECK changes nothing
    await backend.check(call.network, call.container_id, call.ifname, call.netns)
    return {}


async def _gc(call: CniCall, backend: CniBackend) -> dict[str, Any]:
    valid = parse_valid_attachments(call.config)
    removed = await backend.gc(call.network, valid)
    if removed:
        log.info("CNI GC on %s removed %d stale attachments", call.network, len(removed))
    return {}


async def _status(call: CniCall, backend: CniBackend) -> dict[str, Any]:
    await backend.status()
    return {}


async def _version(call: CniCall, backend: CniBackend) -> dict[str, Any]:
    return spec.version_result(call.config)


_VERBS: dict[str, Callable[[CniCall, CniBackend], Awaitable[dict[str, Any]]]] = {
    "ADD": _add,
    "DEL": _del,
    "CHECK": _check,
    "GC": _gc,
    "STATUS": _status,
    "VERSION": _version,
}


async def handle_cni(call: dict[str, Any], backend: CniBackend) -> tuple[int, dict[str, Any]]:
    """Serve one forwarded CNI call: ``(0, result)`` or ``(1, error object)``.

    ``call`` is ``{"command", "containerId", "netns", "ifname", "args", "path", "config"}`` as
    the plugin sends it. An empty result (``{}``) means the verb prints nothing (DEL, CHECK, GC,
    STATUS).
    """
    version = spec.reply_version(call.get("config") if isinstance(call, dict) else None)
    parsed: CniCall | None = None
    try:
        parsed = parse_call(call)
        version = parsed.version
        return 0, await _VERBS[parsed.command](parsed, backend)
    except CniError as exc:
        log.info("CNI call failed with code %d: %s", exc.code, exc.msg)
        return 1, exc.to_result(version)
    except NetdError as exc:
        if parsed is None:  # parse_call raises CniError only; kept total for safety
            error = CniError(spec.INTERNAL, f"CNI call: {exc.message}")
        else:
            error = map_error(exc, parsed)
        log.info("CNI call failed with code %d: %s", error.code, error.msg)
        return 1, error.to_result(version)
    except Exception as exc:
        log.exception("CNI call failed unexpectedly")
        command = call.get("command") if isinstance(call, dict) else None
        return 1, CniError(
            spec.INTERNAL, f"CNI {command}: internal error in netd: {exc!r}"
        ).to_result(version)

"""Who may do what on the API socket: the authorisation policy and its decisions.

The caller's identity is the kernel's (SO_PEERCRED uid/gid/pid, plus the supplementary groups
read from /proc by ``procinfo``), never anything the request claims. Three roles:

- admin: uid 0 and the uids in ``policy.admins``: every request.
- manager: members of ``policy.manage_group`` (default ``netd``): reads, and changes to networks
  and endpoints (``/v1/networks...`` and ``/v1/cni``). Any other mutating route is admin-only.
- owner (rootless): the uids in ``policy.rootless_users`` and members of
  ``policy.rootless_group``: changes to networks and endpoints like a manager, but confined to
  the networks they own (``netd.security.rootless`` enforces that, and the quotas); reads only of
  their own networks, the daemon status, DNS lookups and the OpenAPI document.
- everyone else: ``policy.others = "read"`` (GET only, the default) or ``"none"``.

The audit trail (``GET /v1/audit``) is an exception among reads: admins only.

Reads are GET/HEAD requests, plus the CNI verbs VERSION and STATUS on ``POST /v1/cni`` (they
change nothing and reveal nothing about containers). Every other method is a mutation, and so are
the CNI verbs ADD, DEL, GC and also CHECK: CHECK changes no state, but it makes the daemon open a
caller-chosen namespace path, which is a runtime's privilege, not a reader's.

This module is pure logic over a caller and a route: it reads no request, runs no hook and
writes no audit line (``middleware``, ``authz_hook`` and ``audit`` do).
"""

from __future__ import annotations

import grp
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..model import Caller
from .procinfo import caller_groups

log = logging.getLogger("netd.security.policy")

Role = Literal["admin", "manager", "owner", "other", "unknown"]
READ_METHODS = frozenset({"GET", "HEAD"})
CNI_ROUTE = "/v1/cni"
CNI_READ_COMMANDS = frozenset({"VERSION", "STATUS"})
# Reads only root and policy.admins may make: the audit trail holds every caller's command line
# (its files are mode 0600 for the same reason).
ADMIN_READ_ROUTES = frozenset({"/v1/audit"})
# Mutations a manage-group member may make: networks, their endpoints, and CNI calls.
MANAGE_PREFIXES = ("/v1/networks", CNI_ROUTE)
GROUP_TTL = 10.0
# What a rootless owner may read (each answer is confined to their own networks by the handler).
OWNER_READ_ROUTES = frozenset(
    {"/v1/status", "/v1/networks", "/v1/networks/{name}", "/v1/dns/lookup", "/openapi.json"}
)


class PolicyConfig(BaseModel):
    """The ``[policy]`` table of the daemon config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    others: Literal["read", "none"] = Field(
        default="read", description="what callers neither admin nor in manage_group may do"
    )
    manage_group: str = Field(default="netd", description="group whose members manage networks")
    admins: tuple[int, ...] = Field(default=(), description="uids with full access besides root")
    authz_command: tuple[str, ...] = Field(
        default=(), description="external authorisation hook argv, run for every mutating request"
    )
    authz_timeout: float = Field(
        default=2.0, gt=0, le=60, description="seconds before the hook denies"
    )
    rootless_users: tuple[int, ...] = Field(
        default=(), description="uids that may create and use networks of their own"
    )
    rootless_group: str = Field(
        default="", description="group whose members may create networks of their own (''=off)"
    )
    rootless_max_networks: int = Field(
        default=4, ge=0, le=4096, description="networks one rootless uid may own"
    )
    rootless_max_addresses: int = Field(
        default=1024,
        ge=0,
        le=1 << 24,
        description="IPv4 addresses (sum of subnet sizes) one rootless uid may own",
    )
    rootless_max_ports: int = Field(
        default=256,
        ge=0,
        le=65535 * 3,
        description="published host ports (port mappings) one rootless uid may hold in all",
    )
    rootless_max_ports_per_request: int = Field(
        default=128,
        ge=0,
        le=65535 * 3,
        description="port mappings one rootless request (connect or CNI ADD) may publish",
    )
    rootless_max_body_bytes: int = Field(
        default=65536,
        ge=1024,
        le=1 << 20,
        description="bytes of one rootless request's body (everyone: max_body_bytes)",
    )

    @field_validator("manage_group")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or not v.replace("-", "").replace("_", "").isalnum():
            raise ValueError("must be a plain group name")
        return v

    @field_validator("rootless_group")
    @classmethod
    def _plain_or_empty(cls, v: str) -> str:
        if v and not v.replace("-", "").replace("_", "").isalnum():
            raise ValueError("must be a plain group name, or empty (no rootless group)")
        return v

    @field_validator("admins", "rootless_users")
    @classmethod
    def _uids(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(uid < 0 or uid > 0xFFFFFFFE for uid in v):
            raise ValueError("uids must be in 0..4294967294")
        return v

    @field_validator("authz_command")
    @classmethod
    def _absolute(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if v and not v[0].startswith("/"):
            raise ValueError("the hook command must be an absolute path")
        return v


@dataclass(frozen=True)
class Decision:
    """The answer for one request: allowed or not, why, and the caller's role."""

    allowed: bool
    reason: str
    role: Role = "unknown"


def is_mutation(method: str, route: str, cni_command: str | None = None) -> bool:
    """True if the request can change state (and so is authorised as such and audited)."""
    if method.upper() in READ_METHODS:
        return False
    return not (route == CNI_ROUTE and (cni_command or "").upper() in CNI_READ_COMMANDS)


def _group_gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


class Policy:
    """Decides requests by the caller's kernel-verified identity (see the module docstring)."""

    def __init__(
        self,
        config: PolicyConfig | None = None,
        *,
        groups_of: Callable[[Caller], frozenset[int]] = caller_groups,
        gid_of: Callable[[str], int | None] = _group_gid,
    ) -> None:
        self.config = config or PolicyConfig()
        self._groups_of = groups_of
        self._gid_of = gid_of
        self._warned_missing: set[str] = set()
        self._gid_cache: dict[str, tuple[float, int | None]] = {}

    def _gid(self, name: str) -> int | None:
        now = time.monotonic()
        cached = self._gid_cache.get(name)
        if cached is None or now - cached[0] >= GROUP_TTL:
            # Cached because a miss can cost ~0.5 ms (NSS asks systemd); re-read so that a
            # group created or removed while the daemon runs takes effect within GROUP_TTL.
            cached = (now, self._gid_of(name))
            self._gid_cache[name] = cached
        if cached[1] is None and name not in self._warned_missing:
            log.warning("policy group %r does not exist: nobody is in it", name)
            self._warned_missing.add(name)
        return cached[1]

    def manage_gid(self) -> int | None:
        """The manage group's gid, looked up at most every GROUP_TTL seconds."""
        return self._gid(self.config.manage_group)

    def rootless_gid(self) -> int | None:
        """The rootless group's gid (None when unset or missing), cached like the manage group."""
        return self._gid(self.config.rootless_group) if self.config.rootless_group else None

    def role(self, caller: Caller) -> tuple[Role, str]:
        """The caller's role and the reason for it."""
        if caller.uid == 0:
            return "admin", "uid 0 is root"
        if caller.uid in self.config.admins:
            return "admin", f"uid {caller.uid} is in policy.admins"
        group = self.config.manage_group
        gid = self.manage_gid()
        groups: frozenset[int] | None = None
        if gid is not None:
            groups = self._groups_of(caller)
            if gid in groups:
                return "manager", f"uid {caller.uid} is in group {group!r} (gid {gid})"
        if caller.uid in self.config.rootless_users:
            return "owner", f"uid {caller.uid} is in policy.rootless_users"
        rgid = self.rootless_gid()
        if rgid is not None and rgid in (groups if groups is not None else self._groups_of(caller)):
            rgroup = self.config.rootless_group
            return "owner", f"uid {caller.uid} is in policy.rootless_group {rgroup!r} (gid {rgid})"
        return "other", (
            f"uid {caller.uid} is not root, not in policy.admins and not in group {group!r}"
        )

    def authorize(
        self, caller: Caller | None, method: str, route: str, cni_command: str | None = None
    ) -> Decision:
        """Allow or deny ``method route`` (a route template) for ``caller``."""
        if caller is None:
            return Decision(False, "no peer credentials: not a Unix socket connection")
        mutation = is_mutation(method, route, cni_command)
        role, why = self.role(caller)
        if role == "admin":
            return Decision(True, why, role)
        if route in ADMIN_READ_ROUTES:
            return Decision(False, f"{why}; only root and policy.admins may read {route}", role)
        if role == "owner":
            return self._owner(why, method, route, mutation)
        if not mutation:
            if role == "manager" or self.config.others == "read":
                return Decision(True, why if role == "manager" else "reads are open", role)
            return Decision(False, f"{why}; policy.others is 'none'", role)
        if role == "manager":
            if any(route == p or route.startswith(p + "/") for p in MANAGE_PREFIXES):
                return Decision(True, why, role)
            return Decision(False, f"{why}, but only root and policy.admins may do this", role)
        others = self.config.others
        return Decision(False, f"{why}; others may only read (policy.others = {others!r})", role)

    @staticmethod
    def _owner(why: str, method: str, route: str, mutation: bool) -> Decision:
        """A rootless owner: their networks, endpoints and CNI calls; a few reads; nothing else.

        Which network is theirs is checked by the handlers (``rootless.OwnerScope``), not here:
        the route alone does not say whose network ``{name}`` is.
        """
        if not mutation:
            if route in OWNER_READ_ROUTES or route == CNI_ROUTE:
                return Decision(True, why, "owner")
            return Decision(
                False, f"{why}; a rootless owner may read only its own networks", "owner"
            )
        if any(route == p or route.startswith(p + "/") for p in MANAGE_PREFIXES):
            return Decision(True, why, "owner")
        return Decision(False, f"{why}; a rootless owner may only manage its own networks", "owner")

"""Who may do what on the API socket: the authorisation policy and its decisions.

The caller's identity is the kernel's (SO_PEERCRED uid/gid/pid, plus the supplementary groups
read from /proc by ``procinfo``), never anything the request claims. Three roles:

- admin: uid 0 and the uids in ``policy.admins``: every request.
- manager: members of ``policy.manage_group`` (default ``netd``): reads, and changes to networks
  and endpoints (``/v1/networks...`` and ``/v1/cni``). Any other mutating route is admin-only.
- everyone else: ``policy.others = "read"`` (GET only, the default) or ``"none"``.

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

Role = Literal["admin", "manager", "other", "unknown"]
READ_METHODS = frozenset({"GET", "HEAD"})
CNI_ROUTE = "/v1/cni"
CNI_READ_COMMANDS = frozenset({"VERSION", "STATUS"})
# Mutations a manage-group member may make: networks, their endpoints, and CNI calls.
MANAGE_PREFIXES = ("/v1/networks", CNI_ROUTE)
GROUP_TTL = 10.0


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

    @field_validator("manage_group")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or not v.replace("-", "").replace("_", "").isalnum():
            raise ValueError("must be a plain group name")
        return v

    @field_validator("admins")
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
        self._warned_missing = False
        self._gid_cache: tuple[float, int | None] | None = None

    def manage_gid(self) -> int | None:
        """The manage group's gid, looked up at most every GROUP_TTL seconds."""
        now = time.monotonic()
        if self._gid_cache is None or now - self._gid_cache[0] >= GROUP_TTL:
            # Cached because a miss can cost ~0.5 ms (NSS asks systemd); re-read so that a
            # group created or removed while the daemon runs takes effect within GROUP_TTL.
            self._gid_cache = (now, self._gid_of(self.config.manage_group))
        return self._gid_cache[1]

    def role(self, caller: Caller) -> tuple[Role, str]:
        """The caller's role and the reason for it."""
        if caller.uid == 0:
            return "admin", "uid 0 is root"
        if caller.uid in self.config.admins:
            return "admin", f"uid {caller.uid} is in policy.admins"
        group = self.config.manage_group
        gid = self.manage_gid()
        if gid is None:
            if not self._warned_missing:
                log.warning("policy.manage_group %r does not exist: nobody is a manager", group)
                self._warned_missing = True
        elif gid in self._groups_of(caller):
            return "manager", f"uid {caller.uid} is in group {group!r} (gid {gid})"
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

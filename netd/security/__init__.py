"""Authorisation and audit of API callers.

``policy`` decides by the caller's kernel-verified identity, ``authz_hook`` asks an optional
external program, ``audit`` appends the trail, ``middleware`` ties them to the aiohttp app,
``audit_reader`` reads the trail back for ``netd audit``; ``rootless`` confines the callers of
the policy's "owner" role to their own networks, and ``nsowner`` asks the kernel who owns a
network namespace. Crash safety and seccomp are not here.

``make_auth_middleware`` is imported from ``netd.security.middleware`` (not re-exported here), so
that loading the config models does not import aiohttp.
"""

from __future__ import annotations

from .audit import AuditConfig, AuditLog, make_record
from .authz_hook import AuthzHook
from .policy import Decision, Policy, PolicyConfig, is_mutation

__all__ = [
    "AuditConfig",
    "AuditLog",
    "AuthzHook",
    "Decision",
    "Policy",
    "PolicyConfig",
    "is_mutation",
    "make_record",
]

"""The one exception tree of netd.

Every error netd raises on purpose derives from :class:`NetdError`. Each class carries a stable
machine-readable ``code`` (used by the HTTP API as ``{"error": {"code": ...}}``) and an HTTP
status. Foreign errors (pyroute2's ``NetlinkError``, libnftables failures, ``OSError``,
``sqlite3.Error``) are translated at the seam that called them, with ``raise ... from``.

    NetdError
    ├── InvalidInput          bad request field: names the field and the value (400)
    ├── NotFound              named network/endpoint does not exist (404)
    ├── Conflict              duplicate name, overlapping subnet, address taken, port taken (409)
    │   ├── AddressExhausted  no free address left in a network's subnets
    │   └── AlreadyConnected  the container already has an interface on that network
    ├── PermissionDenied      caller not allowed (403)
    ├── Unavailable           daemon busy / shutting down / try again (503)
    ├── KernelError           netlink / sysctl / namespace operation failed (500)
    ├── FirewallError         nftables / iptables operation failed (500)
    ├── StoreError            state store failure (500)
    │   └── StoreCorrupt      database unreadable or of an unknown schema
    └── ConfigError           daemon configuration invalid

Messages say what was being done and with which value, e.g.
``creating bridge "nd-3f2a": File exists``.
"""

from __future__ import annotations

from typing import Any


class NetdError(Exception):
    """Root of every error netd raises on purpose."""

    code = "internal"
    http_status = 500

    def __init__(self, message: str, *, field: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.value = value

    def to_dict(self) -> dict[str, Any]:
        """The API's ``error`` object: stable code, message, and the field at fault."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        if self.value is not None:
            out["value"] = (
                self.value if isinstance(self.value, (str, int, float, bool)) else str(self.value)
            )
        return out


class InvalidInput(NetdError):
    """A request field is malformed or breaks a rule; nothing was changed."""

    code = "invalid_input"
    http_status = 400

    def __init__(self, field: str, value: Any, rule: str) -> None:
        super().__init__(f"invalid {field} {value!r}: {rule}", field=field, value=value)
        self.rule = rule


class NotFound(NetdError):
    """The named object does not exist."""

    code = "not_found"
    http_status = 404


class Conflict(NetdError):
    """The request collides with existing state (name, subnet, address, port)."""

    code = "conflict"
    http_status = 409


class AddressExhausted(Conflict):
    """No free address is left where one was asked for."""

    code = "address_exhausted"


class AlreadyConnected(Conflict):
    """A second interface of one container on one network (`netd network connect` twice).

    ``ifname`` is the interface the container already has there.
    """

    code = "already_connected"

    def __init__(self, message: str, *, ifname: str, field: str, value: Any) -> None:
        super().__init__(message, field=field, value=value)
        self.ifname = ifname


class PermissionDenied(NetdError):
    """The caller may not do this."""

    code = "permission_denied"
    http_status = 403


class Unavailable(NetdError):
    """Try again later: the daemon is busy, starting or stopping."""

    code = "unavailable"
    http_status = 503


class KernelError(NetdError):
    """A netlink, sysctl or namespace operation failed."""

    code = "kernel_error"


class FirewallError(NetdError):
    """An nftables or iptables operation failed."""

    code = "firewall_error"


class StoreError(NetdError):
    """The state store failed."""

    code = "store_error"


class StoreUnreachable(StoreError):
    """The state store did not answer in time (etcd down or partitioned away): try again
    later (HTTP 503, CNI code 11). A change may or may not have been applied."""

    code = "store_unreachable"
    http_status = 503


class StoreCorrupt(StoreError):
    """The state database is unreadable or has a schema this netd does not know."""

    code = "store_corrupt"


class ConfigError(NetdError):
    """The daemon's configuration is invalid."""

    code = "config_error"

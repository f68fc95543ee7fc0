"""Daemon configuration: parsed once from TOML into a frozen, validated model.

Defaults match the issue and docs/operations.md: config ``/etc/netd/netd.toml``, state
``/var/lib/netd``, socket ``/run/netd/netd.sock``. A missing config file means all defaults; a
malformed one is a ConfigError naming the key, the value and the rule. Command-line flags override
the file (``load_config(..., overrides=...)``).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .cluster.config import ClusterConfig
from .errors import ConfigError
from .security.audit import AuditConfig
from .security.policy import PolicyConfig

DEFAULT_CONFIG = Path("/etc/netd/netd.toml")
DEFAULT_STATE_DIR = Path("/var/lib/netd")
DEFAULT_SOCKET = Path("/run/netd/netd.sock")


class Config(BaseModel):
    """Everything the daemon reads from its config file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state_dir: Path = DEFAULT_STATE_DIR
    socket: Path = DEFAULT_SOCKET
    socket_group: str = Field("netd", description="group owning the socket (mode 0660)")
    store: Literal["sqlite", "etcd"] = Field(
        "sqlite", description='"etcd": global networks (overlay) in etcd; needs [cluster]'
    )
    cluster: ClusterConfig | None = Field(
        None, description="where etcd is and who this node is (docs/multi-host.md)"
    )
    recovery_dir: Path | None = Field(
        None,
        description="the recovery copy of the state for `netd recover` (default: "
        "<state_dir>/recovery); on another disk it survives the loss of state_dir",
    )
    firewall_backend: Literal["auto", "nftables", "iptables", "none"] = "auto"
    default_address_pools: tuple[str, ...] = ("10.89.0.0/16:24",)
    dns_domain: str = "dns.netd"
    dns_ttl: int = Field(5, ge=0, le=86400)
    dns_user: str = "nobody"
    dns_host_listen: str | None = None
    dns_workers: int = Field(1, ge=1, le=64, description="DNS worker processes (SO_REUSEPORT)")
    managed_netns: str | None = Field(
        None,
        description="if set, refuse to start unless running in this network namespace",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json", "logfmt"] = Field(
        "text", description="daemon log lines on stderr: text, json (one object a line) or logfmt"
    )
    metrics_port: int | None = Field(
        None, ge=1, le=65535, description="also serve /metrics on 127.0.0.1:PORT"
    )
    max_body_bytes: int = Field(1 << 20, ge=1024)
    reconcile_interval: float = Field(
        30.0, ge=0, description="seconds between reconciliation passes (0: only at start)"
    )
    reap_grace: float = Field(
        60.0,
        ge=0,
        description="seconds an endpoint whose namespace is gone for good keeps its addresses "
        "after its DNS names and published ports are withdrawn",
    )
    driver_plugin_dir: Path | None = Field(
        Path("/usr/lib/netd/drivers"),
        description="external network drivers (docs/plugin-contract.md): each executable "
        "here is a driver named after its file",
    )
    driver_plugin_timeout: float = Field(
        10.0, gt=0, le=600, description="seconds a driver plugin call may take before it is killed"
    )
    driver_plugin_setup_timeout: float = Field(
        30.0,
        gt=0,
        le=600,
        description="the same for network_create and endpoint_attach (never below the other)",
    )
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)

    @property
    def recovery_path(self) -> Path:
        """Where the recovery copy lives: ``recovery_dir``, else ``<state_dir>/recovery``."""
        return self.recovery_dir or self.state_dir / "recovery"

    @model_validator(mode="after")
    def _store_needs_cluster(self) -> Config:
        if self.store == "etcd" and self.cluster is None:
            raise ValueError('store "etcd" needs a [cluster] table with etcd_endpoints')
        return self

    @field_validator("socket_group", "dns_user")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        if not v or not v.replace("-", "").replace("_", "").isalnum():
            raise ValueError("must be a plain user/group name")
        return v


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> Config:
    """Read ``path`` (TOML; missing default file → defaults), apply ``overrides``, validate."""
    data: dict[str, Any] = {}
    src = path or DEFAULT_CONFIG
    try:
        with open(src, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        if path is not None:
            raise ConfigError(f"reading config {str(src)!r}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"reading config {str(src)!r}: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"reading config {str(src)!r}: {exc.strerror}") from exc
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Config(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        if not key:
            # A model-level rule has no location and its input is the whole file; the only
            # one is store = "etcd" without [cluster]: name that key and its value.
            key, value = "store", data.get("store")
        raise ConfigError(
            f"config {str(src)!r}: key {key!r} value {value!r}: {err['msg']}"
        ) from exc

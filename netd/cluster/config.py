"""The ``[cluster]`` table of the daemon's config: where etcd is and who this node is.

Validated once at start (pydantic, like the rest of :mod:`netd.config`); a bad value names the
key. ``node_name`` defaults to the host name and ``node_address`` to the source address of the
default route, as flannel and Calico choose them (docs/multi-host.md).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

NODE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,62})\Z")  # \Z: no trailing newline
URL = re.compile(r"^https?://(\[[0-9A-Fa-f:.]+\]|[^/\s:\[\]]+)(:(?P<port>\d{1,5}))?/?\Z")
NODE_NAME_RULE = "must be 1-63 characters of [A-Za-z0-9_.-], starting alphanumeric"


class ClusterConfig(BaseModel):
    """Everything a node needs to join the others through etcd."""

    # allow_inf_nan=False: TOML has inf and nan, and "node_grace = inf" or "node_ttl = nan"
    # would otherwise pass (or fail with a misleading bound) instead of being named.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    etcd_endpoints: tuple[str, ...] = Field(
        ..., min_length=1, description="etcd client URLs (http:// or https://), one per member"
    )
    etcd_prefix: str = Field("/netd/", description="netd's keys in etcd live under this prefix")
    etcd_ca_file: Path | None = None
    etcd_cert_file: Path | None = None
    etcd_key_file: Path | None = None
    node_name: str = Field(default_factory=socket.gethostname)
    node_address: str | None = Field(
        None, description="underlay IPv4 address for VXLAN (default: the default route's source)"
    )
    node_ttl: float = Field(10.0, ge=1, le=3600, description="seconds without heartbeat: down")
    node_grace: float = Field(
        3600.0, ge=0, description="seconds a down node keeps its address blocks"
    )
    ipam_block_size: int = Field(
        26, ge=16, le=30, description="prefix length of the IPv4 blocks a node claims"
    )
    resync_interval: float = Field(
        5.0, gt=0, le=600, description="seconds between full re-reads of etcd (besides the watch)"
    )

    ipsec_rotate: float = Field(
        43200.0,
        ge=1,
        le=30 * 86400,
        description="seconds between IPsec key rotations of encrypted overlays (Docker: 12 h)",
    )

    @field_validator("ipsec_rotate")
    @classmethod
    def _rotation_outlasts_sync(cls, v: float, info: ValidationInfo) -> float:
        # A new key only receives for one rotation period before anyone sends with it: every
        # node must have read it by then (docs/multi-host.md, Encryption).
        resync = info.data.get("resync_interval")
        if isinstance(resync, int | float) and v < 2 * resync:
            raise ValueError(
                f"must be at least twice resync_interval ({resync:g} s): every node must "
                "learn a new key before it is used"
            )
        return v

    @field_validator("etcd_endpoints")
    @classmethod
    def _urls(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for url in v:
            # \Z, not $: "$" also matches before a trailing newline.
            found = URL.match(url)
            if not found or not 1 <= int(found.group("port") or 2379) <= 65535:
                raise ValueError(f"{url!r} is not http://HOST:PORT or https://HOST:PORT")
        return v

    @field_validator("etcd_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not re.match(r"^/[A-Za-z0-9_./-]*/\Z", v) or "//" in v:
            raise ValueError("must start and end with '/' and hold only [A-Za-z0-9_.-/]")
        if any(part in (".", "..") for part in v.split("/")):
            # etcd keys are not paths, but a reader (and etcdctl users) would take "/a/../b/"
            # for "/b/": refuse what would look like another prefix than it is.
            raise ValueError("must not have '.' or '..' segments")
        return v

    @field_validator("node_name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NODE_NAME.match(v):
            raise ValueError(NODE_NAME_RULE)
        return v

    @field_validator("node_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            addr = ipaddress.ip_address(v)
        except ValueError:
            raise ValueError("is not an IP address") from None
        if (
            addr.version != 4
            or addr.is_unspecified
            or addr.is_multicast
            or addr.is_loopback
            or addr.is_reserved  # 240/4, 255.255.255.255 included
        ):
            raise ValueError("must be a unicast IPv4 address of this node's underlay")
        return v

    @property
    def tls(self) -> dict[str, str | None]:
        """The TLS files as EtcdStore keyword arguments."""
        return {
            "ca_file": str(self.etcd_ca_file) if self.etcd_ca_file else None,
            "cert_file": str(self.etcd_cert_file) if self.etcd_cert_file else None,
            "key_file": str(self.etcd_key_file) if self.etcd_key_file else None,
        }

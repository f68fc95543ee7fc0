"""A driver that touches no kernel object and records every call.

Used by the service's unit tests (rollback order, what is called with which record) and
selectable as driver ``null`` where networking is done by someone else. Failures can be
planned per method with ``failures={"setup_endpoint": KernelError("...")}``, so a test can show
the service's undo path without a kernel.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInput, NetdError
from ..model import Endpoint, Network
from ..names import bridge_name, host_veth_name
from ..options import DriverKeys
from .base import Capabilities, CniInterface, EndpointStatus, NoKernelObjects


def _fake_mac(seed: str) -> str:
    raw = bytearray(hashlib.sha256(seed.encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFE) | 0x02  # unicast, locally administered
    return ":".join(f"{b:02x}" for b in raw)


class NullDriver(NoKernelObjects):
    """Implements :class:`netd.drivers.base.Driver`; ``calls`` lists (method, args) in order."""

    name = "null"
    capabilities = Capabilities()  # behaves as a bridge would, without a kernel
    # Stands in for any driver in tests: every key is taken, unchanged (validate_options).
    option_keys = DriverKeys("null", open=True)

    def __init__(self, failures: dict[str, NetdError] | None = None) -> None:
        """``failures`` maps a method name to the error that method raises (every time)."""
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.failures = dict(failures or {})

    def _record(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))
        if method in self.failures:
            raise self.failures[method]

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """Any string options, unchanged (copied)."""
        self._record("validate_options", dict(options))
        for key, value in options.items():
            if not isinstance(value, str):
                raise InvalidInput(f"options.{key}", value, "must be a string")
        return dict(options)

    def ensure_network(self, network: Network) -> None:
        """Record only."""
        self._record("ensure_network", network)

    def teardown_network(self, network: Network) -> list[str]:
        """Record only; no failures."""
        self._record("teardown_network", network)
        return []

    def setup_endpoint(self, network: Network, endpoint: Endpoint) -> Endpoint:
        """The endpoint with deterministic MACs filled in (the asked-for MAC is kept)."""
        self._record("setup_endpoint", network, endpoint)
        key = f"{endpoint.container_id}/{endpoint.ifname}"
        return dataclasses.replace(
            endpoint,
            mac=endpoint.mac or _fake_mac("c:" + key),
            host_mac=_fake_mac("h:" + key),
        )

    def teardown_endpoint(self, network: Network, endpoint: Endpoint) -> list[str]:
        """Record only; no failures."""
        self._record("teardown_endpoint", network, endpoint)
        return []

    def check_endpoint(self, network: Network, endpoint: Endpoint) -> EndpointStatus:
        """Always healthy."""
        self._record("check_endpoint", network, endpoint)
        return EndpointStatus()

    def available(self) -> str:
        """Always."""
        return ""

    def host_interface(self, network: Network) -> str:
        """Option ``bridge`` or a deterministic name, as a bridge's (nothing is created)."""
        return network.opts.driver.get("bridge") or bridge_name(network.id)

    def endpoint_host_ifname(self, network: Network, container_id: str, ifname: str) -> str:
        """A deterministic name, as a host veth's (nothing is created)."""
        return host_veth_name(network.id, container_id, ifname)

    def inventory(self) -> dict[str, str]:
        """Nothing in the kernel."""
        self._record("inventory")
        return {}

    def cni_interfaces(self, network: Network, endpoint: Endpoint) -> list[CniInterface]:
        """Host side and container side, as a veth driver reports them."""
        return [
            CniInterface(endpoint.host_ifname, endpoint.host_mac or ""),
            CniInterface(endpoint.ifname, endpoint.mac or "", endpoint.netns, container=True),
        ]

    def describe(self, network: Network, endpoints: list[Endpoint]) -> dict[str, Any]:
        """Nothing in the kernel."""
        return {"driver": self.name, "note": "touches no kernel object"}

    def close(self) -> None:
        """Nothing to release."""

"""The pieces of the core that the reconciler, the reaper and start-up work on, bundled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..firewall.base import Firewall
from ..store.base import Store
from .dns_publish import DnsPublisher
from .endpoints import Endpoints
from .firewalling import Firewalling
from .state import State


@dataclass
class Core:
    """State, store and the operations on them; one per service."""

    state: State
    store: Store
    firewall: Firewall  # the backend, for drift and describe
    firewalling: Firewalling
    publisher: DnsPublisher
    endpoint_ops: Endpoints
    validate_netns: Callable[[str, int], None]

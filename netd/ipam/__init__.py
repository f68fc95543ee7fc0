"""IP address management: pure allocation and subnet planning (no I/O, no store, no kernel).

- :mod:`.index`: the set of taken addresses of one range as merged intervals.
- :mod:`.allocator`: one network's allocation state (round-robin, static requests).
- :mod:`.subnets`: subnet validation and default-pool selection when a network is created.
"""

from .allocator import NetworkAllocator, reserved_addresses
from .index import AddressIndex
from .subnets import (
    DEFAULT_POOLS,
    DefaultPool,
    parse_pool,
    plan_subnets,
    ula_from_machine_id,
)

__all__ = [
    "DEFAULT_POOLS",
    "AddressIndex",
    "DefaultPool",
    "NetworkAllocator",
    "parse_pool",
    "plan_subnets",
    "reserved_addresses",
    "ula_from_machine_id",
]

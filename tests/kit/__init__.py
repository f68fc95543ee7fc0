"""Shared test kit: record builders, an in-memory store and a recording firewall.

Import from any test directory as ``from kit import network, endpoint`` (tests/conftest.py puts
``tests/`` on the import path). The builders make *valid* records with deterministic ids and
names, so a test spells out only what it is about; everything else can be overridden by
keyword. The fakes implement their seam's Protocol and pass the same contract tests as the real
implementations (tests/unit/test_contract_*.py).
"""

from __future__ import annotations

from .records import addresses, endpoint, ip, net_id, network, subnet

__all__ = ["addresses", "endpoint", "ip", "net_id", "network", "subnet"]

"""The firewall contract (kit/contract_firewall.py) on the backends that need no kernel.

nftables and iptables run the same checks in a sandbox: tests/ns/test_contract_firewall_ns.py.
"""

from __future__ import annotations

import pytest
from kit.contract import load, run_here

SUITE = load("firewall")


@pytest.mark.parametrize(("impl", "check"), SUITE.cases(kernel=False))
def test_firewall_contract(impl: str, check: str) -> None:
    run_here(SUITE, impl, check)

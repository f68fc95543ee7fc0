"""The firewall contract (kit/contract_firewall.py) on the kernel backends, real rules.

Each check runs in its own process inside a fresh sandbox host namespace, so the rules it makes
are read back from that namespace only and vanish with it.
"""

from __future__ import annotations

import pytest
from kit.contract import load, run_in
from netns_fixtures import Namespace

SUITE = load("firewall")


@pytest.mark.parametrize(("impl", "check"), SUITE.cases(kernel=True))
def test_firewall_contract(host: Namespace, impl: str, check: str) -> None:
    run_in(host.argv(), SUITE, impl, check, {})

"""The driver contract (kit/contract_driver.py) on the drivers that make no kernel object.

The bridge driver runs the same checks in a sandbox: tests/ns/test_contract_driver_ns.py.
"""

from __future__ import annotations

import pytest
from kit.contract import load, run_here

SUITE = load("driver")


@pytest.mark.parametrize(("impl", "check"), SUITE.cases(kernel=False))
def test_driver_contract(impl: str, check: str) -> None:
    run_here(SUITE, impl, check)

"""The driver contract (kit/contract_driver.py) on the drivers that make kernel objects.

Each check runs in its own process inside a fresh sandbox host namespace, with one container
namespace for its endpoints; both are read back with ``ip`` and deleted after the test.
"""

from __future__ import annotations

import pytest
from kit.contract import load, run_in
from netns_fixtures import Namespace, Sandbox

SUITE = load("driver")


@pytest.mark.parametrize(("impl", "check"), SUITE.cases(kernel=True))
def test_driver_contract(sandbox: Sandbox, host: Namespace, impl: str, check: str) -> None:
    container = sandbox.add_ns("c1")
    run_in(host.argv(), SUITE, impl, check, {"netns": container.path})

"""The store contract (tests/unit/test_contract_store.py) on :class:`EtcdStore` with a real etcd.

The checks are the unit suite's own functions, imported unchanged; only the ``kind`` fixture
differs: one etcd for the module (tests/ns/etcd_kit.py), each test under its own key prefix
(derived from its temporary directory, so a reopen under the same directory finds the same
data). Subnet uniqueness is off here because the contract keeps two networks on one subnet
(addresses are per network); tests/ns/test_store_etcd_ns.py checks it on.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_kit import etcd, in_etcd_ns
from netns_fixtures.etcd import EtcdServer

from netd.store.base import Store
from netd.store.etcd import EtcdStore

_UNIT = Path(__file__).resolve().parent.parent / "unit" / "test_contract_store.py"
_spec = importlib.util.spec_from_file_location("store_contract_checks", _UNIT)
assert _spec is not None and _spec.loader is not None
checks = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = checks  # dataclasses look their module up there
_spec.loader.exec_module(checks)

# Every check of the unit suite, collected here against the etcd kind below.
globals().update({name: f for name, f in vars(checks).items() if name.startswith("test_")})

__all__ = ["etcd", "in_etcd_ns"]  # fixtures, imported for pytest


@pytest.fixture
def kind(in_etcd_ns: EtcdServer) -> object:
    url = in_etcd_ns.url
    return checks.StoreKind(
        "etcd",
        lambda d: EtcdStore.under_prefix_of([url], str(d), unique_subnets=False),
        durable=True,
    )


@pytest.fixture
def store(kind: object, tmp_path: Path) -> Iterator[Store]:
    s: Store = kind.open(tmp_path)  # type: ignore[attr-defined]
    yield s
    s.close()

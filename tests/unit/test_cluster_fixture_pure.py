"""The pure parts of the multi-host fixture: the config writer and the partition ruleset."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from netns_fixtures import tomlout
from netns_fixtures.cluster import PARTITION_TABLE, build_partition_ruleset


def test_cluster_table_round_trips_through_tomllib() -> None:
    settings = {
        "store": "etcd",
        "reconcile_interval": 0.5,
        "dns_workers": 2,
        "cluster": {
            "etcd_endpoints": ["http://10.251.0.11:2379", "http://10.251.0.12:2379"],
            "node_name": 'h"1\\',
            "node_address": "10.251.0.1",
            "node_ttl": 3,
            "etcd_ca_file": Path("/tmp/x/ca.crt"),
            "tls": {"verify": True},
        },
    }
    parsed = tomllib.loads(tomlout.dumps(settings))
    assert parsed == {
        **settings,
        "cluster": {**settings["cluster"], "etcd_ca_file": "/tmp/x/ca.crt"},  # type: ignore[dict-item]
    }


def test_unwritable_value_names_the_key() -> None:
    with pytest.raises(TypeError, match=r"config key cluster\.node_ttl: cannot write object"):
        tomlout.dumps({"cluster": {"node_ttl": object()}})
    with pytest.raises(TypeError, match="reconcile_interval: nan is not a finite number"):
        tomlout.dumps({"reconcile_interval": float("nan")})


def test_partition_ruleset_drops_both_ways_once_per_pair() -> None:
    text = build_partition_ruleset([("u-h1", "u-h2"), ("u-h2", "u-h1"), ("u-h1", "u-etcd1")])
    rules = [line.strip() for line in text.splitlines() if line.strip().endswith("drop")]
    assert rules == [
        'iifname "u-etcd1" oifname "u-h1" drop',
        'iifname "u-h1" oifname "u-etcd1" drop',
        'iifname "u-h1" oifname "u-h2" drop',
        'iifname "u-h2" oifname "u-h1" drop',
    ]
    # Replaced as a whole: declare (so delete cannot fail), delete, declare again.
    assert text.startswith(
        f"table bridge {PARTITION_TABLE}\ndelete table bridge {PARTITION_TABLE}\n"
    )


def test_healed_ruleset_is_an_empty_chain() -> None:
    text = build_partition_ruleset([])
    assert "drop" not in text
    assert "hook forward" in text

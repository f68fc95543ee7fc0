"""The ``[cluster] ipsec_rotate`` key: default, bounds, and its rule against resync_interval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from netd.config import load_config
from netd.errors import ConfigError

BASE: dict[str, Any] = {"etcd_endpoints": ["http://10.0.0.10:2379"], "node_name": "h1"}


def load(tmp_path: Path, **cluster: Any) -> Any:
    lines = ['store = "etcd"', "[cluster]"]
    for key, value in {**BASE, **cluster}.items():
        shown = f'"{value}"' if isinstance(value, str) else repr(value).replace("'", '"')
        lines.append(f"{key} = {shown}")
    path = tmp_path / "netd.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


def test_default_is_dockers_twelve_hours(tmp_path: Path) -> None:
    assert load(tmp_path).cluster.ipsec_rotate == 43200.0
    assert load(tmp_path, ipsec_rotate=3, resync_interval=1).cluster.ipsec_rotate == 3.0


@pytest.mark.parametrize(
    ("cluster", "rule"),
    [
        ({"ipsec_rotate": 0}, "greater than or equal to 1"),
        ({"ipsec_rotate": 10**9}, "less than or equal to 2592000"),
        ({"ipsec_rotate": "soon"}, "valid number"),
        ({"ipsec_rotate": 9}, "at least twice resync_interval (5 s)"),
        ({"ipsec_rotate": 3, "resync_interval": 2}, "at least twice resync_interval (2 s)"),
    ],
)
def test_bad_rotation_names_the_key(tmp_path: Path, cluster: dict[str, Any], rule: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, **cluster)
    assert "'cluster.ipsec_rotate'" in err.value.message and rule in err.value.message

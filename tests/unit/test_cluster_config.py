"""The ``[cluster]`` config keys against hostile values: each a one-line ConfigError naming the
key and the value (netd.config.load_config over netd.cluster.config.ClusterConfig).

Also the option kinds a user types numbers into (``-o vni=``, ``-o mtu=``): only ASCII digits.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from netd.config import load_config
from netd.drivers.overlay_options import validate_overlay_options
from netd.errors import ConfigError, InvalidInput

GOOD = {
    "etcd_endpoints": '["http://10.0.0.10:2379"]',
    "node_name": '"n1"',
    "node_address": '"10.0.0.1"',
}


def write(tmp_path: Path, cluster: dict[str, str] | None, top: str = 'store = "etcd"\n') -> Path:
    """A config file: ``top`` lines, then a [cluster] table of raw TOML values."""
    text = top
    if cluster is not None:
        text += "[cluster]\n" + "".join(f"{k} = {v}\n" for k, v in cluster.items())
    path = tmp_path / "netd.toml"
    path.write_text(text)
    return path


def refused(tmp_path: Path, key: str, raw: str) -> str:
    """The message for [cluster] ``key`` = ``raw`` (the other keys good)."""
    path = write(tmp_path, {**GOOD, key: raw})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def test_good_table_is_accepted(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.cluster is not None
    assert config.cluster.etcd_endpoints == ("http://10.0.0.10:2379",)
    assert config.cluster.node_name == "n1" and config.cluster.node_ttl == 10


@pytest.mark.parametrize(
    ("key", "raw", "value"),
    [
        # etcd_endpoints: a list of http(s)://HOST[:PORT] URLs, at least one
        ("etcd_endpoints", "[]", "[]"),
        ("etcd_endpoints", '"http://10.0.0.10:2379"', "'http://10.0.0.10:2379'"),
        ("etcd_endpoints", '["ftp://10.0.0.10:2379"]', "ftp://10.0.0.10:2379"),
        ("etcd_endpoints", '["10.0.0.10:2379"]', "10.0.0.10:2379"),
        ("etcd_endpoints", '["http://"]', "http://"),
        ("etcd_endpoints", '["http://a b:2379"]', "http://a b:2379"),
        ("etcd_endpoints", '["http://etcd:2379/v3/kv"]', "http://etcd:2379/v3/kv"),
        ("etcd_endpoints", '["http://etcd:99999"]', "http://etcd:99999"),
        ("etcd_endpoints", '["http://etcd:0"]', "http://etcd:0"),
        ("etcd_endpoints", '["http://etcd:2379\\n"]', "http://etcd:2379\\n"),
        ("etcd_endpoints", "[2379]", "2379"),
        # etcd_prefix: /.../ of safe characters, no empty, "." or ".." segments
        ("etcd_prefix", '"netd"', "'netd'"),
        ("etcd_prefix", '"netd/"', "'netd/'"),
        ("etcd_prefix", '"/netd"', "'/netd'"),
        ("etcd_prefix", '""', "''"),
        ("etcd_prefix", '"//"', "'//'"),
        ("etcd_prefix", '"/../"', "'/../'"),
        ("etcd_prefix", '"/a/../b/"', "'/a/../b/'"),
        ("etcd_prefix", '"/a/./"', "'/a/./'"),
        ("etcd_prefix", '"/a b/"', "'/a b/'"),
        ("etcd_prefix", '"/netd/\\n"', "'/netd/\\n'"),
        # node_name: 1-63 of [A-Za-z0-9_.-], starting alphanumeric
        ("node_name", '""', "''"),
        ("node_name", '"node 1"', "'node 1'"),
        ("node_name", '"a/b"', "'a/b'"),
        ("node_name", '"../x"', "'../x'"),
        ("node_name", '"n\\u00f6de"', "'n\u00f6de'"),
        ("node_name", '"-n1"', "'-n1'"),
        ("node_name", '"n1\\n"', "'n1\\n'"),
        ("node_name", '"' + "n" * 64 + '"', "'" + "n" * 64 + "'"),
        ("node_name", "7", "7"),
        # node_address: a unicast IPv4 address
        ("node_address", '"fd00::1"', "'fd00::1'"),
        ("node_address", '"::1"', "'::1'"),
        ("node_address", '"127.0.0.1"', "'127.0.0.1'"),
        ("node_address", '"224.0.0.5"', "'224.0.0.5'"),
        ("node_address", '"0.0.0.0"', "'0.0.0.0'"),
        ("node_address", '"255.255.255.255"', "'255.255.255.255'"),
        ("node_address", '"10.0.0.1/24"', "'10.0.0.1/24'"),
        ("node_address", '"h1.example"', "'h1.example'"),
        ("node_address", '""', "''"),
        # node_ttl: 1 to 3600 s, finite
        ("node_ttl", "0", "0"),
        ("node_ttl", "-5", "-5"),
        ("node_ttl", "0.5", "0.5"),
        ("node_ttl", "3601", "3601"),
        ("node_ttl", "1e300", "1e+300"),
        ("node_ttl", "inf", "inf"),
        ("node_ttl", "nan", "nan"),
        ("node_ttl", '"ten"', "'ten'"),
        # node_grace and resync_interval: finite, not negative
        ("node_grace", "-1", "-1"),
        ("node_grace", "inf", "inf"),
        ("resync_interval", "0", "0"),
        ("resync_interval", "nan", "nan"),
        # ipsec_rotate: 1 s to 30 days, finite, at least twice resync_interval (5 s)
        ("ipsec_rotate", "0", "0"),
        ("ipsec_rotate", "9", "9"),
        ("ipsec_rotate", "2592001", "2592001"),
        ("ipsec_rotate", "inf", "inf"),
        ("ipsec_rotate", "nan", "nan"),
        # ipam_block_size: a prefix length from 16 to 30
        ("ipam_block_size", "15", "15"),
        ("ipam_block_size", "31", "31"),
        ("ipam_block_size", "32", "32"),
        ("ipam_block_size", "0", "0"),
        ("ipam_block_size", "26.5", "26.5"),
        ("ipam_block_size", '"/26"', "'/26'"),
    ],
)
def test_bad_value_is_named_with_its_key(tmp_path: Path, key: str, raw: str, value: str) -> None:
    msg = refused(tmp_path, key, raw)
    assert f"key 'cluster.{key}" in msg, msg  # "cluster.etcd_endpoints.0" for an item
    assert value in msg, msg


@pytest.mark.parametrize("key", ["bogus", "etcd_endpoint", "node_ip", "store"])
def test_unknown_key_in_cluster_is_named(tmp_path: Path, key: str) -> None:
    msg = refused(tmp_path, key, "1")
    assert f"key 'cluster.{key}' value 1" in msg and "Extra inputs" in msg, msg


def test_store_etcd_without_cluster_names_store_and_cluster(tmp_path: Path) -> None:
    path = write(tmp_path, None)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "key 'store' value 'etcd'" in msg and "[cluster]" in msg, msg
    assert "\n" not in msg


def test_cluster_table_that_is_not_a_table(tmp_path: Path) -> None:
    path = write(tmp_path, None, 'store = "etcd"\ncluster = "etcd1"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "key 'cluster' value 'etcd1'" in str(info.value)


def test_store_must_be_known(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD, 'store = "consul"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "key 'store' value 'consul'" in str(info.value)


@pytest.mark.parametrize(
    "url", ["http://10.0.0.10:2379", "https://etcd-1.example:2379/", "http://[fd00::10]:2379"]
)
def test_good_urls_are_accepted(tmp_path: Path, url: str) -> None:
    config = load_config(write(tmp_path, {**GOOD, "etcd_endpoints": f'["{url}"]'}))
    assert config.cluster is not None and config.cluster.etcd_endpoints == (url,)


def test_sqlite_store_with_cluster_table_still_validates_it(tmp_path: Path) -> None:
    # A [cluster] table is read (and checked) even while store is sqlite: a typo is not
    # silently carried until the day the store is switched.
    path = write(tmp_path, {**GOOD, "node_ttl": "0"}, 'store = "sqlite"\n')
    with pytest.raises(ConfigError, match=r"cluster\.node_ttl"):
        load_config(path)


# --- numbers typed into options ----------------------------------------------------------------


@pytest.mark.parametrize("vni", ["\u00b2", "\u0663", "\uff11", "1_000", "0x10", "1e3", "", " "])
def test_vni_takes_only_ascii_digits(vni: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_overlay_options({"vni": vni})
    assert info.value.field == "options.vni" and repr(vni) in info.value.message


@pytest.mark.parametrize("mtu", ["\u00b2", "\u0661\u0665\u0660\u0660"])
def test_mtu_takes_only_ascii_digits(mtu: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_overlay_options({"mtu": mtu})
    assert info.value.field == "options.mtu"

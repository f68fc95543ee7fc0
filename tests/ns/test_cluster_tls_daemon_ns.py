"""netd daemons of a cluster talking to etcd over TLS with client certificates.

Two hosts of the cluster fixture run netd with ``store = "etcd"`` and the ``[cluster]`` keys
etcd_ca_file/etcd_cert_file/etcd_key_file (docs/multi-host.md, "TLS"); etcd demands a client
certificate of the fixture's CA. A network made on one host is seen by the other and is in etcd
(read back by curl with the client certificate). A daemon holding a certificate of another CA
does not start, and says why in one line naming etcd, without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_fixtures import leftovers, wait_for
from netns_fixtures.cluster import Cluster
from netns_fixtures.tls import issue, make_ca

# The daemon reads [cluster] once the lead's cluster core is merged (issue 16).
pytest.importorskip("netd.cluster.config")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, hosts=2, etcd_members=1, tls=True)
    try:
        yield c.start()
    finally:
        failures = c.close()
        assert not failures, failures
        assert not leftovers(c.prefix), leftovers(c.prefix)


def test_daemons_share_a_network_through_etcd_over_tls(cluster: Cluster) -> None:
    d1, d2 = cluster.start_daemon("h1"), cluster.start_daemon("h2")
    config = d1.config_path().read_text()
    assert 'etcd_endpoints = ["https://10.251.0.11:2379"]' in config
    assert "etcd_cert_file" in config
    d1.cli("network", "create", "-d", "overlay", "--subnet", "10.251.96.0/24", "sealed")
    wait_for("h2 lists the network", lambda: "sealed" in d2.cli("network", "ls").stdout, 15)
    assert "/netd/network-names/sealed" in cluster.etcd[0].keys("/netd/")
    d1.close_checked()
    d2.close_checked()


def test_a_daemon_with_a_certificate_of_another_ca_does_not_start(
    cluster: Cluster, tmp_path: Path
) -> None:
    other = make_ca(tmp_path / "other", "another-ca")
    cert, key = issue(tmp_path / "other", other, "intruder")
    settings = {"cluster": {"etcd_cert_file": str(cert), "etcd_key_file": str(key)}}
    with pytest.raises(RuntimeError) as exc:
        cluster.start_daemon("h1", settings=settings)
    log = str(exc.value)
    assert "netd daemon exited" in log
    assert "Traceback" not in log
    assert (
        "etcd unreachable while opening the store (https://10.251.0.11:2379: TLS: the handshake "
        "with etcd failed" in log
    )
    assert cluster.etcd[0].keys("/netd/network-names/") == {}

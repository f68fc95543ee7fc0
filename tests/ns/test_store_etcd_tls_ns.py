"""EtcdStore against an etcd that serves https and demands a client certificate.

etcd runs with --cert-file/--key-file/--client-cert-auth/--trusted-ca-file (a throwaway CA made
with openssl, netns_fixtures.tls) on the underlay address of its namespace; the store runs in a
host namespace of the cluster fixture, as a netd node would. With the CA and a client
certificate of that CA it works; without a client certificate, with one of another CA, or
without the CA, opening fails with a StoreError naming etcd, the endpoint and the TLS cause in
one readable line. Two prefixes on one etcd are two separate stores.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit import endpoint, network
from netns_fixtures import leftovers
from netns_fixtures.cluster import Cluster
from netns_fixtures.etcd import inside
from netns_fixtures.tls import Pki, issue, make_ca

from netd.errors import StoreError
from netd.store.etcd import EtcdStore


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One etcd member with client-certificate auth and one host, for the module."""
    c = Cluster(tmp_path_factory.mktemp("tls"), hosts=1, etcd_members=1, tls=True)
    try:
        yield c.start()
    finally:
        failures = c.close()
        assert not failures, failures
        assert not leftovers(c.prefix), leftovers(c.prefix)


@pytest.fixture
def on_host(tls_cluster: Cluster) -> Iterator[Cluster]:
    """The test's thread in the cluster's host namespace (back out before teardown)."""
    with inside(tls_cluster.hosts[0].ns):
        yield tls_cluster


@pytest.fixture
def pki(tls_cluster: Cluster) -> Pki:
    assert tls_cluster.pki is not None
    return tls_cluster.pki


@pytest.fixture
def prefix() -> str:
    return f"/netd-test/{uuid.uuid4().hex}/"


@pytest.fixture(autouse=True)
def system_ca_bundle_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on many Debian hosts: plain requests would then ignore etcd_ca_file."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")


def open_store(c: Cluster, prefix: str, **tls: str) -> EtcdStore:
    return EtcdStore(c.etcd_endpoints, prefix=prefix, **tls)


def failure(c: Cluster, **tls: str) -> str:
    """The message of the StoreError that opening a store with ``tls`` raises."""
    with pytest.raises(StoreError) as exc:
        open_store(c, "/netd-test/refused/", **tls)
    message = str(exc.value)
    # One readable line naming etcd and the endpoint; no wrapper reprs from the HTTP stack.
    assert "\n" not in message
    assert "etcd" in message and c.etcd_endpoints[0] in message
    for noise in ("HTTPSConnectionPool", "Max retries", "object at 0x", "_ssl.c", "Error("):
        assert noise not in message, message
    return message


def test_etcd_itself_refuses_a_client_without_a_certificate(tls_cluster: Cluster) -> None:
    """Independent of netd: curl with the client certificate gets in, without it does not."""
    etcd = tls_cluster.etcd[0]
    assert etcd.url == "https://10.251.0.11:2379"
    host = tls_cluster.hosts[0].ns
    assert host.ok(*etcd.curl_argv("/health"))
    assert not host.ok("curl", "-sf", "--max-time", "3", "--cacert", str(etcd.tls.ca_cert),  # type: ignore[union-attr]
                       f"{etcd.url}/health")  # fmt: skip


def test_store_works_over_https_with_a_client_certificate(
    on_host: Cluster, pki: Pki, prefix: str
) -> None:
    store = open_store(
        on_host,
        prefix,
        ca_file=str(pki.ca_cert),
        cert_file=str(pki.client_cert),
        key_file=str(pki.client_key),
    )
    try:
        net = network("secure", "10.251.70.0/24")
        store.create_network(net)
        store.put_endpoint(endpoint(net, "c1"), {})
        assert [n.name for n in store.list_networks()] == ["secure"]
        assert [e.container_id for e in store.list_endpoints(net.id)] == ["c1"]
        assert store.probe().ok
    finally:
        store.close()
    # What the store wrote is in etcd, read back by curl with the client certificate.
    assert f"{prefix}network-names/secure" in on_host.etcd[0].keys(prefix)


def test_without_a_client_certificate_the_error_says_tls_and_what_to_set(
    on_host: Cluster, pki: Pki
) -> None:
    message = failure(on_host, ca_file=str(pki.ca_cert))
    assert "TLS: the handshake with etcd failed" in message
    assert "etcd_cert_file" in message


def test_a_client_certificate_of_another_ca_is_refused(
    on_host: Cluster, pki: Pki, tmp_path: Path
) -> None:
    other = make_ca(tmp_path, "another-ca")
    cert, key = issue(tmp_path, other, "intruder")
    message = failure(on_host, ca_file=str(pki.ca_cert), cert_file=str(cert), key_file=str(key))
    assert "TLS: the handshake with etcd failed" in message


def test_without_the_ca_etcds_certificate_is_not_trusted(on_host: Cluster, pki: Pki) -> None:
    # The client certificate is right; the system CAs (REQUESTS_CA_BUNDLE) do not know etcd's.
    message = failure(on_host, cert_file=str(pki.client_cert), key_file=str(pki.client_key))
    assert "TLS: etcd's certificate was not accepted (unable to get local issuer certificate)" in (
        message
    )
    assert "etcd_ca_file" in message


def test_two_prefixes_on_one_etcd_are_two_stores(on_host: Cluster, pki: Pki) -> None:
    tls = {"ca_file": str(pki.ca_cert), "cert_file": str(pki.client_cert),
           "key_file": str(pki.client_key)}  # fmt: skip
    base = f"/netd-test/{uuid.uuid4().hex}"
    a = open_store(on_host, f"{base}/a/", **tls)
    b = open_store(on_host, f"{base}/b/", **tls)
    try:
        assert a.fresh and b.fresh  # each prefix is created by its first open
        # The same name and the same subnet: no conflict across prefixes.
        net_a = network("shared-name", "10.251.80.0/24")
        net_b = network("shared-name", "10.251.80.0/24", id="b" * 64)
        a.create_network(net_a)
        b.create_network(net_b)
        a.create_network(network("only-in-a", "10.251.81.0/24"))
        assert [n.name for n in a.list_networks()] == ["shared-name", "only-in-a"]
        assert [(n.id, n.name) for n in b.list_networks()] == [("b" * 64, "shared-name")]
        a.put_endpoint(endpoint(net_a, "c1"), {})
        assert b.list_endpoints() == []
        a.delete_network(network("only-in-a", "10.251.81.0/24").id)
        assert [n.name for n in b.list_networks()] == ["shared-name"]
        keys = on_host.etcd[0].keys(f"{base}/")
        assert {k.split("/")[3] for k in keys} == {"a", "b"}
    finally:
        a.close()
        b.close()

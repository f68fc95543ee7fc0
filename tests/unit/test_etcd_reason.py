"""How EtcdStore words a failed call to etcd: the cause, never a wrapper's repr.

The exception chains are built the way etcd3gw, requests and urllib3 build them (each raised
while handling the one below); the real TLS failures are in tests/ns/test_store_etcd_tls_ns.py.
"""

from __future__ import annotations

import pytest
import requests
import urllib3
from etcd3gw.exceptions import ConnectionFailedError, ConnectionTimeoutError, Etcd3Exception

from netd.errors import InvalidInput
from netd.store.etcd import EtcdStore, _reason


def as_etcd3gw_raises(low: BaseException) -> ConnectionFailedError:
    """urllib3 error -> requests.ConnectionError -> etcd3gw ConnectionFailedError, chained."""
    pool = "HTTPConnectionPool(host='10.251.0.11', port=2379)"
    try:
        try:
            raise urllib3.exceptions.MaxRetryError(None, "/v3/kv/txn", low)  # type: ignore[arg-type]
        except urllib3.exceptions.MaxRetryError as e:
            raise requests.ConnectionError(e) from None
    except requests.ConnectionError as ex:
        try:
            raise ConnectionFailedError(f"{pool}: Max retries exceeded ({ex})")
        except ConnectionFailedError as wrapped:
            return wrapped
    raise AssertionError("unreachable")


def test_connection_refused_is_said_in_two_words() -> None:
    # Before: etcd3gw keeps its text in detail_text, not args, so every connection failure
    # was worded "ConnectionFailedError".
    low = urllib3.exceptions.NewConnectionError(None, "Failed to establish a new connection")  # type: ignore[arg-type]
    low.__cause__ = ConnectionRefusedError(111, "Connection refused")
    assert _reason(as_etcd3gw_raises(low)) == "connection refused"


def test_an_http_error_is_etcds_own_message() -> None:
    msg = "etcdserver: too many requests"
    body = f'{{"error":"{msg}","code":14,"message":"{msg}"}}'
    assert _reason(Etcd3Exception(body, "Service Unavailable")) == "etcdserver: too many requests"


def test_timeouts_stay_timeouts() -> None:
    assert _reason(ConnectionTimeoutError("read timed out after 3 s")) == "timed out"


@pytest.mark.parametrize("field", ["ca_file", "cert_file", "key_file"])
def test_an_unreadable_tls_file_is_invalid_input_naming_the_key(field: str) -> None:
    kw = {"ca_file": None, "cert_file": None, "key_file": None}
    kw[field] = "/nonexistent/netd-test.pem"
    if field != "ca_file":  # a certificate and its key go together
        kw["cert_file" if field == "key_file" else "key_file"] = __file__
    with pytest.raises(InvalidInput) as exc:
        EtcdStore(["https://10.251.0.11:2379"], **kw)
    assert exc.value.field == f"etcd_{field}"
    assert str(exc.value) == (
        f"invalid etcd_{field} '/nonexistent/netd-test.pem': cannot be read: "
        "No such file or directory"
    )


def test_a_certificate_without_its_key_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match=r"etcd_key_file.*set both or neither"):
        EtcdStore(["https://10.251.0.11:2379"], cert_file=__file__)

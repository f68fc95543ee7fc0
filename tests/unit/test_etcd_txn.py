"""The pure half of the etcd store: transaction JSON as etcd's grpc-gateway reads and writes it."""

from __future__ import annotations

import base64

from netd.store import etcd_txn as t


def test_prefix_end_covers_exactly_the_prefix() -> None:
    assert t.prefix_end("/netd/endpoints/n1/") == "/netd/endpoints/n10"
    end = t.prefix_end("/netd/a/")
    assert "/netd/a/" <= "/netd/a/zzz" < end
    assert not ("/netd/a/" <= "/netd/b/" < end)


def test_keys_and_values_travel_base64() -> None:
    op = t.put("/netd/networks/x", '{"a":1}')
    assert base64.b64decode(op["request_put"]["key"]) == b"/netd/networks/x"
    assert t.unb64(op["request_put"]["value"]) == '{"a":1}'


def test_unchanged_at_revision_zero_means_absent() -> None:
    assert t.unchanged("/k", 0) == t.absent("/k")
    assert t.unchanged("/k", 7)["mod_revision"] == 7


def test_none_under_is_a_range_compare_on_create_revision() -> None:
    c = t.none_under("/netd/endpoints/n1/")
    assert (c["target"], c["result"], c["create_revision"]) == ("CREATE", "EQUAL", 0)
    assert t.unb64(c["range_end"]) == "/netd/endpoints/n10"


def test_answers_with_zero_fields_left_out_are_read_with_defaults() -> None:
    # The gateway omits false, empty and zero fields: a failed txn has no "succeeded".
    assert t.succeeded({"header": {}}) is False
    answer = {
        "succeeded": True,
        "responses": [
            {"response_put": {}},
            {"response_range": {}},
            {"response_range": {"kvs": [{"key": t.b64("/k"), "create_revision": "5"}]}},
        ],
    }
    assert t.ranges(answer) == [[], [t.Entry("/k", "", 5, 0)]]

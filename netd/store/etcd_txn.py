"""Pure builders for etcd v3 transactions in the grpc-gateway's JSON form, and their results.

The gateway (``POST /v3/kv/txn``) takes keys and values base64-encoded and field names as in
etcd's ``rpc.proto``; it leaves out fields at their zero value in answers (``succeeded`` when
false, ``kvs`` when empty, revisions of 0), so every reader here supplies the default. Nothing in
this module does I/O: :mod:`netd.store.etcd` sends what these functions build.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

Json = dict[str, Any]


def b64(text: str) -> str:
    """A key or value as the gateway wants it."""
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    """A key or value from a gateway answer."""
    return base64.b64decode(text).decode()


def prefix_end(prefix: str) -> str:
    """The ``range_end`` that makes a range cover every key starting with ``prefix``."""
    raw = prefix.encode()
    # Keys are UTF-8 and prefixes end in "/" here, so the last byte is never 0xff.
    return raw[:-1].decode() + chr(raw[-1] + 1)


# --- compares: the guards of a transaction -----------------------------------------------------


def absent(key: str) -> Json:
    """Holds while ``key`` does not exist (its create revision is 0)."""
    return {"key": b64(key), "target": "CREATE", "result": "EQUAL", "create_revision": 0}


def present(key: str) -> Json:
    """Holds while ``key`` exists."""
    return {"key": b64(key), "target": "CREATE", "result": "GREATER", "create_revision": 0}


def unchanged(key: str, mod_revision: int) -> Json:
    """Holds while ``key`` was last written at ``mod_revision`` (0: while it does not exist)."""
    if mod_revision == 0:
        return absent(key)
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": mod_revision}


def value_is(key: str, value: str) -> Json:
    """Holds while ``key`` exists with exactly ``value`` (fails on an absent key)."""
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def none_under(prefix: str) -> Json:
    """Holds while no key starts with ``prefix``.

    A compare over a range must hold for every key in it; over an empty range etcd compares a
    zero key-value, whose create revision is 0 (etcd ``applyCompare``; ranges since etcd 3.3).
    """
    return {
        "key": b64(prefix),
        "range_end": b64(prefix_end(prefix)),
        "target": "CREATE",
        "result": "EQUAL",
        "create_revision": 0,
    }


# --- operations -------------------------------------------------------------------------------


def put(key: str, value: str, lease: int = 0) -> Json:
    """Write ``value`` under ``key`` (bound to ``lease`` when not 0: gone when it expires)."""
    request: Json = {"key": b64(key), "value": b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def delete(key: str) -> Json:
    """Remove ``key`` (nothing if absent)."""
    return {"request_delete_range": {"key": b64(key)}}


def delete_under(prefix: str) -> Json:
    """Remove every key starting with ``prefix``."""
    return {"request_delete_range": {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}}


def get(key: str) -> Json:
    """Read ``key``."""
    return {"request_range": {"key": b64(key)}}


def get_under(prefix: str) -> Json:
    """Read every key starting with ``prefix``."""
    return {"request_range": {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}}


def txn(compare: list[Json], success: list[Json], failure: list[Json] | None = None) -> Json:
    """A transaction: ``success`` if every compare holds, else ``failure``."""
    return {"compare": compare, "success": success, "failure": failure or []}


# --- answers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One key as read: its value and the revisions that order and guard it."""

    key: str
    value: str
    create_revision: int
    mod_revision: int
    lease: int = 0  # the lease the key is attached to (0: none)


def succeeded(answer: Json) -> bool:
    """Whether the transaction's compares held (absent from the JSON when false)."""
    return bool(answer.get("succeeded", False))


def revision(answer: Json) -> int:
    """The store revision after the transaction: the mod revision of every key it wrote."""
    return int(answer.get("header", {}).get("revision", 0))


def ranges(answer: Json) -> list[list[Entry]]:
    """The entries read by each ``request_range`` of the branch that ran, in order."""
    out: list[list[Entry]] = []
    for response in answer.get("responses", []):
        found = response.get("response_range")
        if found is None:
            continue
        out.append(
            [
                Entry(
                    key=unb64(kv["key"]),
                    value=unb64(kv.get("value", "")),
                    create_revision=int(kv.get("create_revision", 0)),
                    mod_revision=int(kv.get("mod_revision", 0)),
                    lease=int(kv.get("lease", 0)),
                )
                for kv in found.get("kvs", [])
            ]
        )
    return out

"""IPsec keys of the encrypted overlay: the cluster's key ring, its rotation, per-pair SAs (pure).

The key ring is one etcd record, ``<prefix>ipsec/keys``::

    {"version": 1, "keys": [{"id": 7, "secret": "<64 hex>", "created": 1764780000.0}, ...]}

at most :data:`KEEP` generations, oldest first, ids strictly increasing. The first node that
needs a key creates the ring in a guarded transaction (absent → put); a node that finds the
newest generation older than ``ipsec_rotate`` seconds appends the next one in a transaction
guarded by the record's revision, so concurrent rotations make one generation, not two.

Which key sends (Docker's primary/secondary scheme, without a manager): every node installs
inbound SAs for every generation of the ring and sends with :func:`primary`, the second newest
(the only one in a fresh ring). A new generation therefore only receives for one rotation
period — long enough for every node to have read it — before anyone sends with it, and the
previous primary stays in the ring (receiving) while the nodes switch one by one: no packet is
lost to a node that is a few seconds behind, as long as ``ipsec_rotate`` exceeds the time a
ring change takes to reach every node (config enforces at least twice ``resync_interval``).

Per node pair and direction (src → dst) both ends derive, without talking:
- the SPI: the generation's slot (``id % 15 + 1``) in the top 4 bits, a hash of the two
  addresses in the other 28 — SPIs of the three generations in the ring never collide, and
  never fall in 0-255 (reserved, RFC 4303 §2.1);
- the keys: HMAC-SHA256 of the generation's secret over the generation id, direction and
  addresses, so no two SAs share a key (a stolen SA key opens one direction of one pair for
  one generation).

Malformed or hostile rings (wrong types, bad hex, duplicate ids, more than a sane number of
generations) are refused with :class:`~netd.errors.StoreCorrupt` naming the etcd key and field.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from ..errors import StoreCorrupt

KEY_PATH = "ipsec/keys"  # under the cluster's etcd prefix
KEEP = 3  # generations in the ring: the one receiving only, the primary, the previous primary
MAX_RECORD_KEYS = 16  # a ring longer than this is refused as hostile, not trimmed
SECRET_BYTES = 32
ENC_BYTES = 16  # AES-128-CBC (RFC 3602)
AUTH_BYTES = 32  # HMAC-SHA-256-128 (RFC 4868): a 256-bit key, 128-bit ICV
MAX_ID = 2**31 - 1


@dataclass(frozen=True)
class KeyGen:
    """One generation of the cluster key: its id, its secret, when a node made it."""

    id: int
    secret: bytes
    created: float

    def __repr__(self) -> str:  # never print a secret into a log
        return f"KeyGen(id={self.id}, created={self.created})"


@dataclass(frozen=True)
class StateSpec:
    """One ESP transport SA from ``src`` to ``dst``: what ``ip xfrm state`` holds."""

    src: IPv4Address
    dst: IPv4Address
    spi: int
    enc: bytes
    auth: bytes

    @property
    def key(self) -> tuple[IPv4Address, IPv4Address, int]:
        """How the kernel names the SA (with the protocol, always ESP here)."""
        return (self.src, self.dst, self.spi)

    def __repr__(self) -> str:
        return f"StateSpec({self.src} -> {self.dst} spi 0x{self.spi:08x})"


@dataclass(frozen=True)
class PolicySpec:
    """The outbound policy for VXLAN from ``src`` to ``dst``: ESP with the SA ``spi``."""

    src: IPv4Address
    dst: IPv4Address
    spi: int


@dataclass(frozen=True)
class XfrmPlan:
    """The SAs and policies a node needs, and the peers left out (SPI collisions)."""

    states: dict[tuple[IPv4Address, IPv4Address, int], StateSpec]
    policies: dict[tuple[IPv4Address, IPv4Address], PolicySpec]
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class XfrmDiff:
    """What to change in the kernel to go from what is there to the plan."""

    add_states: tuple[StateSpec, ...]
    update_states: tuple[StateSpec, ...]
    del_states: tuple[tuple[IPv4Address, IPv4Address, int], ...]
    set_policies: tuple[PolicySpec, ...]
    del_policies: tuple[tuple[IPv4Address, IPv4Address], ...]

    @property
    def empty(self) -> bool:
        """Nothing to do."""
        return not (
            self.add_states
            or self.update_states
            or self.del_states
            or self.set_policies
            or self.del_policies
        )


# --- the ring in etcd ------------------------------------------------------------------------


def _corrupt(key: str, field: str, value: Any, rule: str) -> StoreCorrupt:
    shown = value if isinstance(value, int | float | bool) or value is None else repr(value)[:80]
    return StoreCorrupt(
        f"reading the IPsec key ring at etcd key {key!r}: {field} = {shown}: {rule}",
        field=field,
        value=shown,
    )


def parse_ring(key: str, value: str) -> tuple[KeyGen, ...]:
    """The generations of the record ``value`` read at etcd ``key``, oldest first;
    StoreCorrupt naming ``key`` and the field when anything is off."""
    try:
        doc = json.loads(value)
    except ValueError as e:
        raise _corrupt(key, "record", value, f"not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise _corrupt(key, "record", value, "must be a JSON object")
    if doc.get("version") != 1:
        raise _corrupt(key, "version", doc.get("version"), "must be 1")
    raw = doc.get("keys")
    if not isinstance(raw, list) or not raw:
        raise _corrupt(key, "keys", raw, "must be a non-empty list")
    if len(raw) > MAX_RECORD_KEYS:
        raise _corrupt(key, "keys", len(raw), f"more than {MAX_RECORD_KEYS} generations")
    out: list[KeyGen] = []
    for i, item in enumerate(raw):
        where = f"keys[{i}]"
        if not isinstance(item, dict) or set(item) != {"id", "secret", "created"}:
            raise _corrupt(key, where, item, 'must be {"id", "secret", "created"}')
        gid, secret, created = item["id"], item["secret"], item["created"]
        if type(gid) is not int or not 1 <= gid <= MAX_ID:
            raise _corrupt(key, f"{where}.id", gid, f"must be an integer 1..{MAX_ID}")
        if out and gid <= out[-1].id:
            raise _corrupt(key, f"{where}.id", gid, "ids must increase strictly")
        if (
            not isinstance(secret, str)
            or len(secret) != 2 * SECRET_BYTES
            or any(c not in "0123456789abcdef" for c in secret)
        ):
            raise _corrupt(
                key, f"{where}.secret", "<hidden>", f"must be {2 * SECRET_BYTES} lowercase hex"
            )
        if (
            isinstance(created, bool)
            or not isinstance(created, int | float)
            or not math.isfinite(created)
            or created < 0
        ):
            raise _corrupt(key, f"{where}.created", created, "must be a finite Unix time")
        out.append(KeyGen(gid, bytes.fromhex(secret), float(created)))
    return tuple(out)


def dump_ring(ring: Iterable[KeyGen]) -> str:
    """The record for ``ring`` (what :func:`parse_ring` reads back)."""
    keys = [{"id": g.id, "secret": g.secret.hex(), "created": g.created} for g in ring]
    return json.dumps({"version": 1, "keys": keys}, separators=(",", ":"))


def next_ring(
    ring: tuple[KeyGen, ...], now: float, rotate: float, secret: bytes
) -> tuple[KeyGen, ...] | None:
    """The ring to write, None if ``ring`` is fine: the first generation when there is none,
    the next one (``secret``) when the newest is ``rotate`` s old, trimmed to :data:`KEEP`.

    A newest generation dated in the future (another node's clock runs ahead) counts as new:
    clock skew delays a rotation, it never makes one per pass.
    """
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"a key secret is {SECRET_BYTES} bytes, not {len(secret)}")
    if not ring:
        return (KeyGen(1, secret, now),)
    newest = ring[-1]
    if now - newest.created < rotate:
        return None
    if newest.id >= MAX_ID:
        raise _corrupt(KEY_PATH, "keys[-1].id", newest.id, "no id left to rotate to")
    return (*ring, KeyGen(newest.id + 1, secret, now))[-KEEP:]


def primary(ring: tuple[KeyGen, ...]) -> KeyGen:
    """The generation that sends: the second newest (the newest only receives for now)."""
    if not ring:
        raise ValueError("an empty key ring has no primary key")
    return ring[-2] if len(ring) >= 2 else ring[-1]


# --- per-pair SAs -------------------------------------------------------------------------------


def spi(gen: int, src: IPv4Address, dst: IPv4Address) -> int:
    """The SPI of generation ``gen``'s SA from ``src`` to ``dst`` (both ends compute it)."""
    slot = gen % 15 + 1
    digest = hashlib.sha256(f"netd-ipsec-spi|{src}|{dst}".encode()).digest()
    return slot << 28 | int.from_bytes(digest[:4], "big") & 0x0FFFFFFF


def sa_keys(gen: KeyGen, src: IPv4Address, dst: IPv4Address) -> tuple[bytes, bytes]:
    """(encryption key, authentication key) of generation ``gen``'s SA from ``src`` to ``dst``."""

    def derive(use: str, size: int) -> bytes:
        info = f"netd-ipsec-v1|{use}|{gen.id}|{src}|{dst}".encode()
        return hmac.new(gen.secret, info, hashlib.sha256).digest()[:size]

    return derive("enc", ENC_BYTES), derive("auth", AUTH_BYTES)


def state(gen: KeyGen, src: IPv4Address, dst: IPv4Address) -> StateSpec:
    """The SA of generation ``gen`` from ``src`` to ``dst``."""
    enc, auth = sa_keys(gen, src, dst)
    return StateSpec(src, dst, spi(gen.id, src, dst), enc, auth)


def plan_xfrm(
    ring: tuple[KeyGen, ...], local: IPv4Address, peers: Collection[IPv4Address]
) -> XfrmPlan:
    """The SAs (both directions, every generation) and outbound policies (primary's SA) for
    ``local`` and each of ``peers`` (itself skipped). An inbound SA whose SPI another peer's
    already has (1 in 2**28 per pair) is left out and named in ``conflicts``."""
    incoming: dict[tuple[IPv4Address, IPv4Address, int], StateSpec] = {}
    outgoing: dict[tuple[IPv4Address, IPv4Address, int], StateSpec] = {}
    policies: dict[tuple[IPv4Address, IPv4Address], PolicySpec] = {}
    conflicts: list[str] = []
    if not ring:
        return XfrmPlan({}, policies)
    send = primary(ring)
    inbound: dict[int, IPv4Address] = {}
    for peer in sorted(set(peers) - {local}):
        for g in ring:
            s = state(g, peer, local)
            if s.spi in inbound:
                # Fail closed: the peer's packets with this SPI fail the other SA's check and
                # are dropped; what this node sends to the peer is unaffected.
                conflicts.append(
                    f"peer {peer}: inbound SPI 0x{s.spi:08x} (generation {g.id}) is already "
                    f"peer {inbound[s.spi]}'s; packets from {peer} with it are dropped"
                )
                continue
            inbound[s.spi] = peer
            incoming[s.key] = s
        for g in ring:
            out = state(g, local, peer)
            outgoing[out.key] = out
        policies[(local, peer)] = PolicySpec(local, peer, spi(send.id, local, peer))
    # Inbound first: a plan applied in order can receive before it sends.
    return XfrmPlan({**incoming, **outgoing}, policies, tuple(conflicts))


def diff_xfrm(
    plan: XfrmPlan,
    states: Mapping[tuple[IPv4Address, IPv4Address, int], StateSpec],
    policies: Mapping[tuple[IPv4Address, IPv4Address], PolicySpec],
) -> XfrmDiff:
    """What to add, re-key, remove so that the kernel's ``states`` and ``policies`` (netd's
    own, as listed) become ``plan``'s; ``add_states`` keeps the plan's order (inbound first)."""
    add = [s for k, s in plan.states.items() if k not in states]
    update = [s for k, s in plan.states.items() if k in states and states[k] != s]
    drop = [k for k in states if k not in plan.states]
    set_pol = [p for k, p in plan.policies.items() if policies.get(k) != p]
    del_pol = [k for k in policies if k not in plan.policies]
    return XfrmDiff(
        tuple(add),
        tuple(update),
        tuple(sorted(drop, key=str)),
        tuple(sorted(set_pol, key=lambda p: str(p.dst))),
        tuple(sorted(del_pol, key=str)),
    )

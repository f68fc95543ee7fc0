"""The encrypted overlay on one node: key ring from etcd, SAs, policies and VXLAN marks.

:class:`IpsecManager` is what the cluster sync calls on every pass (from a worker thread):
``sync(vnis, local, peers)`` reads the key ring (creating or rotating it in a guarded
transaction when due: :mod:`netd.cluster.ipsec_keys`), plans the SAs and policies for this
node and every peer, and converges the kernel to exactly that plan — add missing (inbound
first), re-key changed, switch policies to the primary key, remove extra — and the nftables
marks to exactly ``vnis``. Nothing changes when nothing is due, so it is cheap to call often.
With no encrypted network left it removes everything of netd's (:meth:`teardown`).

Failing closed: if the kernel refuses an SA (no ESP), the policies and marks still go in, so
an encrypted network's VXLAN packets are dropped for want of an SA — never sent in clear. The
overlay driver refuses to plumb an encrypted network on such a node in the first place.
While etcd does not answer nothing is changed: the SAs in force keep the data plane working.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from ipaddress import IPv4Address
from typing import TypeVar

from ..errors import KernelError, NetdError, StoreError
from ..kernel import ipsec_nft, xfrm
from ..store import etcd_txn as t
from ..store.etcd import EtcdStore
from . import ipsec_keys as k

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRIES = 5  # guarded writes lost to another node's before giving up for this pass


class IpsecManager:
    """Key ring, SAs, policies and marks of this node (see the module docstring)."""

    def __init__(
        self,
        etcd: EtcdStore,
        rotate: float,
        *,
        clock: Callable[[], float] = time.time,
        secret: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.etcd = etcd
        self.rotate = rotate
        self.clock = clock
        self.secret = secret
        self.ring: tuple[k.KeyGen, ...] = ()
        self._vnis: frozenset[int] | None = None  # the marks last applied (None: unknown)
        self._clean = False  # a teardown found nothing left: no kernel reads until needed

    # --- the key ring ------------------------------------------------------------------------

    def keys(self) -> tuple[k.KeyGen, ...]:
        """The ring as etcd has it, created or rotated first when due (guarded writes)."""
        key = self.etcd.key(k.KEY_PATH)
        for _ in range(RETRIES):
            _, (found,) = self.etcd.read("reading the IPsec key ring", t.get(key))
            ring = k.parse_ring(key, found[0].value) if found else ()
            revision = found[0].mod_revision if found else 0
            wanted = k.next_ring(ring, self.clock(), self.rotate, self.secret(k.SECRET_BYTES))
            if wanted is None:
                return ring
            doing = "creating the IPsec key ring" if not ring else "rotating the IPsec key"
            if self.etcd.commit(doing, [t.unchanged(key, revision)],
                                [t.put(key, k.dump_ring(wanted))]):  # fmt: skip
                log.info("IPsec: key generation %d made (ring %s)", wanted[-1].id,
                         [g.id for g in wanted])  # fmt: skip
                return wanted
            # Another node wrote first: read its ring (it may be the very rotation we wanted).
        raise StoreError(f"rotating the IPsec key at {key}: lost {RETRIES} races in a row")

    # --- converging --------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Whether a sync with no VNI would do nothing (nothing of netd's is left)."""
        return self._clean

    def sync(
        self, vnis: Collection[int], local: IPv4Address, peers: Collection[IPv4Address]
    ) -> None:
        """Make SAs, policies and marks exactly those ``vnis`` (the encrypted networks' VNIs)
        need between ``local`` and ``peers``; with no VNI, remove them all. Idempotent.
        StoreError (nothing changed) if etcd does not answer; KernelError/FirewallError
        listing every step that failed, after doing every step that could be done."""
        failures: list[str]
        if not vnis:
            if self._clean:
                return
            failures = self.teardown()
            self._clean = not failures
            if failures:
                raise KernelError("removing IPsec state: " + "; ".join(failures))
            return
        failures = []
        ring = self.keys()
        if ring != self.ring:
            log.info("IPsec: key ring %s, sending with generation %d",
                     [g.id for g in ring], k.primary(ring).id)  # fmt: skip
        self.ring = ring
        self._clean = False
        plan = k.plan_xfrm(ring, local, peers)
        for conflict in plan.conflicts:
            log.error("IPsec: %s", conflict)
        wanted = frozenset(vnis)
        if wanted != self._vnis or not ipsec_nft.current():  # flushed behind netd's back
            try:
                ipsec_nft.apply(wanted)
                self._vnis = wanted
            except NetdError as e:
                failures.append(e.message)
        diff = k.diff_xfrm(plan, xfrm.list_states(), xfrm.list_policies())
        if diff.empty:
            if failures:
                raise KernelError("; ".join(failures))
            return
        # Order matters: receive before sending, switch policies before dropping old SAs.
        for s in diff.add_states:
            _attempt(failures, xfrm.add_states, [s])
        for s in diff.update_states:
            _attempt(failures, xfrm.update_states, [s])
        for p in diff.set_policies:
            _attempt(failures, xfrm.set_policy, p)
        for q in diff.del_policies:
            _attempt(failures, xfrm.delete_policy, q)
        for key in diff.del_states:
            _attempt(failures, xfrm.delete_state, key)
        log.info(
            "IPsec: %d SAs added, %d re-keyed, %d removed; %d policies set, %d removed",
            len(diff.add_states), len(diff.update_states), len(diff.del_states),
            len(diff.set_policies), len(diff.del_policies),
        )  # fmt: skip
        if failures:
            raise KernelError("; ".join(failures))

    def teardown(self) -> list[str]:
        """Remove every SA, policy and mark rule of netd's in this namespace (and only
        those: found by reqid and mark); best effort, the failures returned."""
        failures: list[str] = []
        try:
            policies = xfrm.list_policies()
            states = xfrm.list_states()
        except NetdError as e:
            return [e.message]
        for q in policies:
            _attempt(failures, xfrm.delete_policy, q)
        for key in states:
            _attempt(failures, xfrm.delete_state, key)
        if self._vnis != frozenset() or ipsec_nft.current():
            try:
                ipsec_nft.apply(())
                self._vnis = frozenset()
            except NetdError as e:
                failures.append(e.message)
        if policies or states:
            log.info("IPsec: removed %d policies and %d SAs", len(policies), len(states))
        return failures


def _attempt(failures: list[str], step: Callable[[T], None], arg: T) -> None:
    """``step(arg)``; its failure's message appended to ``failures`` (carry on)."""
    try:
        step(arg)
    except NetdError as e:
        failures.append(e.message)

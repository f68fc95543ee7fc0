"""Which link kinds this kernel can create, probed once in a throwaway namespace.

Kernels differ: a distribution kernel has macvlan, ipvlan, 802.1Q and dummy links; a minimal
or sandboxed one may lack any of them (the CI machines of today have macvlan, veth, bridge,
vxlan and xfrm, but no ipvlan, vlan, dummy, vrf or wireguard). A driver asks
:func:`missing_link_kind` before it creates a network, ``netd doctor`` lists the answers.

A probe creates the link (on a veth lower device where the kind needs one) inside a new, empty
network namespace that exists only as long as the probe's netlink socket
(:func:`netd.kernel.netns.netlink_socket_in_fresh_netns`), so no real namespace ever sees it.
The kernel answers EOPNOTSUPP ("Unknown device type") for a kind it has no driver for, after
trying to load the module. Answers are cached for the life of the process; a module loaded
later is seen after a restart.

It knows nothing about networks or drivers.
"""

from __future__ import annotations

import errno
import logging
import threading

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import NetdError
from .links import errno_text
from .netns import netlink_socket_in_fresh_netns

log = logging.getLogger(__name__)

# Kind -> what it is called and the kernel option that provides it (for the one-line error).
KIND_NAMES: dict[str, str] = {
    "veth": "veth links (CONFIG_VETH)",
    "bridge": "bridge links (CONFIG_BRIDGE)",
    "macvlan": "macvlan links (CONFIG_MACVLAN)",
    "ipvlan": "ipvlan links (CONFIG_IPVLAN)",
    "vlan": "802.1Q VLAN links (CONFIG_VLAN_8021Q)",
    "dummy": "dummy links (CONFIG_DUMMY)",
    "vxlan": "vxlan links (CONFIG_VXLAN)",
}
# Kinds created on a lower device (IFLA_LINK), with the extra link arguments they need.
_NEEDS_LOWER: dict[str, dict[str, object]] = {
    "macvlan": {"macvlan_mode": "bridge"},
    "ipvlan": {"ipvlan_mode": 0},  # l2
    "vlan": {"vlan_id": 2},
}
# Kinds that need arguments without a lower device.
_ARGS: dict[str, dict[str, object]] = {"veth": {"peer": "probe-peer"}, "vxlan": {"vxlan_id": 2}}

_cache: dict[str, str] = {}
_lock = threading.Lock()


def describe_kind(kind: str) -> str:
    """``"ipvlan links (CONFIG_IPVLAN)"`` for a kind, the kind itself if not listed."""
    return KIND_NAMES.get(kind, f"{kind} links")


def missing_link_kind(kind: str) -> str:
    """ "" if this kernel can create links of ``kind``, else why not, in one line.

    ``"this kernel has no ipvlan links (CONFIG_IPVLAN)"``. Cached per process.
    """
    with _lock:
        if kind not in _cache:
            _cache[kind] = _probe(kind)
            if _cache[kind]:
                log.info("kernel feature probe: %s", _cache[kind])
        return _cache[kind]


def _probe(kind: str) -> str:
    try:
        sock = netlink_socket_in_fresh_netns()
    except NetdError as exc:
        return f"cannot probe for {describe_kind(kind)}: {exc.message}"
    try:
        with IPRoute(use_socket=sock, groups=0) as ipr:
            extra: dict[str, object] = {}
            if kind in _NEEDS_LOWER:
                try:
                    ipr.link("add", ifname="probe-lower", kind="veth", peer="probe-peer")
                except NetlinkError as exc:
                    return f"cannot probe for {describe_kind(kind)}: veth: {errno_text(exc)}"
                lower = ipr.link_lookup(ifname="probe-lower")[0]
                extra = {"link": lower, **_NEEDS_LOWER[kind]}
            else:
                extra = dict(_ARGS.get(kind, {}))
            try:
                ipr.link("add", ifname="probe", kind=kind, **extra)
            except NetlinkError as exc:
                if exc.code == errno.EOPNOTSUPP:
                    return f"this kernel has no {describe_kind(kind)}"
                return f"cannot create {describe_kind(kind)}: {errno_text(exc)}"
    except NetlinkError as exc:
        return f"cannot probe for {describe_kind(kind)}: {errno_text(exc)}"
    finally:
        sock.close()  # the last reference: the throwaway namespace and its links go with it
    return ""


def forget() -> None:
    """Drop cached answers (tests; a kernel module loaded since)."""
    with _lock:
        _cache.clear()

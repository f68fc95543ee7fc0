"""The host-side link a macvlan/ipvlan network hangs on: found, or made and owned by netd.

Three cases, decided from the network's options and the kernel (Docker's rules):

- ``parent=IF`` that exists: used as it is, never changed or removed (it is the user's);
- ``parent=IF.VID`` that does not exist: an 802.1Q sub-interface of IF that netd creates,
  tags (``names.vlan_parent_tag``) and removes with the last network on it;
- no parent, or an internal network: a parent link of its own (``nm-<id12>``, tagged
  ``names.parent_tag``) with no uplink, so containers reach each other and nothing else. A
  dummy link where the kernel has them (as Docker does); otherwise a veth pair whose other
  end (``np-<id12>``) stays in the host, up, and carries nothing: veth exists on every kernel
  netd runs on (the bridge driver needs it) and has carrier while both ends are up. (A bridge
  with no ports was tried: its carrier goes off as soon as its MAC is set, which takes every
  macvlan on it down.)

Everything here runs on an ``IPRoute`` in the daemon's namespace, which the caller owns. It
does not create endpoints and knows no records beyond the network being set up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import InvalidInput, KernelError
from ..kernel import links
from ..kernel.features import missing_link_kind
from ..kernel.sysctl import disable_ipv6_on
from ..model import Network
from ..names import (
    internal_parent_name,
    internal_parent_peer_name,
    parent_tag,
    vlan_parent_tag,
)
from .macvlan_options import VlanOptions

DEFAULT_INTERNAL_MTU = 1500
ARPHRD_ETHER = 1  # linux/if_arp.h: the link type a lower device of macvlan/ipvlan/vlan must have
IFF_LOOPBACK = 0x8  # linux/if.h


@dataclass(frozen=True)
class ParentPlan:
    """The parent link of a network: its name, and the tag if netd owns it ("" if not)."""

    name: str
    tag: str
    vlan_base: str = ""  # owned 802.1Q sub-interface: the link it sits on
    vlan_id: int = 0
    peer: str = ""  # internal parent: the veth peer's name, where it is a veth pair

    @property
    def internal(self) -> bool:
        """netd's own parent with no uplink (no parent given, or an internal network)."""
        return bool(self.tag) and not self.vlan_id


def plan_parent(kind: str, network: Network, options: VlanOptions) -> ParentPlan:
    """Which parent ``network`` uses, from its record only (pure)."""
    if options.parent is None or network.internal:
        name, tag = internal_parent_name(network.id), parent_tag(kind, network.id)
        return ParentPlan(name, tag, peer=internal_parent_peer_name(network.id))
    parent = options.parent
    if parent.vlan:
        tag = vlan_parent_tag(kind, parent.name)
        return ParentPlan(parent.name, tag, parent.base, parent.vlan)
    return ParentPlan(parent.name, "")


def owned_now(ipr: IPRoute, plan: ParentPlan) -> bool:
    """Whether netd owns the plan's parent in this kernel: an ``IF.VID`` parent is netd's if it
    is missing (to be made) or carries netd's tag; one that someone else made is theirs."""
    if not plan.tag:
        return False
    if plan.internal:
        return True
    link = links.get_link(ipr, plan.name)
    return link is None or link.get_attr("IFLA_IFALIAS") == plan.tag


def ensure_parent(ipr: IPRoute, kind: str, plan: ParentPlan, mtu: int) -> int:
    """Converge the parent link; its index. InvalidInput naming options.parent if it cannot be.

    ``mtu`` (0: leave) applies to links netd makes; a user's parent is never changed.
    """
    link = links.get_link(ipr, plan.name)
    if plan.internal:
        if link is None:
            link = _create_internal(ipr, plan, mtu or DEFAULT_INTERNAL_MTU)
        _tag_up(ipr, link, plan, mtu)
        return int(link["index"])
    if link is not None:
        if plan.tag and link.get_attr("IFLA_IFALIAS") == plan.tag:
            _tag_up(ipr, link, plan, 0)  # netd's sub-interface: keep it up
        else:
            _check_lower(link, plan.name, plan.name)
        return int(link["index"])
    if not plan.vlan_id:
        raise InvalidInput(
            "options.parent", plan.name, "no such link in the daemon's network namespace"
        )
    base = links.get_link(ipr, plan.vlan_base)
    if base is None:
        raise InvalidInput(
            "options.parent",
            plan.name,
            f'the link "{plan.vlan_base}" to put VLAN {plan.vlan_id} on does not exist in the '
            "daemon's network namespace",
        )
    _check_lower(base, plan.vlan_base, plan.name)
    reason = missing_link_kind("vlan")
    if reason:
        raise InvalidInput("options.parent", plan.name, f"cannot create it: {reason}")
    try:
        ipr.link("add", ifname=plan.name, kind="vlan", link=base["index"], vlan_id=plan.vlan_id)
    except NetlinkError as exc:
        raise links.kernel_error(f'creating VLAN sub-interface "{plan.name}"', exc) from exc
    link = _must_get(ipr, plan.name, "VLAN sub-interface")
    _tag_up(ipr, link, plan, 0)
    return int(link["index"])


def _check_lower(link: Any, name: str, parent: str) -> None:
    """InvalidInput naming options.parent unless ``link`` can carry macvlan, ipvlan and 802.1Q
    links: an Ethernet link, not loopback (the kernel answers EINVAL or EOPNOTSUPP only when
    the first container is attached, or the VLAN is made; ``parent=lo`` is refused at create)."""
    if link["ifi_type"] != ARPHRD_ETHER or link["flags"] & IFF_LOOPBACK:
        raise InvalidInput(
            "options.parent",
            parent,
            f'cannot use it: "{name}" is not an Ethernet link (loopback or another link type), '
            "and only an Ethernet link can carry the containers' links",
        )


def _create_internal(ipr: IPRoute, plan: ParentPlan, mtu: int) -> Any:
    kwargs: dict[str, Any] = {"ifname": plan.name, "mtu": mtu, "address": links.random_mac()}
    if missing_link_kind("dummy"):
        kwargs.update(kind="veth", peer={"ifname": plan.peer, "mtu": mtu})
    else:
        kwargs["kind"] = "dummy"
    try:
        ipr.link("add", **kwargs)
    except NetlinkError as exc:
        what = f'creating internal parent {kwargs["kind"]} "{plan.name}"'
        raise links.kernel_error(what, exc) from exc
    # They carry no address: no IPv6 link-local, DAD or MLD from them either.
    for name in (plan.name, plan.peer) if kwargs["kind"] == "veth" else (plan.name,):
        disable_ipv6_on(name)
    if kwargs["kind"] == "veth":
        try:
            ipr.link("set", ifname=plan.peer, state="up")
        except NetlinkError as exc:
            what = f'setting internal parent peer "{plan.peer}" up'
            raise links.kernel_error(what, exc) from exc
    return _must_get(ipr, plan.name, f"internal parent {kwargs['kind']}")


def _must_get(ipr: IPRoute, name: str, what: str) -> Any:
    link = links.get_link(ipr, name)
    if link is None:
        raise KernelError(f'creating {what} "{name}": it vanished right after creation')
    return link


def _tag_up(ipr: IPRoute, link: Any, plan: ParentPlan, mtu: int) -> None:
    kwargs: dict[str, Any] = {"index": link["index"], "ifalias": plan.tag, "state": "up"}
    if mtu:
        kwargs["mtu"] = mtu
    try:
        ipr.link("set", **kwargs)
    except NetlinkError as exc:
        raise links.kernel_error(f'configuring parent link "{plan.name}"', exc) from exc


def remove_parent(ipr: IPRoute, plan: ParentPlan) -> bool:
    """Delete the parent if netd owns it (tag checked on the link); False if nothing went."""
    if not plan.tag:
        return False
    link = links.get_link(ipr, plan.name)
    if link is None or link.get_attr("IFLA_IFALIAS") != plan.tag:
        return False  # gone, or someone else's link now has that name
    return links.delete_link(ipr, plan.name)

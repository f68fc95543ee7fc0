"""The macvlan and ipvlan drivers: containers directly on a host link's segment.

One implementation for both (as netavark's ``vlan.rs``), differing in the link kind and its
mode options (:mod:`netd.drivers.macvlan_options`). A network hangs on a parent link
(:mod:`netd.drivers.parent`: the user's, an 802.1Q sub-interface netd made, or an internal
one of netd's own). An endpoint is one macvlan/ipvlan link on that parent, born inside the
container's namespace under its final name (IFLA_NET_NS_FD, as the bridge driver's veth peer),
then configured by :func:`netd.kernel.container.configure_interface`: addresses, up, and the
default route via the network's gateway — the upstream router's address, never configured on
the host. Every step is a fault point ``macvlan.<step>`` (both kinds); a failure deletes the
link, which takes its addresses and routes along.

What these networks do not have, and why (docs/drivers.md): no host-side interface per
endpoint, so no firewall, no published ports, no ICC option; the host cannot reach its own
macvlan containers through the parent (the kernel passes frames between a lower device and
its macvlans only to and from the wire), so DNS is served inside each container's namespace
at 127.0.0.11 (:mod:`netd.dns.netns_listen`), not on a gateway.

It allocates nothing and touches neither the store nor the firewall.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
from collections.abc import Mapping
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .. import faults
from ..errors import InvalidInput, KernelError, NetdError
from ..kernel import links
from ..kernel.container import check_interface, configure_interface
from ..kernel.features import missing_link_kind
from ..kernel.hostsockets import HostSockets, refuse_initial_netns
from ..kernel.netns import iproute_in_fd, open_netns
from ..kernel.rtnl import LowerLinkSpec, Rtnl, RtnlError
from ..model import Endpoint, IPAddress, Network
from ..names import TAG_PREFIX, check_ifname, parse_tag
from ..options import parse_options
from .base import Capabilities, CniInterface, EndpointStatus, default_gateways
from .macs import check_mac
from .macvlan_options import KEYS, vlan_options
from .parent import ParentPlan, ensure_parent, owned_now, plan_parent, remove_parent

log = logging.getLogger(__name__)


class VlanDriver:
    """macvlan or ipvlan links on a parent, implementing :class:`netd.drivers.base.Driver`."""

    def __init__(self, kind: str, *, allow_initial_netns: bool = False) -> None:
        """``kind``: "macvlan" or "ipvlan"; ``allow_initial_netns`` as for the bridge driver."""
        self.name = kind
        self.kind = kind
        self.capabilities = Capabilities(
            firewall=False,
            port_mappings=False,
            icc=False,
            host_interface=False,
            dns="netns",
            kernel_features=(kind,),
        )
        self.option_keys = KEYS[kind]  # parent, the mode keys, the network-wide keys
        self.allow_initial_netns = allow_initial_netns
        self._sockets = HostSockets()
        # parent name -> ids of the networks on it (learnt from ensure_network): an owned
        # sub-interface goes only with the last of them.
        self._users: dict[str, set[str]] = {}

    # --- plumbing -------------------------------------------------------------------------

    def _host_rtnl(self) -> Rtnl:
        """This thread's raw host-side rtnetlink client (the endpoint hot path)."""
        return self._sockets.rtnl()

    def _guard(self, operation: str) -> None:
        refuse_initial_netns(self.allow_initial_netns, operation)

    def _plan(self, network: Network) -> ParentPlan:
        return plan_parent(self.kind, network, vlan_options(self.kind, network.options))

    def _gateways(self, network: Network, endpoint: Endpoint) -> list[IPAddress]:
        """The upstream router per family; none on an internal parent (nothing is upstream)."""
        if self._plan(network).internal:
            return []
        return default_gateways(network, endpoint)

    # --- Driver protocol --------------------------------------------------------------------

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """Canonical options (:data:`option_keys`, rules in :mod:`netd.options`)."""
        return parse_options(options, self.option_keys).as_dict()

    def available(self) -> str:
        """ "" if this kernel has ``kind`` links, else e.g. "this kernel has no ipvlan links
        (CONFIG_IPVLAN)" (probed once, in a throwaway namespace)."""
        return missing_link_kind(self.kind)

    def host_interface(self, network: Network) -> str:
        """ "": the firewall does not see these networks (no host-side interface to filter)."""
        return ""

    def endpoint_host_ifname(self, network: Network, container_id: str, ifname: str) -> str:
        """ "": an endpoint has no host-side interface."""
        return ""

    def ensure_network(self, network: Network) -> None:
        """Converge the parent link; InvalidInput naming a missing kernel feature or parent."""
        reason = self.available()
        if reason:
            raise InvalidInput("driver", self.kind, reason)
        plan = self._plan(network)
        options = vlan_options(self.kind, network.options)
        with IPRoute(groups=0) as ipr:
            if owned_now(ipr, plan) and links.get_link(ipr, plan.name) is None:
                self._guard(f'creating parent link "{plan.name}"')
            ensure_parent(ipr, self.kind, plan, options.mtu if plan.internal else 0)
        self._users.setdefault(plan.name, set()).add(network.id)

    def teardown_network(self, network: Network) -> list[str]:
        """Remove the parent if netd owns it and no other network uses it; failures."""
        plan = self._plan(network)
        users = self._users.get(plan.name, set())
        users.discard(network.id)
        if not users:
            self._users.pop(plan.name, None)
        if users and not plan.internal:
            log.info('keeping parent "%s": networks %s still use it', plan.name, sorted(users))
            return []
        try:
            with IPRoute(groups=0) as ipr:
                remove_parent(ipr, plan)
        except NetdError as exc:
            return [f'removing parent link "{plan.name}": {exc.message}']
        return []

    def setup_endpoint(self, network: Network, endpoint: Endpoint) -> Endpoint:
        """A ``kind`` link on the parent, born in the container; addresses, up, routes."""
        check_ifname(endpoint.ifname, "ifname")
        mac = self._endpoint_mac(endpoint)
        operation = f'creating {self.kind} link "{endpoint.ifname}" for container ' \
            f"{endpoint.container_id}"  # fmt: skip
        self._guard(operation)
        plan = self._plan(network)
        options = vlan_options(self.kind, network.options)
        fd = open_netns(endpoint.netns, endpoint.netns_inode)
        netns_inode = os.fstat(fd).st_ino
        created = False
        try:
            faults.point("macvlan.netns_opened")
            rtnl = self._host_rtnl()
            try:
                parent = rtnl.link_index(plan.name)
            except RtnlError as exc:
                if exc.errno == errno.ENODEV:
                    missing = f'{operation}: parent link "{plan.name}" does not exist'
                    raise KernelError(missing) from exc
                raise
            spec = LowerLinkSpec(
                self.kind, endpoint.ifname, parent, fd, options.mode, options.flags, mac,
                options.mtu,
            )  # fmt: skip
            try:
                rtnl.add_lower_link(spec)
            except RtnlError as exc:
                why = _why(exc.errno or errno.EIO, self.kind)
                raise KernelError(f"{operation}: {why}") from exc
            created = True
            faults.point("macvlan.link_created")
            configure_interface(
                fd,
                endpoint.ifname,
                endpoint.addresses,
                self._gateways(network, endpoint),
                fault_prefix="macvlan",
            )
            if not mac:
                mac = self._read_mac(fd, endpoint.ifname)
        except BaseException as exc:
            if created:
                self._undo_link(fd, endpoint.ifname, operation)
            if isinstance(exc, NetlinkError | OSError):
                raise KernelError(f"{operation}: {links.errno_text(exc)}") from exc
            raise
        finally:
            os.close(fd)
        return dataclasses.replace(
            endpoint, mac=mac, host_mac=None, host_ifname="", netns_inode=netns_inode
        )

    def _endpoint_mac(self, endpoint: Endpoint) -> str:
        if self.kind == "ipvlan":
            if endpoint.mac:
                raise InvalidInput(
                    "mac", endpoint.mac, "ipvlan links share their parent's MAC address"
                )
            return ""  # the parent's, read back after creation
        return check_mac(endpoint.mac, "mac") if endpoint.mac else links.random_mac()

    def _read_mac(self, fd: int, ifname: str) -> str:
        with iproute_in_fd(fd) as cipr:
            link = links.get_link(cipr, ifname)
        return str(link.get_attr("IFLA_ADDRESS")) if link is not None else ""

    def _undo_link(self, fd: int, ifname: str, operation: str) -> None:
        try:
            with iproute_in_fd(fd) as cipr:
                links.delete_link(cipr, ifname)
        except Exception:
            log.exception("%s: rollback could not delete %s", operation, ifname)

    def teardown_endpoint(self, network: Network, endpoint: Endpoint) -> list[str]:
        """Delete the container's link (if the namespace still exists); failures."""
        if not endpoint.netns:
            return []  # containerd sends DEL with an empty CNI_NETNS
        try:
            fd = open_netns(endpoint.netns, endpoint.netns_inode)
        except InvalidInput:
            return []  # gone (its links with it), or the path leads elsewhere now
        try:
            with iproute_in_fd(fd) as cipr:
                link = links.get_link(cipr, endpoint.ifname)
                if link is not None and links.link_kind(link) == self.kind:
                    links.delete_link(cipr, endpoint.ifname)
        except NetdError as exc:
            return [f"{exc.message} (in {endpoint.netns})"]
        finally:
            os.close(fd)
        return []

    def check_endpoint(self, network: Network, endpoint: Endpoint) -> EndpointStatus:
        """Parent present; container link of this kind, up, with its addresses and routes."""
        status = EndpointStatus()
        problems = status.problems
        plan = self._plan(network)
        try:
            with IPRoute(groups=0) as ipr:
                if links.get_link(ipr, plan.name) is None:
                    problems.append(f'parent link "{plan.name}" missing')
        except NetdError as exc:
            problems.append(exc.message)
        problems += check_interface(
            endpoint.netns,
            endpoint.netns_inode,
            endpoint.ifname,
            endpoint.addresses,
            self._gateways(network, endpoint),
            kind=self.kind,
        )
        return status

    def _owns(self, alias: object) -> bool:
        """Whether an ifalias is the tag of a parent link netd made for this driver's networks
        (``parent`` or ``vlan``, naming this driver: ipvlan's are not macvlan's)."""
        tag = parse_tag(str(alias or ""))
        return tag is not None and tag.kind in ("parent", "vlan") and tag.driver == self.kind

    def inventory(self) -> dict[str, str]:
        """``{tag: ifname}`` of the parent links netd owns for this kind (endpoints: none)."""
        with IPRoute(groups=0) as ipr:
            found = links.tagged_links(ipr, TAG_PREFIX)
        return {tag: ifname for tag, ifname in found.items() if self._owns(tag)}

    def network_tags(self, network: Network) -> frozenset[str]:
        """The owned parent's tag; none for a user's parent (an ``IF.VID`` that someone else
        made is theirs: the kernel is asked)."""
        plan = self._plan(network)
        if not plan.tag:
            return frozenset()
        if plan.internal:
            return frozenset({plan.tag})
        with IPRoute(groups=0) as ipr:
            return frozenset({plan.tag}) if owned_now(ipr, plan) else frozenset()

    def endpoint_tags(self, network: Network, endpoint: Endpoint) -> frozenset[str]:
        """None: an endpoint has nothing on the host side."""
        return frozenset()

    def remove_object(self, ifname: str) -> bool:
        """Delete an owned parent link no record needs; False unless it carried this kind's
        tag and is gone now."""
        with IPRoute(groups=0) as ipr:
            link = links.get_link(ipr, ifname)
            if link is None or not self._owns(link.get_attr("IFLA_IFALIAS")):
                return False
            return links.delete_link(ipr, ifname)

    def cni_interfaces(self, network: Network, endpoint: Endpoint) -> list[CniInterface]:
        """Only the container's interface: there is no host side."""
        return [
            CniInterface(
                name=endpoint.ifname, mac=endpoint.mac or "", sandbox=endpoint.netns,
                container=True,
            )
        ]  # fmt: skip

    def describe(self, network: Network, endpoints: list[Endpoint]) -> dict[str, Any]:
        """The parent link as the kernel has it now, and who owns it."""
        plan = self._plan(network)
        out: dict[str, Any] = {"kind": self.kind, "parent": plan.name, "internal": plan.internal}
        try:
            with IPRoute(groups=0) as ipr:
                link = links.get_link(ipr, plan.name)
                out["owned"] = owned_now(ipr, plan)
        except NetdError as exc:
            out["error"] = exc.message
            return out
        out["exists"] = link is not None
        if link is not None:
            out["state"] = link.get_attr("IFLA_OPERSTATE")
            out["link_kind"] = links.link_kind(link) or "device"
            out["mtu"] = link.get_attr("IFLA_MTU")
        out["endpoints"] = [self._describe_endpoint(ep) for ep in endpoints]
        return out

    def _describe_endpoint(self, ep: Endpoint) -> dict[str, Any]:
        """The container's link as its namespace holds it now (read-only)."""
        out: dict[str, Any] = {"container_id": ep.container_id, "ifname": ep.ifname,
                               "netns": ep.netns}  # fmt: skip
        try:
            fd = open_netns(ep.netns, ep.netns_inode)
        except InvalidInput as exc:
            out["state"] = f"netns unusable: {exc.rule}"
            return out
        try:
            with iproute_in_fd(fd) as cipr:
                link = links.get_link(cipr, ep.ifname)
        except NetdError as exc:
            out["state"] = exc.message
            return out
        finally:
            os.close(fd)
        if link is None:
            out["state"] = "missing"
        else:
            out["state"] = link.get_attr("IFLA_OPERSTATE")
            out["mac"] = link.get_attr("IFLA_ADDRESS")
            out["link_kind"] = links.link_kind(link)
        return out

    def close(self) -> None:
        """Close the host-side sockets this driver opened."""
        self._sockets.close()


def _why(code: int, kind: str) -> str:
    """The errno text, with what it means for these links where the kernel is terse."""
    text = os.strerror(code)
    if code == errno.EBUSY:
        return f"{text} (the parent already carries links of another kind or a passthru link)"
    if code == errno.EOPNOTSUPP:
        return f"{text} (this kernel has no {kind} links)"
    return text


class MacvlanDriver(VlanDriver):
    """Driver ``macvlan``: each container its own MAC on the parent's segment."""

    def __init__(self, *, allow_initial_netns: bool = False) -> None:
        """See :class:`VlanDriver`."""
        super().__init__("macvlan", allow_initial_netns=allow_initial_netns)


class IpvlanDriver(VlanDriver):
    """Driver ``ipvlan``: containers share the parent's MAC (one MAC per port, e.g. Wi-Fi)."""

    def __init__(self, *, allow_initial_netns: bool = False) -> None:
        """See :class:`VlanDriver`."""
        super().__init__("ipvlan", allow_initial_netns=allow_initial_netns)

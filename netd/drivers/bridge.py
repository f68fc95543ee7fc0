"""The bridge driver: one Linux bridge per network, one veth pair per endpoint.

ensure_network makes the bridge (name from option ``bridge`` or ``names.bridge_name``, ifalias
``names.bridge_tag``), puts the gateway addresses on it and turns on forwarding in the daemon's
namespace; a bridge it has to re-create (deleted behind netd's back) gets the network's tagged
host veths back as ports.

setup_endpoint creates a veth pair whose container end is born inside the container's namespace
(IFLA_NET_NS_FD: ~3 ms instead of ~27 ms for create-then-move), enslaves the host end (hairpin on,
IPv6 off on the host end), then addresses, links up and default routes inside the container
(:func:`netd.kernel.container.configure_interface`, shared with macvlan); an IPv4-only interface
gets no IPv6 link-local address. Every step is a fault point ``bridge.<step>``; a failure deletes
the host veth, which takes the peer with it.

It does not allocate addresses, touch the store or the firewall: the service hands it finished
records. All namespace switching is in :mod:`netd.kernel.netns`.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .. import faults
from ..errors import InvalidInput, KernelError, NetdError
from ..kernel import links
from ..kernel.container import check_interface, configure_interface
from ..kernel.hostsockets import HostSockets, refuse_initial_netns
from ..kernel.linkstate import links_state
from ..kernel.netns import iproute_in_fd, open_netns
from ..kernel.rtnl import Rtnl, RtnlError, VethSpec
from ..kernel.sysctl import disable_ipv6_on, ensure_sysctl
from ..model import Endpoint, Network
from ..names import (
    TAG_PREFIX,
    Tag,
    bridge_name,
    bridge_tag,
    check_ifname,
    endpoint_tag,
    endpoint_tag_prefix,
    host_veth_name,
    parse_tag,
)
from ..options import parse_options
from .base import Capabilities, CniInterface, EndpointStatus, default_gateways
from .bridge_options import BRIDGE_KEYS
from .macs import bridge_mac, check_mac

log = logging.getLogger(__name__)

_KINDS = ("bridge", "veth")  # the link kinds this driver makes in the host
# The tag kinds of this driver's links (netd.names). A veth tagged by another driver (an
# internal macvlan parent where the kernel has no dummy links, an external plugin's host end)
# is never listed nor removed as the bridge's.
_TAG_KINDS = ("network", "endpoint")


def _owns(alias: object) -> Tag | None:
    """The parsed tag of a bridge or host veth of this driver's, else None."""
    tag = parse_tag(str(alias or ""))
    return tag if tag is not None and tag.kind in _TAG_KINDS else None


_BRIDGE_OPTION = BRIDGE_KEYS.accepted()["bridge"]


def bridge_for(network: Network) -> str:
    """The bridge name of ``network``: option ``bridge`` (either spelling) or the default."""
    name = network.opts.driver.get("bridge")
    # Checked again: the name goes into netlink requests and firewall rules.
    return _BRIDGE_OPTION.normalise("bridge", name) if name else bridge_name(network.id)


class BridgeDriver:
    """Linux bridge + veth plumbing, implementing :class:`netd.drivers.base.Driver`."""

    name = "bridge"
    capabilities = Capabilities(kernel_features=("bridge", "veth"))
    option_keys = BRIDGE_KEYS  # network-wide and firewall keys, and ``bridge``

    def __init__(self, *, allow_initial_netns: bool = False, reuse_host_socket: bool = True):
        """``allow_initial_netns``: the daemon manages the real host (production config only).

        ``reuse_host_socket`` keeps one host-side IPRoute per calling thread (pyroute2 sync
        objects are not thread-safe), saving ~1 ms per call; False opens one per call.
        """
        self.allow_initial_netns = allow_initial_netns
        self.reuse_host_socket = reuse_host_socket
        self.sysctl_changes: list[str] = []  # "name=value" set by ensure_network, in order
        self._sockets = HostSockets()
        # bridge name -> (ifindex, MTU); a plain dict: single assignments are atomic in CPython.
        self._bridges: dict[str, tuple[int, int]] = {}

    # --- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close every host-side netlink socket this driver opened (any thread)."""
        self._sockets.close()

    def _host_rtnl(self) -> Rtnl:
        """This thread's raw host-side rtnetlink client (requests wait for their acks)."""
        return self._sockets.rtnl()

    @contextmanager
    def _host(self) -> Iterator[IPRoute]:
        if not self.reuse_host_socket:
            with IPRoute(groups=0) as fresh:
                yield fresh
            return
        with self._sockets.iproute() as ipr:
            yield ipr

    def _bridge_link(
        self, ipr: IPRoute, name: str, operation: str, *, fresh: bool = False
    ) -> tuple[int, int]:
        """(index, MTU) of bridge ``name``, cached: one lookup less per endpoint."""
        cached = None if fresh else self._bridges.get(name)
        if cached is not None:
            return cached
        link = links.get_link(ipr, name)
        if link is None or links.link_kind(link) != "bridge":
            self._bridges.pop(name, None)
            raise KernelError(f'{operation}: bridge "{name}" does not exist')
        found = (int(link["index"]), int(link.get_attr("IFLA_MTU")))
        self._bridges[name] = found
        return found

    def _guard(self, operation: str) -> None:
        refuse_initial_netns(self.allow_initial_netns, operation)

    # --- Driver protocol --------------------------------------------------------------------

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """Canonical bridge options (:data:`option_keys`, rules in :mod:`netd.options`)."""
        return parse_options(options, self.option_keys).as_dict()

    def available(self) -> str:
        """Always: every kernel netd runs on has bridges and veths (doctor checks modules)."""
        return ""

    def host_interface(self, network: Network) -> str:
        """The network's bridge: the firewall keys its rules on it."""
        return bridge_for(network)

    def endpoint_host_ifname(self, network: Network, container_id: str, ifname: str) -> str:
        """The host veth's name (:func:`netd.names.host_veth_name`)."""
        return host_veth_name(network.id, container_id, ifname)

    def cni_interfaces(self, network: Network, endpoint: Endpoint) -> list[CniInterface]:
        """The host veth, then the container's end (SPEC.md's order for a bridge plugin)."""
        return [
            CniInterface(endpoint.host_ifname, endpoint.host_mac or ""),
            CniInterface(endpoint.ifname, endpoint.mac or "", endpoint.netns, container=True),
        ]

    def describe(self, network: Network, endpoints: list[Endpoint]) -> dict[str, Any]:
        """The bridge's and each endpoint's host veth's link state (read-only)."""
        bridge = bridge_for(network)
        found = links_state([bridge, *(ep.host_ifname for ep in endpoints)])
        if isinstance(found, str):
            return {"error": found}
        veths = []
        for ep in endpoints:
            state = dict(found[ep.host_ifname])
            state.update(
                container_id=ep.container_id,
                ifname=ep.ifname,
                on_bridge=state.get("master") == bridge,
            )
            veths.append(state)
        return {"bridge": found[bridge], "veths": veths}

    def ensure_network(self, network: Network) -> None:
        """Bridge with alias, MTU, gateway addresses, up; forwarding sysctls on."""
        name = bridge_for(network)
        self._guard(f'creating bridge "{name}"')
        with self._host() as ipr:
            mtu = network.opts.mtu or links.default_route_mtu(ipr)
            existed = links.get_link(ipr, name) is not None
            link = links.ensure_bridge(
                ipr, name, bridge_tag(network.id), mtu, bridge_mac(network.id)
            )
            self._bridges[name] = (int(link["index"]), mtu)
            for subnet in network.subnets:
                if subnet.gateway is None:
                    continue
                iface = f"{subnet.gateway}/{subnet.subnet.prefixlen}"
                links.ensure_address(ipr, link["index"], name, ipaddress.ip_interface(iface))
            if not existed:
                self._reattach_ports(ipr, network, name, int(link["index"]))
        wanted = ["net.ipv4.ip_forward"]
        if network.ipv6 or any(s.version == 6 for s in network.subnets):
            wanted.append("net.ipv6.conf.all.forwarding")
        for key in wanted:
            if ensure_sysctl(key, "1", allow_initial_netns=self.allow_initial_netns):
                self.sysctl_changes.append(f"{key}=1")

    def _reattach_ports(self, ipr: IPRoute, network: Network, bridge: str, index: int) -> None:
        """Put the network's host veths back on a re-created bridge (someone deleted it).

        Deleting a bridge leaves its ports behind, detached; enslaving them again is one request
        each, where re-plumbing every endpoint would recreate each container's interface. Best
        effort: a port that cannot be re-attached is logged and left to the reconciler's
        endpoint check, which re-plumbs it.
        """
        for tag, ifname in links.tagged_links(ipr, endpoint_tag_prefix(network.id)).items():
            if _owns(tag) is None:
                continue
            try:
                port = links.get_link(ipr, ifname)
                if port is None or port.get_attr("IFLA_MASTER") == index:
                    continue
                ipr.link("set", index=port["index"], master=index)
                self._host_rtnl().set_bridge_port(ifname, tag, hairpin=True)
            except (NetdError, NetlinkError, RtnlError) as exc:
                log.warning('re-attaching "%s" to bridge "%s": %s', ifname, bridge, exc)
                continue
            log.info('re-attached "%s" to re-created bridge "%s"', ifname, bridge)

    def teardown_network(self, network: Network) -> list[str]:
        """Delete the bridge; a missing bridge is not a failure."""
        name = bridge_for(network)
        self._bridges.pop(name, None)
        try:
            with self._host() as ipr:
                links.delete_link(ipr, name)
        except NetdError as exc:
            return [f'deleting bridge "{name}": {exc.message}']
        return []

    def setup_endpoint(self, network: Network, endpoint: Endpoint) -> Endpoint:
        """veth pair into the bridge and the container; addresses, links up, default routes."""
        host = check_ifname(endpoint.host_ifname, "host_ifname")
        check_ifname(endpoint.ifname, "ifname")
        mac = check_mac(endpoint.mac, "mac") if endpoint.mac else links.random_mac()
        operation = f'creating veth "{host}" for container {endpoint.container_id}'
        self._guard(operation)
        bridge = bridge_for(network)
        fd = open_netns(endpoint.netns, endpoint.netns_inode)
        netns_inode = os.fstat(fd).st_ino  # recorded: teardown and reconcile check it
        created = False
        try:
            with self._host() as ipr:
                faults.point("bridge.netns_opened")
                # Given when the record had to carry it before the link existed (an endpoint
                # of a network across hosts, netd.core.endpoints): else made here.
                host_mac = (
                    check_mac(endpoint.host_mac, "host_mac")
                    if endpoint.host_mac
                    else (links.random_mac())
                )
                for attempt in (1, 2):
                    br_index, br_mtu = self._bridge_link(ipr, bridge, operation, fresh=attempt > 1)
                    mtu = network.opts.mtu or br_mtu
                    veth = VethSpec(host, host_mac, mtu, br_index, endpoint.ifname, fd, mac)
                    try:
                        self._host_rtnl().add_veth(veth)
                    except RtnlError as exc:
                        # ENODEV: the cached bridge index is stale (bridge re-created): retry.
                        if exc.errno == errno.ENODEV and attempt == 1:
                            continue
                        # The operation already says what was being created: keep the errno.
                        raise OSError(exc.errno, os.strerror(exc.errno or errno.EIO)) from exc
                    break
                created = True
                faults.point("bridge.veth_created")
                # Before the peer comes up (carrier), when IPv6 would configure the port.
                disable_ipv6_on(host)
                tag = endpoint_tag(network.id, endpoint.container_id, endpoint.ifname)
                self._host_rtnl().set_bridge_port(host, tag, hairpin=True)
                faults.point("bridge.host_configured")
            configure_interface(
                fd,
                endpoint.ifname,
                endpoint.addresses,
                default_gateways(network, endpoint),
                fault_prefix="bridge",
            )
        except BaseException as exc:
            if created:
                self._undo_veth(host, operation)
            if isinstance(exc, NetlinkError | OSError):
                raise KernelError(f"{operation}: {links.errno_text(exc)}") from exc
            raise
        finally:
            os.close(fd)
        return dataclasses.replace(endpoint, mac=mac, host_mac=host_mac, netns_inode=netns_inode)

    def _undo_veth(self, host: str, operation: str) -> None:
        try:
            with self._host() as ipr:
                links.delete_link(ipr, host)
        except Exception:
            log.exception("%s: rollback could not delete veth %s", operation, host)

    def teardown_endpoint(self, network: Network, endpoint: Endpoint) -> list[str]:
        """Delete the host veth (takes the peer along); else the container end if still there."""
        failures: list[str] = []
        try:
            with self._host() as ipr:
                if links.delete_link(ipr, endpoint.host_ifname):
                    return []
        except NetdError as exc:
            return [exc.message]
        if not endpoint.netns:
            return failures  # containerd sends DEL with an empty CNI_NETNS
        try:
            fd = open_netns(endpoint.netns, endpoint.netns_inode)
        except InvalidInput:
            # Gone (and so is everything that was in it), or the path now leads elsewhere.
            return failures
        try:
            with iproute_in_fd(fd) as cipr:
                link = links.get_link(cipr, endpoint.ifname)
                if link is not None and links.link_kind(link) == "veth":
                    links.delete_link(cipr, endpoint.ifname)
        except NetdError as exc:
            failures.append(f"{exc.message} (in {endpoint.netns})")
        finally:
            os.close(fd)
        return failures

    def check_endpoint(self, network: Network, endpoint: Endpoint) -> EndpointStatus:
        """Host veth enslaved to the bridge; container link up with its addresses and routes."""
        status = EndpointStatus()
        problems = status.problems
        bridge = bridge_for(network)
        host = endpoint.host_ifname
        try:
            with self._host() as ipr:
                br = links.get_link(ipr, bridge)
                veth = links.get_link(ipr, host)
        except NetdError as exc:
            problems.append(exc.message)
            return status
        if br is None:
            problems.append(f'bridge "{bridge}" missing')
        if veth is None:
            problems.append(f'host veth "{host}" missing')
        elif br is not None and veth.get_attr("IFLA_MASTER") != br["index"]:
            problems.append(f'host veth "{host}" is not enslaved to bridge "{bridge}"')
        problems += check_interface(
            endpoint.netns,
            endpoint.netns_inode,
            endpoint.ifname,
            endpoint.addresses,
            default_gateways(network, endpoint),
        )
        return status

    # --- reconciliation ---------------------------------------------------------------------

    def inventory(self) -> dict[str, str]:
        """``{ifalias tag: ifname}`` of this driver's bridges and host veths (tag kinds
        ``network`` and ``endpoint`` on links of kind bridge or veth)."""
        with self._host() as ipr:
            found = links.tagged_links(ipr, TAG_PREFIX, kinds=_KINDS)
        return {tag: ifname for tag, ifname in found.items() if _owns(tag) is not None}

    def network_tags(self, network: Network) -> frozenset[str]:
        """The bridge's tag."""
        return frozenset({bridge_tag(network.id)})

    def endpoint_tags(self, network: Network, endpoint: Endpoint) -> frozenset[str]:
        """The host veth's tag (none for a record without a host veth)."""
        if not endpoint.host_ifname:
            return frozenset()
        return frozenset({endpoint_tag(network.id, endpoint.container_id, endpoint.ifname)})

    def remove_object(self, ifname: str) -> bool:
        """Delete one of this driver's links found without a record; False if it is not one
        (another kind, or not tagged as netd's) or already gone."""
        with self._host() as ipr:
            link = links.get_link(ipr, ifname)
            if link is None or links.link_kind(link) not in _KINDS:
                return False
            if _owns(link.get_attr("IFLA_IFALIAS")) is None:
                return False
            return links.delete_link(ipr, ifname)

"""The overlay driver: one layer-2 network across the nodes of a cluster, over VXLAN.

On each node a network is the bridge driver's bridge and veths (:class:`BridgeDriver`, by
composition: same names, same tags, same gateway address and MAC on every node — a distributed
gateway, so a container's default route never leaves its node) plus one VXLAN device
(``nx-<id12>``, tag ``netd:vxlan:<network id>``) enslaved to the bridge: VNI from
``options.vni``, local address the node's underlay address, port 4789, no multicast group,
learning off, ARP/NDP proxy on (:mod:`netd.kernel.vxlan`). MTU: the underlay link's minus 50
(64 more with ``encrypted=true``; or ``options.mtu``), on the bridge, the VXLAN device and the
veths. An encrypted network is refused on a node whose kernel has no IPsec ESP; its SAs are
the cluster's (:mod:`netd.cluster.ipsec`), not the driver's.

Nothing is flooded between nodes. The cluster sync (the lead's, from a worker thread) tells each
node where every remote container is, through :meth:`OverlayDriver.sync_remote`: the VXLAN
device gets an FDB entry per remote MAC (→ that node's address) and a neighbour entry per
remote IP (→ MAC), from which it answers ARP and NDP itself. A frame for a MAC the device has
no entry for (broadcast included) is dropped, not sent to every node.

It allocates nothing, reads no store and does not talk to etcd; options are
:mod:`netd.drivers.overlay_options`, the peer diff :mod:`netd.drivers.overlay_peers` (pure).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from ipaddress import IPv4Address
from typing import Any

from pyroute2 import IPRoute

from .. import faults
from ..errors import ConfigError, InvalidInput, KernelError, NetdError
from ..kernel import links, vxlan, xfrm
from ..kernel.features import missing_link_kind
from ..kernel.hostsockets import HostSockets, refuse_initial_netns
from ..kernel.linkstate import link_state
from ..kernel.neigh import NeighTable
from ..kernel.rtnl import RtnlError, host_socket
from ..model import Endpoint, Network
from ..names import (
    TAG_PREFIX,
    bridge_tag,
    endpoint_tag_prefix,
    host_veth_name,
    parse_tag,
    vxlan_name,
    vxlan_tag,
)
from ..options import parse_options
from .base import Capabilities, CniInterface, EndpointStatus
from .bridge import BridgeDriver, bridge_for
from .macs import check_mac
from .overlay_options import OVERLAY_KEYS, VXLAN_PORT, overlay_mtu, overlay_options
from .overlay_peers import PeerPlan, RemotePeer, entries_of, plan_peers

__all__ = ["NO_CLUSTER", "OverlayDriver", "RemotePeer"]

log = logging.getLogger(__name__)

NO_CLUSTER = "no cluster configured: set [cluster] in the config (docs/multi-host.md)"


def _node_address(value: str | IPv4Address | None) -> IPv4Address | None:
    """The underlay address, parsed; ConfigError naming cluster.node_address if not IPv4."""
    if value is None or isinstance(value, IPv4Address):
        return value
    try:
        return IPv4Address(value.strip())
    except ValueError:
        raise ConfigError(
            f"cluster.node_address {value!r}: must be an IPv4 address (the VXLAN underlay is IPv4)"
        ) from None


class OverlayDriver:
    """Bridge + VXLAN per network, implementing :class:`netd.drivers.base.Driver`."""

    name = "overlay"
    capabilities = Capabilities(
        scope="global",
        dns="gateway",
        firewall=True,
        port_mappings=True,
        icc=True,
        kernel_features=("vxlan", "bridge", "veth"),
    )
    option_keys = OVERLAY_KEYS

    def __init__(
        self,
        *,
        node_address: str | IPv4Address | None = None,
        allow_initial_netns: bool = False,
        reuse_host_socket: bool = True,
    ) -> None:
        """``node_address``: this node's underlay IPv4 address (``[cluster] node_address``),
        the VXLAN devices' local address; None: no cluster, the driver is unavailable.
        ``allow_initial_netns`` and ``reuse_host_socket`` as for :class:`BridgeDriver`."""
        self.node_address = _node_address(node_address)
        self.allow_initial_netns = allow_initial_netns
        self.bridge = BridgeDriver(
            allow_initial_netns=allow_initial_netns, reuse_host_socket=reuse_host_socket
        )
        self._sockets = HostSockets()
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        # network id -> the peers last programmed: put back on a VXLAN device re-created by
        # ensure_network (deleted behind netd's back) without waiting for the next sync.
        self._peers: dict[str, tuple[RemotePeer, ...]] = {}
        self._index: dict[str, int] = {}  # network id -> its VXLAN device's ifindex, last seen

    # --- plumbing -------------------------------------------------------------------------

    @property
    def sysctl_changes(self) -> list[str]:
        """The sysctls ensure_network set (the bridge's forwarding), in order."""
        return self.bridge.sysctl_changes

    def close(self) -> None:
        """Close the bridge's and this driver's host-side netlink sockets."""
        self.bridge.close()
        self._sockets.close()

    @contextmanager
    def _host(self) -> Iterator[IPRoute]:
        with self._sockets.iproute() as ipr:
            yield ipr

    def _lock(self, network_id: str) -> threading.Lock:
        """One lock per network: ensure, sync and teardown of a network never interleave."""
        with self._locks_guard:
            return self._locks.setdefault(network_id, threading.Lock())

    def _guard(self, operation: str) -> None:
        refuse_initial_netns(self.allow_initial_netns, operation)

    def _local(self) -> IPv4Address:
        if self.node_address is None:
            raise InvalidInput("driver", self.name, NO_CLUSTER)
        return self.node_address

    # --- Driver protocol --------------------------------------------------------------------

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """Canonical overlay options (:mod:`netd.drivers.overlay_options`)."""
        return parse_options(options, self.option_keys).as_dict()

    def available(self) -> str:
        """ "" if this node can run overlay networks: a cluster (node address) and vxlan links."""
        if self.node_address is None:
            return NO_CLUSTER
        return missing_link_kind("vxlan")

    def host_interface(self, network: Network) -> str:
        """The network's bridge on this node: the firewall keys its rules on it."""
        return bridge_for(network)

    def endpoint_host_ifname(self, network: Network, container_id: str, ifname: str) -> str:
        """The host veth's name (:func:`netd.names.host_veth_name`), as on a bridge network."""
        return host_veth_name(network.id, container_id, ifname)

    def ensure_network(self, network: Network) -> None:
        """Bridge (gateway addresses, MTU) and VXLAN device on it, up; a half-made network
        this call started is removed again when a step fails."""
        reason = self.available()
        if reason:
            raise InvalidInput("driver", self.name, reason)
        local = self._local()
        opts = overlay_options(network.options)
        if opts.encrypted and (no_esp := xfrm.esp_missing()):
            # Fail closed: never carry in clear what the user asked to encrypt.
            raise InvalidInput("options.encrypted", "true", no_esp)
        device = vxlan_name(network.id)
        self._guard(f'creating VXLAN device "{device}"')
        with self._lock(network.id):
            with self._host() as ipr:
                mtu = overlay_mtu(vxlan.underlay_mtu(ipr, local), opts)
                bridge_existed = links.get_link(ipr, bridge_for(network)) is not None
                before = links.get_link(ipr, device)
            sized = dataclasses.replace(network, options={**network.options, "mtu": str(mtu)})
            self.bridge.ensure_network(sized)
            spec = vxlan.VxlanSpec(device, vxlan_tag(network.id), opts.vni, local, VXLAN_PORT, mtu)
            try:
                with self._host() as ipr:
                    bridge = links.get_link(ipr, bridge_for(network))
                    if bridge is None:
                        raise KernelError(
                            f'creating VXLAN device "{device}": bridge "{bridge_for(network)}" '
                            "vanished"
                        )
                    index = vxlan.ensure_vxlan(ipr, spec, int(bridge["index"]))
                self._index[network.id] = index
                faults.point("overlay.vxlan_ready")
                # A new device (made now, or re-made with new settings) has no entries yet.
                remembered = self._peers.get(network.id)
                if remembered and (before is None or int(before["index"]) != index):
                    self._apply(index, device, remembered)
            except BaseException:
                self._undo(network, device, before is None, not bridge_existed)
                raise

    def _undo(self, network: Network, device: str, made_vxlan: bool, made_bridge: bool) -> None:
        """Remove what a failed ensure_network made (best effort: the error is the caller's)."""
        try:
            if made_vxlan:
                with self._host() as ipr:
                    link = links.get_link(ipr, device)
                    if link is not None and link.get_attr("IFLA_IFALIAS") == vxlan_tag(network.id):
                        links.delete_link(ipr, device)
            if made_bridge:
                self.bridge.teardown_network(network)
        except Exception:
            log.exception('rolling back overlay network "%s" on this node', network.name)

    def teardown_network(self, network: Network) -> list[str]:
        """Delete the VXLAN device (if it carries this network's tag), then the bridge."""
        failures: list[str] = []
        device = vxlan_name(network.id)
        with self._lock(network.id):
            self._peers.pop(network.id, None)
            self._index.pop(network.id, None)
            try:
                with self._host() as ipr:
                    link = links.get_link(ipr, device)
                    if link is not None and link.get_attr("IFLA_IFALIAS") == vxlan_tag(network.id):
                        links.delete_link(ipr, device)
            except NetdError as exc:
                failures.append(f'deleting VXLAN device "{device}": {exc.message}')
            failures += self.bridge.teardown_network(network)
        with self._locks_guard:
            self._locks.pop(network.id, None)
        return failures

    def setup_endpoint(self, network: Network, endpoint: Endpoint) -> Endpoint:
        """A veth pair on the network's bridge (the bridge driver's); the veths take the
        bridge's MTU, which ensure_network set to the overlay's. Returns it with its MAC,
        which the cluster hands to the other nodes."""
        return self.bridge.setup_endpoint(network, endpoint)

    def teardown_endpoint(self, network: Network, endpoint: Endpoint) -> list[str]:
        """As the bridge driver: the host veth, else the container's end; failures."""
        return self.bridge.teardown_endpoint(network, endpoint)

    def check_endpoint(self, network: Network, endpoint: Endpoint) -> EndpointStatus:
        """The bridge driver's checks, and the VXLAN device on the bridge with its settings."""
        status = self.bridge.check_endpoint(network, endpoint)
        status.problems += self._check_vxlan(network)
        return status

    def _check_vxlan(self, network: Network) -> list[str]:
        device = vxlan_name(network.id)
        try:
            opts = overlay_options(network.options)
            with self._host() as ipr:
                link = links.get_link(ipr, device)
                bridge = links.get_link(ipr, bridge_for(network))
        except NetdError as exc:
            return [exc.message]
        if link is None:
            return [f'VXLAN device "{device}" missing']
        problems = []
        if bridge is not None and link.get_attr("IFLA_MASTER") != bridge["index"]:
            problems.append(f'VXLAN device "{device}" is not on bridge "{bridge_for(network)}"')
        local = self.node_address or IPv4Address(0)
        spec = vxlan.VxlanSpec(device, vxlan_tag(network.id), opts.vni, local, VXLAN_PORT, 0)
        if not vxlan.matches(link, spec):
            problems.append(f'VXLAN device "{device}" has other settings: {_settings(link)}')
        return problems

    def cni_interfaces(self, network: Network, endpoint: Endpoint) -> list[CniInterface]:
        """The host veth, then the container's end (as a bridge network's)."""
        return self.bridge.cni_interfaces(network, endpoint)

    def describe(self, network: Network, endpoints: list[Endpoint]) -> dict[str, Any]:
        """The bridge's view, plus the VXLAN device: VNI, MTU, settings, peers (read-only)."""
        out = self.bridge.describe(network, endpoints)
        device = vxlan_name(network.id)
        info: dict[str, Any] = {"name": device}
        try:
            with self._host() as ipr:
                info.update(link_state(ipr, device))
                link = links.get_link(ipr, device)
                if link is not None:
                    info.update(_settings(link))
                    with NeighTable(host_socket()) as table:
                        fdb = table.remote_fdb(int(link["index"]))
                        neigh = table.permanent_neighbours(int(link["index"]))
                    info.update(
                        on_bridge=info.get("master") == bridge_for(network),
                        peers=len(neigh),
                        remote_macs=len(fdb),
                        vteps=sorted({str(v) for vteps in fdb.values() for v in vteps}),
                    )
        except NetdError as exc:
            info["error"] = exc.message
        except RtnlError as exc:
            info["error"] = links.errno_text(exc)
        encrypted = network.options.get("encrypted") == "true"
        if encrypted:
            out["ipsec"] = _ipsec_state()
        out.update(
            vxlan=info,
            vni=network.options.get("vni"),
            encrypted=encrypted,
            mtu=info.get("mtu"),
            peers=info.get("peers", 0),
        )
        return out

    # --- reconciliation ---------------------------------------------------------------------

    def inventory(self) -> dict[str, str]:
        """``{tag: ifname}`` of the VXLAN devices, and of the bridges and host veths of the
        networks that have one (the bridge driver lists those too: same tags, same links)."""
        with self._host() as ipr:
            devices = links.tagged_links(ipr, f"{TAG_PREFIX}vxlan:", kinds=("vxlan",))
        out = {tag: name for tag, name in devices.items() if _vxlan_network(tag)}
        nets = {_vxlan_network(tag) for tag in out}
        if not nets:
            return out
        for tag, name in self.bridge.inventory().items():
            if tag in {bridge_tag(n) for n in nets} or any(
                tag.startswith(endpoint_tag_prefix(n)) for n in nets
            ):
                out[tag] = name
        return out

    def network_tags(self, network: Network) -> frozenset[str]:
        """The bridge's and the VXLAN device's tags."""
        return frozenset({bridge_tag(network.id), vxlan_tag(network.id)})

    def endpoint_tags(self, network: Network, endpoint: Endpoint) -> frozenset[str]:
        """The host veth's tag (as the bridge driver's)."""
        return self.bridge.endpoint_tags(network, endpoint)

    def remove_object(self, ifname: str) -> bool:
        """Delete a VXLAN device of netd's, or a bridge or host veth (the bridge driver's
        rule) found without a record; False if it is none of them or already gone."""
        with self._host() as ipr:
            link = links.get_link(ipr, ifname)
            if link is None:
                return False
            if links.link_kind(link) == "vxlan":
                if not _vxlan_network(str(link.get_attr("IFLA_IFALIAS") or "")):
                    return False
                return links.delete_link(ipr, ifname)
        return self.bridge.remove_object(ifname)

    # --- the cluster's side ---------------------------------------------------------------

    def sync_remote(
        self, network: Network, peers: Sequence[RemotePeer], *, changes_only: bool = False
    ) -> None:
        """Make the VXLAN device's FDB and neighbour entries exactly ``peers``' (add the
        missing, remove the extra); nothing is sent when nothing changed. Called by the
        cluster sync from a worker thread; KernelError if the network is not plumbed here.

        ``changes_only``: diff against the peers this driver last programmed instead of the
        kernel's entries (no dumps: one remote attach costs two netlink requests, not a read
        of every entry). The cluster sync asks for it between its whole reads, which diff
        against the kernel and so put back what the kernel lost behind netd's back."""
        checked = tuple(_check_peer(i, p) for i, p in enumerate(peers))
        device = vxlan_name(network.id)
        operation = f'programming remote peers of network "{network.name}" on "{device}"'
        self._guard(operation)
        with self._lock(network.id):
            last = self._peers.get(network.id)
            index = self._index.get(network.id)
            if changes_only and last is not None and index is not None:
                try:
                    self._apply(index, device, checked, last)
                except KernelError:
                    pass  # the device changed (re-created: new index): read it whole below
                else:
                    self._peers[network.id] = checked
                    return
            with self._host() as ipr:
                link = links.get_link(ipr, device)
            if link is None or link.get_attr("IFLA_IFALIAS") != vxlan_tag(network.id):
                self._index.pop(network.id, None)
                raise KernelError(f"{operation}: the VXLAN device does not exist on this node")
            self._index[network.id] = int(link["index"])
            self._apply(int(link["index"]), device, checked)
            self._peers[network.id] = checked

    def _apply(
        self,
        index: int,
        device: str,
        peers: Sequence[RemotePeer],
        last: Sequence[RemotePeer] | None = None,
    ) -> PeerPlan:
        """Diff ``peers`` against the device's entries (``last``: against those peers'
        entries, without reading the kernel) and apply it (network lock held)."""
        try:
            with NeighTable(host_socket()) as table:
                if last is None:
                    fdb_now, neigh_now = table.remote_fdb(index), table.permanent_neighbours(index)
                else:
                    fdb_now, neigh_now = entries_of(last, self.node_address)
                plan = plan_peers(peers, fdb_now, neigh_now, self.node_address)
                for conflict in plan.conflicts:
                    log.warning('overlay "%s": conflicting peers: %s', device, conflict)
                if plan.empty:
                    return plan
                table.apply(
                    index, device, fdb_del=plan.fdb_del, neigh_del=plan.neigh_del,
                    fdb_add=plan.fdb_add, neigh_set=plan.neigh_set,
                )  # fmt: skip
        except (RtnlError, OSError) as exc:
            raise KernelError(f'programming peers on "{device}": {links.errno_text(exc)}') from exc
        log.info(
            'overlay "%s": peers %d FDB added, %d removed; %d neighbours set, %d removed',
            device, len(plan.fdb_add), len(plan.fdb_del), len(plan.neigh_set),
            len(plan.neigh_del),
        )  # fmt: skip
        return plan


def _vxlan_network(alias: str) -> str:
    """The network id of a VXLAN device's tag, "" if ``alias`` is not one."""
    tag = parse_tag(alias)
    return tag.network if tag is not None and tag.kind == "vxlan" else ""


def _ipsec_state() -> dict[str, Any]:
    """The node's IPsec SAs and policies (netd's, shared by every encrypted network): the
    peers it encrypts to and the SPI each is sent with, read from the kernel."""
    try:
        policies = xfrm.list_policies()
        states = xfrm.list_states()
    except NetdError as exc:
        return {"error": exc.message}
    return {
        "peers": {str(dst): f"0x{p.spi:08x}" for (_, dst), p in sorted(policies.items())},
        "sas": len(states),
    }


def _settings(link: Any) -> dict[str, Any]:
    found = vxlan.vxlan_settings(link)
    return {key: found[key] for key in ("vni", "local", "port", "learning", "proxy")}


def _check_peer(i: int, peer: RemotePeer) -> RemotePeer:
    """``peer`` with its MAC normalised; InvalidInput naming ``peers[i].<field>``."""
    if not isinstance(peer.ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
        raise InvalidInput(f"peers[{i}].ip", peer.ip, "must be an IP address")
    if not isinstance(peer.vtep, IPv4Address):
        raise InvalidInput(f"peers[{i}].vtep", peer.vtep, "must be an IPv4 address")
    mac = check_mac(peer.mac, f"peers[{i}].mac")
    return peer if mac == peer.mac else dataclasses.replace(peer, mac=mac)

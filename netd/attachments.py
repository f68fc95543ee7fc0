"""One interface per container per network for `netd network connect` (Docker's rule); pure.

Docker and Podman refuse to connect a container to a network it is already on (``endpoint with
name ... already exists in network``). netd does the same for attachments made through the API
(``netd network connect``, compose): a second connect of the same container — the same
container id or the same namespace path — to the same network is refused with
:class:`~netd.errors.AlreadyConnected` naming the interface it already has. A retry with that
interface name (and the same settings) is idempotent: it returns the existing endpoint, so a
connect retried after a lost answer or a client crash never makes a second interface.

CNI attachments keep CNI's semantics: an attachment is keyed by (container id, network,
ifname), and one container may legitimately have several interfaces on one network (Multus
attaches the same network twice as ``net1`` and ``net2``); an ADD for an existing
(container id, ifname) is an error (code 102), as before. See docs/cni.md.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import AlreadyConnected
from .model import AttachRequest, Endpoint, Network


def _same_settings(ep: Endpoint, req: AttachRequest) -> list[str]:
    """What the request asks for that ``ep`` does not have (empty: the request is a retry)."""
    differ = []
    if ep.netns != req.netns:
        differ.append(f"netns {req.netns} (connected: {ep.netns})")
    have = {str(a.ip) for a in ep.addresses}
    wanted = [ip for ip in req.static_ips if ip not in have]
    if wanted:
        differ.append(f"ip {', '.join(wanted)} (connected: {', '.join(sorted(have))})")
    if req.mac and (ep.mac or "").lower() != req.mac.lower():
        differ.append(f"mac {req.mac} (connected: {ep.mac})")
    if tuple(req.port_mappings) != tuple(ep.port_mappings):
        differ.append("published ports")
    if tuple(req.aliases) != tuple(ep.aliases):
        differ.append("aliases")
    return differ


def _same_netns(ep: Endpoint, req: AttachRequest) -> bool:
    """Same namespace: the same path, and the same inode where both are known (a path such as
    /proc/PID/ns/net may name another namespace once the pid is reused)."""
    if ep.netns != req.netns:
        return False
    return not (ep.netns_inode and req.netns_inode) or ep.netns_inode == req.netns_inode


def existing_connection(
    network: Network, endpoints: Iterable[Endpoint], req: AttachRequest, cid: str, ifname: str
) -> Endpoint | None:
    """The endpoint a repeated API connect returns, None to go on attaching, or the refusal.

    Returns the existing ``ready`` endpoint when ``req`` is a retry of it (same interface name,
    same settings). Raises AlreadyConnected when the container already has an interface on
    ``network`` under another name, or under this name with other settings. Endpoints not yet
    ``ready`` under the same name are left to the caller (in flight, or a leftover to undo).
    CNI requests are never judged here (see the module docstring).
    """
    if req.origin == "cni":
        return None
    mine = [
        ep
        for ep in endpoints
        if ep.origin != "cni" and (ep.container_id == cid or _same_netns(ep, req))
    ]
    for ep in mine:
        who = f"container {cid!r}" + (f" (netns {req.netns})" if req.netns != cid else "")
        if ep.container_id != cid:  # another container id in the same namespace
            who = f"netns {req.netns} (container {ep.container_id!r})"
        if ep.ifname != ifname or ep.container_id != cid:
            raise AlreadyConnected(
                f"{who} is already connected to network {network.name!r} as {ep.ifname}; "
                f"disconnect it first (a retry with --ifname {ep.ifname} returns that endpoint)",
                ifname=ep.ifname,
                field="ifname",
                value=ifname,
            )
        if ep.state != "ready":
            return None
        differ = _same_settings(ep, req)
        if differ:
            raise AlreadyConnected(
                f"{who} is already connected to network {network.name!r} as {ep.ifname} with "
                f"other settings ({'; '.join(differ)}); disconnect it first",
                ifname=ep.ifname,
                field="ifname",
                value=ifname,
            )
        return ep
    return None

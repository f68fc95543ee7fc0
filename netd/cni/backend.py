"""The seam between the CNI handler and the daemon: what CNI needs from netd's service.

``netd.service.Service`` implements it; ``netd.cni.fake.FakeCniBackend`` is the in-memory fake the
handler's unit tests use. The handler speaks CNI; the backend speaks netd records and raises
netd errors, which the handler maps to CNI error codes.
"""

from __future__ import annotations

from typing import Protocol

from ..drivers.base import Driver
from ..model import AttachRequest, Endpoint, Network, NetworkSpec


class CniBackend(Protocol):
    """The daemon operations behind CNI ADD, DEL, CHECK, GC and STATUS."""

    async def get_network(self, name: str) -> Network:
        """The network called ``name``; NotFound if there is none."""
        ...

    async def ensure_network(self, spec: NetworkSpec) -> Network:
        """Create the network if it is missing, else return the existing one unchanged."""
        ...

    async def attach(self, req: AttachRequest, *, plumb: bool = True) -> tuple[Network, Endpoint]:
        """Attach a container; ``plumb=False`` only allocates and records (IPAM-only mode).

        Errors: NotFound, InvalidInput, Conflict (e.g. the attachment exists), AddressExhausted,
        KernelError.
        """
        ...

    async def detach(self, network: str, container_id: str, ifname: str, netns: str | None) -> None:
        """Detach; idempotent: a missing network, endpoint or namespace is fine."""
        ...

    async def check(self, network: str, container_id: str, ifname: str, netns: str) -> None:
        """Verify an attachment; raise NotFound/KernelError naming the precise problem."""
        ...

    async def gc(self, network: str, valid: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """Remove the network's CNI attachments not in ``valid``; return the removed keys."""
        ...

    async def status(self) -> None:
        """Return when ready to serve ADD; raise Unavailable when not."""
        ...

    def dns_for(self, network: Network) -> dict[str, list[str]]:
        """The DNS for containers on ``network``: ``{"nameservers": [...], "search": [...]}``."""
        ...

    def host_interface(self, network: Network) -> str:
        """The host interface the network's traffic enters through (its bridge); "" if none."""
        ...

    def driver(self, network: Network) -> Driver:
        """The network's driver (its capabilities and its part of the CNI result)."""
        ...

    def check_netns(self, path: str) -> None:
        """InvalidInput (field ``netns``) unless ``path`` is a network namespace netd may use.

        ADD calls it before anything is created, so a bad CNI_NETNS changes nothing (not even
        the network an inline definition would create).
        """
        ...


class BackendProxy:
    """A :class:`CniBackend` that forwards every call to ``inner``; subclasses override the one
    or two calls they change (the API marks CNI attachments, the spool replay guards DEL).
    Explicit methods, not ``__getattr__``, so mypy checks the seam."""

    def __init__(self, inner: CniBackend) -> None:
        self.inner = inner

    async def get_network(self, name: str) -> Network:
        """Forwarded."""
        return await self.inner.get_network(name)

    async def ensure_network(self, spec: NetworkSpec) -> Network:
        """Forwarded."""
        return await self.inner.ensure_network(spec)

    async def attach(self, req: AttachRequest, *, plumb: bool = True) -> tuple[Network, Endpoint]:
        """Forwarded."""
        return await self.inner.attach(req, plumb=plumb)

    async def detach(self, network: str, container_id: str, ifname: str, netns: str | None) -> None:
        """Forwarded."""
        await self.inner.detach(network, container_id, ifname, netns)

    async def check(self, network: str, container_id: str, ifname: str, netns: str) -> None:
        """Forwarded."""
        await self.inner.check(network, container_id, ifname, netns)

    async def gc(self, network: str, valid: set[tuple[str, str]]) -> list[tuple[str, str]]:
        """Forwarded."""
        return await self.inner.gc(network, valid)

    async def status(self) -> None:
        """Forwarded."""
        await self.inner.status()

    def dns_for(self, network: Network) -> dict[str, list[str]]:
        """Forwarded."""
        return self.inner.dns_for(network)

    def host_interface(self, network: Network) -> str:
        """Forwarded."""
        return self.inner.host_interface(network)

    def driver(self, network: Network) -> Driver:
        """Forwarded."""
        return self.inner.driver(network)

    def check_netns(self, path: str) -> None:
        """Forwarded."""
        self.inner.check_netns(path)

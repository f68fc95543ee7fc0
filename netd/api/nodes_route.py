"""``GET /v1/nodes`` and ``DELETE /v1/nodes/{name}``: the cluster's nodes (``netd node ls/rm``).

Only a daemon whose store is etcd has nodes; any other answers 409 naming the ``store``
setting, so a script learns why rather than getting an empty list. Removing a node is an admin's
act (the policy makes every mutation outside ``/v1/networks`` admin-only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import BaseModel

from ..cluster.config import NODE_NAME, NODE_NAME_RULE
from ..errors import Conflict, InvalidInput

if TYPE_CHECKING:
    from ..cluster.member import Member
    from ..service import Service


class NodeOut(BaseModel):
    """One node of the cluster."""

    name: str
    address: str
    state: str
    registered: float
    last_heartbeat: float
    endpoints: int
    blocks: list[str]


def _member(service: Service) -> Member:
    if service.cluster is None:
        raise Conflict(
            'this daemon is not part of a cluster (config store = "sqlite"); nodes exist only '
            'with store = "etcd" and a [cluster] table (docs/multi-host.md)',
            field="store",
            value="sqlite",
        )
    return service.cluster


async def list_nodes(service: Service, request: web.Request) -> web.Response:
    """Every node, by name."""
    nodes = await _member(service).nodes()
    return web.json_response([n.to_json() for n in nodes])


async def remove_node(service: Service, request: web.Request) -> web.Response:
    """Forget a node that is down (or any with ?force=1) and free what it held."""
    force_text = request.query.get("force", "0")
    if force_text not in ("0", "1", "true", "false"):
        raise InvalidInput("force", force_text, "must be 0, 1, true or false")
    name = request.match_info["name"]
    member = _member(service)
    if not NODE_NAME.match(name):
        # A name no node can have ("../x", "a/b", too long): said so, and etcd is not asked.
        raise InvalidInput("name", name, NODE_NAME_RULE)
    node = await member.remove_node(name, force=force_text in ("1", "true"))
    return web.json_response({"removed": node.name, "endpoints": node.endpoints,
                              "blocks": node.blocks})  # fmt: skip

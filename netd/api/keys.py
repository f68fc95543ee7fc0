"""The keys under which the API's middlewares leave what they learnt on a request.

``netd.api.server`` (which sets the caller), ``netd.api.limits`` (which counts requests per
caller) and ``netd.security.middleware`` (which authorises the caller and may confine it) all
read or write these; they live here so that none of those modules imports another for a key.
"""

from __future__ import annotations

from aiohttp import web

from ..model import Caller
from ..security.rootless import Confinement

# The kernel-verified SO_PEERCRED caller (None on a transport that is not a Unix socket).
CALLER: web.RequestKey[Caller | None] = web.RequestKey("caller", Caller)
# Set by the authorisation middleware for a rootless owner: confines the request to its networks.
OWNER: web.RequestKey[Confinement] = web.RequestKey("owner", Confinement)

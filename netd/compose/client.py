"""The compose side of the daemon's HTTP API: one request, errors as netd exceptions.

Uses the same stdlib client as the CLI (``netd.client.request_json``). An
error answer becomes the NetdError subclass of its ``code`` carrying the daemon's message; an
unreachable daemon becomes Unavailable naming the socket. No retries, no caching.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .. import errors
from ..client import request_json

_BY_CODE: dict[str, type[errors.NetdError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidInput,
        errors.NotFound,
        errors.Conflict,
        errors.AddressExhausted,
        errors.PermissionDenied,
        errors.Unavailable,
        errors.KernelError,
        errors.FirewallError,
        errors.StoreError,
    )
}


class Client:
    """Calls the daemon on ``socket``."""

    def __init__(self, socket: str, timeout: float = 120) -> None:
        self.socket = socket
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; the decoded answer, or the daemon's error raised as a NetdError."""
        try:
            status, data = request_json(self.socket, method, path, body, timeout=self.timeout)
        except OSError as exc:
            raise errors.Unavailable(
                f"cannot reach the netd daemon at {self.socket}: {exc.strerror or exc}"
            ) from exc
        if status < 400:
            return data
        err = data.get("error", {}) if isinstance(data, dict) else {}
        cls = _BY_CODE.get(err.get("code", ""), errors.NetdError)
        exc_ = cls.__new__(cls)
        errors.NetdError.__init__(
            exc_, f"{method} {path}: {err.get('message') or data}", field=err.get("field")
        )
        exc_.daemon_message = str(err.get("message") or data)  # type: ignore[attr-defined]
        raise exc_

    def networks(self) -> list[dict[str, Any]]:
        """GET /v1/networks."""
        return list(self.call("GET", "/v1/networks") or [])

    def network(self, name: str) -> dict[str, Any]:
        """GET /v1/networks/{name} (with endpoints)."""
        return dict(self.call("GET", f"/v1/networks/{quote(name, safe='')}"))

    def create_network(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/networks."""
        return dict(self.call("POST", "/v1/networks", body))

    def remove_network(self, name: str) -> None:
        """DELETE /v1/networks/{name}."""
        self.call("DELETE", f"/v1/networks/{quote(name, safe='')}")

    def connect(self, network: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/networks/{name}/connect; the endpoint with its ``dns``."""
        return dict(self.call("POST", f"/v1/networks/{quote(network, safe='')}/connect", body))

    def disconnect(self, network: str, container_id: str) -> None:
        """POST /v1/networks/{name}/disconnect for every interface of ``container_id``."""
        self.call(
            "POST",
            f"/v1/networks/{quote(network, safe='')}/disconnect",
            {"container_id": container_id},
        )

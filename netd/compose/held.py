"""A project rebuilt from what netd holds, for ``ps``, ``down`` and ``exec`` with ``-p NAME`` alone.

docker compose finds a project's containers by label when no file is given; here the daemon's
networks labelled ``com.docker.compose.project=NAME`` and the endpoints named
``<project>-<service>-<n>`` on them, with the project's state file (its sandboxes, including
ones with no network, and which services share another's sandbox), give the same picture.
The result only names things (networks, services, replica counts): enough to list, remove and
enter them, never to create them.
"""

from __future__ import annotations

from pathlib import Path

from .apply import STATE_DIR, read_owned, service_of
from .client import Client
from .errors import ComposeError
from .model import LABEL_NETWORK, LABEL_PROJECT, Attachment, NetworkDef, Project, Service


def project_from_daemon(client: Client, name: str, state_dir: Path = STATE_DIR) -> Project:
    """The project ``name`` as the daemon and the state file know it; error if neither does."""
    owned = read_owned(name, state_dir)
    sandboxes: set[str] = set(owned.get("sandboxes", []))
    networks: dict[str, NetworkDef] = {}
    attached: dict[str, list[str]] = {}  # sandbox -> network keys
    for summary in client.networks():
        labels = summary.get("labels") or {}
        ours = labels.get(LABEL_PROJECT) == name
        info = None
        if ours or sandboxes:
            info = client.network(summary["name"])
        if info is None:
            continue
        key = labels.get(LABEL_NETWORK) if ours else None
        key = key or summary["name"]
        mine = [
            ep["container_id"]
            for ep in info.get("endpoints") or []
            if ep["container_id"] in sandboxes
            or (ours and service_of(name, ep["container_id"]) is not None)
        ]
        if not ours and not mine:
            continue
        networks[key] = NetworkDef(
            key=key,
            name=summary["name"],
            external=not ours,
            internal=bool(info.get("internal")),
            labels=dict(labels),
        )
        for cid in mine:
            sandboxes.add(cid)
            attached.setdefault(cid, []).append(key)
    if not networks and not sandboxes:
        raise ComposeError(
            None,
            "-p/--project-name",
            name,
            "no compose file here, and netd holds no project of that name",
        )
    replicas: dict[str, int] = {}
    nets_of: dict[str, list[str]] = {}
    for sb in sandboxes:
        found = service_of(name, sb)
        if found is None:
            continue
        service, n = found
        replicas[service] = max(replicas.get(service, 0), n)
        nets_of.setdefault(service, [])
        nets_of[service] += [k for k in attached.get(sb, []) if k not in nets_of[service]]
    services = {
        svc: Service(
            name=svc,
            replicas=n,
            network_mode=None if nets_of[svc] else "none",
            attachments=tuple(Attachment(network=k) for k in nets_of[svc]),
        )
        for svc, n in sorted(replicas.items())
    }
    for user, owner in (owned.get("shared") or {}).items():
        if owner in services and user not in services:
            services[user] = Service(name=user, network_mode=f"service:{owner}")
    return Project(name, "", networks, services, defined=tuple(services))

"""Which services a command acts on: references, profiles and ``up SERVICE...`` (pure).

Follows the compose-spec and docker compose:

- ``depends_on`` and ``links`` must name services of the file (a ``depends_on`` entry with
  ``required: false`` may name a missing one); ``compose.yaml:7: services.web.depends_on:
  "db" depends on undefined service "db"``.
- A service without ``profiles`` is always enabled; one with profiles only when one of them is
  active (``--profile``, ``COMPOSE_PROFILES``; ``*`` activates all). A service named on the
  command line is enabled whatever its profiles, and its profiles become active.
- A reference (``depends_on``, ``links``, ``network_mode: service:``) from an enabled service to
  one disabled by profiles is an error, as in compose: it is not enabled behind your back.
- ``up SERVICE...`` acts on the named services and, transitively, what they depend on; the
  other services of the file are left as they are.

Nothing here talks to the daemon.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ComposeError
from .model import Project, Service
from .source import position


def active_profiles(flags: Iterable[str], environ: Mapping[str, str]) -> set[str]:
    """``--profile`` flags, else ``COMPOSE_PROFILES`` (comma separated), as compose reads them."""
    chosen = {p for p in flags if p}
    if not chosen:
        chosen = {p.strip() for p in environ.get("COMPOSE_PROFILES", "").split(",") if p.strip()}
    return chosen


def _refs(svc: Service) -> list[tuple[str, str, bool]]:
    """(key, service, required) of every reference ``svc`` makes to another service."""
    out = [("depends_on", name, required) for name, required in svc.depends_on]
    out += [("links", target, True) for target, _ in svc.links]
    if svc.shares is not None:
        out.append(("network_mode", svc.shares, True))
    return out


def _where(raw: Any, svc: str, key: str, target: str) -> tuple[str, int] | None:
    node = raw.get(svc) if isinstance(raw, dict) else None
    value = node.get(key) if isinstance(node, dict) else None
    if isinstance(value, dict) and target in value:
        return position(value, target)
    if isinstance(value, list):
        for i, item in enumerate(value):
            if str(item).partition(":")[0] == target:
                return position(value, i)
    return position(node, key) if isinstance(node, dict) else None


def check_references(services: Mapping[str, Service], raw: Any) -> None:
    """``depends_on`` and ``links`` to services the file does not define are refused."""
    for svc in services.values():
        for key, target, required in _refs(svc):
            if key == "network_mode" or target in services or not required:
                continue
            verb = "depends on" if key == "depends_on" else "links to"
            raise ComposeError(
                _where(raw, svc.name, key, target),
                f"services.{svc.name}.{key}",
                target,
                f'{verb} undefined service "{target}"',
            )


def _enabled(svc: Service, profiles: set[str]) -> bool:
    return not svc.profiles or "*" in profiles or bool(profiles & set(svc.profiles))


def select(
    project: Project, profiles: set[str], targets: Sequence[str], raw: Any = None
) -> Project:
    """The project restricted to enabled services, with ``targets`` and their dependencies."""
    everything = project.services
    for name in targets:
        if name not in everything:
            raise ComposeError(
                None, "", name, f"no such service (services: {', '.join(everything)})"
            )
        profiles = profiles | set(everything[name].profiles)
    enabled = {n: s for n, s in everything.items() if _enabled(s, profiles)}
    for svc in enabled.values():
        for key, target, required in _refs(svc):
            if target in everything and target not in enabled and required:
                wanted = ", ".join(everything[target].profiles)
                raise ComposeError(
                    _where(raw, svc.name, key, target),
                    f"services.{svc.name}.{key}",
                    target,
                    f'refers to service "{target}", which is disabled by profiles '
                    f"(enable one of: {wanted}, with --profile)",
                )
    chosen: tuple[str, ...] | None = None
    if targets:
        seen: list[str] = []
        todo = list(dict.fromkeys(targets))
        while todo:
            name = todo.pop(0)
            if name in seen or name not in enabled:
                continue
            seen.append(name)
            todo += [t for _, t, _ in _refs(enabled[name])]
        chosen = tuple(n for n in enabled if n in seen)
    kept = set(chosen if chosen is not None else enabled)
    used_by_kept = {a.network for n in kept for a in enabled[n].attachments}
    used_by_any = {a.network for s in everything.values() for a in s.attachments}
    networks = {
        k: v for k, v in project.networks.items() if k in used_by_kept or k not in used_by_any
    }
    return dataclasses.replace(
        project,
        services=enabled,
        networks=networks,
        defined=tuple(everything),
        targets=chosen,
    )

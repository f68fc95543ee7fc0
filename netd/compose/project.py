"""Loading a compose project: file discovery, ``.env``, project name, and the parsed model.

:func:`load_project` is the one entry point: it finds the files (``-f`` or the default names),
reads the ``.env`` file next to the first one, loads and merges the files
(:mod:`netd.compose.merge`), chooses the project name (``-p`` > top-level ``name:`` >
``COMPOSE_PROJECT_NAME`` > the directory name, normalised like compose), and validates the
networking half into a :class:`Project`. Pure apart from reading files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ComposeError
from .merge import load_tree, project_env
from .model import NetworkDef, Project, Service
from .parse import parse_network
from .select import active_profiles, check_references, select
from .services import check_shared, link_warnings, parse_service
from .source import LocDict, Where, position

DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml")
_PROJECT = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")


def normalise_project_name(name: str) -> str:
    """Compose's normalisation: lower case, only [a-z0-9_-], starting with a letter or digit."""
    out = re.sub(r"[^a-z0-9_-]", "", name.lower())
    return out.lstrip("_-")


def check_project_name(name: str, source: str) -> str:
    """An explicit project name must already be normal; the error names where it came from."""
    if not _PROJECT.match(name):
        raise ComposeError(
            None,
            source,
            name,
            "must contain only a-z, 0-9, _ and - and start with a letter or digit",
        )
    return name


def find_files(files: Sequence[str], cwd: Path, environ: Mapping[str, str]) -> list[Path]:
    """The ``-f`` files, else COMPOSE_FILE, else the first default name present in ``cwd``."""
    chosen = list(files)
    if not chosen and environ.get("COMPOSE_FILE"):
        chosen = [
            f
            for f in environ["COMPOSE_FILE"].split(environ.get("COMPOSE_PATH_SEPARATOR", ":"))
            if f
        ]
    if not chosen:
        for name in DEFAULT_FILES:
            if (cwd / name).is_file():
                return [cwd / name]
        raise ComposeError(
            None,
            "",
            None,
            f"no compose file found in {cwd} (looked for {', '.join(DEFAULT_FILES)})",
        )
    out = []
    for f in chosen:
        path = Path(f) if Path(f).is_absolute() else cwd / f
        if not path.is_file():
            raise ComposeError(None, "", None, f"compose file {f} not found")
        out.append(path)
    return out


def project_name(
    explicit: str | None, tree: dict[Any, Any], environ: Mapping[str, str], project_dir: Path
) -> str:
    """``-p`` > top-level ``name:`` > COMPOSE_PROJECT_NAME > directory name."""
    if explicit:
        return check_project_name(explicit, "-p/--project-name")
    if tree.get("name"):
        name = str(tree["name"])
        if not _PROJECT.match(name):
            raise ComposeError(
                position(tree, "name"),
                "name",
                name,
                "must contain only a-z, 0-9, _ and - and start with a letter or digit",
            )
        return name
    if environ.get("COMPOSE_PROJECT_NAME"):
        return check_project_name(environ["COMPOSE_PROJECT_NAME"], "COMPOSE_PROJECT_NAME")
    name = normalise_project_name(project_dir.resolve().name)
    if not name:
        raise ComposeError(
            None, "", project_dir.name, "cannot be made a project name; pass -p NAME"
        )
    return name


def load_project(
    files: Sequence[str] = (),
    *,
    project: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    env_files: Sequence[str] = (),
    profiles: Sequence[str] = (),
    services: Sequence[str] = (),
) -> Project:
    """Load, merge, interpolate and validate a compose project's networking definitions.

    ``profiles`` (else ``COMPOSE_PROFILES``) choose the enabled services; ``services`` are the
    ``up SERVICE...`` targets (see :mod:`netd.compose.select`).
    """
    import os

    environ = dict(os.environ if environ is None else environ)
    cwd = cwd or Path.cwd()
    paths = find_files(files, cwd, environ)
    project_dir = paths[0].parent
    env = project_env(project_dir, environ, [cwd / e for e in env_files])
    unset: list[str] = []
    tree = load_tree(paths, env, cwd, unset)
    if not isinstance(tree, dict):
        raise ComposeError(None, "", None, "a compose file must be a mapping")
    name = project_name(project, tree, env, project_dir)
    # docker compose's own words, once per variable
    notes = [
        f'The "{var}" variable is not set. Defaulting to a blank string.'
        for var in dict.fromkeys(unset)
    ]
    loaded = build_project(tree, name, str(project_dir), notes)
    return select(
        loaded, active_profiles(profiles, env), list(services), tree.get("services") or {}
    )


def build_project(
    tree: dict[Any, Any], name: str, working_dir: str, notes: Sequence[str] = ()
) -> Project:
    """Validate a merged tree into a Project named ``name`` (every service, profiles or not)."""
    warnings: list[str] = list(notes)
    positions: dict[str, Where] = {}
    raw_nets = tree.get("networks") or LocDict()
    if not isinstance(raw_nets, dict):
        raise ComposeError(position(tree, "networks"), "networks", raw_nets, "must be a mapping")
    networks: dict[str, NetworkDef] = {}
    for key in raw_nets:
        networks[str(key)] = parse_network(raw_nets, str(key), name, warnings)
        where = position(raw_nets, key)
        if where is not None:
            positions[f"networks.{key}"] = where
    if "default" not in networks:
        networks["default"] = parse_network(LocDict({"default": None}), "default", name, warnings)
    raw_services = tree.get("services") or LocDict()
    if not isinstance(raw_services, dict):
        raise ComposeError(
            position(tree, "services"), "services", raw_services, "must be a mapping"
        )
    used: set[str] = set()
    services: dict[str, Service] = {}
    for svc in raw_services:
        services[str(svc)] = parse_service(raw_services, str(svc), networks, used, positions)
    check_shared(services, raw_services)
    check_references(services, raw_services)
    warnings += link_warnings(services)
    # Like compose, only networks some service uses are created (an unused `default` never is);
    # declared but unused networks are still created, as `docker compose up` does.
    if "default" not in used and "default" not in raw_nets:
        del networks["default"]
    return Project(
        name,
        working_dir,
        networks,
        services,
        tuple(warnings),
        defined=tuple(services),
        positions=positions,
    )

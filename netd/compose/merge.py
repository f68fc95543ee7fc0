"""Loading a compose project's files into one tree: interpolation, ``include``, ``extends``, merge.

Follows the compose-spec ("merge" and "include"/"extends" sections): mappings merge key by key;
most sequences append (duplicates of simple values dropped); ``command``, ``entrypoint`` and
``healthcheck.test`` are replaced; ``networks``, ``labels``, ``environment``, ``extra_hosts``,
``sysctls`` and ``annotations`` are list-or-map and merge as maps; ``!reset`` removes and
``!override`` replaces. Each file is interpolated before anything else, then its ``extends``
and ``include`` are resolved; later ``-f`` files override earlier ones. The result is an
untyped tree (LocDict) that :mod:`netd.compose.parse` validates; nothing here knows what a
network is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ComposeError
from .interpolate import interpolate, parse_env_file
from .source import LocDict, LocList, Override, Reset, copy_positions, load_file, position

REPLACED = {"command", "entrypoint"}
MAP_LIKE = {"networks", "labels", "environment", "extra_hosts", "sysctls", "annotations"}
MAX_DEPTH = 16  # include/extends chains longer than this are a loop or a mistake


def _unwrap(value: Any) -> Any:
    return value.value if isinstance(value, (Reset, Override)) else value


def as_map(value: Any, key: str) -> LocDict:
    """A list-or-map field as a map (``["a", "b"]``, ``["K=V"]``, ``["host:ip"]`` forms)."""
    if isinstance(value, dict):
        return value if isinstance(value, LocDict) else LocDict(value)
    out = LocDict(where=getattr(value, "where", None))
    for i, item in enumerate(value or []):
        text = str(item)
        if key == "networks":
            name, val = text, None
        elif key == "extra_hosts":
            sep = "=" if "=" in text else ":"
            name, _, val = text.partition(sep)
        else:
            name, sep, rest = text.partition("=")
            val = rest if sep else None
        out[name] = val
        where = position(value, i)
        if where is not None:
            out.lines[name] = where
    return out


def merge(base: Any, override: Any, path: tuple[str, ...] = ()) -> Any:
    """Merge ``override`` onto ``base`` with the compose-spec rules."""
    if isinstance(override, Override):
        return override.value
    if isinstance(override, Reset):
        return None
    leaf = path[-1] if path else ""
    in_service = len(path) == 3 and path[0] == "services"
    mapped = in_service and leaf in MAP_LIKE
    if mapped and isinstance(base, (list, dict)) and isinstance(override, (list, dict)):
        base, override = as_map(base, leaf), as_map(override, leaf)
    if isinstance(base, dict) and isinstance(override, dict):
        out = LocDict(where=getattr(base, "where", None))
        for key, value in base.items():
            out[key] = value
        copy_positions(base, out)
        for key, value in override.items():
            if isinstance(value, Reset):
                out.pop(key, None)
                continue
            out[key] = merge(out[key], value, (*path, str(key))) if key in out else _unwrap(value)
            where = position(override, key)
            if where is not None:
                out.lines[key] = where
        return out
    if isinstance(base, list) and isinstance(override, list):
        replaced = in_service and leaf in REPLACED
        if replaced or path[-2:] == ("healthcheck", "test"):
            return override
        out_list = LocList(base, where=getattr(base, "where", None))
        copy_positions(base, out_list)
        for i, item in enumerate(override):
            if isinstance(item, (str, int, float)) and item in out_list:
                continue
            out_list.append(item)
            where = position(override, i)
            if where is not None:
                out_list.lines[len(out_list) - 1] = where
        return out_list
    return override


def _display(path: Path, start: Path | None = None) -> str:
    """A file name for messages: relative when under the current directory, else absolute.

    (Never ``../``: the same file must read the same wherever the user runs from.)
    """
    try:
        rel = os.path.relpath(path, start)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


class Loader:
    """Loads files of one project with one environment; resolves include and extends."""

    def __init__(self, env: Mapping[str, str], cwd: Path | None = None) -> None:
        self.env = env
        self.cwd = cwd
        self.unset: list[str] = []  # variables used without a value or default

    def load(self, path: Path, depth: int = 0) -> LocDict:
        """One file, interpolated, with its extends and include resolved."""
        if depth > MAX_DEPTH:
            raise ComposeError(
                (_display(path, self.cwd), 0), "include", None, "include/extends nest too deep"
            )
        raw = load_file(path, _display(path, self.cwd))
        if raw is None:
            raw = LocDict(where=(_display(path, self.cwd), 1))
        if not isinstance(raw, dict):
            raise ComposeError(
                (_display(path, self.cwd), 1), "", None, "a compose file must be a mapping"
            )
        tree = interpolate(raw, self.env, unset=self.unset)
        services = tree.get("services")
        if isinstance(services, dict):
            for name in list(services):
                if not isinstance(name, str):  # `1:` or `true:` in YAML; found by fuzzing
                    raise ComposeError(
                        position(services, name), f"services.{name}", None, "name must be a string"
                    )
                services[name] = self._extends(path, services, name, depth, set())
        if "include" in tree:
            tree = self._include(path, tree, depth)
        return tree

    def _extends(
        self, path: Path, services: dict[Any, Any], name: str, depth: int, seen: set[str]
    ) -> Any:
        svc = services[name]
        if not isinstance(svc, dict) or "extends" not in svc:
            return svc
        spec = svc["extends"]
        where = position(svc, "extends")
        if isinstance(spec, str):
            spec = {"service": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("service"), str):
            raise ComposeError(
                where, f"services.{name}.extends", spec, "must be a service name or {service, file}"
            )
        base_name = spec["service"]
        if spec.get("file"):
            other = (path.parent / str(spec["file"])).resolve()
            other_services = self.load(other, depth + 1).get("services") or {}
            if base_name not in other_services:
                raise ComposeError(
                    where,
                    f"services.{name}.extends.service",
                    base_name,
                    f"is not a service of {_display(other, self.cwd)}",
                )
            base = other_services[base_name]
        else:
            if base_name not in services or base_name in seen or base_name == name:
                rule = (
                    "extends itself"
                    if base_name in seen or base_name == name
                    else ("is not a service of this file")
                )
                raise ComposeError(where, f"services.{name}.extends.service", base_name, rule)
            base = self._extends(path, services, base_name, depth, seen | {name})
        own = LocDict({k: v for k, v in svc.items() if k != "extends"}, where=position(svc))
        copy_positions(svc, own)
        return merge(base, own, ("services", name))

    def _include(self, path: Path, tree: dict[Any, Any], depth: int) -> LocDict:
        entries = tree.pop("include")
        where = position(tree, "include")
        if not isinstance(entries, list):
            raise ComposeError(where, "include", entries, "must be a list")
        out = LocDict(tree, where=position(tree))
        copy_positions(tree, out)
        for i, entry in enumerate(entries):
            paths = entry.get("path") if isinstance(entry, dict) else entry
            paths = paths if isinstance(paths, list) else [paths]
            if not paths or not all(isinstance(p, str) for p in paths):
                raise ComposeError(position(entries, i), f"include[{i}]", entry, "needs a path")
            files = [(path.parent / p).resolve() for p in paths]
            included: Any = None
            for f in files:
                one = self.load(f, depth + 1)
                included = one if included is None else merge(included, one)
            for section in ("services", "networks", "volumes", "configs", "secrets"):
                theirs = included.get(section) or {}
                if not theirs:
                    continue
                mine = out.setdefault(section, LocDict(where=where))
                for key, value in theirs.items():
                    if key in mine and mine[key] != value:
                        raise ComposeError(
                            position(mine, key),
                            f"{section}.{key}",
                            None,
                            f"is also defined by included file {_display(files[0], self.cwd)}",
                        )
                    mine[key] = value
                    mine.lines.setdefault(key, position(theirs, key) or where)
        return out


def project_env(
    project_dir: Path, environ: Mapping[str, str], env_files: list[Path]
) -> dict[str, str]:
    """Variables for interpolation: the ``.env`` file(s), overridden by the environment."""
    out: dict[str, str] = {}
    files = env_files or [project_dir / ".env"]
    for f in files:
        if not f.is_file() and not env_files:
            continue
        try:
            text = f.read_text()
        except OSError as exc:
            raise ComposeError((_display(f), 0), "", None, f"cannot read: {exc.strerror}") from exc
        out.update(parse_env_file(text, _display(f), {**out, **environ}))
    out.update(environ)
    return out


def load_tree(
    files: list[Path],
    env: Mapping[str, str],
    cwd: Path | None = None,
    unset: list[str] | None = None,
) -> LocDict:
    """Every ``-f`` file loaded and merged in order (later files override).

    Variables used without a value or default are appended to ``unset``.
    """
    loader = Loader(env, cwd)
    tree: Any = None
    for f in files:
        one = loader.load(f)
        tree = one if tree is None else merge(tree, one)
    if unset is not None:
        unset += loader.unset
    return tree

"""Reading compose YAML so that every mapping and sequence remembers where it came from.

:func:`load_yaml` uses PyYAML's ``SafeLoader`` (no arbitrary objects) and builds
:class:`LocDict` / :class:`LocList` containers: ordinary dicts and lists that also record, per
key or index, the file and line it was written on, so validation can say
``compose.yaml:12: services.web...``. Compose's ``!reset`` and ``!override`` tags are understood
(they steer the merge of several files). This module does not interpolate, merge or validate.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import ComposeError

_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_INT_RX = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT_RX = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
Where = tuple[str, int]  # (file name as the user gave it, 1-based line)


class LocDict(dict[Any, Any]):
    """A mapping from a compose file, with the position of each key (``lines[key]``)."""

    def __init__(self, *args: Any, where: Where | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.where: Where | None = where
        self.lines: dict[Any, Where] = {}


class LocList(list[Any]):
    """A sequence from a compose file, with the position of each item (``lines[index]``)."""

    def __init__(self, *args: Any, where: Where | None = None) -> None:
        super().__init__(*args)
        self.where: Where | None = where
        self.lines: dict[int, Where] = {}


class Reset:
    """``!reset``: drop the value inherited from earlier files."""

    def __init__(self, value: Any) -> None:
        self.value = value


class Override:
    """``!override``: replace the value from earlier files instead of merging."""

    def __init__(self, value: Any) -> None:
        self.value = value


def position(container: Any, key: Any = None) -> Where | None:
    """Where ``container[key]`` (or the container itself) was written, if known."""
    lines = getattr(container, "lines", None)
    if key is not None and lines and key in lines:
        return lines[key]
    return getattr(container, "where", None)


def copy_positions(src: Any, dst: Any) -> Any:
    """Give ``dst`` the positions of ``src`` where it has none (for rebuilt containers)."""
    if isinstance(dst, (LocDict, LocList)) and isinstance(src, (LocDict, LocList)):
        if dst.where is None:
            dst.where = src.where
        for key, where in src.lines.items():
            dst.lines.setdefault(key, where)
    return dst


def _loader(filename: str) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        """SafeLoader building LocDict/LocList with positions."""

    # YAML 1.1 reads `22:22` as the base-60 integer 1342; compose (a YAML 1.2 parser) reads a
    # string, which matters for `ports`. Keep only decimal/hex/octal ints and plain floats.
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(_INT, _INT_RX, list("-+0123456789"))
    Loader.add_implicit_resolver(_FLOAT, _FLOAT_RX, list("-+0123456789."))

    def mark(node: yaml.Node) -> Where:
        return (filename, node.start_mark.line + 1)

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LocDict:
        loader.flatten_mapping(node)  # resolves YAML merge keys (<<: *anchor)
        out = LocDict(where=mark(node))
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise ComposeError(
                    mark(key_node), "", key, "a mapping key must be a scalar"
                ) from None
            out[key] = loader.construct_object(value_node, deep=True)
            out.lines[key] = mark(key_node)
        return out

    def sequence(loader: yaml.SafeLoader, node: yaml.SequenceNode) -> LocList:
        out = LocList(where=mark(node))
        for i, item in enumerate(node.value):
            out.append(loader.construct_object(item, deep=True))
            out.lines[i] = mark(item)
        return out

    def tagged(cls: type[Reset] | type[Override]) -> Any:
        def construct(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
            if isinstance(node, yaml.MappingNode):
                return cls(mapping(loader, node))
            if isinstance(node, yaml.SequenceNode):
                return cls(sequence(loader, node))
            return cls(loader.construct_scalar(node))  # type: ignore[arg-type]

        return construct

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, sequence)
    Loader.add_constructor("!reset", tagged(Reset))
    Loader.add_constructor("!override", tagged(Override))
    return Loader


def load_yaml(text: str, filename: str) -> Any:
    """Parse one YAML document into LocDict/LocList/scalars; errors name the file and line."""
    try:
        return yaml.load(text, Loader=_loader(filename))
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise ComposeError((filename, line), "", None, f"invalid YAML: {exc.problem}") from exc
    except yaml.YAMLError as exc:
        raise ComposeError((filename, 0), "", None, f"invalid YAML: {exc}") from exc
    except ComposeError:
        raise
    except RecursionError as exc:
        raise ComposeError((filename, 0), "", None, "invalid YAML: nested too deeply") from exc
    except Exception as exc:
        # A tagged scalar PyYAML cannot build (found by fuzzing): its constructors raise bare
        # ValueError (`!!int 08`), KeyError (`!!bool 08`), AttributeError (`!!timestamp x`)...
        # without a mark, so the file is all that can be named.
        raise ComposeError((filename, 0), "", None, f"invalid YAML value: {exc!r}") from exc


def load_file(path: Path, display: str | None = None) -> Any:
    """Read and parse ``path``; ``display`` is the name errors use (default: as given)."""
    name = display or str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ComposeError((name, 0), "", None, f"cannot read: {exc.strerror or exc}") from exc
    return load_yaml(text, name)

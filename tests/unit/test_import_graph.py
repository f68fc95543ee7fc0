"""netd's module import graph: no cycles, and a domain core that does not know the web framework.

The graph is read from the source with ``ast``, not by importing: every ``import`` and ``from
... import`` counts wherever it sits (module level, inside a function, under ``if
TYPE_CHECKING:``), relative imports resolved, so a cycle hidden behind a lazy import is still a
cycle. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to
``pkg``; importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first, so those are
edges too, except for a package the importing module is itself inside (it is initialised before
any of its modules). The layering rule is drawn in docs/architecture.md ("Module layering").
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping, Set
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "netd"

# The domain core: what a network, an endpoint and an address are, the service that changes
# them (and whatever modules it is split into: they are reached from it), and the seams below
# it. None of it may pull in the web framework when imported.
CORE = (
    "netd.service",
    "netd.core",
    "netd.reconcile",
    "netd.ipam",
    "netd.model",
    "netd.names",
    "netd.spec",
    "netd.errors",
    "netd.metrics",
    "netd.drivers",
    "netd.store",
    "netd.firewall",
    "netd.kernel",
    "netd.dns",
)
WEB = ("aiohttp",)
# The web layer: the only modules that may import the web framework at all.
WEB_LAYER = ("netd.api", "netd.daemon", "netd.security.middleware", "netd.logs")
# The daemon wires everything together; only the command line starts it.
DAEMON_USERS = ("netd.cli",)


def module_name(path: Path) -> str:
    """``netd.x.y`` for ``netd/x/y.py``; a package is named by its ``__init__.py``."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of netd by name."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(
    tree: ast.AST, name: str, is_package: bool, module_level_only: bool
) -> Iterator[tuple[str, list[str]]]:
    """``(base module, imported names)`` of each import statement, relative ones resolved."""
    nodes: list[ast.AST] = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            yield base, [a.name for a in node.names]
        if module_level_only and isinstance(
            node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
        ):
            continue
        if module_level_only and _is_type_checking_block(node):
            continue
        nodes.extend(ast.iter_child_nodes(node))


def _is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _with_parents(target: str) -> list[str]:
    parts = target.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def import_graph(module_level_only: bool = False) -> dict[str, set[str]]:
    """``{module: modules it imports}``; third-party modules appear as targets only.

    ``module_level_only`` keeps only what runs when the module is imported (no function
    bodies, no ``if TYPE_CHECKING:`` blocks): the graph that decides what an import pulls in.
    """
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        edges: set[str] = set()
        own = set(_with_parents(name))  # the packages this module sits in
        imports = _imports(tree, name, path.name == "__init__.py", module_level_only)
        for base, names in imports:
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
            # `from pkg import module` needs only pkg.module; any other name is pkg's own.
            targets = submodules if len(submodules) == len(names) > 0 else [base, *submodules]
            for target in targets:
                edges.update(t for t in _with_parents(target) if t == target or t not in own)
            edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: Mapping[str, Set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue  # a third-party module: it cannot import us back
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def reachable(graph: Mapping[str, Set[str]], start: str) -> dict[str, str]:
    """``{module: the module that imports it}`` for everything ``start`` pulls in."""
    seen = {start: ""}
    todo = [start]
    while todo:
        node = todo.pop()
        for child in sorted(graph.get(node, ())):
            if child not in seen:
                seen[child] = node
                todo.append(child)
    return seen


def chain(via: Mapping[str, str], end: str) -> str:
    """``a -> b -> end``: how the start of ``via`` reaches ``end``."""
    path = [end]
    while via[path[-1]]:
        path.append(via[path[-1]])
    return " -> ".join(reversed(path))


def test_the_graph_is_read_from_the_source() -> None:
    graph = import_graph()
    # Sanity: a known module-level import, a relative import and a lazy one are all seen,
    # so an empty cycle list below means something.
    assert "netd.errors" in graph["netd.names"]
    assert "netd.cni.transport" in graph["netd.cni.plugin"]
    assert "netd.cni.spool" in graph["netd.cni.plugin"]  # `from . import spool` in a function
    assert "netd.cni.spool" not in import_graph(module_level_only=True)["netd.cni.plugin"]


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c", "x"}, "c": {"a"}, "d": {"d"}, "x": set()}
    assert cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles (each line one strongly connected component):\n" + "\n".join(
        " <-> ".join(c) for c in found
    )


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_only_the_web_layer_imports_the_web_framework() -> None:
    graph = import_graph()
    found = sorted(m for m, edges in graph.items() if any(_under(t, WEB) for t in edges))
    assert found and all(_under(m, WEB_LAYER) for m in found), found


def test_only_the_command_line_imports_the_daemon() -> None:
    graph = import_graph()
    found = sorted(m for m, edges in graph.items() if "netd.daemon" in edges)
    assert all(_under(m, DAEMON_USERS) for m in found), found


def test_domain_core_does_not_import_the_web_framework() -> None:
    graph = import_graph(module_level_only=True)
    core = [m for m in graph if _under(m, CORE)]
    assert {"netd.service", "netd.core.state", "netd.ipam.index", "netd.reconcile.plan"} <= set(
        core
    )
    leaks = []
    for module in core:
        via = reachable(graph, module)
        leaks += [chain(via, t) for t in via if _under(t, WEB)]
    assert not leaks, "the domain core imports the web framework:\n" + "\n".join(leaks)

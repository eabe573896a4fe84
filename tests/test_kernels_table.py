"""The op table (rom.kernels.registry.IMPLS) is well formed, and the rom.kernels import graph has no cycle.

The graph's edges are every ``import`` statement of a module in rom/kernels (at module level or inside a
function) naming another module of the package, plus the table's "module:function" strings, which
``get_impl`` imports lazily: a cycle through those is a cycle all the same.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from rom.kernels import registry
from rom.kernels.backends import BACKENDS, PACKAGE_PROBES

KERNELS = Path(registry.__file__).resolve().parent
PACKAGE = "rom.kernels"


def _module_name(path: Path) -> str:
    parts = path.relative_to(KERNELS.parents[1]).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(KERNELS.rglob("*.py"))}


def _own_module(name: str, modules: dict[str, Path]) -> str | None:
    """The rom.kernels module an import of ``name`` loads (``from pkg import mod`` names the module itself)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the rom.kernels modules it imports (statements anywhere in it, and the table's strings)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            for target in targets:
                if target.startswith(PACKAGE):
                    own = _own_module(target, modules)
                    if own is not None and own != name:
                        graph[name].add(own)
    for row in registry.IMPLS.values():
        for entry in row.values():
            graph["rom.kernels.registry"].add(registry._target(entry).partition(":")[0])
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_kernels_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert "rom.kernels.reference.scan" in graph["rom.kernels.registry"]  # the table's strings are edges
    assert find_cycle(graph) is None


def test_only_the_package_init_reexports_and_nothing_imports_it() -> None:
    """Modules of the package import each other, never the package itself (which imports them all)."""
    graph = import_graph()
    assert [m for m, deps in graph.items() if PACKAGE in deps] == []


def test_references_do_not_import_the_table() -> None:
    graph = import_graph()
    for name in graph:
        if name.startswith("rom.kernels.reference"):
            assert not graph[name] & {"rom.kernels.registry", "rom.kernels.backends"}, name


def test_every_op_has_a_reference_and_known_backends() -> None:
    for op, row in registry.IMPLS.items():
        assert "reference" in row, op
        assert set(row) <= set(BACKENDS) - {"auto"}, op
        for entry in row.values():
            module, sep, attr = registry._target(entry).partition(":")
            assert sep and module.startswith(PACKAGE + ".") and attr, entry
            if isinstance(entry, registry.Impl):
                assert entry.package in PACKAGE_PROBES, entry


@pytest.mark.parametrize("op", registry.OPS)
def test_references_import_and_are_callable(op: str) -> None:
    fn = registry.get_impl(op, "reference", "cpu")
    assert callable(fn)
    module, _, attr = registry._target(registry.IMPLS[op]["reference"]).partition(":")
    assert fn is getattr(importlib.import_module(module), attr)


def test_fast_implementations_take_their_references_arguments() -> None:
    """A fast entry accepts the positional arguments its reference is called with (names may differ)."""
    for op, row in registry.IMPLS.items():
        ref = registry.get_impl(op, "reference", "cpu")
        n_ref = len([p for p in inspect.signature(ref).parameters.values() if p.default is inspect.Parameter.empty])
        for backend, entry in row.items():
            module, _, attr = registry._target(entry).partition(":")
            try:
                fn = getattr(importlib.import_module(module), attr)
            except ImportError:
                continue
            params = list(inspect.signature(fn).parameters.values())
            assert len(params) >= n_ref, (op, backend)


def test_unknown_op_and_backend_name_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown kernel op 'scan'.*'selective_scan'"):
        registry.get_impl("scan", "auto", "cpu")
    with pytest.raises(ValueError, match=r"unknown kernel backend 'cuda' for selective_scan.*'triton'"):
        registry.get_impl("selective_scan", "cuda", "cpu")

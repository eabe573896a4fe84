"""The import graph of rom/ and analysis/ (read from the source, nothing imported): no cycles, and imports
flow one way (DESIGN: commands -> train -> eval -> models -> layers -> kernels; eval never imports train;
analysis takes from rom only records, io and errors).

Every import statement counts, also one inside a function (a lazy import is still a dependency). Imports
spelled as strings (``importlib.import_module`` tables such as rom.cli.COMMANDS) are not seen.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rom", "analysis")

# Layers of rom, lowest first: a module may import its own layer and those below, never one above.
# A module belongs to the longest prefix listed here.
RANKS: dict[str, int] = {
    # foundation: plain Python, importable from anywhere (analysis included, for io / records / errors)
    "rom": 0, "rom.errors": 0, "rom.io": 0, "rom.records": 0, "rom.config": 0,
    "rom.kernels": 1,
    "rom.layers": 2,
    "rom.models": 3, "rom.accounting": 3,
    "rom.flop_counters": 4, "rom.data": 4,
    "rom.eval": 5, "rom.flops_report": 5, "rom.env": 5,
    "rom.train": 6,
    "rom.interop": 6.5,  # Hugging Face / model-directory conversion: uses models, data, eval; only commands use it
    "rom.commands": 7, "rom.cli": 7, "rom.__main__": 7,
}
ANALYSIS_MAY_IMPORT = {"rom.io", "rom.records", "rom.errors"}
TORCH_FREE = ("rom.errors", "rom.io", "rom.records", "rom.config")  # what the analysis imports must not pull torch in


def module_files() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of rom/ and analysis/ it imports (``from P import m`` counts P and P.m)."""
    mods = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets.add(module)
                targets.update(f"{module}.{alias.name}" for alias in node.names)
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def unit(module: str) -> str | None:
    """The longest prefix of ``module`` listed in RANKS (its layer), or None. The root package ``rom`` is only
    itself: a new top-level module must be given a layer."""
    if module == "rom":
        return "rom"
    parts = module.split(".")
    for n in range(len(parts), 1, -1):
        prefix = ".".join(parts[:n])
        if prefix in RANKS:
            return prefix
    return None


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The graph collapsed onto the units of RANKS (rom's packages and top-level modules) and analysis."""
    def group(m: str) -> str:
        return "analysis" if m.split(".")[0] == "analysis" else (unit(m) or m)

    out: dict[str, set[str]] = {}
    for src, targets in graph.items():
        out.setdefault(group(src), set()).update(group(t) for t in targets if group(t) != group(src))
    return out


GRAPH = import_graph()


def test_the_graph_is_read():
    assert GRAPH["rom.cli"] >= {"rom.config", "rom.errors"}
    assert "rom.kernels" in GRAPH["rom.layers.mamba"]


def test_no_import_cycles():
    assert cycles(GRAPH) == [], "modules that import each other (directly or around a loop)"


def test_no_package_cycles():
    assert cycles(package_graph(GRAPH)) == [], "packages that import each other"


def test_every_rom_module_has_a_layer():
    missing = sorted(m for m in GRAPH if m.startswith("rom") and unit(m) is None)
    assert missing == [], f"add these modules to RANKS in {Path(__file__).name}"


def test_no_upward_imports():
    upward = []
    for src, targets in sorted(GRAPH.items()):
        if not src.startswith("rom"):
            continue
        for t in sorted(targets):
            if not t.startswith("rom"):
                upward.append(f"{src} -> {t} (rom imports the analysis)")
            elif unit(src) is None or unit(t) is None:
                continue  # test_every_rom_module_has_a_layer names it
            elif RANKS[unit(t)] > RANKS[unit(src)]:
                upward.append(f"{src} (layer {unit(src)}) -> {t} (layer {unit(t)}, above)")
    assert upward == []


def test_eval_never_imports_train():
    bad = sorted(f"{s} -> {t}" for s, ts in GRAPH.items() if s.startswith("rom.eval")
                 for t in ts if t.startswith(("rom.train", "rom.commands", "rom.cli")))
    assert bad == []


def test_analysis_imports_only_records_io_errors_from_rom():
    bad = sorted(f"{s} -> {t}" for s, ts in GRAPH.items() if s.split(".")[0] == "analysis"
                 for t in ts if t.split(".")[0] == "rom" and t not in ANALYSIS_MAY_IMPORT | {"rom"})
    assert bad == []


def test_what_the_analysis_imports_from_rom_is_plain_python():
    for m in TORCH_FREE:
        assert GRAPH[m] <= set(TORCH_FREE) | {"rom"}, f"{m} imports {GRAPH[m]}"
    code = f"import sys; import {', '.join(TORCH_FREE)}; print(sorted(k for k in ('torch', 'numpy') if k in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_the_checks_fail_on_bad_graphs():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert unit("rom.eval.parts") == "rom.eval" and unit("rom.flops_report") == "rom.flops_report"
    assert unit("rom_other.x") is None and unit("rom.new_module") is None and unit("rom") == "rom"
    assert package_graph({"rom.eval.a": {"rom.train.b"}, "rom.train.b": {"rom.eval.c"}, "rom.eval.c": set()}) == {
        "rom.eval": {"rom.train"}, "rom.train": {"rom.eval"}}

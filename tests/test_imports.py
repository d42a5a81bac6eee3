"""The import structure: no import cycles inside kopretrain (lazy imports in functions count), and
the config schemas import no engine code (validating a config must not import torch)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kopretrain"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the kopretrain modules it imports anywhere in its body (top level or in a function)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_imports():
    graph = import_graph()
    assert "kopretrain.run_dir" in graph["kopretrain.sweep"]  # top level
    assert "kopretrain.tracking" in graph["kopretrain.cli"]  # inside a function
    assert "kopretrain.data.streams" in graph["kopretrain.data.formats"]
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]  # the checker finds a cycle


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_config_schemas_import_no_engine_code():
    graph = import_graph()
    allowed = {"kopretrain", "kopretrain.errors", "kopretrain.registry", "kopretrain.paths"}
    allowed |= {m for m in graph if m.startswith("kopretrain.plan.") and m != "kopretrain.plan.command"}  # pure tables
    for name, imports in graph.items():
        if name.startswith("kopretrain.config"):
            assert {m for m in imports if not m.startswith("kopretrain.config")} <= allowed, name
    assert graph["kopretrain.registry"] == set()


def test_importing_the_train_schema_imports_neither_torch_nor_the_trainer():
    code = ("import sys, kopretrain.config, kopretrain.config.train, kopretrain.config.demo, kopretrain.registry; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'deepspeed', 'transformers', 'ray', "
            "'mlflow') or m.startswith('kopretrain.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

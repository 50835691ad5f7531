"""The package's flow is one way (data -> features -> models -> objectives -> train -> eval -> study): every module
imports on its own, no module imports one that imports it back (lazy imports inside functions included), and no
layer reaches into a later one."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "audiolp"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """audiolp modules imported anywhere in the file (top level and inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
            # `from pkg import submodule` needs the submodule, not what pkg/__init__ re-exports
            names = subs if len(subs) == len(node.names) else [node.module] + subs
        else:
            continue
        out.update(n for n in names if n in MODULES)
    # A module's parent packages are imported before it anyway (and the root is everyone's parent).
    me = _module_name(path)
    return {n for n in out if not (me == n or me.startswith(n + "."))}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}

# layer -> layers it must never import (directly or lazily)
FORBIDDEN = {
    "audiolp.features": ("audiolp.data", "audiolp.models", "audiolp.objectives", "audiolp.train", "audiolp.eval",
                         "audiolp.study"),
    "audiolp.data": ("audiolp.models", "audiolp.objectives", "audiolp.train", "audiolp.eval", "audiolp.study"),
    "audiolp.models": ("audiolp.data", "audiolp.objectives", "audiolp.train", "audiolp.eval", "audiolp.study"),
    "audiolp.objectives": ("audiolp.train", "audiolp.eval", "audiolp.study"),
    "audiolp.train": ("audiolp.eval", "audiolp.study"),
    "audiolp.eval": ("audiolp.study",),
}


def _layer_of(module: str, layers) -> str | None:
    return next((layer for layer in layers if module == layer or module.startswith(layer + ".")), None)


def test_no_import_cycles():
    # Depth-first search; a back edge is a cycle, reported as the path that closes it.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    assert len(GRAPH) > 40  # the walk saw the whole package


def test_no_layer_imports_a_later_one():
    bad = []
    for m, targets in GRAPH.items():
        layer = _layer_of(m, FORBIDDEN)
        for t in targets:
            if layer and _layer_of(t, FORBIDDEN[layer]):
                bad.append(f"{m} imports {t}")
    assert not bad, "; ".join(sorted(bad))


def test_cycle_detection_would_see_a_cycle():
    # The walk must see imports inside functions too: the trainer imports the loader lazily.
    assert "audiolp.data.loader" in GRAPH["audiolp.train.trainer"]
    assert "audiolp.models.io" in GRAPH["audiolp.train.checkpoint"]


def test_checkpoint_module_imports_first_in_a_fresh_interpreter():
    # It used to import the trainer, which imported it back.
    r = subprocess.run([sys.executable, "-c", "import audiolp.train.checkpoint, audiolp.models.io"],
                       capture_output=True, text=True, cwd=PKG.parent)
    assert r.returncode == 0, r.stderr[-2000:]


def test_every_module_imports():
    for module in sorted(MODULES):
        importlib.import_module(module)

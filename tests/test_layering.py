"""The package's imports run one way: foundation -> saliency -> cache -> surrogate -> augment -> ssl -> eval -> app.

Every import in the package (at module level or inside a function) is read from the source; a unit
may import only from units before it, and no modules import each other in a circle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from _paths import REPO

PACKAGE = REPO / "saliencyssl"
FOUNDATION = {"target", "metrics", "imageio", "hashing", "precision", "visualize", "datasets", "embedded", "torchfiles",
              "files", "text"}
ORDER = ["foundation", "saliency", "cache", "surrogate", "augment", "ssl", "eval", "app"]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("saliencyssl"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("saliencyssl"))
    return {m for m in found if m in modules}


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__main__",):
        return None  # the package itself and python -m saliencyssl
    return "foundation" if parts[1] in FOUNDATION else parts[1]


def test_every_module_belongs_to_a_unit():
    units = {_unit(m) for m in _modules()} - {None}
    assert units <= set(ORDER), f"modules outside the layers: {sorted(units - set(ORDER))}"


def test_units_import_only_from_earlier_units():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        here = _unit(name)
        for target in _imports(path, modules):
            there = _unit(target)
            if here and there and ORDER.index(there) > ORDER.index(here):
                upward.append(f"{name} -> {target}")
    assert not upward, "imports against the data flow:\n" + "\n".join(sorted(upward))


def _reexports(modules: dict[str, Path]) -> dict[tuple[str, str], str]:
    """``(package, name) -> module`` for every name a package's ``__init__`` imports from one of its modules."""
    out = {}
    for package, path in modules.items():
        if path.name != "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module in modules and node.module.startswith(package + "."):
                out.update({(package, a.asname or a.name): node.module for a in node.names})
    return out


def _resolved_imports(path: Path, modules: dict[str, Path], reexports: dict) -> set[str]:
    """:func:`_imports`, with a name taken from a package's ``__init__`` followed to the module defining it."""
    found = set(_imports(path, modules))
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module in modules:
            found.update(reexports[(node.module, a.name)] for a in node.names if (node.module, a.name) in reexports)
    return found


def test_no_import_cycles():
    """No module imports another that imports it back, also through a name re-exported by a package's
    ``__init__`` (followed to the module that defines it)."""
    modules = _modules()
    reexports = _reexports(modules)
    graph = defaultdict(set)
    for name, path in modules.items():
        # a package's __init__ importing its own modules is how it exports them, not a cycle
        graph[name] = {t for t in _resolved_imports(path, modules, reexports)
                       if not name == t.rsplit(".", 1)[0] or t == name}
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if nxt == node or modules[nxt].name == "__init__.py":
                continue
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.slow
def test_augment_loads_no_ssl_method_and_knn_loads_a_handful():
    code = ("import sys, importlib; importlib.import_module(sys.argv[1]); "
            "print(sorted(m for m in sys.modules if m.startswith('saliencyssl')))")
    for module, most in (("saliencyssl.augment", 20), ("saliencyssl.eval.knn", 5)):
        loaded = eval(subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True,
                                     check=True, cwd=REPO).stdout)
        assert not [m for m in loaded if m.startswith("saliencyssl.ssl")], f"{module} loads {loaded}"
        assert len(loaded) <= most, f"{module} loads {len(loaded)} package modules: {loaded}"

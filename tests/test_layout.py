"""The house's shape, checked: import arrows run one way, no import loops, short functions.

Arrows (STYLE.md): pipelines -> classifiers -> core, trainer -> core. Read from the source
with ``ast`` (imports inside functions count too), so a lazy import cannot hide an arrow.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# installed name -> folder (pyproject maps the design card's folders under one name)
LAYERS = {"skypile.pipelines": REPO / "pipelines", "skypile.classifiers": REPO / "classifiers",
          "skypile.trainer": REPO / "trainer", "skypile": REPO / "skypile"}
ALLOWED = {  # layer -> the other layers it may import
    "core": set(),
    "classifiers": {"core"},
    "pipelines": {"core", "classifiers"},
    "trainer": {"core"},
}
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for name, folder in LAYERS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([name, *parts])] = path
    return out


MODULES = _modules()


def layer_of(module: str) -> str:
    for name in ("pipelines", "classifiers", "trainer"):
        if module == f"skypile.{name}" or module.startswith(f"skypile.{name}."):
            return name
    return "core"


def _imports(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports, resolved to names in MODULES where they are ours."""
    found = set()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in MODULES else base)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def test_import_arrows_run_one_way():
    wrong = []
    for module, imported in GRAPH.items():
        here = layer_of(module)
        for dep in imported:
            top = dep.split(".")[0]
            if here == "core" and top in ("apache_beam", "torch"):
                wrong.append(f"{module} imports {dep}")
            if not dep.startswith("skypile"):
                continue
            there = layer_of(dep)
            if there != here and there not in ALLOWED[here]:
                wrong.append(f"{module} ({here}) imports {dep} ({there})")
    assert not wrong, "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next((c for c in children if c in graph), None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def test_no_import_loops():
    # a package's __init__ is imported by its submodules' import path, not by their code:
    # only explicit imports count
    graph = {m: {d for d in deps if d in GRAPH and d != m} for m, deps in GRAPH.items()}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_loop():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_imports_neither_beam_nor_torch_when_loaded():
    core = sorted(m for m in MODULES if layer_of(m) == "core" and not m.endswith("__main__"))
    code = ("import importlib, sys\n"
            f"for m in {core!r}:\n    importlib.import_module(m)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('apache_beam', 'torch')"
            " or m.startswith(('skypile.pipelines', 'skypile.classifiers', 'skypile.trainer')))\n"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == ""


def test_no_function_is_over_80_lines():
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, "\n".join(long)

"""The packages are layers: every import (module-level or inside a function) runs down, never up or in a circle.

From the top: the CLI (``harness.cli``), the experiment layer (``harness``), the components (``trainers`` and ``suites``
over ``judges`` over ``simulators``), and the ground (``core``), which imports nothing of ours.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "simulators", "judges", "trainers", "suites", "harness")
# a module may import from its own layer's package and from any lower layer
RANK = {"core": 0, "simulators": 1, "judges": 2, "trainers": 3, "suites": 3, "harness": 4, "harness.cli": 5}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def layer(module: str) -> str:
    top = module in ("harness.cli", "harness.__main__") or module.startswith("harness.cli.")
    return "harness.cli" if top else module.split(".")[0]


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Our modules that ``name`` imports anywhere in its body (resolved to the deepest known module)."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            # a submodule importing its own package (``from trainers import losses``) runs no new code: not an edge
            if target and target != name and not name.startswith(target + "."):
                out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles() -> None:
    assert cycles(graph()) == []


def test_imports_run_down_the_layers() -> None:
    upward = []
    for source, targets in graph().items():
        for target in targets:
            a, b = layer(source), layer(target)
            if a != b and (RANK[b] > RANK[a] or RANK[b] == RANK[a]):
                upward.append(f"{source} -> {target}")
    assert upward == []


def test_the_checker_sees_a_circle_and_a_lazy_upward_import(tmp_path: Path) -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]
    probe = tmp_path / "probe.py"
    probe.write_text("import harness.loop\nfrom core import policy\n\ndef f():\n    from judges import build_judge\n", encoding="utf-8")
    found = imports("core.probe", probe, {**modules(), "core.probe": probe})
    assert found == {"harness.loop", "core.policy", "judges"}

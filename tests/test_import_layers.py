"""The import graph of otae is a DAG whose arrows point down the layers below.

Read from the source with :mod:`ast` (nothing is imported): every ``import`` and
``from ... import`` of an otae module, at module level or inside a function (a lazy
import for start-up time is fine, an upward one is not), except those under
``if TYPE_CHECKING:`` (annotations only, never executed).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

#: Bottom first. A module may import from its own layer's other entries only if the
#: module graph stays acyclic (checked separately), and from any lower layer.
LAYERS: list[list[str]] = [
    # foundations: no otae imports above them
    ["otae", "otae._version", "otae._io", "otae._optional", "otae.checks", "otae.constants", "otae.typed_config",
     "otae.noise", "otae.profiling", "otae.parallel", "otae.data"],  # fmt: skip
    ["otae.sphere", "otae.slicers"],
    ["otae.discrepancies"],
    ["otae.losses"],
    ["otae.priors", "otae.nn"],
    ["otae.models"],
    # measurement: functions of models, codes and data; the trainer uses them
    ["otae.evaluation"],
    ["otae.training"],
    ["otae.cotraining", "otae.experiment", "otae.export"],
    ["otae.bench", "otae.tune"],
    ["otae.cli", "otae.__main__"],
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / "otae").rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return skipped


def _imports(name: str, path: Path, modules: dict[str, Path]):
    """(target module, imported names, line) of every otae import of ``name``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "otae":
                    yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "otae":
                continue
            names = [a.name for a in node.names]
            # ``from . import x`` where x is a module: an import of that module
            submodules = [n for n in names if f"{target}.{n}" in modules]
            for sub in submodules:
                yield f"{target}.{sub}", [], node.lineno
            rest = [n for n in names if n not in submodules]
            if rest or not submodules:
                yield target, rest, node.lineno


def _graph():
    modules = _modules()
    return modules, {
        name: list(_imports(name, path, modules)) for name, path in modules.items()
    }


def _layer(module: str) -> int:
    best = None
    for rank, entries in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and (
                best is None or len(entry) > len(best[1])
            ):
                best = (rank, entry)
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


def test_every_module_has_a_layer():
    for name in _modules():
        _layer(name)


def test_imports_point_down_the_layers():
    _, graph = _graph()
    upward = [
        f"{name}:{line} imports {target} (layer {_layer(target)} > {_layer(name)})"
        for name, imports in graph.items()
        for target, _names, line in imports
        if _layer(target) > _layer(name)
    ]
    assert not upward, "\n".join(upward)


def test_the_module_graph_has_no_cycle():
    modules, graph = _graph()
    edges = {
        name: sorted({t for t, _n, _l in imports if t in modules and t != name})
        for name, imports in graph.items()
    }
    # A package's __init__ re-exports its submodules; a submodule importing its own
    # package face would close a loop through it, so such arrows count too.
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in edges:
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(cycles)


def test_no_private_name_is_imported_from_another_module():
    """``from .x import _name`` across modules couples them through a name that is free to
    change; a private MODULE of the same package (``from ._pairwise import f``) is fine."""
    _, graph = _graph()
    private = [
        f"{name}:{line} imports {', '.join(n for n in names if n.startswith('_'))} from {target}"
        for name, imports in graph.items()
        for target, names, line in imports
        if any(n.startswith("_") and not n.startswith("__") for n in names)
    ]
    assert not private, "\n".join(private)


@pytest.mark.parametrize(
    "source, expected",
    [
        ("from ..discrepancies import sinkhorn\n", "otae.discrepancies.sinkhorn"),
        ("from ..training import Trainer\n", "otae.training"),
        ("def f():\n    from ..cli import main\n", "otae.cli"),
    ],
)
def test_the_reader_sees_relative_and_lazy_imports(tmp_path, monkeypatch, source, expected):
    # the checks above can fail: a fake module's imports are found as the real ones are
    fake = tmp_path / "otae" / "models" / "fake.py"
    fake.parent.mkdir(parents=True)
    fake.write_text(source)
    modules = _modules()
    targets = [t for t, _n, _l in _imports("otae.models.fake", fake, modules)]
    assert targets == [expected]
    assert _layer(expected) != _layer("otae.models") or expected.startswith("otae.models")


def test_type_checking_imports_are_left_out(tmp_path):
    fake = tmp_path / "x.py"
    fake.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..cli import main\n")
    assert list(_imports("otae.models.fake", fake, _modules())) == []

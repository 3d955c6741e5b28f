"""The package's shape (docs/development.md): layers import only downward, no import cycles, functions stay short.

Read from the source with ``ast``, not by importing, so a lazy or function-level
import counts as much as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: Lowest first. A module may import from its own layer and the layers below it, never above.
#: Peers in one layer that must not import each other are listed as separate groups of that layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "seedark._version",
            "seedark.config",
            "seedark.errors",
            "seedark._files",
            "seedark._parallel",
            "seedark.progress",
        ),
    ),
    # io and models both stand on the base alone; neither imports the other.
    ("io | models", ("seedark.io", "seedark.models")),
    ("frames", ("seedark.frames", "seedark.synthesis")),
    ("runtime", ("seedark.runtime",)),
    ("jobs", ("seedark.pipeline", "seedark.training")),
    ("cli", ("seedark.cli", "seedark.__main__")),
]
#: Same layer, but independent of each other: enhancing never needs training code, and training
#: (evaluation included) runs the network through the runtime, not through the pipeline.
SEPARATE = {
    ("seedark.pipeline", "seedark.training"),
    ("seedark.training", "seedark.pipeline"),
    ("seedark.io", "seedark.models"),
    ("seedark.models", "seedark.io"),
}
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / "seedark").rglob("*.py"))}


def _group(module: str) -> tuple[int, str]:
    """(layer rank, the group prefix) of a module."""
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                return rank, prefix
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to docs/development.md)")


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every seedark import in the file, wherever it stands."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "seedark"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] != "seedark":
                continue
            # `from seedark.models import network` names a module: judge the module itself.
            found += [(node.lineno, f"{target}.{a.name}") for a in node.names]
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str:
    while name not in modules and "." in name:
        name = name.rpartition(".")[0]
    return name


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        if module != "seedark":
            _group(module)


def test_layers_import_only_downward() -> None:
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        if module == "seedark":
            continue  # the lazy root re-exports from every layer (by name, via importlib)
        rank, group = _group(module)
        for line, name in _imports(path, module):
            target = _resolve(name, modules)
            if target == "seedark":
                wrong.append(f"{path.relative_to(SRC)}:{line} imports the package root ({name}); import the module")
                continue
            target_rank, target_group = _group(target)
            if target_rank > rank:
                wrong.append(
                    f"{path.relative_to(SRC)}:{line} ({LAYERS[rank][0]}) imports {target} ({LAYERS[target_rank][0]})"
                )
            elif (group, target_group) in SEPARATE:
                wrong.append(f"{path.relative_to(SRC)}:{line}: {group} must not import {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle (``[a, b, a]``), or [] when there is none."""
    state: dict[str, int] = {}  # 1: on the path being followed, 2: every import of it followed

    def visit(module: str, path: list[str]) -> list[str]:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[module] = 2
        return []

    for module in sorted(graph):
        if module not in state and (found := visit(module, [module])):
            return found
    return []


def test_no_module_imports_one_that_imports_it() -> None:
    # Within a layer too: a cycle (batch <-> cluster_batch, say) ties two modules into one.
    modules = _modules()
    graph = {m: {_resolve(n, modules) for _, n in _imports(p, m)} - {m} for m, p in modules.items()}
    assert _cycle(graph) == []
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check itself


def test_the_checker_sees_wrong_imports(tmp_path: Path) -> None:
    # The rule itself, on made-up lines: a check that cannot fail would prove nothing.
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from seedark.cli import main\n    from ..pipeline import batch\n")
    found = _imports(bad, "seedark.runtime.engine")
    assert found == [(2, "seedark.cli.main"), (3, "seedark.pipeline.batch")]
    assert _group("seedark.cli") > _group("seedark.runtime.engine")


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}: {length} lines")
    return out


@pytest.mark.parametrize("module", sorted(_modules()))
def test_functions_are_short(module: str) -> None:
    assert not _long_functions(_modules()[module]), f"split into named steps (max {MAX_FUNCTION_LINES} lines)"

"""The package's shape (docs/development.md): layers import only downward, no module imports
itself round a cycle, no module only re-exports another's names, the top level holds the base
modules alone, and functions stay short.

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
            "seedark._native",
            "seedark.progress",
        ),
    ),
    # io, downloads and models stand on the base alone; models may use downloads, nothing else
    # in this layer imports another of its groups.
    ("io | downloads | models", ("seedark.io", "seedark.downloads", "seedark.models")),
    ("frames", ("seedark.frames", "seedark.synthesis")),
    ("runtime", ("seedark.runtime",)),
    ("jobs", ("seedark.pipeline", "seedark.training")),
    ("cli", ("seedark.cli", "seedark.__main__")),
]
#: Same layer, but independent of each other: enhancing never needs training code, and training
#: (evaluation included) runs the network through the runtime, not through the pipeline. Downloads
#: know nothing of models (any file from any URL); models fetch their official files through them.
SEPARATE = {
    ("seedark.pipeline", "seedark.training"),
    ("seedark.training", "seedark.pipeline"),
    ("seedark.io", "seedark.models"),
    ("seedark.models", "seedark.io"),
    ("seedark.io", "seedark.downloads"),
    ("seedark.downloads", "seedark.io"),
    ("seedark.downloads", "seedark.models"),
}
MAX_FUNCTION_LINES = 80
#: The modules directly in src/seedark: the package root, the entry point and the base layer.
#: Everything else lives in a subpackage that says what it owns.
TOP_LEVEL = {"__init__", "__main__", "_version", "config", "errors", "_files", "_parallel", "_native", "progress"}


def _module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(src: Path = SRC) -> dict[str, Path]:
    return {_module_name(p, src): p for p in sorted((src / "seedark").rglob("*.py"))}


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


def test_the_checker_sees_wrong_imports(tmp_path: Path) -> None:
    # The rule itself, on made-up lines: a check that cannot fail would prove nothing.
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from seedark.cli import main\n    from ..pipeline import batch\n")
    found = _imports(bad, "seedark.runtime.engine")
    assert found == [(2, "seedark.cli.main"), (3, "seedark.pipeline.batch")]
    assert _group("seedark.cli") > _group("seedark.runtime.engine")


# --------------------------------------------------------------------------- planted faults

#: A made-up package with each fault the checks below look for, and near misses that are none.
PLANTED = {
    "__init__.py": "",
    "config.py": "",
    # cycles: a imports b at the top, b imports a inside a function (still a cycle), c imports a
    # (no cycle); `from seedark.d import e` names the submodule d.e, so d.e and f import each other
    "a.py": "from seedark import b\n\nB = b\n",
    "b.py": "def f():\n    from seedark.a import thing\n",
    "c.py": "import seedark.a\n\nA = seedark.a\n",
    "d/__init__.py": "",
    "d/e.py": "from seedark.f import g\n\nG = g\n",
    "f.py": "from seedark.d import e\n\nE = e\n",
    # re-exports: facade and pkg only re-export; the others define, do or export something, or nothing
    "facade.py": '"""Doc."""\nfrom __future__ import annotations\nfrom seedark.a import f\n__all__ = ["f"]\n',
    "pkg/__init__.py": "from .x import y, z\n__all__: list[str] = []\n__all__ += ['y']\n",
    "doc_only/__init__.py": '"""A package with nothing to export."""\n',
    "defines.py": '"""Doc."""\nfrom seedark.a import f\n\ndef g():\n    return f\n',
    "aliases.py": "from seedark.a import f\ng = f\n",
    "lazy/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from seedark.a import f\n",
}


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """PLANTED written as src/seedark under tmp_path; returns that src."""
    for name, text in PLANTED.items():
        (tmp_path / "seedark" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "seedark" / name).write_text(text)
    return tmp_path


# --------------------------------------------------------------------------- no import cycles


def _import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported module: line of the first such import}, for every seedark import."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for line, name in _imports(path, module):
            target = _resolve(name, modules)
            if target != module:
                edges.setdefault(target, line)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The groups of modules that import each other round a cycle (strongly connected), each sorted."""
    order: dict[str, int] = {}  # Tarjan's algorithm: depth-first order, and the lowest order reachable
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in graph.get(module, {}):
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            group = stack[stack.index(module) :]
            del stack[stack.index(module) :]
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return sorted(found)


def _describe_cycle(group: list[str], graph: dict[str, dict[str, int]], modules: dict[str, Path]) -> str:
    edges = [
        f"  {modules[a].relative_to(SRC)}:{line} imports {b}"
        for a in group
        for b, line in graph[a].items()
        if b in group
    ]
    return " <-> ".join(group) + "\n" + "\n".join(sorted(edges))


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = _import_graph(modules)
    cycles = [_describe_cycle(group, graph, modules) for group in _cycles(graph)]
    assert not cycles, "modules that import each other (move what both need below them):\n" + "\n".join(cycles)


def test_the_checker_sees_a_cycle(planted: Path) -> None:
    graph = _import_graph(_modules(planted))
    assert graph["seedark.c"] == {"seedark.a": 1} and graph["seedark.f"] == {"seedark.d.e": 1}
    assert _cycles(graph) == [["seedark.a", "seedark.b"], ["seedark.d.e", "seedark.f"]]


# --------------------------------------------------------------------------- no re-export modules


def _only_reexports(path: Path) -> bool:
    """Whether the module imports names and does nothing else: no definition, no statement of its own.

    Its docstring, ``from __future__`` and ``__all__`` count as nothing; a module with nothing
    but a docstring re-exports nothing.
    """
    body = ast.parse(path.read_text(), str(path)).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    body = [node for node in body if not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
    imports = [node for node in body if isinstance(node, (ast.Import, ast.ImportFrom))]
    rest = [node for node in body if node not in imports and not _sets_all(node)]
    return bool(imports) and not rest


def _sets_all(node: ast.stmt) -> bool:
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    else:
        return False
    return any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)


def test_no_module_only_reexports() -> None:
    # the package root is the one facade: lazy, so that `import seedark` loads nothing heavy
    shims = [
        str(path.relative_to(SRC))
        for module, path in _modules().items()
        if module != "seedark" and _only_reexports(path)
    ]
    assert not shims, "modules that only re-export (import from the module that defines the name):\n" + "\n".join(shims)


def test_the_checker_sees_a_reexport(planted: Path) -> None:
    found = [module for module, path in _modules(planted).items() if _only_reexports(path)]
    assert found == ["seedark.facade", "seedark.pkg"]


# --------------------------------------------------------------------------- the top level


def _stray_top_level(src: Path = SRC) -> list[str]:
    """The modules directly in src/seedark that are not in TOP_LEVEL (subpackages are fine)."""
    return sorted(p.name for p in (src / "seedark").glob("*.py") if p.stem not in TOP_LEVEL)


def test_top_level_holds_only_the_base_modules() -> None:
    stray = _stray_top_level()
    assert not stray, f"move into the subpackage that owns them (and docs/development.md): {stray}"


def test_the_checker_sees_a_stray_top_level_module(planted: Path) -> None:
    assert _stray_top_level(planted) == ["a.py", "aliases.py", "b.py", "c.py", "defines.py", "f.py", "facade.py"]


# --------------------------------------------------------------------------- short functions


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


def test_every_public_name_resolves() -> None:
    # The root's names are looked up lazily, by module name: a moved module would only show
    # when a user first touches the name, so each one is touched here.
    import seedark

    missing = [name for name in seedark.__all__ if getattr(seedark, name, None) is None]
    assert not missing, f"seedark.__all__ names that do not resolve: {missing}"

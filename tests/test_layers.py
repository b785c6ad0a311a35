"""The package's layers, checked from its source: each module imports only modules of its
own layer or of layers below it, and module imports (including ones inside functions) form
no cycle. See docs/architecture.md."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "nzsp_fem"
# Bottom to top. A module's layer is its sub-package, or its own name at the top level.
LAYERS = [
    "exit_codes",
    "config",
    "mesh",
    "physics",
    "problem",
    "solver",
    "io",
    "run",
    "study",
    "cli",
    "__main__",
    "__init__",
]
MAX_LINES = 600

pytestmark = pytest.mark.serial


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    return LAYERS.index(key)


def package_imports(path: Path) -> set[str]:
    """nzsp_fem modules that ``path`` imports, resolved to module names."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("nzsp_fem"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("nzsp_fem"):
                continue
            found.add(target)
            # "from . import forms" names a module, not an attribute.
            for alias in node.names:
                if (PACKAGE.parent / (target.replace(".", "/") + "/" + alias.name + ".py")).exists():
                    found.add(f"{target}.{alias.name}")
    found.discard(here)
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(p): package_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    for module in graph():
        layer_of(module)  # raises ValueError for a module outside LAYERS


def test_no_import_from_a_layer_above():
    offenders = [
        f"{m} (layer {LAYERS[layer_of(m)]}) imports {t} (layer {LAYERS[layer_of(t)]})"
        for m, targets in graph().items()
        for t in targets
        if layer_of(t) > layer_of(m)
    ]
    assert not offenders, "\n".join(offenders)


def test_no_import_cycle():
    g = graph()
    # A package imports its __init__'s targets; a submodule importing its own package's
    # __init__ would be a cycle through it, which the search below catches too.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(g.get(m, ())):
            if t not in g:
                continue
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in g:
        if m not in state:
            visit(m)


def test_checker_sees_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The checks above must be able to fail: a planted upward import is found."""
    planted = {"nzsp_fem.physics.forms": {"nzsp_fem.run"}}
    offenders = [m for m, ts in planted.items() for t in ts if layer_of(t) > layer_of(m)]
    assert offenders == ["nzsp_fem.physics.forms"]
    src = tmp_path / "nzsp_fem" / "physics"
    src.mkdir(parents=True)
    (src / "x.py").write_text("from ..run import run_single\nfrom . import y\n")
    (src / "y.py").write_text("")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path / "nzsp_fem")
    assert package_imports(src / "x.py") == {"nzsp_fem.run", "nzsp_fem.physics", "nzsp_fem.physics.y"}


def test_no_module_over_the_line_limit():
    long = {module_name(p): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long

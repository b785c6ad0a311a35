"""docs/architecture.md against the code: every file it cites exists, every module
attribute (``solver/presets.field_splits``), class (``StepController``) and class member
(``Simulation.step``, in the text and in the step diagram) it names is defined, and the
field-table example uses Field's own keywords. Catches the page drifting from the code
(a renamed function, a moved helper, a removed keyword)."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from functools import cache
from pathlib import Path

import pytest

pytestmark = pytest.mark.serial

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "nzsp_fem"
TEXT = (REPO / "docs" / "architecture.md").read_text()
# Inline code spans (the fenced blocks are read separately).
PROSE = re.sub(r"```.*?```", "", TEXT, flags=re.S)
SPANS = re.findall(r"`([^`\n]+)`", PROSE)
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", TEXT, flags=re.S)
IDENT = r"[A-Za-z_]\w*"


@cache
def modules() -> list[object]:
    """Every module of the package, imported (io/ is a namespace package: found by file)."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__main__":  # importing it runs the CLI
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return [importlib.import_module(name) for name in names]


def module_at(path: str):
    """The module of a cited path (``solver/presets``: the package's; ``benchmarks/...``)."""
    dotted = path.replace("/", ".")
    try:
        return importlib.import_module(dotted if dotted.startswith("benchmarks.") else "nzsp_fem." + dotted)
    except ImportError:
        return None


@cache
def classes() -> dict[str, type]:
    """Classes defined in the package, by name."""
    out = {}
    for module in modules():
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and obj.__module__.startswith("nzsp_fem"):
                out.setdefault(name, obj)
    return out


def test_cited_files_exist():
    paths = {s for s in SPANS if re.fullmatch(r"[\w/.-]+\.py", s)}
    assert paths, "the page cites no file: the pattern is wrong"
    missing = []
    for path in sorted(paths):
        candidates = [PACKAGE / path, REPO / path] if "/" in path else list(PACKAGE.rglob(path))
        if not any(p.exists() for p in candidates):
            missing.append(path)
    assert not missing, f"docs/architecture.md cites files that do not exist: {missing}"


def test_cited_module_attributes_exist():
    """``layer/module.name[.member]``: the module's attribute (and its member)."""
    refs = {
        s for s in SPANS if re.fullmatch(rf"(?:{IDENT}/)+{IDENT}\.{IDENT}(?:\.{IDENT})?", s) and not s.endswith(".py")
    }
    assert len(refs) >= 5, refs
    missing = []
    for ref in sorted(refs):
        path, attrs = ref.split(".", 1)
        obj = module_at(path)
        for attr in attrs.split("."):
            obj = getattr(obj, attr, None)
        if obj is None:
            missing.append(ref)
    assert not missing, f"docs/architecture.md names attributes that do not exist: {missing}"


def test_cited_classes_and_members_exist():
    """``ClassName`` and ``ClassName.member`` in the text and in the step diagram."""
    diagram = "\n".join(body for lang, body in BLOCKS if not lang)
    names = set(re.findall(rf"\b([A-Z][a-z]\w*)\.({IDENT})", diagram))
    names |= {tuple((s.split(".") + [""])[:2]) for s in SPANS if re.fullmatch(rf"[A-Z]\w*(?:\.{IDENT})?", s)}
    assert ("Simulation", "step") in names, "the step diagram no longer names Simulation.step"
    known = classes()
    missing = []
    for cls, member in sorted(names):
        if cls not in known:
            missing.append(cls)
            continue
        # dataclass fields without defaults are annotations only: not class attributes
        fields = {f.name for f in dataclasses.fields(known[cls])} if dataclasses.is_dataclass(known[cls]) else set()
        if member and not hasattr(known[cls], member) and member not in fields:
            missing.append(f"{cls}.{member}")
    assert not missing, f"docs/architecture.md names classes or members that do not exist: {missing}"


def test_field_example_uses_fields_keywords():
    from nzsp_fem.problem import Field

    (example,) = [body for lang, body in BLOCKS if lang == "python" and body.lstrip().startswith("Field(")]
    call = ast.parse(example).body[0].value
    keywords = {k.arg for k in call.keywords}
    known = {f.name for f in dataclasses.fields(Field)}
    assert keywords <= known, f"Field has no {sorted(keywords - known)}"
    # Given positionally or by keyword, every field without a default is in the example.
    required = [f.name for f in dataclasses.fields(Field) if f.default is dataclasses.MISSING]
    assert set(required[: len(call.args)]) | keywords >= set(required)


def config_takers(source: str) -> list[str]:
    """Functions in ``source`` with a parameter named ``cfg`` or annotated with Config,
    except ``from_config`` constructors and the methods of ``Scaling``."""
    found = []

    def visit(node, owner: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                visit(child, child.name)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = child.args.posonlyargs + child.args.args + child.args.kwonlyargs
                takes = any(
                    a.arg == "cfg" or (a.annotation is not None and "Config" in ast.unparse(a.annotation)) for a in args
                )
                if takes and child.name != "from_config" and owner != "Scaling":
                    found.append(f"{owner + '.' if owner else ''}{child.name}")
                visit(child, owner)

    visit(ast.parse(source), None)
    return found


def test_physics_functions_take_parameters_not_the_config():
    """The physics layer's functions take the values they need; ``Scaling`` (and a
    ``from_config`` constructor) is where the Config is read, as the page says. Catches a
    helper written as ``def f(cfg: Config)`` in physics/ (the detector itself is checked
    on such a helper, so the test cannot pass by finding nothing)."""
    assert config_takers("def width(cfg: Config) -> float: ...\nclass A:\n    def f(self, cfg): ...") == [
        "width",
        "A.f",
    ]
    offenders = {
        path.name: found
        for path in sorted((PACKAGE / "physics").glob("*.py"))
        if (found := config_takers(path.read_text()))
    }
    assert not offenders, f"physics functions that take the Config: {offenders}"

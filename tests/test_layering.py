"""The core imports no phenomenon, and phenomena do not import one another (an AST walk of imports)."""
import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[1] / "lib" / "scidl"
CORE = sorted(p for p in LIB.glob("*.py") if p.name != "__init__.py")  # scidl/__init__ registers them
CORE += sorted((LIB / "yardsticks").glob("*.py"))  # the yardsticks are core: a phenomenon plugs in, never the reverse
PHENOMENA = sorted(p for p in (LIB / "phenomena").iterdir() if p.is_dir() and (p / "__init__.py").exists())


def imported_modules(source: str) -> set[str]:
    """Return every module an import statement of `source` names (`from a.b import c` gives a.b and
    a.b.c), and every string literal passed to __import__ or importlib.import_module."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "__import__", "import_module"):
            names |= {a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)}
    return names


def violations(path: Path, forbidden: str) -> list[str]:
    return sorted(m for m in imported_modules(path.read_text()) if m == forbidden or m.startswith(forbidden + "."))


def test_the_walk_finds_every_kind_of_import():
    planted = ("import scidl.phenomena.grokking\nfrom scidl.phenomena import addition\n"
               "def f():\n    from scidl.phenomena.grokking.task import ModularTask\n"
               "    __import__('scidl.phenomena.x')\n    importlib.import_module('scidl.phenomena.y')\n")
    found = {m for m in imported_modules(planted) if m.startswith("scidl.phenomena")}
    assert found >= {"scidl.phenomena.grokking", "scidl.phenomena.addition", "scidl.phenomena.grokking.task",
                     "scidl.phenomena.x", "scidl.phenomena.y"}
    assert not {m for m in imported_modules("import scidl.registry\nfrom scidl import plots\n")
                if m.startswith("scidl.phenomena")}


def test_there_is_a_core_and_there_are_phenomena():
    names = {p.stem for p in CORE}
    assert {"config", "store", "train", "sweep", "ensemble", "hypotheses", "interventions", "plots",
            "explorer", "registry"} <= names
    assert {p.name for p in PHENOMENA} >= {"grokking", "addition"}


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_the_core_imports_no_phenomenon(path):
    assert violations(path, "scidl.phenomena") == []


@pytest.mark.parametrize("folder", PHENOMENA, ids=lambda p: p.name)
def test_a_phenomenon_imports_no_other_phenomenon(folder):
    others = [p.name for p in PHENOMENA if p != folder]
    for path in folder.rglob("*.py"):
        for other in others:
            assert violations(path, f"scidl.phenomena.{other}") == [], path

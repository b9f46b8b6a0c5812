"""The house keeps its rooms: no module over 450 lines, no function over 80, no import circle
between the package's modules, and torch imported by the network backends (CNN, people) only
(and where a tensor is handed in)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "posemachines").rglob("*.py")) + sorted((ROOT / "cli").rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "cli":
        parts = ["posemachines", *parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SOURCES}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text()
    assert len(text.splitlines()) <= 450, f"{path.name}: split it by concern"
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 80, f"{path.name}:{node.lineno} {node.name} is {length} lines"


def imports_of(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` imports, anywhere in it (lazy imports too)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            candidates = [base] + [f"{base}.{a.name}" for a in node.names]
            found |= {c for c in candidates if c in MODULES}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
    return found - {name}


def test_no_import_circles():
    graph = {name: imports_of(name, path) for name, path in MODULES.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), list(graph[start])
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo += graph.get(node, ())
        return False

    # A package's __init__ importing its own modules (to register them) is not a circle.
    circles = [
        (a, b)
        for a in graph
        for b in graph[a]
        if not b.startswith(a + ".") and reaches(b, a) and not a.startswith(b + ".")
    ]
    assert not circles, f"import circles: {circles[:5]}"


def test_torch_is_imported_by_the_network_backends_only():
    importers = [
        name
        for name, path in MODULES.items()
        if any(
            isinstance(n, (ast.Import, ast.ImportFrom))
            and any(
                (a.name if isinstance(n, ast.Import) else (n.module or "")).split(".")[0] == "torch"
                for a in n.names
            )
            for n in ast.walk(ast.parse(path.read_text()))
        )
    ]
    # devices resolves "auto"; the codec does its maths in torch when handed a tensor.
    allowed = (
        "posemachines.backends.cnn",
        "posemachines.backends.people",
        "posemachines.devices",
        "posemachines.core.targets",
    )
    assert [m for m in importers if not m.startswith(allowed)] == []


def test_every_package_is_installed():
    """pyproject.toml lists the packages one by one: a new one missing there would work from
    this checkout and be absent from the installed wheel."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later

    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    present = {module_name(p) for p in SOURCES if p.name == "__init__.py"}
    assert present == listed


@pytest.mark.parametrize("path", sorted((ROOT / "cli").glob("*.py")), ids=lambda p: p.name)
def test_commands_only_hand_their_options_to_the_library(path):
    """A command turns options into one library call and its result into lines: no function
    of cli/ over 40 lines (decorators aside), no command line read by the library."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= 40, f"{path.name}:{node.lineno} {node.name} is {length} lines"


def test_the_library_reads_no_command_line_and_prints_nothing():
    """What the user should know goes through progress.note and progress's lines."""
    for path in sorted((ROOT / "posemachines").rglob("*.py")):
        if path.name == "progress.py":
            continue
        text = path.read_text()
        assert "sys.argv" not in text, f"{path.relative_to(ROOT)} reads the command line"
        calls = [
            n
            for n in ast.walk(ast.parse(text))
            if isinstance(n, ast.Call)
            and (
                (isinstance(n.func, ast.Name) and n.func.id == "print")
                or (isinstance(n.func, ast.Attribute) and n.func.attr in ("echo", "secho"))
            )
        ]
        assert not calls, f"{path.relative_to(ROOT)}:{calls[0].lineno} prints"


def test_the_top_level_keeps_a_few_modules():
    """Rooms a newcomer can find: modules go into packages by concern."""
    top = sorted(p.name for p in (ROOT / "posemachines").glob("*.py"))
    assert len(top) <= 12, top

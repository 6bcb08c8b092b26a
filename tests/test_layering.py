"""The library never depends on its command line: no module under capture/ or analyze/ imports
click or uetrace.cli, directly or through another uetrace module; analyze never imports capture.

Read from the source with ast (imports inside functions count too), so a lazy import cannot hide.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The mapping of pyproject.toml's package-dir: import name prefix -> folder.
FOLDERS = {"uetrace.capture": ROOT / "capture", "uetrace.analyze": ROOT / "analyze", "uetrace.bpf": ROOT / "bpf",
           "uetrace": ROOT / "uetrace"}


def module_name(path: Path) -> str:
    for prefix in ("uetrace.capture", "uetrace.analyze", "uetrace.bpf", "uetrace"):
        folder = FOLDERS[prefix]
        if path.is_relative_to(folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([prefix, *parts])
    raise AssertionError(path)


def modules() -> dict[str, Path]:
    out = {}
    for folder in FOLDERS.values():
        for path in folder.rglob("*.py"):
            out[module_name(path)] = path
    return out


MODULES = modules()


def imports(path: Path) -> set[str]:
    """Every module a file names in an import statement, resolved to absolute names; for
    `from pkg import x` both pkg and pkg.x (x may be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def reachable(start: str) -> dict[str, str]:
    """Modules imported from `start`, following uetrace's own modules: name -> the module importing it."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        mod = todo.pop()
        for dep in imports(MODULES[mod]):
            if dep in seen:
                continue
            seen[dep] = mod
            if dep in MODULES:
                todo.append(dep)
    return seen


LIBRARY = sorted(m for m in MODULES if m.startswith(("uetrace.capture", "uetrace.analyze")))


def _forbidden(dep: str) -> bool:
    return dep == "click" or dep.startswith(("click.", "uetrace.cli"))


def test_the_walk_sees_imports():
    """The checker itself: it finds what the CLI imports, lazy ones (inside a function) included, and
    follows them (sections.py loads analyzers by name: every library module is checked on its own too)."""
    deps = reachable("uetrace.cli.deadlocks")
    assert "click" in deps and deps["uetrace.analyze.deadlock"] == "uetrace.cli.deadlocks"
    assert deps["uetrace.analyze.stacks.stack_text"] == "uetrace.analyze.deadlock"
    assert len(LIBRARY) > 40


@pytest.mark.parametrize("module", LIBRARY)
def test_library_does_not_import_the_cli(module):
    bad = {dep: via for dep, via in reachable(module).items() if _forbidden(dep)}
    assert not bad, f"{module} reaches {sorted(bad)} (imported by {sorted(set(bad.values()))})"


@pytest.mark.parametrize("module", [m for m in LIBRARY if m.startswith("uetrace.analyze")])
def test_analyze_does_not_import_capture(module):
    bad = {dep: via for dep, via in reachable(module).items() if dep.startswith("uetrace.capture")}
    assert not bad, f"{module} reaches {sorted(bad)} (imported by {sorted(set(bad.values()))})"

"""Tests import shared helpers from helper modules (helpers.py, http_rows.py, ...),
never from conftest.py (fixtures only) or from another test module."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_no_helper_imported_from_conftest_or_a_test_module():
    bad = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            bad += [f"{path.name}:{node.lineno} imports {n}" for n in names
                    if n == "conftest" or n.startswith("test_")]
    assert not bad, bad

"""The offline Python frame rules, without a kernel: line numbers from 3.11 line tables
(checked against CPython's own co_lines() on every code object of a few stdlib modules),
and how Python frames take the place of _PyEval_EvalFrameDefault in a native stack."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from uetrace.analyze.stacks.python_frames import EVAL_FUNCTION, line_of, line_of_310, merge
from uetrace.analyze.stacks.samples import Frame

PY312 = "/root/.pyenv/versions/3.12.1/bin/python3.12"
PY310 = "/root/.pyenv/versions/3.10.13/bin/python3.10"
# Run under another interpreter: its code objects' line tables and co_lines(), as JSON.
DUMP = """
import json, sys, threading, types
def codes(co):
    yield co
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            yield from codes(c)
top = compile(open(threading.__file__).read(), threading.__file__, "exec")
print(json.dumps([[co.co_linetable.hex(), co.co_firstlineno, list(co.co_lines()), len(co.co_code) // 2]
                  for co in codes(top)]))
"""


def _codes(co: types.CodeType):
    yield co
    for c in co.co_consts:
        if isinstance(c, types.CodeType):
            yield from _codes(c)


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the tests' interpreter is the 3.11 one")
@pytest.mark.parametrize("module", ["threading", "json.decoder", "asyncio.base_events", "typing"])
def test_line_of_agrees_with_co_lines(module):
    mod = __import__(module, fromlist=["_"])
    with open(mod.__file__) as fh:
        top = compile(fh.read(), mod.__file__, "exec")
    checked = 0
    for co in _codes(top):
        expected: dict[int, int | None] = {}
        for start, end, line in co.co_lines():
            for byte in range(start, end, 2):
                expected[byte // 2] = line
        for i in range(len(co.co_code) // 2):
            assert line_of(co.co_linetable, co.co_firstlineno, i) == expected.get(i), (co.co_qualname, i)
            checked += 1
    assert checked > 1000


@pytest.mark.parametrize(("exe", "decode"), [(PY312, line_of), (PY310, line_of_310)], ids=["3.12", "3.10"])
def test_line_of_agrees_with_co_lines_of_other_versions(exe, decode):
    """3.12 keeps the 3.11 line table format; 3.10 has its own (both have offsets in OFFSETS)."""
    if not Path(exe).exists():
        pytest.skip(f"needs {exe}")
    dump = json.loads(subprocess.run([exe, "-c", DUMP], capture_output=True, text=True, check=True).stdout)
    checked = 0
    for table, first, lines, units in dump:
        expected = {byte // 2: line for start, end, line in lines for byte in range(start, end, 2)}
        for i in range(units):
            assert decode(bytes.fromhex(table), first, i) == expected.get(i), (first, i)
            checked += 1
    assert checked > 1000


def _py(*names: str) -> list[Frame]:
    return [Frame(n, kind="python") for n in names]


def _native(*names: str) -> list[Frame]:
    return [Frame(n) for n in names]


def _names(frames: list[Frame]) -> list[str]:
    return [f.name for f in frames]


def test_each_eval_frame_takes_its_entry_frames_root_first():
    native = _native("_start", "main", EVAL_FUNCTION, "PyObject_Call", "cfunc", EVAL_FUNCTION, "PyNumber_Add")
    groups = [["<module>", "main_py"], ["callback", "leaf"]]
    out = merge(native, groups, truncated=False, make=lambda g: _py(*g))
    assert _names(out) == ["_start", "main", "<module>", "main_py", "PyObject_Call", "cfunc", "callback", "leaf",
                           "PyNumber_Add"]
    assert [f.kind for f in out].count("python") == 4


def test_truncated_walk_pairs_from_the_leaf_and_hangs_python_under_the_root():
    # The frame-pointer walk found only the innermost eval frame and garbage above it.
    native = _native("[anon]+0x10", "[anon]+0x20", EVAL_FUNCTION, "PyObject_Free")
    groups = [["<module>", "main_py"], ["callback", "leaf"]]
    out = merge(native, groups, truncated=True, make=lambda g: _py(*g))
    assert _names(out) == ["<module>", "main_py", "callback", "leaf", "PyObject_Free"]


def test_truncated_walk_without_eval_frame_keeps_the_native_leaf():
    out = merge(_native("[anon]+0x10", "PyObject_Free"), [["<module>", "f"]], truncated=True,
                make=lambda g: _py(*g))
    assert _names(out) == ["<module>", "f", "PyObject_Free"]


def test_more_entries_than_eval_frames_join_the_last():
    native = _native("main", EVAL_FUNCTION, "leafc")
    out = merge(native, [["a"], ["b"]], truncated=False, make=lambda g: _py(*g))
    assert _names(out) == ["main", "a", "b", "leafc"]

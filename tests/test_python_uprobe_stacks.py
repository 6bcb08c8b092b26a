"""Python frames in the lock and alloc tracers' stacks (root): fixtures/py_native_calls.py
takes two pthread mutexes in opposite orders from known Python functions (through ctypes:
CPython's own threading.Lock is no pthread mutex) and mallocs blocks it never frees from
others; `trace deadlocks` and `trace leaks` must name those functions as [py] frames,
innermost first, merged as in CPU samples. Run with the tests' interpreter (3.11) and
with 3.13, whose offsets come from its own _Py_DebugOffsets."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FIXTURES, IN_CI, CaptureRun, require_kernel, trace_cmd

PY313 = "/root/.pyenv/versions/3.13.0/bin/python3.13"
RUNS = {"locks": ("locks", sys.executable), "locks-3.13": ("locks", PY313), "leaks": ("leaks", sys.executable)}
MARK = " [py]"


class Workload:
    def __init__(self, exe: str, mode: str):
        self.proc = subprocess.Popen([exe, str(FIXTURES / "py_native_calls.py"), mode], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = json.loads(self.proc.stdout.readline())["pid"]

    def step(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict:
    require_kernel()
    if not Path(PY313).exists():
        if IN_CI:
            pytest.fail(f"{PY313} is not installed")
        pytest.skip(f"needs {PY313}")
    archive = tmp_path_factory.mktemp("pyuprobe") / "run.tar.zst"
    runs = {name: Workload(exe, mode) for name, (mode, exe) in RUNS.items()}
    cap = CaptureRun(archive, "-t", "proc,lock,alloc", *[a for w in runs.values() for a in ("--pid", str(w.pid))])
    try:
        cap.wait_attached()
        for w in runs.values():
            w.step()
            assert json.loads(w.proc.stdout.readline()) == {"done": True}
        # The leaked blocks must be older than --min-age at the end.
        time.sleep(1.5)
        cap.signal(signal.SIGINT)
        rc, _, err = cap.wait()
        assert rc == 0, err
    finally:
        cap.kill()
        for w in runs.values():
            w.close()
    locks = json.loads(trace_cmd("deadlocks", str(archive), "--json", check=True).stdout)
    leaks = json.loads(trace_cmd("leaks", str(archive), "--json", "--min-age", "500ms", check=True).stdout)
    text = trace_cmd("leaks", str(archive), "--min-age", "500ms", check=True).stdout
    info = trace_cmd("info", str(archive), check=True).stdout
    return {"locks": locks, "leaks": leaks, "leaks_text": text, "info": info,
            "pids": {name: w.pid for name, w in runs.items()}}


def _py(frames: list[str]) -> list[str]:
    """The Python frames of a stack, innermost first, names only."""
    return [f.removesuffix(MARK).split(" (")[0] for f in frames if f.endswith(MARK)]


@pytest.mark.parametrize("run", ["locks", "locks-3.13"])
def test_lock_order_inversion_names_the_python_functions(kernel, reports, run):
    pid = reports["pids"][run]
    cycles = [c for c in reports["locks"]["potential"] if c["pid"] == pid]
    assert len(cycles) == 1, reports["locks"]["potential"]
    stacks = {(tuple(_py(e["held_stack"])), tuple(_py(e["wanted_stack"]))) for e in cycles[0]["edges"]}
    # Each thread: the outer function took the first mutex, the inner one (under it) asks for the
    # second; innermost first, down to the thread's root.
    assert stacks == {
        (("lock", "take_a_then_b", "Thread.run", "Thread._bootstrap_inner", "Thread._bootstrap"),
         ("lock", "lock_b_under_a", "take_a_then_b", "Thread.run", "Thread._bootstrap_inner", "Thread._bootstrap")),
        (("lock", "take_b_then_a", "Thread.run", "Thread._bootstrap_inner", "Thread._bootstrap"),
         ("lock", "lock_a_under_b", "take_b_then_a", "Thread.run", "Thread._bootstrap_inner", "Thread._bootstrap")),
    }, stacks
    # The leaf stays the probed C function; Python frames carry their file and line.
    edge = cycles[0]["edges"][0]
    assert edge["held_stack"][0].startswith("pthread_mutex_lock"), edge
    assert any(f.startswith("lock (py_native_calls.py:") for f in edge["held_stack"]), edge


def test_leak_is_named_by_the_python_function_that_allocated(kernel, reports):
    pid = reports["pids"]["leaks"]
    groups = [g for g in reports["leaks"]["groups"] if g["pid"] == pid and g["blocks"] >= 50]
    assert len(groups) == 1, reports["leaks"]["groups"]
    assert _py(groups[0]["frames"])[:4] == ["leak_here", "grow_cache", "leaks", "main"], groups[0]["frames"]
    assert groups[0]["bytes"] == 50 * 4099
    # Freed blocks are no leak, whatever Python function allocated them.
    assert not any("free_here" in f for g in reports["leaks"]["groups"] for f in g["frames"])
    assert "leak_here (py_native_calls.py:" in reports["leaks_text"], reports["leaks_text"]


def test_info_says_the_interpreters_were_walked(kernel, reports):
    assert "python 3.13.0 (" in reports["info"] and "frames recorded" in reports["info"], reports["info"]
    assert "frames not recorded" not in reports["info"], reports["info"]

"""Stacks of real binaries as they are built in the wild (root): a C++ program with
namespaced and templated functions must show demangled names in its flame graph,
and a C program built -O2 -fomit-frame-pointer must have its stacks marked truncated,
with the profile's note naming that binary and its share of samples."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import FIXTURES, CaptureRun, require_kernel

from uetrace.analyze.archive_db import open_archive_db
from uetrace.analyze.stacks import folded, profile
from uetrace.analyze.stacks.samples import SampleFilter
from uetrace.cli import main

CPU_SECONDS = "1.5"
PHASE_A = ("main", "app::detail::phase_a()", "geo::Grid<long>::relax(long)")
PHASE_B = ("main", "app::detail::phase_b()", "geo::Grid<unsigned int>::relax(long)")
NOFP_MARKER = "[truncated user stack: nofp_workload]"


@dataclass
class Recorded:
    archive: Path
    cxx_pid: int
    nofp_pid: int


def _start(cmd: list[str]) -> tuple[subprocess.Popen, int]:
    """A fixture that prints its pid, then waits for a line on stdin before working."""
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert line[:1] == ["pid"], f"{cmd[0]} did not start: {line}"
    return proc, int(line[1])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Recorded:
    require_kernel()
    d = tmp_path_factory.mktemp("binaries")
    cxx, nofp = d / "cxx_workload", d / "nofp_workload"
    # -O0 keeps every C++ frame (as in tests/test_stack_capture.py); the second binary is
    # built the way distributions build theirs.
    subprocess.run(["g++", "-O0", "-g", "-fno-omit-frame-pointer", "-Wall", "-o", str(cxx),
                    str(FIXTURES / "cxx_workload.cpp")], check=True)
    subprocess.run(["gcc", "-O2", "-fomit-frame-pointer", "-Wall", "-o", str(nofp),
                    str(FIXTURES / "nofp_workload.c")], check=True)
    workloads = [_start([str(exe), CPU_SECONDS]) for exe in (cxx, nofp)]
    archive = d / "run.tar.zst"
    # Only these two pids: no other process's stacks enter the stack map and collide with theirs.
    run = CaptureRun(archive, "-t", "proc,stack", "-d", "60s",
                     *(arg for _, pid in workloads for arg in ("--pid", str(pid))))
    try:
        run.wait_attached()
        for proc, _ in workloads:
            proc.stdin.write("go\n")
            proc.stdin.close()
        assert all(proc.wait(30) == 0 for proc, _ in workloads)
        run.signal(signal.SIGINT)
        rc, _out, err = run.wait()
        assert rc == 0, err
    finally:
        run.kill()
        for proc, _ in workloads:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return Recorded(archive, workloads[0][1], workloads[1][1])


def trace(*args: str) -> str:
    """Analysis is offline: run the CLI in this process (the capture ran as a real one)."""
    res = CliRunner().invoke(main, list(args))
    assert res.exit_code == 0, res.output
    return res.stdout


def _folded(recorded: Recorded, pid: int) -> dict[tuple[str, ...], int]:
    return folded.parse(trace("flamegraph", str(recorded.archive), "--format", "folded", "--pid", str(pid),
                              "-o", "-"))


def test_cxx_flame_graph_shows_demangled_names_under_their_callers(kernel, recorded):
    fold = _folded(recorded, recorded.cxx_pid)
    total = sum(fold.values())
    assert total >= 50, f"too few samples of the C++ workload: {total}"
    a = sum(n for s, n in fold.items() if s[-3:] == PHASE_A)
    b = sum(n for s, n in fold.items() if s[-3:] == PHASE_B)
    assert a + b >= 0.8 * total and a > 2 * b, (a, b, fold)
    assert not [f for s in fold for f in s if f.startswith("_Z")], fold


def test_cxx_names_in_the_svg_and_mangled_in_the_archive(kernel, recorded, tmp_path):
    svg = tmp_path / "cxx.svg"
    trace("flamegraph", str(recorded.archive), "--pid", str(recorded.cxx_pid), "-o", str(svg))
    names = {g.get("data-n") for g in ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}g")}
    assert set(PHASE_A) <= names and set(PHASE_B) <= names, names
    # The archive keeps the symbol table's own names; only analysis demangles.
    with open_archive_db(recorded.archive) as cap:
        stored = {r[0] for r in cap.query("SELECT name FROM elf_symbols WHERE name LIKE '_ZN3geo4Grid%'")}
    assert {"_ZN3geo4GridIlE5relaxEl", "_ZN3geo4GridIjE5relaxEl"} <= stored, stored


def test_no_frame_pointer_stacks_are_marked_truncated(kernel, recorded):
    fold = _folded(recorded, recorded.nofp_pid)
    total = sum(fold.values())
    assert total >= 50, f"too few samples of the no-frame-pointer workload: {total}"
    marked = sum(n for s, n in fold.items() if s[1:2] == (NOFP_MARKER,))
    assert marked >= 0.9 * total, fold
    # The walk never got past the leaf: the callers are not made up.
    assert not any({"outer", "inner", "main"} & set(s) for s in fold if s[1:2] == (NOFP_MARKER,)), fold


def test_profile_note_names_the_module_and_its_share(kernel, recorded):
    with open_archive_db(recorded.archive) as cap:
        (nofp, everyone), = cap.query(
            "SELECT count(*) FILTER (WHERE pid = ?), count(*) FROM stack_sample WHERE ustack_id >= 0",
            [recorded.nofp_pid])
        alone = profile.run(cap, profile.ProfileParams(filter=SampleFilter(pids=(recorded.nofp_pid,), idle=False)))
    expected = 100 * nofp / everyone  # every user stack of the no-frame-pointer binary is truncated
    prof = json.loads(trace("analyze", str(recorded.archive), "--only", "profile", "--json"))["profile"]
    by_module = {m["module"]: m["pct"] for m in prof["truncated"]["by_module"]}
    assert abs(by_module.get("nofp_workload", 0) - expected) <= 5, (by_module, expected)
    assert "cxx_workload" not in by_module, by_module  # built with frame pointers: complete stacks
    note = next(n for n in prof["notes"] if "truncated" in n)
    shown = re.search(r"nofp_workload (\d+\.\d)%", note)
    assert shown and abs(float(shown.group(1)) - expected) <= 5, (note, expected)
    # For that process alone, nearly every sample is truncated, and the text report says so.
    assert alone.truncated["by_module"][0]["module"] == "nofp_workload" and alone.truncated["pct"] >= 90
    text = trace("analyze", str(recorded.archive), "--only", "profile")
    assert "note:" in text and "nofp_workload" in text.split("note:", 1)[1], text

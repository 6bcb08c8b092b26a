"""The stack tracer end to end (root): a C workload with a known CPU split, recorded
by `trace capture -t stack` and, at the same time, by Linux perf; then analyzed
from the archive alone."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import FIXTURES, IN_CI, CaptureRun, require_kernel, trace_cmd

from uetrace.analyze.archive_db import open_archive_db
from uetrace.analyze.stacks import folded
from uetrace.analyze.stacks import samples as stack_samples
from uetrace.capture.tracers.perf_event import online_cpus

CPU_SECONDS, WRITE_SECONDS = "4", "3"


@dataclass
class Recorded:
    archive: Path
    exe: Path
    perf_data: Path | None
    cpu_pid: int
    write_pid: int
    manifest: dict
    folded: dict[int, dict[tuple[str, ...], int]]  # pid -> folded stacks, for both workloads


def _fold(archive: Path, pids: tuple[int, ...]) -> tuple[dict, dict[int, dict[tuple[str, ...], int]]]:
    with open_archive_db(archive) as cap:
        return cap.manifest, {pid: folded.fold(stack_samples.load(cap, stack_samples.SampleFilter(pids=(pid,))))
                              for pid in pids}


def _user_part(stack: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f for f in stack if not f.endswith(folded.KERNEL_SUFFIX))


def _start(cmd: list[str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().split()
    assert line[:1] == ["pid"], f"{cmd[0]} did not start: {line}"
    return proc, int(line[1])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Recorded:
    require_kernel()
    d = tmp_path_factory.mktemp("stack")
    exe = d / "stack_workload"
    # -O0: every function keeps its frame (gcc 12 drops leaf frames at -O1 whatever the flags),
    # and the 3:1 check needs every caller on the stack.
    subprocess.run(["gcc", "-O0", "-g", "-fno-omit-frame-pointer", "-Wall",
                    "-o", str(exe), str(FIXTURES / "stack_workload.c")], check=True)
    archive = d / "run.tar.zst"
    run = CaptureRun(archive, "-t", "proc,stack", "-d", "60s")
    try:
        run.wait_attached()
        perf_data = d / "perf.data" if shutil.which("perf") else None
        cpu_cmd = [str(exe), "cpu", CPU_SECONDS]
        if perf_data:
            cpu_cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "99", "-g", "-o", str(perf_data),
                       "--"] + cpu_cmd
        cpu, cpu_pid = _start(cpu_cmd)
        writer, write_pid = _start([str(exe), "write", WRITE_SECONDS])
        assert writer.wait(30) == 0 and cpu.wait(30) == 0
        run.signal(signal.SIGINT)
        rc, _out, err = run.wait()
        assert rc == 0, err
    finally:
        run.kill()
    manifest, fold = _fold(archive, (cpu_pid, write_pid))
    return Recorded(archive, exe, perf_data, cpu_pid, write_pid, manifest, fold)


def test_cpu_split_under_the_right_callers(kernel, recorded):
    fold = recorded.folded[recorded.cpu_pid]
    total = sum(fold.values())
    assert total >= 150, f"too few samples of the workload: {total}"
    a = sum(n for s, n in fold.items() if _user_part(s)[-2:] == ("caller_a", "spin_a"))
    b = sum(n for s, n in fold.items() if _user_part(s)[-2:] == ("caller_b", "spin_b"))
    # Samples fall on caller_a's work with probability 3/4 (the fixture chooses at random):
    # a binomial count, so allow 4 standard deviations (~8.7 points at 400 samples; a sampler
    # that mixed up the callers would give ~50/50 or 0/100).
    tol = 4 * 100 * (0.75 * 0.25 / total) ** 0.5
    assert abs(100 * a / total - 75) <= tol, (a, b, total)
    assert abs(100 * b / total - 25) <= tol, (a, b, total)
    assert all("main" in _user_part(s) for s in fold if _user_part(s)[-1:] in (("spin_a",), ("spin_b",)))


def _perf_leaf_counts(perf_data: Path, pid: int) -> dict[str, int]:
    """`perf script` collapsed to leaf (self) counts per function, for one pid."""
    res = subprocess.run(["perf", "script", "-i", str(perf_data), "-F", "pid,ip,sym"], capture_output=True,
                         text=True, timeout=120, check=True)
    counts: dict[str, int] = {}
    for block in res.stdout.split("\n\n"):
        lines = [ln.strip() for ln in block.strip().splitlines()]
        if len(lines) < 2 or lines[0].split()[0] != str(pid):
            continue
        user = [ln.split()[1] for ln in lines[1:] if len(ln.split()) > 1 and not ln.startswith("ffffffff")]
        if user:
            leaf = user[0].split("+")[0]
            counts[leaf] = counts.get(leaf, 0) + 1
    return counts


def test_perf_finds_the_same_top_functions(kernel, recorded):
    if recorded.perf_data is None:
        if IN_CI:
            pytest.fail("perf is not installed (apt-get install linux-perf)")
        pytest.skip("perf is not installed")
    ours: dict[str, int] = {}
    for stack, n in recorded.folded[recorded.cpu_pid].items():
        user = _user_part(stack)
        ours[user[-1]] = ours.get(user[-1], 0) + n
    theirs = _perf_leaf_counts(recorded.perf_data, recorded.cpu_pid)

    def top2(c):
        return sorted(c, key=lambda k: -c[k])[:2]

    assert top2(ours) == top2(theirs) == ["spin_a", "spin_b"], (ours, theirs)


def test_kernel_frames_resolve_under_the_syscall(kernel, recorded):
    fold = recorded.folded[recorded.write_pid]
    under_write = 0
    for stack, n in fold.items():
        if "vfs_write_[k]" not in stack:
            continue
        callers = stack[: stack.index("vfs_write_[k]")]
        # libc's write() has no frame pointer, so its caller (writer) is skipped: main calls write.
        if {"main", "write"} <= set(callers) and {"ksys_write_[k]", "__x64_sys_write_[k]"} & set(callers):
            under_write += n
    assert under_write >= 0.3 * sum(fold.values()), fold


def test_names_come_from_the_archive_alone(kernel, recorded, tmp_path):
    copy = tmp_path / "copy.tar.zst"
    shutil.copy(recorded.archive, copy)
    recorded.exe.unlink()
    _manifest, after = _fold(copy, (recorded.cpu_pid, recorded.write_pid))
    assert after == recorded.folded
    assert any("spin_a" in s for s in after[recorded.cpu_pid])


def test_manifest_counts_and_cli_outputs(kernel, recorded, tmp_path):
    t = recorded.manifest["tracers"]["stack"]
    assert t["attached"] and len(t["attach_points"]) == len(online_cpus())
    assert t["stats"]["stacks"] > 0 and t["stats"]["stack_max_depth"] == 127
    assert "stacks_truncated_at_max_depth" in t["stats"] and t["stats"]["symbols_kallsyms"] > 0
    svg = tmp_path / "cpu.svg"
    trace_cmd("flamegraph", str(recorded.archive), "--pid", str(recorded.cpu_pid), "-o", str(svg), check=True)
    names = {g.get("data-n") for g in ET.parse(svg).getroot().iter("{http://www.w3.org/2000/svg}g")}
    assert {"spin_a", "spin_b", "caller_a", "caller_b", "main"} <= names
    res = trace_cmd("analyze", str(recorded.archive), "--only", "profile", "--json", check=True)
    prof = json.loads(res.stdout)["profile"]
    workload = next(p for p in prof["per_process"] if p["pid"] == recorded.cpu_pid)
    assert workload["top_stacks"][0]["frames"][-1] == "spin_a"

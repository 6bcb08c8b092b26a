"""A target that exits half-way through a capture still has its mutexes named:
the data symbols and mappings that name them are read when the lock tracer
attaches to it, not at the end from a /proc/<pid> that is gone (issue 9)."""

from __future__ import annotations

import json
import time

from c_fixtures import FixtureProcess, compile_fixture
from helpers import CaptureRun, trace_cmd


def test_mutexes_of_a_process_gone_before_the_end_are_named(kernel, tmp_path):
    exe = compile_fixture("short_lived_locks", tmp_path)
    proc = FixtureProcess(exe)
    archive = tmp_path / "gone.tar.zst"
    cap = CaptureRun(archive, "-t", "proc,lock", "--pid", str(proc.pid), "-d", "6s")
    try:
        cap.wait_attached()
        proc.step("done")
        assert proc.proc.wait(timeout=10) == 0
        time.sleep(0.5)
        assert cap.proc.poll() is None, "the capture must outlive its target for this test to mean anything"
        rc, _, err = cap.wait()
        assert rc == 0, err
    finally:
        cap.kill()
        proc.close()
    report = json.loads(trace_cmd("deadlocks", str(archive), "--json", check=True).stdout)
    cycles = [c for c in report["potential"] if c["pid"] == proc.pid]
    assert len(cycles) == 1, report
    assert sorted(cycles[0]["cycle"]) == ["first_lock (short_lived_locks)", "second_lock (short_lived_locks)"]


def test_comm_target_started_during_the_capture_and_gone_before_its_end(kernel, tmp_path):
    """--comm: the process execs after the capture started (the watcher attaches to it), and exits."""
    exe = compile_fixture("short_lived_locks", tmp_path)
    archive = tmp_path / "comm.tar.zst"
    cap = CaptureRun(archive, "-t", "proc,lock", "--comm", "short_lived_locks", "-d", "7s")
    proc = None
    try:
        cap.wait_attached()
        proc = FixtureProcess(exe)
        time.sleep(1.0)   # the --comm watcher polls every 0.2 s
        proc.step("done")
        assert proc.proc.wait(timeout=10) == 0
        time.sleep(0.5)
        assert cap.proc.poll() is None
        rc, _, err = cap.wait()
        assert rc == 0, err
    finally:
        cap.kill()
        if proc:
            proc.close()
    info = json.loads(trace_cmd("info", str(archive), "--json", check=True).stdout)
    assert [t["pid"] for t in info["tracers"]["lock"]["stats"]["targets"]] == [proc.pid]
    report = json.loads(trace_cmd("deadlocks", str(archive), "--json", check=True).stdout)
    cycles = [c for c in report["potential"] if c["pid"] == proc.pid]
    assert len(cycles) == 1, report
    assert sorted(cycles[0]["cycle"]) == ["first_lock (short_lived_locks)", "second_lock (short_lived_locks)"]

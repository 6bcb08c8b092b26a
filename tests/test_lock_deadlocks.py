"""Lock tracer + deadlock analyzer on the C fixture fixtures/lock_scenarios.c: one
capture of four processes (inversion, three-mutex cycle, real deadlock, clean)."""

from __future__ import annotations

import json
import signal
import time

import pytest
from c_fixtures import FixtureProcess, compile_fixture
from helpers import CaptureRun, require_kernel, trace_cmd

MODES = ("inversion", "cycle3", "deadlock", "clean")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    require_kernel()
    tmp = tmp_path_factory.mktemp("locks")
    exe = compile_fixture("lock_scenarios", tmp)
    procs = {m: FixtureProcess(exe, m) for m in MODES}
    archive = tmp / "locks.tar.zst"
    cap = CaptureRun(archive, "-t", "proc,lock", *[a for p in procs.values() for a in ("--pid", str(p.pid))])
    try:
        cap.wait_attached()
        for mode, p in procs.items():
            p.step("locking" if mode == "deadlock" else "done")
        time.sleep(0.3)  # the deadlocked threads have asked for their second mutex by now
        cap.signal(signal.SIGINT)
        rc, _, err = cap.wait()
        assert rc == 0, err
    finally:
        cap.kill()
        for p in procs.values():
            p.close()  # the deadlocked one can only be killed
    out = trace_cmd("deadlocks", str(archive), "--json", check=True)
    return {"json": json.loads(out.stdout), "pids": {m: p.pid for m, p in procs.items()}, "archive": archive}


def _for(report, mode, key):
    return [x for x in report["json"][key] if x["pid"] == report["pids"][mode]]


def _frames(entry) -> str:
    return "\n".join(entry["held_stack"] + entry["wanted_stack"])


def test_inversion_is_a_potential_deadlock_naming_mutexes_and_stacks(report):
    cycles = _for(report, "inversion", "potential")
    assert len(cycles) == 1, cycles
    c = cycles[0]
    assert sorted(c["cycle"]) == ["lock_a (lock_scenarios)", "lock_b (lock_scenarios)"]
    assert len({e["tid"] for e in c["edges"]}) == 2
    stacks = [_frames(e) for e in c["edges"]]
    assert any("take_a_then_b" in s for s in stacks) and any("take_b_then_a" in s for s in stacks), stacks
    assert all("take_two" in s for s in stacks), stacks
    assert not _for(report, "inversion", "deadlocks") and not _for(report, "inversion", "blocked")


def test_three_mutex_cycle(report):
    cycles = _for(report, "cycle3", "potential")
    assert [sorted(c["cycle"]) for c in cycles] == [["lock_a (lock_scenarios)", "lock_b (lock_scenarios)",
                                                     "lock_c (lock_scenarios)"]]
    assert len({e["tid"] for e in cycles[0]["edges"]}) == 3


def test_real_deadlock_at_capture_end(report):
    dead = _for(report, "deadlock", "deadlocks")
    assert len(dead) == 1, report["json"]
    threads = dead[0]["threads"]
    assert sorted(t["wants"] for t in threads) == ["lock_a (lock_scenarios)", "lock_b (lock_scenarios)"]
    assert {t["holder"] for t in threads} == {t["tid"] for t in threads}
    waits = "\n".join(f for t in threads for f in t["wait_stack"])
    assert "deadlock_ab" in waits and "deadlock_ba" in waits, waits


def test_clean_program_has_no_report(report):
    for key in ("potential", "deadlocks", "blocked"):
        assert not _for(report, "clean", key), report["json"][key]


def test_deadlock_is_a_section_of_analyze(report):
    out = trace_cmd("analyze", str(report["archive"]), "--only", "deadlock", "--json", check=True)
    assert len(json.loads(out.stdout)["deadlock"]["deadlocks"]) == 1

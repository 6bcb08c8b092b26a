"""Condition waits and rwlocks in the lock tracer and the deadlock analyzer.

The replay rules are checked first on hand-written records (no kernel), then
on one capture of fixtures/lock_scenarios.c in its condvar, rwinversion and
rwread modes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time

import pytest
from c_fixtures import FixtureProcess, compile_fixture
from helpers import CaptureRun, require_kernel, trace_cmd

from uetrace.analyze.cycles import simple_cycles
from uetrace.analyze.deadlock import OP_ACQUIRE, OP_REQUEST, OP_TRYLOCK, OP_UNLOCK, ProcessLocks, feasible
from uetrace.capture.tracers.lock import LockTracer
from uetrace.capture.tracers.uprobe_offsets import function_offsets
from uetrace.capture.tracers.uprobe_targets import libc_path

# enum ue_lock_fn (bpf/lock.h)
LOCK, UNLOCK, COND_WAIT, COND_TIMEDWAIT, RDLOCK, WRLOCK, TRYWRLOCK, RWUNLOCK = 1, 4, 5, 6, 8, 9, 13, 14
M, H, RW, RW2 = 0x1000, 0x2000, 0x3000, 0x4000


class Thread:
    """Builds one thread's records: (ts, op, lock, ret, ustack_id, caller, fn)."""

    def __init__(self):
        self.rows: list[tuple] = []

    def _add(self, op, lock, fn, ret=0):
        self.rows.append((len(self.rows), op, lock, ret, -1, 0, fn))
        return self

    def lock(self, lock, fn=LOCK):
        return self._add(OP_REQUEST, lock, fn)._add(OP_ACQUIRE, lock, fn)

    def request(self, lock, fn=LOCK):
        return self._add(OP_REQUEST, lock, fn)

    def unlock(self, lock, fn=UNLOCK):
        return self._add(OP_UNLOCK, lock, fn)

    def cond_wait(self, mutex, fn=COND_WAIT, ret=0, returns=True):
        self._add(OP_UNLOCK, mutex, fn)
        return self._add(OP_ACQUIRE, mutex, fn, ret) if returns else self

    def trylock(self, lock, fn, ret=0):
        return self._add(OP_TRYLOCK, lock, fn, ret)


def _replay(*threads: Thread) -> ProcessLocks:
    p = ProcessLocks(1)
    for tid, t in enumerate(threads, start=10):
        p.replay(tid, t.rows)
    return p


def _cycles(p: ProcessLocks) -> list[list[int]]:
    """The cycles that can deadlock, each as its sorted locks."""
    return [sorted(c) for c in simple_cycles(p.graph())
            if feasible([p.edges[(c[i], c[(i + 1) % len(c)])] for i in range(len(c))])]


def test_condition_waits_attach_to_the_default_symbol_version():
    """glibc has pthread_cond_wait@GLIBC_2.2.5 (old ABI) and @@GLIBC_2.3.2 at different
    addresses: programs built against any glibc since 2.3.2 call the default one."""
    lib = libc_path(os.getpid())
    nm = subprocess.run(["nm", "-D", lib], capture_output=True, text=True, check=True).stdout
    defaults = {line.split()[2].split("@")[0]: int(line.split()[0], 16) for line in nm.splitlines()
                if "@@" in line and len(line.split()) == 3}
    offsets = function_offsets(lib)
    for func in {func for _, func, _ in LockTracer.probes}:
        if func in defaults:  # glibc: text vaddr == file offset
            assert offsets[func] == defaults[func], func


def test_cond_wait_releases_its_mutex_while_waiting():
    waiter = Thread().lock(M).cond_wait(M, returns=False)
    p = _replay(waiter)
    assert p.held[10] == {} and p.cond_waits[10][0] == M and not p.waiting


def test_cond_wait_takes_the_mutex_again_with_its_depth():
    p = _replay(Thread().lock(M).lock(M).cond_wait(M, COND_TIMEDWAIT, ret=errno.ETIMEDOUT).unlock(M))
    assert p.held[10][M].depth == 1 and not p.cond_waits


def test_waiting_on_a_condition_while_holding_another_lock_is_an_inversion():
    # Thread 10 holds H when it takes M again inside pthread_cond_wait: H -> M.
    waiter = Thread().lock(M).lock(H).cond_wait(M).unlock(H).unlock(M)
    other = Thread().lock(M).lock(H).unlock(H).unlock(M)
    assert _cycles(_replay(waiter, other)) == [[M, H]]


def test_consistent_condition_use_has_no_cycle():
    consumer = Thread().lock(M).cond_wait(M).lock(H).unlock(H).unlock(M).lock(M).cond_wait(M, returns=False)
    producer = Thread().lock(M).lock(H).unlock(H).unlock(M)
    p = _replay(consumer, producer)
    assert _cycles(p) == [] and p.holders(M) == []


def test_readers_never_make_a_cycle():
    a = Thread().lock(RW, RDLOCK).lock(RW2, RDLOCK).unlock(RW2, RWUNLOCK).unlock(RW, RWUNLOCK)
    b = Thread().lock(RW2, RDLOCK).lock(RW, RDLOCK).unlock(RW, RWUNLOCK).unlock(RW2, RWUNLOCK)
    p = _replay(a, b)
    assert simple_cycles(p.graph()) and _cycles(p) == []


def test_writer_against_reader_with_a_mutex_is_a_cycle():
    a = Thread().lock(RW, WRLOCK).lock(M).unlock(M).unlock(RW, RWUNLOCK)
    b = Thread().lock(M).lock(RW, RDLOCK).unlock(RW, RWUNLOCK).unlock(M)
    assert _cycles(_replay(a, b)) == [[M, RW]]


def test_read_held_and_read_wanted_rwlock_does_not_block():
    # Thread b's rdlock is not blocked by thread a, which only reads RW.
    a = Thread().lock(RW, RDLOCK).lock(M).unlock(M).unlock(RW, RWUNLOCK)
    b = Thread().lock(M).lock(RW, RDLOCK).unlock(RW, RWUNLOCK).unlock(M)
    assert _cycles(_replay(a, b)) == []


def test_a_gate_held_for_reading_by_all_does_not_serialize():
    a = Thread().lock(RW2, RDLOCK).lock(M).lock(H).unlock(H).unlock(M).unlock(RW2, RWUNLOCK)
    b = Thread().lock(RW2, RDLOCK).lock(H).lock(M).unlock(M).unlock(H).unlock(RW2, RWUNLOCK)
    assert _cycles(_replay(a, b)) == [[M, H]]
    a.rows[:2] = Thread().lock(RW2, WRLOCK).rows  # one writer: the gate serializes them
    assert _cycles(_replay(a, b)) == []


def test_trylocks_count_as_held_in_their_mode():
    p = _replay(Thread().trylock(RW, TRYWRLOCK).trylock(RW2, TRYWRLOCK, ret=errno.EBUSY))
    assert list(p.held[10]) == [RW] and not p.held[10][RW].shared


def test_writer_waits_for_every_reader():
    r1 = Thread().lock(RW, RDLOCK).request(M)
    r2 = Thread().lock(RW, RDLOCK)
    w = Thread().lock(M).request(RW, WRLOCK)
    p = _replay(r1, r2, w)
    assert p.holders(RW) == [10, 11] and p.holders(RW, shared=True) == [] and p.holders(M) == [12]


# --- on a capture ----------------------------------------------------------------------------

MODES = ("condvar", "rwinversion", "rwread")


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    require_kernel()
    tmp = tmp_path_factory.mktemp("condrw")
    exe = compile_fixture("lock_scenarios", tmp)
    procs = {m: FixtureProcess(exe, m) for m in MODES}
    archive = tmp / "condrw.tar.zst"
    cap = CaptureRun(archive, "-t", "proc,lock", *[a for p in procs.values() for a in ("--pid", str(p.pid))])
    try:
        cap.wait_attached()
        for p in procs.values():
            p.step("done")
        time.sleep(0.2)  # the consumers are back in their condition waits
        cap.signal(signal.SIGINT)
        rc, _, err = cap.wait()
        assert rc == 0, err
    finally:
        cap.kill()
        for p in procs.values():
            p.close()
    out = trace_cmd("deadlocks", str(archive), "--json", check=True)
    return {"json": json.loads(out.stdout), "pids": {m: p.pid for m, p in procs.items()}, "archive": archive}


def _for(captured, mode, key):
    return [x for x in captured["json"][key] if x["pid"] == captured["pids"][mode]]


def test_condition_waits_are_no_deadlock_and_no_hang(captured):
    for key in ("potential", "deadlocks", "blocked"):
        assert not _for(captured, "condvar", key), captured["json"][key]
    waits = _for(captured, "condvar", "cond_waits")
    # The untimed consumer is in pthread_cond_wait at the end (the timed one almost surely too).
    untimed = [w for w in waits if any("consumer" in f and "timed" not in f for f in w["stack"])]
    assert len(untimed) == 1, waits
    assert all(w["mutex"] == "queue_lock (lock_scenarios)" for w in waits), waits


def test_condition_wait_records(captured):
    out = trace_cmd("query", str(captured["archive"]), "--format", "json",
                    f"SELECT fn, op, ret FROM lock WHERE pid = {captured['pids']['condvar']} AND fn IN (5, 6)",
                    check=True)
    rows = {(r["fn"], r["op"], r["ret"]) for r in json.loads(out.stdout)}
    assert (COND_WAIT, OP_UNLOCK, 0) in rows and (COND_TIMEDWAIT, OP_ACQUIRE, errno.ETIMEDOUT) in rows, rows


def test_rwlock_mutex_inversion_names_both(captured):
    cycles = _for(captured, "rwinversion", "potential")
    assert len(cycles) == 1, captured["json"]
    assert sorted(cycles[0]["cycle"]) == ["lock_a (lock_scenarios)", "rw_lock (lock_scenarios)"]
    modes = {(e["held"], e["held_mode"], e["wanted_mode"]) for e in cycles[0]["edges"]}
    assert modes == {("rw_lock (lock_scenarios)", "exclusive", "exclusive"),
                     ("lock_a (lock_scenarios)", "exclusive", "read")}, modes
    assert not _for(captured, "rwinversion", "blocked")


def test_readers_in_opposite_order_are_no_report(captured):
    for key in ("potential", "deadlocks", "blocked"):
        assert not _for(captured, "rwread", key), captured["json"][key]

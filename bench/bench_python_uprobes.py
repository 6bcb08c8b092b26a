"""Cost of recording Python frames in the lock and alloc tracers (issue 14), per uprobe hit.

    sudo python bench/bench_python_uprobes.py [--python /root/.pyenv/versions/3.11.7/bin/python3]
                                              [--iterations 20000] [--rounds 3]

fixtures/py_native_calls.py in its bench mode: each iteration is pthread_mutex_lock, unlock,
malloc and free through ctypes, 5 Python frames deep (ctypes also drops and takes the GIL around
each call: more lock hits, each walked too). Under `trace capture -t proc,lock,alloc --pid`:

1. BPF run time per program run (bpf_prog_info run_time_ns / run_cnt, kernel.bpf_stats_enabled=1
   for the measurement only), summed over the lock programs and over the alloc programs, while the
   workload runs with the Python walk and without it (its py_procs entries deleted through
   bpftool, then put back: the programs then find no interpreter and record native stacks
   only), alternating rounds in the same capture: the change of the mean is the walk's added
   cost per hit.
2. The workload's time per iteration in the same rounds, and untraced after the capture
   (medians): the same figure as bench/bench_uprobe_overhead.py's, per iteration.
Prints one JSON object. Needs root and bpftool.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent / "fixtures" / "py_native_calls.py"
STATS = "/proc/sys/kernel/bpf_stats_enabled"
LOCK_PROGS = {"lock_enter", "lock_return", "unlock_enter", "timedlock_enter", "trylock_enter",
              "cond_wait_enter", "cond_timedwait_enter", "cond_clockwait_enter"}
ALLOC_PROGS = {"malloc_enter", "alloc_return", "calloc_enter", "realloc_enter", "realloc_return",
               "aligned_alloc_enter", "posix_memalign_enter", "posix_memalign_return", "free_enter"}


def bpftool(*args: str):
    return json.loads(subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, check=True).stdout)


class Workload:
    def __init__(self, python: str):
        self.proc = subprocess.Popen([python, str(FIXTURE), "bench"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = json.loads(self.proc.stdout.readline())["pid"]

    def run(self, n: int) -> float:
        """ns per iteration of n iterations."""
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline()) / n

    def close(self) -> None:
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=30)


def capture_objects(cap_pid: int) -> tuple[dict[int, str], list[int]]:
    """The capture's programs (id -> name) and its py_procs maps, from its fds."""
    ids = set()
    for fd in os.listdir(f"/proc/{cap_pid}/fdinfo"):
        try:
            info = Path(f"/proc/{cap_pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        ids.update(int(line.split()[1]) for line in info.splitlines() if line.startswith("prog_id:"))
    progs, maps = {}, set()
    for pid in sorted(ids):
        prog = bpftool("prog", "show", "id", str(pid))
        progs[prog["id"]] = prog.get("name", "")
        for mid in prog.get("map_ids", []):
            if bpftool("map", "show", "id", str(mid)).get("name") == "py_procs":
                maps.add(mid)
    return progs, sorted(maps)


def stats(progs: dict[int, str], names: set[str]) -> tuple[int, int]:
    ns = cnt = 0
    for pid, name in progs.items():
        if name in names:
            info = bpftool("prog", "show", "id", str(pid))
            ns, cnt = ns + info.get("run_time_ns", 0), cnt + info.get("run_cnt", 0)
    return ns, cnt


def measure(w: Workload, progs: dict[int, str], n: int) -> tuple[float, dict]:
    """(ns per iteration, {lock/alloc/each program name: (mean run ns, runs per iteration)})."""
    groups = {"lock": LOCK_PROGS, "alloc": ALLOC_PROGS, **{name: {name} for name in LOCK_PROGS | ALLOC_PROGS}}
    before = {k: stats(progs, names) for k, names in groups.items()}
    per_iter = w.run(n)
    out = {}
    for k, names in groups.items():
        ns, cnt = stats(progs, names)
        if cnt > before[k][1]:
            out[k] = ((ns - before[k][0]) / (cnt - before[k][1]), (cnt - before[k][1]) / n)
    return per_iter, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", default="/root/.pyenv/versions/3.11.7/bin/python3")
    ap.add_argument("--iterations", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    w = Workload(args.python)
    w.run(1000)  # warm up (imports, first calls)
    with tempfile.TemporaryDirectory(prefix="uetrace-bench-") as tmp:
        archive = Path(tmp) / "py.tar.zst"
        cap = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-o", str(archive),
                                "-t", "proc,lock,alloc", "--pid", str(w.pid), "-d", "600s"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        partial = archive.with_name(archive.name + ".partial")
        while not (partial.exists() and partial.stat().st_size):
            if cap.poll() is not None:
                raise SystemExit(f"capture exited: {cap.communicate()[1]}")
            time.sleep(0.05)
        time.sleep(2.5)  # attach
        old = Path(STATS).read_text().strip()
        untraced, with_walk, without_walk = [], [], []
        bpf_with, bpf_without = [], []
        try:
            progs, pymaps = capture_objects(cap.pid)
            key = [str(b) for b in w.pid.to_bytes(4, "little")]
            values = {mid: [str(int(x, 16)) for x in bpftool("map", "lookup", "id", str(mid), "key", *key)["value"]]
                      for mid in pymaps}
            Path(STATS).write_text("1")
            for _ in range(args.rounds):
                t, b = measure(w, progs, args.iterations)
                with_walk.append(t)
                bpf_with.append(b)
                for mid in pymaps:
                    subprocess.run(["bpftool", "map", "delete", "id", str(mid), "key", *key], check=True)
                t, b = measure(w, progs, args.iterations)
                without_walk.append(t)
                bpf_without.append(b)
                for mid, value in values.items():
                    subprocess.run(["bpftool", "map", "update", "id", str(mid), "key", *key, "value", *value],
                                   check=True)
        finally:
            Path(STATS).write_text(old)
            cap.send_signal(2)
            cap.communicate(timeout=120)
        for _ in range(args.rounds):
            untraced.append(w.run(args.iterations))
        w.close()
    out = {"python": args.python, "load_at_start": round(load, 2), "load_at_end": round(os.getloadavg()[0], 2),
           "iterations": args.iterations, "rounds": args.rounds,
           "us_per_iteration": {"untraced": round(statistics.median(untraced) / 1e3, 2),
                                "traced_with_python_walk": round(statistics.median(with_walk) / 1e3, 2),
                                "traced_without": round(statistics.median(without_walk) / 1e3, 2)}}
    for k in sorted({*bpf_with[0]} & {*bpf_without[0]}, key=lambda k: (k not in ("lock", "alloc"), k)):
        mw = statistics.median(b[k][0] for b in bpf_with if k in b)
        mo = statistics.median(b[k][0] for b in bpf_without if k in b)
        out[k] = {"program_runs_per_iteration": round(statistics.median(b[k][1] for b in bpf_with if k in b), 2),
                  "mean_run_ns_with_walk": round(mw), "mean_run_ns_without": round(mo),
                  "added_ns_per_hit": round(mw - mo)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

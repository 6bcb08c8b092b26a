"""Overhead of the lock and alloc tracers (uprobes) on a lock- and malloc-heavy workload.

    python bench/bench_uprobe_overhead.py [--iterations 100000] [--threads 2] [--sample 16]

Runs bench/uprobe_workload.c (each iteration: malloc, pthread_mutex_lock, unlock, free) without
tracing and under `trace capture --pid` with each tracer, in the same run, and prints the
throughput ratio, the cost per probe hit, and what --alloc-sample buys (records and archive bytes;
the trap itself stays). Needs root. Each iteration hits 3 probes per tracer: lock = lock entry,
lock return, unlock entry; alloc = malloc entry, malloc return, free entry.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROBES_PER_ITERATION = 3


def build(out: Path) -> Path:
    exe = out / "uprobe_workload"
    subprocess.run(["gcc", "-O2", "-fno-omit-frame-pointer", "-pthread", "-o", str(exe),
                    str(HERE / "uprobe_workload.c")], check=True)
    return exe


def run_once(exe: Path, iterations: int, threads: int, capture: list[str] | None, out: Path) -> dict:
    """Elapsed seconds of the workload; with `capture`, under trace capture with those options."""
    work = subprocess.Popen([str(exe), str(iterations), str(threads)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    pid = int(work.stdout.readline().split()[1])
    cap = None
    archive = out / f"bench-{len(os.listdir(out))}.tar.zst"
    if capture is not None:
        cap = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-o", str(archive), "--pid",
                                str(pid), *capture], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        partial = archive.with_name(archive.name + ".partial")   # the capture's name until it ends
        while not (partial.exists() and partial.stat().st_size):
            time.sleep(0.05)
        time.sleep(2.5)  # attach
    work.stdin.write("go\n")
    work.stdin.flush()
    elapsed = int(work.stdout.readline()) / 1e9
    work.wait()
    result = {"seconds": elapsed, "ops_per_s": iterations * threads / elapsed}
    if cap:
        cap.send_signal(signal.SIGINT)
        cap.communicate(timeout=120)
        info = json.loads(subprocess.run([sys.executable, "-m", "uetrace", "info", str(archive), "--json"],
                                         capture_output=True, text=True, check=True).stdout)
        result["records"] = sum(t.get("records", 0) for n, t in info["tracers"].items() if n != "proc")
        result["lost"] = sum(t.get("lost", 0) for n, t in info["tracers"].items() if n != "proc")
        result["archive_bytes"] = archive.stat().st_size
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=100_000, help="per thread")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sample", type=int, default=16, help="--alloc-sample N to compare")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="uetrace-bench-") as tmp:
        out = Path(tmp)
        exe = build(out)
        configs = {"none": None, "lock": ["-t", "proc,lock"], "alloc": ["-t", "proc,alloc"],
                   f"alloc --alloc-sample {args.sample}": ["-t", "proc,alloc", "--alloc-sample", str(args.sample)],
                   "lock+alloc": ["-t", "proc,lock,alloc"]}
        results = {}
        for name, capture in configs.items():
            results[name] = run_once(exe, args.iterations, args.threads, capture, out)
        base = results["none"]
        calls = args.iterations * args.threads
        print(f"workload: {args.threads} threads x {args.iterations:,} iterations of malloc+lock+unlock+free "
              f"on {os.cpu_count()} CPUs")
        print(f"{'tracer':28s} {'ops/s':>12s} {'ratio':>7s} {'us/iter':>8s} {'us/hit':>7s} {'records':>10s} "
              f"{'archive':>10s} {'lost':>6s}")
        for name, r in results.items():
            extra = (r["seconds"] - base["seconds"]) / calls * 1e6 * args.threads  # CPU-us per iteration
            hits = PROBES_PER_ITERATION * (2 if name == "lock+alloc" else 1)
            print(f"{name:28s} {r['ops_per_s']:12,.0f} {r['ops_per_s'] / base['ops_per_s']:7.3f} "
                  f"{extra:8.2f} {extra / hits if name != 'none' else 0:7.2f} {r.get('records', 0):10,} "
                  f"{r.get('archive_bytes', 0):10,} {r.get('lost', 0):6,}")
        print("us/iter and us/hit: added time per iteration of one thread (wall time x threads / calls), "
              "so contention on the shared mutex is included")


if __name__ == "__main__":
    main()

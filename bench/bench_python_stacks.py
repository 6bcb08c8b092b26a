"""Cost of recording Python frames (issue 14), on fixtures/py_cpu_shares.py.

    sudo python bench/bench_python_stacks.py [--python /usr/bin/python3.11] [--seconds 6] [--freq 499]

1. BPF run time per sample of ue_stack_sample (bpf_prog_info run_time_ns / run_cnt, with
   kernel.bpf_stats_enabled=1 for the measurement only) on the same Python process, with the
   Python walk and then without it (its py_procs entry deleted through bpftool, so the
   program samples it natively), in the same capture.
2. Throughput of the workload alone, under `trace capture --tracers stack`, and under
   `py-spy record` (both at --freq Hz), alternating, median of --rounds rounds: ratios against
   the run alone of the same round, per wall second (noisy when others share the CPUs) and per
   CPU second of the workload (sampling's cost inside it); and each recorder's own CPU seconds.
Prints one JSON object. Needs root, bpftool, and py-spy (PyPI) for part 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent / "fixtures" / "py_cpu_shares.py"
STATS = "/proc/sys/kernel/bpf_stats_enabled"


def bpftool(*args: str):
    return json.loads(subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, check=True).stdout)


def start_capture(archive: Path, freq: int) -> subprocess.Popen:
    # --force: each round records into the same file
    cap = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "--force", "-o", str(archive),
                            "-t", "stack", "--comm", "pyshares", "--freq", str(freq), "-d", "120s"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial = archive.with_name(archive.name + ".partial")  # the capture's name until it ends
    while not (partial.exists() and partial.stat().st_size):
        if cap.poll() is not None:
            raise SystemExit(f"capture exited: {cap.communicate()[1]}")
        time.sleep(0.05)
    time.sleep(2.5)  # attach
    return cap


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(2)  # SIGINT: both recorders finish their output
    proc.communicate(timeout=120)


def our_program(cap_pid: int) -> tuple[int, int]:
    """(prog id of this capture's ue_stack_sample, id of its py_procs map), from the capture's fds."""
    ids = set()
    for fd in os.listdir(f"/proc/{cap_pid}/fdinfo"):
        try:
            info = Path(f"/proc/{cap_pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        ids.update(int(line.split()[1]) for line in info.splitlines() if line.startswith("prog_id:"))
    for pid in sorted(ids):
        prog = bpftool("prog", "show", "id", str(pid))
        if prog.get("name") == "ue_stack_sample":
            for mid in prog.get("map_ids", []):
                if bpftool("map", "show", "id", str(mid)).get("name") == "py_procs":
                    return prog["id"], mid
    raise SystemExit("ue_stack_sample of the capture not found")


def run_stats(prog_id: int) -> tuple[int, int]:
    info = bpftool("prog", "show", "id", str(prog_id))
    return info.get("run_time_ns", 0), info.get("run_cnt", 0)


def per_sample_cost(python: str, seconds: float, freq: int, out: Path) -> dict:
    """The program runs on every CPU's every sample (returning early for other processes): the walk's
    cost per Python sample is the change of its mean run time, times runs, over that process's samples."""
    from uetrace.analyze.archive_db import open_archive_db

    work = subprocess.Popen([python, str(FIXTURE), str(seconds + 30)], stdout=subprocess.PIPE, text=True)
    pid = json.loads(work.stdout.readline())["pid"]
    archive = out / "cost.tar.zst"
    cap = start_capture(archive, freq)
    old = Path(STATS).read_text().strip()
    try:
        prog, pymap = our_program(cap.pid)
        Path(STATS).write_text("1")
        window = seconds / 2
        t0, ns0 = run_stats(prog), time.monotonic_ns()
        time.sleep(window)
        t1, ns1 = run_stats(prog), time.monotonic_ns()
        key = [str(b) for b in pid.to_bytes(4, "little")]
        subprocess.run(["bpftool", "map", "delete", "id", str(pymap), "key", *key], check=True)
        t2, ns2 = run_stats(prog), time.monotonic_ns()
        time.sleep(window)
        t3, ns3 = run_stats(prog), time.monotonic_ns()
    finally:
        Path(STATS).write_text(old)
        stop(cap)
        work.kill()
        work.wait()
    with open_archive_db(archive) as db:
        (py_with,), (py_without,) = (db.query("SELECT count(*) FROM stack_sample WHERE pid = ? AND ts >= ? AND ts < ?",
                                              [pid, a, b])[0] for a, b in ((ns0, ns1), (ns2, ns3)))
    runs_with, runs_without = t1[1] - t0[1], t3[1] - t2[1]
    mean_with = (t1[0] - t0[0]) / max(runs_with, 1)
    mean_without = (t3[0] - t2[0]) / max(runs_without, 1)
    return {"python": python, "program_runs_with_walk": runs_with, "python_samples_with_walk": py_with,
            "mean_run_ns_with_walk": round(mean_with), "program_runs_without": runs_without,
            "python_samples_without": py_without, "mean_run_ns_without": round(mean_without),
            "walk_ns_per_python_sample": round((mean_with - mean_without) * runs_with / max(py_with, 1))}


def _wait(proc: subprocess.Popen) -> float:
    """Wait for a child; its CPU seconds (user + system)."""
    _pid, _status, ru = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return ru.ru_utime + ru.ru_stime


def throughput(python: str, seconds: float, freq: int, recorder: str | None, out: Path) -> dict:
    """Rounds per wall second (what a user sees; noisy on a shared machine), rounds per CPU second
    of the workload (what sampling costs inside it: BPF runs in its context), and the recorder's
    own CPU seconds per second."""
    cap = start_capture(out / "tp.tar.zst", freq) if recorder == "uetrace" else None  # attached before it starts
    work = subprocess.Popen([python, str(FIXTURE), str(seconds)], stdout=subprocess.PIPE, text=True)
    pid = json.loads(work.stdout.readline())["pid"]
    spy = None
    if recorder == "py-spy":
        spy = subprocess.Popen(["py-spy", "record", "-r", str(freq), "-p", str(pid), "-o", str(out / "pyspy.txt"),
                                "-f", "raw", "-d", str(int(seconds) + 5)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rounds = json.loads(work.stdout.readline())["rounds"]
    work_cpu = _wait(work)
    rec_cpu = 0.0
    for rec in (cap, spy):
        if rec is not None:
            if rec.poll() is None:
                rec.send_signal(2)  # SIGINT: both recorders finish their output
            rec_cpu = _wait(rec)
    return {"per_s": rounds / seconds, "per_cpu_s": rounds / max(work_cpu, 1e-9), "recorder_cpu_s": rec_cpu}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default="/usr/bin/python3.11")
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--freq", type=int, default=499)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    out = Path(tempfile.mkdtemp(prefix="bench-pystack-"))
    try:
        result = {"load_avg_start": os.getloadavg()[0], "cost": per_sample_cost(args.python, args.seconds,
                                                                                args.freq, out)}
        if args.rounds and shutil.which("py-spy"):
            ratios: dict[str, dict[str, list[float]]] = {
                name: {"wall": [], "cpu": [], "recorder_cpu_s": []} for name in ("uetrace", "py-spy")}
            for _ in range(args.rounds):
                alone = throughput(args.python, args.seconds, args.freq, None, out)
                for name, r in ratios.items():
                    run = throughput(args.python, args.seconds, args.freq, name, out)
                    r["wall"].append(run["per_s"] / alone["per_s"])
                    r["cpu"].append(run["per_cpu_s"] / alone["per_cpu_s"])
                    r["recorder_cpu_s"].append(run["recorder_cpu_s"])
            result["throughput_ratio_median"] = {
                name: {k: round(statistics.median(v), 3) for k, v in r.items()} for name, r in ratios.items()}
            result["throughput_ratios_all"] = {
                name: {k: [round(x, 3) for x in v] for k, v in r.items()} for name, r in ratios.items()}
        result["load_avg_end"] = os.getloadavg()[0]
        print(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()

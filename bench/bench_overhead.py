"""Capture overhead on a real server: how much of nginx's throughput a recorder leaves.

    sudo python3 bench/bench_overhead.py [--rounds 3] [--seconds 5] [--only default,sock]

nginx (Debian's, 1 worker, `sendfile off`, access log off) serves a 2 KiB file on 127.0.0.1;
wrk (1 thread x 16 connections) loads it for --seconds. For each recorder, rounds alternate a
run without and a run with the recorder, started 3 s before wrk; the ratio is the req/s with /
without of the same round, and the table prints the median ratio and every round's figures.

Recorders: `trace capture` with the default tracer set and with each tracer alone, and two
anchors measured in the same run: `tcpdump -i lo -s 256 -w FILE` (for net) and
`perf record -F 99 -a -g` (for stack). For uetrace runs it also prints what the capture cost:
capture-process CPU seconds per million records, peak RSS, wall time beyond -d, archive bytes
per request, records lost, and kernel-side ns per program run (kernel.bpf_stats_enabled=1 while
the capture runs: run_time_ns / run_cnt of its programs, read just before it detaches).

Installs nothing (scripts/setup.sh installs nginx, wrk, tcpdump, linux-perf). Run it on a quiet
machine: `uptime` load below 0.5, no tests or other benchmarks running.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "fixtures"))

from nginx_files import CONF, NGINX, free_port, wait_listening  # noqa: E402

LEAD_SECONDS = 3.0  # a recorder starts this long before the load (attach, snapshots)

UETRACE = {
    "default": [],
    "sock": ["-t", "sock"],
    "net": ["-t", "net", "--iface", "lo"],
    "stack": ["-t", "stack"],
    "proc": ["-t", "proc"],
}
ANCHORS = ("tcpdump", "perf")


@dataclass
class Round:
    base: float
    with_: float
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.with_ / self.base if self.base else 0.0


class Nginx:
    def __init__(self, tmp: Path):
        www = tmp / "www"
        www.mkdir()
        (www / "2k.html").write_bytes(bytes(range(97, 123)) * 78 + b"abcd\n\n\n\n\n\n\n\n\n\n\n\n")
        self.port = free_port()
        conf = tmp / "nginx.conf"
        # wrk keeps its 16 connections for the whole run: no keep-alive limit to reconnect at.
        conf.write_text(CONF.format(d=tmp, port=self.port, connections=1024, keepalive_requests=1_000_000))
        self.proc = subprocess.Popen([NGINX, "-p", str(tmp), "-c", str(conf), "-e", f"{tmp}/error.log"])
        wait_listening(self.port, self.proc)
        self.url = f"http://127.0.0.1:{self.port}/2k.html"

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wrk(url: str, seconds: float) -> float:
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{seconds:.0f}s", url], capture_output=True, text=True,
                         check=True).stdout
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    if not m:
        raise SystemExit(f"wrk printed no rate:\n{out}")
    return float(m.group(1))


def prog_ids() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True).stdout
    return {p["id"] for p in json.loads(out or "[]")}


def prog_stats(before: set[int]) -> dict[str, tuple[int, int]]:
    """run_time_ns and run_cnt of the uetrace programs loaded since `before` was taken (Debian's
    bpftool does not list the pids that hold a program)."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True).stdout
    mine = {}
    for p in json.loads(out or "[]"):
        if p["id"] not in before and p.get("name", "").startswith("ue_") and p.get("run_cnt"):
            t, c = mine.get(p["name"], (0, 0))
            mine[p["name"]] = (t + p.get("run_time_ns", 0), c + p["run_cnt"])
    return mine


def run_uetrace(args: list[str], url: str, seconds: float, tmp: Path) -> tuple[float, dict]:
    out = tmp / "bench.tar.zst"
    out.unlink(missing_ok=True)
    duration = LEAD_SECONDS + seconds + 1
    cmd = [sys.executable, "-m", "uetrace", "capture", "-q", "-d", f"{duration:.0f}s", "-o", str(out), *args]
    before = prog_ids()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    usage: dict = {}

    def reap() -> None:
        _, status, ru = os.wait4(proc.pid, 0)
        usage.update(status=status, ru=ru, wall=time.monotonic() - t0)

    reaper = threading.Thread(target=reap)
    reaper.start()
    time.sleep(LEAD_SECONDS)
    rate = wrk(url, seconds)
    stats = prog_stats(before)
    reaper.join()
    if os.waitstatus_to_exitcode(usage["status"]) != 0:
        raise SystemExit(f"capture failed: {proc.stderr.read()}")
    info = json.loads(subprocess.run([sys.executable, "-m", "uetrace", "info", "--json", str(out)],
                                     capture_output=True, text=True, check=True).stdout)
    records = sum(t.get("records", 0) for t in info["tracers"].values())
    lost = sum(t.get("lost", 0) for t in info["tracers"].values())
    ru = usage["ru"]
    cpu = ru.ru_utime + ru.ru_stime
    extra = {"records": records, "lost": lost, "cpu_s": cpu, "rss_mb": ru.ru_maxrss / 1024,
             "wall_over": usage["wall"] - duration, "bytes": out.stat().st_size,
             "requests": rate * seconds, "progs": stats}
    return rate, extra


def run_anchor(name: str, url: str, seconds: float, tmp: Path) -> tuple[float, dict]:
    if name == "tcpdump":
        cmd = ["tcpdump", "-q", "-i", "lo", "-s", "256", "-w", str(tmp / "bench.pcap")]
    else:
        cmd = ["perf", "record", "-q", "-F", "99", "-a", "-g", "-o", str(tmp / "perf.data")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(LEAD_SECONDS)
        rate = wrk(url, seconds)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    return rate, {}


def summarize(name: str, rounds: list[Round]) -> str:
    ratios = [r.ratio for r in rounds]
    line = f"| {name} | **{statistics.median(ratios):.2f}** | " + ", ".join(
        f"{r.base / 1e3:.0f}K->{r.with_ / 1e3:.0f}K" for r in rounds) + " |"
    ex = [r.extra for r in rounds if r.extra]
    if not ex:
        return line + " | | | | | |"
    rec = sum(e["records"] for e in ex)
    cpu = sum(e["cpu_s"] for e in ex)
    # Per million records where there are enough records to say; else CPU seconds per run.
    cpu_text = f"{cpu / (rec / 1e6):.2f} s" if rec >= 100_000 * len(ex) else f"({cpu / len(ex):.1f} s per run)"
    per_req = statistics.median(e["bytes"] / e["requests"] for e in ex)
    kern = []
    progs: dict[str, list[int]] = {}
    for e in ex:
        for p, (t, c) in e["progs"].items():
            acc = progs.setdefault(p, [0, 0])
            acc[0] += t
            acc[1] += c
    for p, (t, c) in sorted(progs.items(), key=lambda kv: -kv[1][0])[:4]:
        kern.append(f"{p} {t / c:.0f}")
    return (line + f" {rec / len(ex) / 1e6:.2f} M | {cpu_text} | "
            f"{max(e['rss_mb'] for e in ex):.0f} MB | {max(e['wall_over'] for e in ex):+.1f} s | "
            f"{per_req:.0f} B | {sum(e['lost'] for e in ex)} | {'; '.join(kern)} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--only", default=None, help="comma list of recorders (default: all)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the capture and the anchors need it)")
    for tool in ("wrk", "tcpdump", "perf", "bpftool"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: run scripts/setup.sh")
    names = [*UETRACE, *ANCHORS]
    if args.only:
        names = [n for n in args.only.split(",") if n]
    load = os.getloadavg()[0]
    print(f"load average before: {load:.2f} (quiet machine: < 0.5); {os.cpu_count()} CPUs", flush=True)
    subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=1"], check=True)
    results: dict[str, list[Round]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="uetrace-bench-") as d:
        tmp = Path(d)
        (tmp / "nginx").mkdir()
        server = Nginx(tmp / "nginx")
        try:
            wrk(server.url, 2)  # warm up
            for i in range(args.rounds):
                for n in names:
                    base = wrk(server.url, args.seconds)
                    if n in UETRACE:
                        rate, extra = run_uetrace(UETRACE[n], server.url, args.seconds, tmp)
                    else:
                        rate, extra = run_anchor(n, server.url, args.seconds, tmp)
                    results[n].append(Round(base, rate, extra))
                    r = results[n][-1]
                    print(f"round {i + 1} {n}: {base:,.0f} -> {rate:,.0f} req/s ({r.ratio:.2f})"
                          + (f", {extra['records']:,} records, {extra['lost']} lost, cpu {extra['cpu_s']:.1f}s,"
                             f" rss {extra['rss_mb']:.0f} MB" if extra else ""), flush=True)
        finally:
            server.stop()
            subprocess.run(["sysctl", "-q", "kernel.bpf_stats_enabled=0"])
    print()
    print("| recorder | ratio (median) | per round (without -> with) | records/run | capture CPU per M records "
          "| peak RSS | wall beyond -d | archive bytes/request | lost | kernel ns per run (top programs) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in names:
        print(summarize(n, results[n]))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}; max RSS of this script "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    socket.setdefaulttimeout(10)
    main()

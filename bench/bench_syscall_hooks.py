"""What the tracers' hooks cost a system call that is not a socket call: ns per getppid(2).

    sudo python3 bench/bench_syscall_hooks.py [--rounds 2] [--only sock,tls]

For each configuration a getppid loop (bench/getppid_loop.c, best of 3 x 2 M calls, 7 times; the
minimum and the median are printed) runs with nothing attached and under `trace capture -t <tracer>`.
With clang present it also attaches four empty programs on the per-call syscall tracepoints
(bench/empty_syscall_tps.bpf.c): attaching any syscall tracepoint puts every task on the syscall
slow path, the price the socket tracer avoids by taking accept/connect/close from
inet_sock_set_state. Run it on a quiet machine (`uptime` load below 0.5).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BPF_DIR = HERE.parent / "bpf"


def build(out: Path) -> tuple[Path, Path | None]:
    exe = out / "getppid_loop"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "getppid_loop.c")], check=True)
    obj = None
    if shutil.which("clang"):
        obj = out / "empty_syscall_tps.bpf.o"
        subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-D__TARGET_ARCH_x86", f"-I{BPF_DIR}", "-c",
                        str(HERE / "empty_syscall_tps.bpf.c"), "-o", str(obj)], check=True)
    return exe, obj


def measure(exe: Path, times: int = 7) -> tuple[float, float]:
    vals = [float(subprocess.run([str(exe), "2000000", "3"], capture_output=True, text=True, check=True).stdout)
            for _ in range(times)]
    return min(vals), statistics.median(vals)


def under_capture(exe: Path, tracers: str, out: Path) -> tuple[float, float]:
    archive = out / f"{tracers}.tar.zst"
    archive.unlink(missing_ok=True)
    cap = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-o", str(archive), "-t", tracers],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    partial = archive.with_name(archive.name + ".partial")
    while not (partial.exists() and partial.stat().st_size):
        if cap.poll() is not None:
            raise SystemExit(f"capture failed: {cap.stderr.read()}")
        time.sleep(0.05)
    time.sleep(2.5)  # attach
    try:
        return measure(exe)
    finally:
        cap.send_signal(signal.SIGINT)
        cap.communicate(timeout=120)


def with_empty_syscall_tps(exe: Path, obj: Path) -> tuple[float, float]:
    from uetrace.capture.libbpf import BpfObject

    with BpfObject(obj) as o:
        o.load()
        links = [p.attach() for p in o.programs()]
        try:
            return measure(exe)
        finally:
            for link in links:
                link.destroy()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="sock,tls", help="tracers to measure, each alone")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="uetrace-syscall-hooks-") as d:
        out = Path(d)
        exe, obj = build(out)
        for _ in range(a.rounds):
            print(f"{'nothing attached':40} min/median ns {measure(exe)}", flush=True)
            for tracer in a.only.split(","):
                print(f"{'trace capture -t ' + tracer:40} min/median ns {under_capture(exe, tracer, out)}", flush=True)
            if obj:
                print(f"{'4 empty tp/syscalls programs':40} min/median ns {with_empty_syscall_tps(exe, obj)}",
                      flush=True)


if __name__ == "__main__":
    main()

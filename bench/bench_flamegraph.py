"""Flame graph benchmark: archive -> folded stacks / SVG on >= 1 M samples, next to
Linux perf's perf.data -> `perf script` -> collapse on as many samples, in one run.

    sudo python3 bench/bench_flamegraph.py [--samples 1000000] [--perf-freq 40000]

1. A real capture of the C workload (fixtures/stack_workload.c, cpu and write
   phases at once) with `trace capture -t proc,stack`, for its stacks and symbols.
2. Its stack_sample table replicated to --samples rows (timestamps spread over
   the same span, pids kept) and packed with the same symbol tables into a new
   archive: the sample count is synthetic, every frame and symbol is real.
3. `trace flamegraph` on that archive, as a fresh process (Python start-up,
   archive extraction, DuckDB, symbolization, output): --format folded, then svg.
4. `perf record -e cpu-clock -g` of the same workload until it has as many
   samples (run at --perf-freq Hz), then `perf script | collapse` timed: the
   collapse step is stackcollapse-perf.pl's logic (comm root, frames reversed,
   function names without offsets), in Python, reading perf script's stream.
Printed: seconds for each step, samples per second, and our speed-up over perf.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent


def build_workload(tmp: Path) -> Path:
    exe = tmp / "stack_workload"
    subprocess.run(["gcc", "-O0", "-g", "-fno-omit-frame-pointer", "-o", str(exe),
                    str(REPO / "fixtures" / "stack_workload.c")], check=True)
    return exe


def trace(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uetrace", *args], check=True, capture_output=True, text=True,
                          **kw)


def real_capture(exe: Path, out: Path, seconds: float) -> None:
    cap = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-t", "proc,stack", "--freq", "999",
                            "-c", exe.name, "-o", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    partial = out.with_name(out.name + ".partial")   # the capture's name until it ends
    while not (partial.exists() and partial.stat().st_size) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(2.0)  # tracers attach after the first manifest is written
    work = [subprocess.Popen([str(exe), mode, str(seconds)], stdout=subprocess.DEVNULL) for mode in ("cpu", "write")]
    for w in work:
        w.wait()
    cap.send_signal(2)
    if cap.wait(120) != 0:
        raise SystemExit(f"capture failed: {cap.stderr.read()}")


def synthesize(real: Path, out: Path, samples: int) -> int:
    """The real archive with its stack_sample table replicated to `samples` rows."""
    from uetrace.analyze.archive_db import open_archive_db
    from uetrace.capture.archive_writer import ArchiveWriter

    with open_archive_db(real) as cap:
        root = cap.archive.root
        table = pq.read_table(root / "events" / "stack_sample")
        n = table.num_rows
        if n == 0:
            raise SystemExit("the real capture has no samples")
        reps = -(-samples // n)
        idx = np.tile(np.arange(n), reps)[:samples]
        big = table.take(pa.array(idx))
        ts = big.column("ts").to_numpy()
        span = int(ts.max() - ts.min()) or 1
        # keep each row's time within the real span, spread by a sub-span jitter per copy
        jitter = (np.repeat(np.arange(reps), n)[:samples] * (span // reps or 1)) % span
        big = big.set_column(big.schema.get_field_index("ts"), "ts",
                             pa.array(ts.min() + (ts - ts.min() + jitter) % span, pa.uint64()))
        w = ArchiveWriter(out)
        w.add_bytes("manifest.json", json.dumps(cap.manifest).encode())
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root).as_posix()
            if f.is_file() and rel != "manifest.json" and not rel.startswith("events/stack_sample/"):
                w.add_file(rel, f)
        with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
            pq.write_table(big, tmp.name, compression="zstd")
            w.add_file("events/stack_sample/000001.parquet", tmp.name)
        w.close()
        return n


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    res = fn()
    return time.perf_counter() - t0, res


def perf_record(exe: Path, out: Path, samples: int, freq: int) -> int:
    cpu_s = samples / freq * 1.03
    subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(freq), "-g", "-o", str(out), "--",
                    str(exe), "cpu", f"{cpu_s:.2f}"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stats = subprocess.run(["perf", "report", "-i", str(out), "--stats"], capture_output=True, text=True).stdout
    return next((int(line.split()[2]) for line in stats.splitlines() if line.strip().startswith("SAMPLE events")),
                0)


def collapse_perf_script(stream) -> dict[str, int]:
    """stackcollapse-perf.pl, reduced to its default path: `comm;outer;...;leaf count`."""
    counts: dict[str, int] = {}
    comm, frames = None, []
    for line in stream:
        if not line.strip():
            if comm is not None:
                key = ";".join([comm, *reversed(frames)])
                counts[key] = counts.get(key, 0) + 1
            comm, frames = None, []
        elif line[0] not in " \t":
            comm = line.split(None, 1)[0]
        else:
            parts = line.split(None, 2)
            if len(parts) >= 2:
                sym = parts[1].rsplit("+0x", 1)[0]
                frames.append(sym if sym != "[unknown]" else f"[{parts[-1].strip('()')}]")
    if comm is not None:
        key = ";".join([comm, *reversed(frames)])
        counts[key] = counts.get(key, 0) + 1
    return counts


def perf_to_folded(perf_data: Path, out: Path) -> int:
    proc = subprocess.Popen(["perf", "script", "-i", str(perf_data), "-F", "comm,tid,time,ip,sym,dso"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1 << 20)
    counts = collapse_perf_script(proc.stdout)
    proc.wait()
    out.write_text("".join(f"{k} {v}\n" for k, v in sorted(counts.items())))
    return sum(counts.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--perf-freq", type=int, default=40_000, help="perf record frequency (Hz)")
    ap.add_argument("--seconds", type=float, default=3.0, help="CPU seconds of the real capture's workload")
    ap.add_argument("--keep", type=Path, default=None, help="keep the archives and outputs in this folder")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (the capture and perf record need it)")
    if not shutil.which("perf"):
        raise SystemExit("perf is not installed (apt-get install linux-perf)")
    tmp = Path(tempfile.mkdtemp(prefix="uetrace-bench-fg-"))
    try:
        exe = build_workload(tmp)
        real, big = tmp / "real.tar.zst", tmp / "big.tar.zst"
        real_capture(exe, real, args.seconds)
        real_rows = synthesize(real, big, args.samples)
        print(f"archive: {args.samples:,} samples synthesized from {real_rows:,} real ones "
              f"({big.stat().st_size / 2**20:.1f} MiB)")
        t_folded, _ = timed(lambda: trace("flamegraph", str(big), "--format", "folded", "-o", str(tmp / "u.folded")))
        t_svg, _ = timed(lambda: trace("flamegraph", str(big), "-o", str(tmp / "u.svg")))
        ours = sum(int(line.rsplit(" ", 1)[1]) for line in (tmp / "u.folded").read_text().splitlines())
        print(f"uetrace  archive -> folded: {t_folded:6.2f} s  ({ours / t_folded:,.0f} samples/s, {ours:,} samples)")
        print(f"uetrace  archive -> svg:    {t_svg:6.2f} s")
        perf_data = tmp / "perf.data"
        n_perf = perf_record(exe, perf_data, args.samples, args.perf_freq)
        t_script, _ = timed(lambda: subprocess.run(["perf", "script", "-i", str(perf_data)], check=True,
                                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        t_perf, folded_n = timed(lambda: perf_to_folded(perf_data, tmp / "p.folded"))
        print(f"perf     perf.data ({n_perf:,} samples, {perf_data.stat().st_size / 2**20:.1f} MiB)")
        print(f"perf     perf script alone:         {t_script:6.2f} s")
        print(f"perf     perf script | collapse:    {t_perf:6.2f} s  ({folded_n / t_perf:,.0f} samples/s)")
        per_sample_ours, per_sample_perf = t_folded / ours, t_perf / max(folded_n, 1)
        print(f"speed-up (per sample, folded): {per_sample_perf / per_sample_ours:.1f}x")
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for f in (big, tmp / "u.folded", tmp / "u.svg", perf_data, tmp / "p.folded"):
                shutil.copy(f, args.keep / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Time and peak memory of every offline command on a big archive (issue 13's goal: all analyzers on a
10 M-record capture in <= 30 s with <= 1 GB peak RSS on 2 cores).

The big archive is a real capture replicated: a default capture of nginx under wrk (or --base ARCHIVE),
whose event segments are copied N times with their timestamps shifted by the recording's length each
time, so the copies follow one another like one long capture (same connections continuing, same
processes). Snapshot tables (symbols/) are kept once. Each command then runs as its own process and
its wall time and peak RSS (wait4's ru_maxrss) are printed.

    python3 bench/bench_analyze.py                      # capture 9 s of nginx + wrk, grow to 10 M records
    python3 bench/bench_analyze.py --base run.tar.zst --records 3000000

Run it on a quiet machine (uptime load < 0.5): the figures are the workload's own.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import zstandard

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

TIME_COLUMNS = ("ts", "ts_enter", "ts_exit")


def capture_base(tmp: Path, seconds: float) -> Path:
    from bench_overhead import LEAD_SECONDS, Nginx, wrk

    nginx = Nginx(tmp)
    out = tmp / "base.tar.zst"
    cap = subprocess.Popen([sys.executable, "-m", "uetrace", "capture", "-q", "-d", f"{seconds + LEAD_SECONDS + 1}s",
                            "-o", str(out)], stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(LEAD_SECONDS)
        wrk(nginx.url, seconds)
        cap.send_signal(signal.SIGINT)
        _, err = cap.communicate(timeout=300)
        if cap.returncode != 0:
            raise SystemExit(f"capture failed: {err}")
    finally:
        nginx.stop()
    return out


def _members(path: Path):
    with open(path, "rb") as fh:
        reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for info in tar:
                if info.isfile():
                    yield info.name, tar.extractfile(info).read()


def replicate(base: Path, target_records: int, out: Path) -> int:
    """Write `out` with base's event segments copied until it holds >= target_records; returns the count."""
    members = dict(_members(base))
    manifest = json.loads(members.pop("manifest.json"))
    events = {n: d for n, d in members.items() if n.startswith("events/")}
    base_records = sum(pq.ParquetFile(io.BytesIO(d)).metadata.num_rows for d in events.values())
    copies = max(1, math.ceil(target_records / max(base_records, 1)))
    clock = manifest["clock"]
    span = clock["detached"]["monotonic_ns"] - clock["start"]["monotonic_ns"]
    segments = [s for s in manifest["segments"] if not s["member"].startswith("events/")]
    cctx = zstandard.ZstdCompressor(level=3)
    with open(out, "wb") as fh, cctx.stream_writer(fh) as zw, tarfile.open(fileobj=zw, mode="w|",
                                                                        format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))

        for name, data in members.items():
            if not name.startswith("events/"):
                add(name, data)
        for k in range(copies):
            for name, data in sorted(events.items()):
                src = pq.ParquetFile(io.BytesIO(data))
                table = src.read()
                # Written as a capture writes them (capture/segments.py): plain encoding, row groups of the
                # original's size. pyarrow's defaults (dictionaries, one row group) would make the copies
                # cost what no real archive costs to open and to read.
                rg_rows = max((src.metadata.row_group(i).num_rows for i in range(src.metadata.num_row_groups)),
                              default=0)
                for col in TIME_COLUMNS:
                    if col in table.column_names and k:
                        i = table.column_names.index(col)
                        table = table.set_column(i, col, pc.add(table[col], k * span).cast(table[col].type))
                buf = io.BytesIO()
                pq.write_table(table, buf, compression="zstd", use_dictionary=False, store_schema=False,
                               row_group_size=max(rg_rows, 1))
                kind, seg = name.split("/")[1], name.split("/")[2]
                member = f"events/{kind}/{k:03d}{seg}"
                blob = buf.getvalue()
                add(member, blob)
                segments.append({"member": member, "kind": kind, "rows": table.num_rows, "bytes": len(blob),
                                 "sha256": hashlib.sha256(blob).hexdigest()})
        for anchor in ("detached", "end"):
            for c in clock[anchor]:
                clock[anchor][c] += (copies - 1) * span
        manifest["segments"] = segments
        add("manifest.json", json.dumps(manifest).encode())
    os.chmod(out, 0o600)
    return base_records * copies


def run(cmd: list[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MB, exit code of one command run as its own process."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    return wall, usage.ru_maxrss / 1024, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=Path, help="archive to replicate (default: capture nginx + wrk now)")
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--seconds", type=float, default=9.0, help="length of the base capture's load")
    ap.add_argument("--replicate-to", type=Path, help=argparse.SUPPRESS)  # the child that builds the archive
    args = ap.parse_args()
    if args.replicate_to:
        print(replicate(args.base, args.records, args.replicate_to))
        return
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="uetrace-bench-analyze-") as d:
        tmp = Path(d)
        base = args.base or capture_base(tmp, args.seconds)
        big = tmp / "big.tar.zst"
        t0 = time.monotonic()
        # In a child process: the figures below are the children's peak RSS, and a child forked from a
        # parent that held the whole archive in memory would count those pages as its own.
        built = subprocess.run([sys.executable, __file__, "--base", str(base), "--records", str(args.records),
                                "--replicate-to", str(big)], check=True, capture_output=True, text=True)
        records = int(built.stdout.split()[-1])
        print(f"archive: {records:,} records, {big.stat().st_size / 2**20:.0f} MiB "
              f"(built in {time.monotonic() - t0:.0f} s); load average at start {load:.2f}")
        trace = [sys.executable, "-m", "uetrace"]
        commands = {
            "info": [*trace, "info", str(big)],
            "analyze": [*trace, "analyze", str(big)],
            "requests --json": [*trace, "requests", str(big), "--json"],
            "flows": [*trace, "flows", str(big)],
            "flamegraph (svg)": [*trace, "flamegraph", str(big), "-o", str(tmp / "cpu.svg")],
            "query count(*)": [*trace, "query", str(big), "SELECT count(*) FROM sock_data"],
            "export parquet": [*trace, "export", str(big), "--format", "parquet", "-o", str(tmp / "ds")],
        }
        print(f"{'command':<20} {'seconds':>8} {'peak RSS MB':>12}  goal <= 30 s, <= 1024 MB")
        for name, cmd in commands.items():
            wall, rss, rc = run(cmd)
            flag = "" if rc == 0 else f"  (exit {rc})"
            over = " over" if wall > 30 or rss > 1024 else ""
            print(f"{name:<20} {wall:>8.1f} {rss:>12.0f}{over}{flag}", flush=True)


if __name__ == "__main__":
    main()

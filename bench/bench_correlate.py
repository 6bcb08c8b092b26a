"""Throughput of the correlation engine on a synthetic capture: bench_http's keep-alive exchanges (both
ends captured, one server thread serving every connection, as an event loop) plus a CPU sample inside
every other server window.

    python bench/bench_correlate.py [--exchanges 100000] [--per-conn 100]

Times the http analysis (parsing, cached as in `trace analyze`) and then the correlation on top of it
(windows, evidence, span links) and prints requests/s for the correlation, then the time to build the
HTML report (`trace report`) of the same capture. The goal (issue 12) is >= 20 000 requests/s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http import _cpu, build  # noqa: E402

from uetrace.analyze import correlate, http, report_html  # noqa: E402
from uetrace.analyze.archive import ExtractedArchive, ReadLimits  # noqa: E402
from uetrace.analyze.archive_db import ArchiveDb  # noqa: E402
from uetrace.analyze.report_html import render_page  # noqa: E402


def _samples(root: Path, sock: Path) -> int:
    """One cpu-clock sample of the server thread in the middle of every other exchange's server window."""
    t = pq.read_table(sock, columns=["ts_exit", "pid", "direction"])
    pid, direction = t.column("pid").to_numpy(), t.column("direction").to_numpy()
    reads = t.column("ts_exit").to_numpy()[(pid == 2000) & (direction == 1)][::2] + 20_000
    n = len(reads)
    (root / "events" / "stack_sample").mkdir(parents=True)
    pq.write_table(pa.table({
        "cpu": pa.array(np.zeros(n, np.uint32)), "ts": pa.array(reads.astype(np.uint64)),
        "pid": pa.array(np.full(n, 2000, np.uint32)), "tid": pa.array(np.full(n, 2001, np.uint32)),
        "kstack_id": pa.array(np.full(n, -14, np.int32)), "ustack_id": pa.array(np.full(n, -14, np.int32)),
        "flags": pa.array(np.zeros(n, np.uint32)), "comm": pa.array(["server"] * n, pa.string())}),
        root / "events" / "stack_sample" / "0.parquet")
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exchanges", type=int, default=100_000)
    ap.add_argument("--per-conn", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "events" / "sock_data").mkdir(parents=True)
        sock = root / "events" / "sock_data" / "0.parquet"
        t0 = time.perf_counter()
        rows = build(sock, args.exchanges, args.per_conn)
        n_samples = _samples(root, sock)
        print(f"built {rows} socket rows and {n_samples} samples ({args.exchanges} exchanges) in "
              f"{time.perf_counter() - t0:.1f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        manifest = {"tool": "uetrace", "format_version": 1, "complete": True,
                    "clock": {"start": {"monotonic_ns": 1, "realtime_ns": 2}}, "options": {"freq": 99},
                    "tracers": {}}
        # Built here, not unpacked from a file: no archive size for the reader's bounds to scale with.
        db = ArchiveDb(ExtractedArchive(root, manifest, [], limits=ReadLimits(max_expand=1 << 40)))
        db.con.execute(f"SET threads = {min(os.cpu_count() or 2, 2)}")
        c0, t0 = _cpu(), time.perf_counter()
        n = len(http.run(db).exchanges)
        took_http = time.perf_counter() - t0
        print(f"http analysis: {n} exchanges in {took_http:.2f} s ({_cpu() - c0:.2f} CPU-s)")
        c0, t0 = _cpu(), time.perf_counter()
        result = correlate.correlate(db)
        took, cpu = time.perf_counter() - t0, _cpu() - c0
        spans, linked = result.span_count(), result.linked_count()
        samples = result.table.evidence["cpu_samples"][0]
        sampled = int(((samples > 0) & (result.table.side == 1)).sum())
        print(f"correlation: {len(result.requests)} requests, {spans} spans ({linked} linked), {sampled} with "
              f"samples in {took:.2f} s wall ({cpu:.2f} CPU-s) = {len(result.requests) / took:,.0f} requests/s")
        if sampled != n_samples or linked != len(result.requests):
            raise SystemExit("wrong correlation: every server span has its client as parent, every sample a window")
        c0, t0 = _cpu(), time.perf_counter()
        page = render_page(report_html.build(db, report_html.ReportParams(title="bench")), "bench")
        print(f"HTML report (trace report): built in {time.perf_counter() - t0:.2f} s wall ({_cpu() - c0:.2f} CPU-s), "
              f"{len(page.encode()) / 1024:,.0f} KiB")
        db.close()


if __name__ == "__main__":
    main()

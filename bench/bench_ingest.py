"""Ingest benchmark: how many socket records per second the capture writes, and
how that compares with a raw ring drain measured in the same run.

    sudo python3 bench/bench_ingest.py [--seconds 5] [--payload 64]

A C load generator (fixtures/udp_pingpong.c) makes exactly two sock_data records
per iteration (send + recv on loopback UDP). Three runs with the same generator:
  1. no tracer: the generator's own syscall rate;
  2. raw drain: sock.bpf.o attached, the ring read by RingReader only (copy, no decode);
  3. full capture: CaptureSession (drain, decode, Parquet, archive).
Then the ingest path's own capacity, free of the generator's limit: the chunks
copied out in run 2 are replayed through decode -> Parquet -> archive as fast as
they go (run 4), next to the raw walk-and-copy of the same bytes.
Printed: syscalls/s of the generator, records/s consumed or written, records lost,
and the ratio of the full capture to the raw drain.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def build_generator(tmp: Path) -> Path:
    exe = tmp / "udp_pingpong"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(REPO / "fixtures" / "udp_pingpong.c")], check=True)
    return exe


def run_generator(exe: Path, seconds: float, payload: int) -> dict:
    out = subprocess.run([str(exe), str(seconds), str(payload)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def sock_slot(snaplen: int) -> int:
    """The sock tracer's fixed record slot, computed as the capture computes it."""
    from uetrace.bpf import object_path
    from uetrace.capture.btf import Btf
    from uetrace.capture.records import kinds_from_btf
    from uetrace.capture.session import record_slot
    from uetrace.capture.tracers.sock import SockTracer

    return record_slot(kinds_from_btf(Btf.from_object(object_path("sock")), SockTracer.structs), snaplen)


def raw_drain(exe: Path, seconds: float, payload: int) -> dict:
    from uetrace.bpf import object_path
    from uetrace.capture.libbpf import BpfObject
    from uetrace.capture.ring import RingReader
    from uetrace.capture.tracers.contract import write_rodata

    slot = sock_slot(512)
    obj = BpfObject(object_path("sock"))
    obj.map("events").set_max_entries(32 << 20)
    write_rodata(obj, {"self_tgid": os.getpid(), "snaplen": 512, "record_slot": slot})
    obj.load()
    for p in obj.programs():
        obj.keep(p.attach())
    ring = RingReader(obj.map("events").fd, obj.map("events").max_entries, slot=slot)
    stop = threading.Event()
    consumed = [0]
    chunks = []

    def drain():
        while not stop.is_set():
            chunk = ring.read()
            if chunk is None:
                time.sleep(0.002)
            else:
                consumed[0] += len(chunk)
                chunks.append(chunk)

    t = threading.Thread(target=drain)
    t.start()
    gen = run_generator(exe, seconds, payload)
    obj.detach()
    time.sleep(0.1)
    stop.set()
    t.join()
    while (chunk := ring.read()) is not None:
        consumed[0] += len(chunk)
        chunks.append(chunk)
    drops = obj.map("drops")
    ncpu = os.cpu_count() or 1
    raw = drops.lookup((0).to_bytes(4, "little"), 8 * ncpu) or b""
    lost = sum(int.from_bytes(raw[i:i + 8], "little") for i in range(0, len(raw), 8))
    ring.close()
    obj.close()
    return {"gen": gen, "records": consumed[0], "lost": lost, "chunks": chunks}


def replay(chunks: list, tmp: Path, redact: bool = True) -> dict:
    """Decode, convert and write recorded chunks through the capture's own sink (redacting, as a
    capture does by default, unless `redact` is False)."""
    from uetrace.bpf import object_path
    from uetrace.capture.archive_writer import ArchiveWriter
    from uetrace.capture.btf import Btf
    from uetrace.capture.options import CaptureOptions
    from uetrace.capture.records import Decoder, kinds_from_btf
    from uetrace.capture.segments import SegmentSink
    from uetrace.capture.tracers.sock import SockTracer

    path = object_path("sock")
    decoder = Decoder(kinds_from_btf(Btf.from_object(path), SockTracer.structs))
    tracer = SockTracer(CaptureOptions(output=tmp / "r.tar.zst"))
    from uetrace.redaction.tables import TableRedactor

    archive = ArchiveWriter(tmp / f"replay-{int(redact)}.tar.zst")
    sink = SegmentSink(archive, 64 << 20, 5.0, redact=TableRedactor().redact if redact else None)
    from uetrace.capture.ring import Chunk
    from uetrace.capture.session import CaptureSession

    n = sum(len(c) for c in chunks)
    batches, cur, cur_n = [], [], 0
    for chunk in chunks:  # the same batching as the capture's drain loop
        cur.append(chunk)
        cur_n += len(chunk)
        if cur_n >= CaptureSession.BATCH_RECORDS:
            batches.append(cur)
            cur, cur_n = [], 0
    batches.append(cur)
    start = time.perf_counter()
    for batch in batches:
        sink.put(lambda b=batch: {k: tracer.postprocess(k, t) for k, t in decoder.decode(Chunk.concat(b)).items()})
    sink.close()
    archive.close()
    elapsed = time.perf_counter() - start
    return {"records": n, "seconds": elapsed, "rows": sum(sink.rows_written.values())}


def full_capture(exe: Path, seconds: float, payload: int, tmp: Path, redact: bool = True) -> dict:
    from uetrace.capture.options import CaptureOptions
    from uetrace.capture.session import CaptureSession
    from uetrace.redaction.policy import RedactionPolicy

    out = tmp / f"bench-{int(redact)}.tar.zst"
    opts = CaptureOptions(output=out, tracers=["sock"], progress=False,
                          redaction=RedactionPolicy() if redact else None)
    session = CaptureSession(opts)
    result: dict = {}

    def load():
        time.sleep(1.0)  # attach first
        result["gen"] = run_generator(exe, seconds, payload)
        session.request_stop("bench")

    t = threading.Thread(target=load)
    t.start()
    start = time.monotonic()
    manifest = session.run()
    elapsed = time.monotonic() - start
    t.join()
    sock = manifest["tracers"]["sock"]
    written = sum(s["rows"] for s in manifest["segments"] if s["kind"] == "sock_data")
    result.update({"records": written, "lost": sock["lost"], "archive_bytes": out.stat().st_size,
                   "wall": elapsed})
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--payload", type=int, default=64)
    ap.add_argument("--no-redact", action="store_true", help="full capture without redaction (to compare)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_ingest: needs root (BPF)")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = build_generator(tmp)
        base = run_generator(exe, a.seconds, a.payload)
        raw = raw_drain(exe, a.seconds, a.payload)
        full = full_capture(exe, a.seconds, a.payload, tmp, redact=not a.no_redact)
        chunks = raw.pop("chunks")
        plain = replay(chunks, tmp, redact=False)   # back to back: what redaction costs the ingest path
        rep = replay(chunks, tmp)

    def rate(r: dict) -> float:
        return r["records"] / r["gen"]["seconds"]

    print(f"payload {a.payload} B, {a.seconds:.0f} s per run, {os.cpu_count()} CPUs, "
          f"full capture {'without' if a.no_redact else 'with'} redaction")
    print(f"{'run':<22}{'gen syscalls/s':>16}{'records/s':>14}{'lost':>10}{'loss ratio':>12}")
    print(f"{'no tracer':<22}{base['syscalls'] / base['seconds']:>16,.0f}{'-':>14}{'-':>10}{'-':>12}")
    for name, r in (("raw ring drain", raw), ("full capture", full)):
        total = r["records"] + r["lost"]
        print(f"{name:<22}{r['gen']['syscalls'] / r['gen']['seconds']:>16,.0f}{rate(r):>14,.0f}"
              f"{r['lost']:>10,}{(r['lost'] / total if total else 0):>12.4f}")
    print(f"full capture / raw drain records/s: {rate(full) / rate(raw):.2f}")
    print(f"ingest capacity (replay of the drained chunks through decode + Parquet + archive): "
          f"{rep['rows'] / rep['seconds']:,.0f} records/s ({rep['rows']:,} records in {rep['seconds']:.2f} s); "
          f"without redaction {plain['rows'] / plain['seconds']:,.0f} records/s ({plain['seconds']:.2f} s)")
    print(f"generator slowdown under full capture: "
          f"{(full['gen']['syscalls'] / full['gen']['seconds']) / (base['syscalls'] / base['seconds']):.2f}x "
          f"of its untraced rate; archive {full['archive_bytes'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()


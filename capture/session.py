"""One capture, from attach to a closed archive.

Threads: the caller's thread runs the drain loop (and receives SIGINT, SIGTERM
and SIGHUP, which only set a flag); SegmentSink decodes and writes on its own
thread; ProcessSnapshotter reads /proc on another. Run by root for another user
(sudo, --user), the archive is written by a process of that user instead
(capture/privsep.py; capture/writer_process.py: WriterProcess and RemoteSink
stand for ArchiveWriter and SegmentSink). Whatever stops the capture
(duration, signal, write error), _finish() detaches every program, drains what
is left in the rings, and closes the archive with a final manifest, which
renames NAME.partial to NAME. A capture that fails before it records anything
removes NAME.partial instead. With --rotate the archive is a numbered part and
capture/rotation.py ends each part while recording goes on; the last part is
closed as above.

(Over 400 lines: setup, the drain loop and teardown share the tracer runs and their
locks; rotation and the writer process live in modules of their own.)
"""

from __future__ import annotations

import contextlib
import copy
import errno
import gc
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from uetrace.archive_format import MANIFEST, SCHEMA_DIR
from uetrace.capture.archive_writer import ArchiveWriter
from uetrace.capture.btf import Btf
from uetrace.capture.libbpf import BpfError, BpfObject, possible_cpus
from uetrace.capture.manifest import base_manifest, clock_anchors
from uetrace.capture.options import CaptureOptions
from uetrace.capture.parts import PartArchives, check_rotation, part_segment_bytes
from uetrace.capture.privileges import ensure_tracefs, require_tracing_privileges
from uetrace.capture.privsep import writer_user
from uetrace.capture.records import Decoder, kinds_from_btf
from uetrace.capture.ring import Chunk, RingReader
from uetrace.capture.rotation import Rotation, size_budget
from uetrace.capture.segments import SegmentSink
from uetrace.capture.snapshot.processes import ProcessSnapshotter
from uetrace.capture.snapshot.symbols import SymbolSnapshot
from uetrace.capture.stop_signals import stop_signals
from uetrace.capture.tracers.catalog import TRACERS, default_tracers
from uetrace.capture.tracers.contract import NotAttached, Tracer, write_rodata
from uetrace.capture.writer_process import WriterProcess
from uetrace.encryption import parse_recipient
from uetrace.errors import BadInputError, UetraceError
from uetrace.redaction.tables import TableRedactor


@dataclass
class TracerRun:
    """A loaded and attached tracer and its counters."""

    tracer: Tracer
    obj: BpfObject
    ring: RingReader
    decoder: Decoder
    drop_names: dict[int, str]
    records: int = 0
    pending: list = field(default_factory=list)   # chunks drained but not yet handed to the sink
    pending_records: int = 0
    pending_since: float = 0.0
    lost_per_cpu: dict[str, list[int]] = field(default_factory=dict)
    loss_windows: list[dict] = field(default_factory=list)
    _last_lost: int = 0

    @property
    def lost(self) -> int:
        return sum(sum(v) for v in self.lost_per_cpu.values())


@dataclass
class Progress:
    elapsed: float
    duration: float | None
    tracers: dict[str, dict]      # name -> {"records", "rate", "lost"}
    bytes_written: int
    backlog: int


class CaptureSession:
    def __init__(self, opts: CaptureOptions, on_progress: Callable[[Progress], None] | None = None,
                 on_notice: Callable[[str], None] | None = None):
        """on_notice(text): what the user should read once while it runs (--keep deleting parts)."""
        self.opts = opts
        self.on_progress = on_progress
        self.on_notice = on_notice
        self.runs: list[TracerRun] = []
        self.skipped: dict[str, str] = {}
        self.failures: dict[str, list[dict]] = {}
        self._stop = threading.Event()
        self._drain_lock = threading.Lock()
        self.stop_reason = "duration"
        self.ncpu = 1
        self.symbols = SymbolSnapshot()   # shared by the tracers that record stacks
        self.sink: SegmentSink | None = None
        self.snap: ProcessSnapshotter | None = None
        self.redactor = TableRedactor(opts.redaction) if opts.redaction is not None else None
        self.rotation: Rotation | None = None   # --rotate

    def request_stop(self, reason: str = "requested") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
        self._stop.set()

    # ---- setup -------------------------------------------------------------------------------

    def _selected(self) -> list[type[Tracer]]:
        names = self.opts.tracers or default_tracers()
        unknown = [n for n in names if n not in TRACERS]
        if unknown:
            raise BadInputError(f"unknown tracer {unknown[0]!r}; choose from {', '.join(TRACERS)}")
        return [TRACERS[n] for n in TRACERS if n in names]  # registry order: proc first

    def _start_tracer(self, cls: type[Tracer]) -> None:
        """Load and attach one tracer. Its ring is drained between attachments: under
        load, attaching 20 tracepoints takes long enough to fill a ring."""
        tracer = cls(self.opts, self.symbols) if cls.records_stacks else cls(self.opts)
        try:
            tracer.check()
        except NotAttached as e:
            self.skipped[tracer.name] = str(e)
            return
        obj = BpfObject(tracer.object_file)
        tracer.obj = obj
        run = None
        try:
            obj.map(tracer.ring_map).set_max_entries(self.opts.ring_size)
            rodata: dict[str, object] = {
                "self_tgid": os.getpid(), "filter_pids": 1 if self.opts.pids else 0,
                "filter_comm": 1 if self.opts.comms else 0}
            tracer.configure(obj, rodata)
            btf = Btf.from_object(tracer.object_file)
            kinds = kinds_from_btf(btf, tracer.structs)
            slot = record_slot(kinds, int(rodata.get("snaplen", 0))) if tracer.fixed_slot else 0
            rodata["record_slot"] = slot
            write_rodata(obj, rodata)
            obj.load()
            if self.opts.pids:
                targets = obj.map("target_pids")
                for pid in self.opts.pids:
                    targets.update(int(pid).to_bytes(4, "little"), b"\1")
            if self.opts.comms:
                comms = obj.map("target_comms")
                for comm in self.opts.comms:  # the kernel keeps 15 bytes of a name
                    comms.update(comm.encode()[:15].ljust(16, b"\0"), b"\1")
            ring_map = obj.map(tracer.ring_map)
            run = TracerRun(tracer, obj, RingReader(ring_map.fd, ring_map.max_entries, slot=slot),
                            Decoder(kinds),
                            {v: k.removeprefix("UE_DROP_").lower() for k, v in btf.enum("ue_drop").items()
                             if k != "UE_DROP_MAX"})
            self.runs.append(run)
            tracer.attach(obj)
        except BpfError as e:
            if run is not None:
                with self._drain_lock:  # the background drain may be reading this ring
                    self.runs.remove(run)
                    run.ring.close()
            obj.close()
            self.failures.setdefault(tracer.name, []).extend(tracer.failures + [{"point": "load",
                                                                                 "error": str(e)}])
            return
        for kind in run.decoder.kinds.values():
            self.archive.add_bytes(f"{SCHEMA_DIR}/{kind.name}.json", json.dumps(kind.describe(), indent=1).encode())
        if tracer.failures:
            self.failures[tracer.name] = tracer.failures

    # ---- main loop ---------------------------------------------------------------------------

    def run(self) -> dict:
        """Capture until the duration passes or request_stop(); return the final manifest.

        The archive is written as NAME.partial and renamed to NAME at the end. A capture that
        fails before recording (no tracer attaches, bad input) leaves nothing behind; a write
        error while recording (ENOSPC, EIO) stops it, keeps every finished segment, and
        raises UetraceError once the archive is closed."""
        require_tracing_privileges()
        ensure_tracefs()
        classes = self._selected()
        check_rotation(self.opts.rotate, self.opts.keep, self.opts.max_size)
        rotating = self.opts.rotate is not None
        if rotating:
            self.opts.segment_bytes = part_segment_bytes(self.opts.rotate, self.opts.segment_bytes)
            self.rotation = Rotation(self)
        recipients = [parse_recipient(r) for r in self.opts.encrypt_to]
        writer = writer_user(self.opts.user)   # None: this process writes (a root login)
        if writer:
            self.archive = WriterProcess(self.opts, writer)
        elif rotating:
            self.archive = PartArchives(self.opts.output, keep=self.opts.keep, force=self.opts.force,
                                        mode=self.opts.mode, recipients=recipients)
        else:
            self.archive = ArchiveWriter(self.opts.output, force=self.opts.force, mode=self.opts.mode,
                                         recipients=recipients)
        recording = False
        try:
            self.manifest = base_manifest(self.opts.to_manifest(), self.opts.command_line)
            if rotating:   # the same explicit id in every part: the offline commands read them as one
                self.manifest["capture_id"] = secrets.token_hex(8)
                self.manifest["part"] = {"number": 1, "window": {"start": self.manifest["clock"]["start"]}}
            if writer:
                self.manifest["writer"] = {"uid": writer.uid, "gid": writer.gid, "user": writer.name}
            if self.opts.encrypt_to:
                self.manifest["encryption"] = {"age_recipients": list(self.opts.encrypt_to)}
            self.manifest["redaction"] = self.redactor.to_manifest() if self.redactor else {"enabled": False}
            try:
                self.archive.add_bytes(MANIFEST, json.dumps(self.manifest, indent=1).encode())
            except OSError as e:
                raise UetraceError(f"write {self.archive.partial}: {e.strerror or e}") from None
            redact = self.redactor.redact if self.redactor else None
            self.sink = (self.archive.sink(redact=redact) if writer else
                         SegmentSink(self.archive, self.opts.segment_bytes, self.opts.segment_seconds,
                                     spool_dir=self.opts.spool_dir, redact=redact, carry=rotating))
            self.snap = ProcessSnapshotter(lambda k, t: self.sink.put_table(k, t, area="symbols"))
            self.ncpu = possible_cpus()
            with stop_signals(self.request_stop, self.archive.partial):
                try:
                    with self._draining_in_background():
                        for cls in classes:
                            if not self._stop.is_set():
                                self._start_tracer(cls)
                        if not self.runs and not self._stop.is_set():
                            errs = ([f["error"] for fs in self.failures.values() for f in fs]
                                    + list(self.skipped.values()))
                            raise UetraceError("no tracer could attach: " + (errs[0] if errs else "nothing selected"))
                        if self.opts.pids:
                            self.snap.saw(self.opts.pids)
                        else:
                            self.snap.scan_all()
                    self.manifest["clock"]["attached"] = clock_anchors()  # every tracer is recording from here
                    recording = True
                    # What is alive now (modules, BTF, symbol tables) lives as long as the capture: kept
                    # out of the collector's full passes, which were 5% of the capture's CPU under load.
                    gc.freeze()
                    self._loop()
                finally:
                    gc.unfreeze()
                    self._finish(keep=recording)
        except BaseException as e:
            if not recording:
                self.archive.discard()   # a capture that failed leaves nothing behind
            if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:   # a schema member, before recording
                raise UetraceError(f"write {self.archive.partial}: {e.strerror}") from None
            raise
        if self.sink.error:
            e = self.sink.error
            raise UetraceError(f"write segments: {getattr(e, 'strerror', None) or e}: capture stopped; "
                               f"{len(self.sink.segments)} finished segments kept in {self.archive.path}")
        return self.manifest

    @contextlib.contextmanager
    def _draining_in_background(self):
        """Drain the rings on a thread of their own while the main thread loads, attaches or
        detaches: verifying the net tracer, or detaching the tls tracer's uprobe links, takes
        longer than a busy server needs to fill the sock tracer's ring."""
        done = threading.Event()

        def drain() -> None:
            while not done.wait(self.opts.poll_interval):
                with self._drain_lock:
                    self._drain_once()

        thread = threading.Thread(target=drain, name="uetrace-drain", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _loop(self) -> None:
        start = self._started = time.monotonic()
        deadline = start + self.opts.duration if self.opts.duration else None
        next_stats = start
        while not self._stop.is_set():
            now = time.monotonic()
            if deadline and now >= deadline:
                break
            got = self._drain_once()
            if now >= next_stats:
                self._update_stats(now - start)
                finished = self.rotation.finished_bytes if self.rotation else 0   # --max-size: all parts
                if self.opts.max_size and finished + self.sink.size_so_far() >= size_budget(self.opts.max_size):
                    self.request_stop("max size")
                    break
                for run in self.runs:
                    run.tracer.tick(lambda k, t: self.sink.put_table(k, t, area="symbols"))
                next_stats = now + 0.5
            if self.sink.error:
                self.request_stop("write error")
                break
            if self.rotation and self.rotation.due(self.sink.size_so_far()):
                self.rotation.start()
            # Sleep between drains unless a ring is filling: reading a few records at a time
            # in a tight loop cost more CPU (numpy's fixed cost per call) than the records did.
            if not got or not any(r.ring.pending_bytes() > r.ring.size // 4 for r in self.runs):
                self._stop.wait(self.opts.poll_interval)

    BATCH_RECORDS = 8 * 1024    # decode in batches: each decode call costs ~1 ms whatever its size;
    # 8 K records (~5 MB of sock slots) keeps that under 2% of a CPU at 265 K records/s while
    # bounding what batches in flight hold (32 K: 350 MB peak RSS for the default set, 8 K: 300)
    BATCH_SECONDS = 0.25

    def _drain_once(self, flush: bool = False) -> int:
        now = time.monotonic()
        return sum(self._drain_run(run, now, flush) for run in list(self.runs))  # setup may be appending

    def _drain_run(self, run: TracerRun, now: float, flush: bool = False) -> int:
        chunk = run.ring.read()
        got = 0
        if chunk is not None:
            if not run.pending:
                run.pending_since = now
            run.pending.append(chunk)
            run.pending_records += len(chunk)
            run.records += len(chunk)
            got = len(chunk)
        if run.pending and (flush or run.pending_records >= self.BATCH_RECORDS
                            or now - run.pending_since >= self.BATCH_SECONDS):
            self.sink.put(_decode_job(run, Chunk.concat(run.pending), self.snap))
            run.pending, run.pending_records = [], 0
        return got

    def _update_stats(self, elapsed: float) -> None:
        for run in self.runs:
            self._read_drops(run)
            lost = run.lost
            if lost > run._last_lost:
                ts = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                run.loss_windows.append({"until_ns": ts, "lost": lost - run._last_lost})
                run._last_lost = lost
        if self.on_progress:
            self.on_progress(Progress(
                elapsed, self.opts.duration,
                {r.tracer.name: {"records": r.records, "lost": r.lost} for r in self.runs},
                self.sink.bytes_written if self.sink else 0, self.sink.backlog() if self.sink else 0))

    def _read_drops(self, run: TracerRun) -> None:
        drops = run.obj.map("drops")
        stride = (drops.value_size + 7) // 8 * 8
        for idx, name in run.drop_names.items():
            raw = drops.lookup(idx.to_bytes(4, "little"), stride * self.ncpu)
            if raw is None:
                continue
            per_cpu = np.frombuffer(raw, dtype="<u8")[:: stride // 8][: self.ncpu]
            if per_cpu.any() or name in run.lost_per_cpu:
                run.lost_per_cpu[name] = [int(x) for x in per_cpu]

    # ---- teardown ----------------------------------------------------------------------------

    def _finish(self, keep: bool = True) -> None:
        if self.rotation:
            # A part being ended ends first: its part_done() and the tracers' finish() below share
            # their state (stacks written, symbols).
            self.rotation.join()
        # Recording stops here (detaching uprobes takes ~70 ms per link, and clock.end comes after
        # the symbol snapshots): ages "at the end of the capture" (leaks, waits of deadlocked
        # threads) are measured to this instant.
        self.manifest["clock"]["detached"] = clock_anchors()
        for run in self.runs:
            run.tracer.stop()
        # Each object detaches on a thread of its own and each tracer finishes as soon as its own
        # programs are gone: the kernel removes uprobe links one grace period at a time (the tls
        # tracer's 16 took 1.3 s), and the stack tracer's symbol snapshot need not wait for them.
        detaching = {id(run): threading.Thread(target=run.obj.detach, name=f"uetrace-detach-{run.tracer.name}",
                                               daemon=True) for run in self.runs}
        for thread in detaching.values():
            thread.start()
        try:
            if self.sink:
                with self._draining_in_background():
                    left = list(self.runs)
                    while left:
                        done = [run for run in left if not detaching[id(run)].is_alive()]
                        if not done:
                            time.sleep(0.01)
                        for run in done:
                            left.remove(run)
                            self._finish_tracer(run)
                self._update_stats(time.monotonic() - getattr(self, "_started", time.monotonic()))
        finally:
            for thread in detaching.values():
                thread.join()
            for run in self.runs:
                run.ring.close()
                run.obj.close()
            if self.snap:
                self.snap.close(timeout=SNAPSHOT_CLOSE_S)
            if self.sink:
                self.sink.close()
            if keep:
                self._close_archive()

    def _close_archive(self) -> None:
        """The final manifest and the tar end, then NAME.partial becomes NAME. If they cannot be
        written (the disk is full), NAME.partial is left holding every finished segment."""
        try:
            self._write_final_manifest()
            self.archive.close()
        except OSError as e:
            kept = self.archive.abandon()
            raise UetraceError(f"write {kept}: {e.strerror or e}: capture stopped; "
                               f"{len(self.sink.segments)} finished segments kept in {kept}") from None

    def _finish_tracer(self, run: TracerRun) -> None:
        """Once a tracer's programs are detached: its ring to empty, its records written
        (finish() may rely on observe() having seen every one), then its finish()."""
        with self._drain_lock:
            while self._drain_run(run, time.monotonic(), flush=True):
                pass
        written = threading.Event()
        self.sink.put(lambda: written.set() or {})
        written.wait()
        run.tracer.finish(lambda k, t: self.sink.put_table(k, t, area="symbols"))

    def _write_final_manifest(self) -> None:
        self.manifest = self.completed_manifest(self.sink.segments if self.sink else [],
                                                self.sink.rows_written if self.sink else {}, self.stop_reason)
        self.archive.add_bytes(MANIFEST, json.dumps(self.manifest, indent=1).encode())

    def completed_manifest(self, segments: list, rows: dict, stop_reason: str) -> dict:
        """The final manifest of the archive (or --rotate part) being written: self.manifest, filled in."""
        m = copy.deepcopy(self.manifest)
        # complete: every record drained was written (a write error loses some)
        m["complete"] = not (self.sink and self.sink.error)
        m["stop_reason"] = stop_reason
        m["clock"]["end"] = clock_anchors()
        if self.rotation:
            m["part"]["window"]["end"] = m["clock"].get("detached", m["clock"]["end"])
        for run in self.runs:
            t = run.tracer
            kinds = {k.name: {"records": rows.get(k.name, 0)} for k in run.decoder.kinds.values()}
            records, lost, per_cpu, windows = run.records, run.lost, run.lost_per_cpu, run.loss_windows
            if self.rotation:
                records, lost, per_cpu, windows = self.rotation.part_counters(m, t.name, kinds, lost, per_cpu,
                                                                              windows)
            m["tracers"][t.name] = {
                "attached": True, "description": t.description, "attach_points": t.attached,
                "attach_failures": self.failures.get(t.name, []), "kinds": kinds,
                "records": records, "lost": lost, "lost_per_cpu": per_cpu,
                "loss_windows": windows, "discarded": run.ring.discarded,
                "undecoded": run.decoder.unknown, "stats": t.stats, "notes": t.notes}
        for name, why in self.skipped.items():
            m["tracers"][name] = {"attached": False, "reason": why}
        for name, fails in self.failures.items():
            if name not in m["tracers"]:
                m["tracers"][name] = {"attached": False, "attach_failures": fails,
                                      "reason": fails[-1]["error"] if fails else "failed"}
        m["segments"] = segments
        m["redaction"] = self.redactor.to_manifest() if self.redactor else {"enabled": False}
        m["snapshot"] = {"processes": self.snap.count if self.snap else 0}
        if self.sink and self.sink.error:
            m["errors"] = [f"write segments: {self.sink.error}"]
        return m


WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS)
SNAPSHOT_CLOSE_S = 10.0  # the process snapshot is best effort: a /proc read stuck longer is abandoned


def record_slot(kinds: list, payload_max: int) -> int:
    """The fixed record size of a fixed-slot ring: its largest record with the largest payload."""
    return max((k.layout.size + (payload_max if k.has_tail else 0) + 7) & ~7 for k in kinds)


def _decode_job(run: TracerRun, chunk, snap: ProcessSnapshotter):
    def job():
        tables = run.decoder.decode(chunk)
        out = {}
        for kind, table in tables.items():
            table = run.tracer.postprocess(kind, table)
            if "pid" in table.column_names:
                snap.saw(np.unique(table.column("pid").to_numpy()))
            run.tracer.observe(kind, table, snap)
            out[kind] = table
        return out
    return job

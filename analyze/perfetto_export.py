"""The capture as a Perfetto trace (ui.perfetto.dev, trace_processor): TracePacket protobufs written with
the `perfetto` package's streaming builder, so a big capture never sits in memory as one message.

- a process track per process, a thread track per thread that did something recorded;
- a slice per request per side on the thread that handled it (the correlation engine's windows), with a
  flow arrow from the client's slice to the server's when both ends were captured;
- lock waits as slices ("lock wait <mutex>") on the waiting thread;
- CPU samples as PerfSample packets whose callstacks are interned (function names, one mapping per
  module, frames, callstacks) in the first packet of the sequence;
- counters: bytes per second per interface and direction, outstanding heap bytes per process.

Times: records are CLOCK_MONOTONIC; Perfetto's default trace clock is BOOTTIME, so every timestamp is
moved by the difference the manifest's start anchor recorded between the two.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb
from perfetto.trace_builder.proto_builder import StreamingTraceProtoBuilder

from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.bandwidth import bandwidth
from uetrace.analyze.correlate.analyzer import run as correlate
from uetrace.analyze.correlate.result import CLIENT, CorrelationResult
from uetrace.analyze.stacks import samples

SEQ = 1  # one trusted packet sequence: interned data is valid for every later packet of it
HEAP_POINTS = 500  # outstanding-heap counter values per process


@dataclass
class PerfettoResult:
    slices: int = 0
    flows: int = 0
    samples: int = 0
    callstacks: int = 0
    counters: dict[str, int] = field(default_factory=dict)  # track name -> values written


def _uuid(*parts: object) -> int:
    """A stable 63-bit track uuid from what identifies the track."""
    key = "|".join(str(p) for p in parts).encode()
    return (zlib.crc32(key) << 31 | zlib.crc32(key[::-1])) & ((1 << 63) - 1) or 1


class _Writer:
    def __init__(self, out: BinaryIO, boot_offset: int):
        self.builder = StreamingTraceProtoBuilder(out)
        self.boot_offset = boot_offset
        self.processes: set[int] = set()
        self.threads: set[tuple[int, int]] = set()
        self.first = True

    def packet(self, ts: int | None = None) -> pb.TracePacket:
        p = self.builder.create_packet()
        p.trusted_packet_sequence_id = SEQ
        if self.first:
            p.first_packet_on_sequence = True
            p.sequence_flags = pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
            self.first = False
        else:
            p.sequence_flags = pb.TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
        if ts is not None:
            p.timestamp = int(ts) + self.boot_offset
        return p

    def write(self, p: pb.TracePacket) -> None:
        self.builder.write_packet(p)

    def process(self, pid: int, name: str) -> int:
        uuid = _uuid("process", pid)
        if pid not in self.processes:
            self.processes.add(pid)
            p = self.packet()
            p.track_descriptor.uuid = uuid
            p.track_descriptor.process.pid = pid
            if name:
                p.track_descriptor.process.process_name = name
            self.write(p)
        return uuid

    def thread(self, pid: int, tid: int, name: str) -> int:
        parent = self.process(pid, name)
        uuid = _uuid("thread", pid, tid)
        if (pid, tid) not in self.threads:
            self.threads.add((pid, tid))
            p = self.packet()
            d = p.track_descriptor
            d.uuid, d.parent_uuid = uuid, parent
            d.thread.pid, d.thread.tid = pid, tid
            if name:
                d.thread.thread_name = name
            self.write(p)
        return uuid

    def slice(self, track: int, start: int, end: int, name: str, flow_out: int | None = None,
              flow_in: int | None = None) -> None:
        b = self.packet(start)
        b.track_event.type = pb.TrackEvent.TYPE_SLICE_BEGIN
        b.track_event.track_uuid = track
        b.track_event.name = name
        if flow_out is not None:
            b.track_event.flow_ids.append(flow_out)
        if flow_in is not None:
            b.track_event.terminating_flow_ids.append(flow_in)
        self.write(b)
        e = self.packet(max(end, start))
        e.track_event.type = pb.TrackEvent.TYPE_SLICE_END
        e.track_event.track_uuid = track
        self.write(e)

    def counter_track(self, name: str, unit_name: str, parent: int | None = None) -> int:
        uuid = _uuid("counter", name, parent)
        p = self.packet()
        d = p.track_descriptor
        d.uuid, d.name = uuid, name
        if parent is not None:
            d.parent_uuid = parent
        d.counter.unit_name = unit_name
        self.write(p)
        return uuid

    def counter(self, track: int, ts: int, value: float) -> None:
        p = self.packet(ts)
        p.track_event.type = pb.TrackEvent.TYPE_COUNTER
        p.track_event.track_uuid = track
        p.track_event.double_counter_value = float(value)
        self.write(p)


def export_perfetto(db: ArchiveDb, out: BinaryIO, result: CorrelationResult | None = None) -> PerfettoResult:
    start = db.manifest.get("clock", {}).get("start", {}) if isinstance(db.manifest.get("clock"), dict) else {}
    boot_offset = int(start.get("boottime_ns", 0) or 0) - int(start.get("monotonic_ns", 0) or 0)
    w = _Writer(out, boot_offset if start.get("boottime_ns") is not None else 0)
    names = db.process_names()
    res = PerfettoResult()
    _stacks(db, w, names, res)  # first: its packet carries the interned callstacks
    _requests(db, w, names, res, result)
    _lock_waits(db, w, names, res)
    _counters(db, w, names, res)
    return res


def _stacks(db: ArchiveDb, w: _Writer, names: dict[int, str], res: PerfettoResult) -> None:
    if not samples.available(db, "cpu"):
        w.write(w.packet())  # the sequence's first packet still clears its state
        return
    stacks = samples.load(db, samples.SampleFilter())
    interned = w.packet()
    data = interned.interned_data
    fn_iid: dict[str, int] = {}
    map_iid: dict[str, int] = {}
    frame_iid: dict[int, int] = {}
    for fid, f in enumerate(stacks.frames):
        if f.kind == "process":
            continue
        if f.name not in fn_iid:
            fn_iid[f.name] = len(fn_iid) + 1
            data.function_names.add(iid=fn_iid[f.name], str=f.name.encode())
        module = f.module or ("[kernel]" if f.kernel else "[unknown]")
        if module not in map_iid:
            map_iid[module] = len(map_iid) + 1
            data.mapping_paths.add(iid=map_iid[module], str=module.encode())
            data.mappings.add(iid=map_iid[module], path_string_ids=[map_iid[module]])
        frame_iid[fid] = len(frame_iid) + 1
        data.frames.add(iid=frame_iid[fid], function_name_id=fn_iid[f.name], mapping_id=map_iid[module])
    key_iid: dict[tuple, int] = {}
    for i, (path, key) in enumerate(zip(stacks.stacks, stacks.keys)):
        key_iid[key] = i + 1
        data.callstacks.add(iid=i + 1, frame_ids=[frame_iid[f] for f in path if f in frame_iid])
    w.write(interned)
    res.callstacks = len(key_iid)
    pystack = "pystack_id" if "pystack_id" in _columns(db, "stack_sample") else "-1"
    rows = db.con.execute(f"""SELECT ts, cpu, pid, tid, comm, kstack_id, ustack_id, {pystack} FROM stack_sample
                              ORDER BY ts""").fetchall()
    for ts, cpu, pid, tid, comm, kid, uid, pyid in rows:
        iid = key_iid.get((int(pid), comm, int(kid), int(uid), int(pyid)))
        if iid is None:
            continue
        if pid:
            w.thread(int(pid), int(tid), names.get(int(pid), comm))
        p = w.packet(ts)
        s = p.perf_sample
        s.cpu, s.pid, s.tid, s.callstack_iid = int(cpu), int(pid), int(tid), iid
        w.write(p)
        res.samples += 1


def _columns(db: ArchiveDb, table: str) -> set[str]:
    return {r[0] for r in db.query("SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                                   [table])}


def _requests(db: ArchiveDb, w: _Writer, names: dict[int, str], res: PerfettoResult,
              result: CorrelationResult | None) -> None:
    from uetrace.analyze.correlate.analyzer import applies

    if result is None:
        if not applies(db):
            return
        result = correlate(db)
    for r in result.requests:
        e = r.exchange
        label = f"{e.method} {e.path}".strip() if e.method else (e.grpc_method or e.protocol)
        both = r.client is not None and r.server is not None
        flow = _uuid("flow", r.request_id) if both else None
        for s in r.spans:
            win = s.window
            track = w.thread(win.pid, win.tid, names.get(win.pid, ""))
            side = "client" if s.side == CLIENT else "server"
            w.slice(track, win.start_ts, win.end_ts, f"{side} {label}",
                    flow_out=flow if s.side == CLIENT else None, flow_in=flow if s.side != CLIENT else None)
            res.slices += 1
        res.flows += int(both)


def _lock_waits(db: ArchiveDb, w: _Writer, names: dict[int, str], res: PerfettoResult) -> None:
    if not db.has("lock"):
        return
    acquire = int(db.enums.value("lock", "ue_lock_op", "LOCK_OP_ACQUIRE"))
    rows = db.con.execute("""SELECT pid, tid, ts, wait_ns, mutex FROM lock WHERE op = ? AND wait_ns > 0
                             ORDER BY ts""", [acquire]).fetchall()
    for pid, tid, ts, wait_ns, mutex in rows:
        track = w.thread(int(pid), int(tid), names.get(int(pid), ""))
        w.slice(track, int(ts) - int(wait_ns), int(ts), f"lock wait {int(mutex):#x}")
        res.slices += 1


def _counters(db: ArchiveDb, w: _Writer, names: dict[int, str], res: PerfettoResult) -> None:
    bw = bandwidth(db)
    for name, values in bw.series.items():
        track = w.counter_track(f"{name} bytes/s", "bytes/s")
        for i, v in enumerate(values):
            w.counter(track, bw.t0_ns + i * bw.bucket_ns, v)
        res.counters[f"{name} bytes/s"] = len(values)
    if not db.has("alloc"):
        return
    from uetrace.analyze.leaks import register_views

    register_views(db)
    rows = db.con.execute(f"""
        WITH ev AS (SELECT pid, ts, size::BIGINT AS d FROM alloc_blocks
                    UNION ALL SELECT pid, freed_ts, -size::BIGINT FROM alloc_blocks WHERE freed_ts IS NOT NULL),
             run AS (SELECT pid, ts, sum(d) OVER (PARTITION BY pid ORDER BY ts ROWS UNBOUNDED PRECEDING) AS v,
                            row_number() OVER (PARTITION BY pid ORDER BY ts) AS n, count(*) OVER (PARTITION BY pid) AS c
                     FROM ev)
        SELECT pid, ts, v FROM run WHERE n % greatest(1, c // {HEAP_POINTS}) = 0 OR n = c
        ORDER BY pid, ts""").fetchall()
    tracks: dict[int, int] = {}
    for pid, ts, v in rows:
        pid = int(pid)
        if pid not in tracks:
            parent = w.process(pid, names.get(pid, ""))
            tracks[pid] = w.counter_track(f"heap outstanding (pid {pid})", "bytes", parent)
        w.counter(tracks[pid], int(ts), float(v))
        key = f"heap outstanding (pid {pid})"
        res.counters[key] = res.counters.get(key, 0) + 1

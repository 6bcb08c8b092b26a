"""One request's story: its spans and the calls it made, each with a timeline across tracers (socket
syscalls, lock waits, allocations, long off-CPU stretches, outgoing calls) and symbolized stacks (the
functions on-CPU, where it blocked). What `trace request ARCHIVE ID` prints."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.correlate.evidence import BLOCKING_LOCK_FNS
from uetrace.analyze.correlate.report import breakdown
from uetrace.analyze.correlate.result import CorrelationResult, Request, Span
from uetrace.analyze.stacks import samples
from uetrace.analyze.stacks.symbolize import FRAME_SCHEMA, Symbolizer

MAX_EVENTS = 60  # per span: a story, not a dump (`trace query` has every row)
MIN_LOCK_WAIT_NS = 50_000  # below this a lock call did not wait (the uprobe costs ~25 us itself)
MIN_OFFCPU_NS = 1_000_000
TOP = 5


@dataclass(slots=True)
class Event:
    ts: int  # CLOCK_MONOTONIC ns
    duration_ns: int | None
    source: str  # sock, lock, alloc, offcpu, call
    what: str


@dataclass(slots=True)
class SpanStory:
    span: Span
    request: Request
    depth: int
    comm: str
    events: list[Event] = field(default_factory=list)
    events_dropped: int = 0
    on_cpu: list[dict] = field(default_factory=list)  # {function, module, samples, pct}
    blocked: list[dict] = field(default_factory=list)  # {stack, ms}

    def to_json(self) -> dict:
        w = self.span.window
        return {"span": self.span.to_dict(), "request_id": self.request.request_id,
                "endpoint": self.request.endpoint, "depth": self.depth, "comm": self.comm,
                "breakdown": breakdown(self.span),
                "events": [{"offset_ms": (e.ts - w.start_ts) / 1e6,
                            "duration_ms": None if e.duration_ns is None else e.duration_ns / 1e6,
                            "source": e.source, "what": e.what} for e in self.events],
                "events_dropped": self.events_dropped, "on_cpu": self.on_cpu, "blocked": self.blocked}


@dataclass
class Story:
    request: Request
    spans: list[SpanStory]
    parent: Span | None = None  # the span the request's outermost span hangs under, when captured

    def to_json(self) -> dict:
        e = self.request.exchange
        return {"request_id": self.request.request_id, "endpoint": self.request.endpoint,
                "exchange": e.to_dict(), "trace_id": self.request.main.trace_id if self.request.main else None,
                "parent": self.parent.to_dict() if self.parent else None,
                "spans": [s.to_json() for s in self.spans]}

    def to_text(self) -> str:
        from uetrace.analyze.correlate.story_text import render_story
        return render_story(self)


def build_story(db: ArchiveDb, result: CorrelationResult, request: Request) -> Story:
    comms = db.process_names()
    out: list[SpanStory] = []
    seen: set[str] = set()

    def walk(span: Span, req: Request, depth: int) -> None:
        if span.span_id in seen:
            return
        seen.add(span.span_id)
        out.append(SpanStory(span, req, depth, comms.get(span.window.pid, "")))
        for kid in result.children(span):
            walk(kid, result.request(kid.request_id), depth + 1)

    roots = request.spans
    for s in roots:
        if s.parent_span_id is None or s.parent_span_id not in {x.span_id for x in roots}:
            walk(s, request, 0)
    outer = roots[0] if roots else None
    found = result.span_request(outer.parent_span_id) if outer and outer.parent_span_id else None
    parent = found[0] if found else None
    if parent is not None and parent.span_id in seen:
        parent = None
    for st in out:
        _events(db, st, result)
        _stacks(db, st)
    return Story(request, out, parent)


def _events(db: ArchiveDb, st: SpanStory, result: CorrelationResult) -> None:
    w = st.span.window
    args = [w.pid, w.tid, w.start_ts, w.end_ts]
    ev: list[Event] = []
    if db.has("sock_data"):
        egress = int(db.enums.value("sock_data", "ue_sock_direction", "DIR_EGRESS"))
        for ts_enter, ts_exit, direction, nbytes, raddr, rport in db.query(
                "SELECT ts_enter, ts_exit, direction, bytes, raddr, rport FROM sock_data "
                "WHERE pid = ? AND tid = ? AND ts_exit >= ? AND ts_enter <= ? AND bytes > 0 ORDER BY ts_enter", args):
            verb, prep = ("wrote", "to") if direction == egress else ("read", "from")
            peer = f"[{raddr}]:{rport}" if ":" in raddr else f"{raddr}:{rport}"
            # Since the sock tracer left sys_enter, a read's (and a UDP send's) start is not
            # recorded: ts_enter == ts_exit, a duration nobody measured.
            dur = ts_exit - ts_enter if ts_exit > ts_enter else None
            ev.append(Event(ts_enter, dur, "sock", f"{verb} {nbytes:,} B {prep} {peer}"))
    if db.has("lock"):
        acquire = int(db.enums.value("lock", "ue_lock_op", "LOCK_OP_ACQUIRE"))
        fns = {v: k for k, v in db.enums.values("lock", "ue_lock_fn").items()}
        blocking = db.enums.sql_list("lock", "ue_lock_fn", BLOCKING_LOCK_FNS)
        rows = db.query(f"SELECT ts, wait_ns, mutex, caller, fn FROM lock WHERE pid = ? AND tid = ? AND op = {acquire} "
                        f"AND fn IN ({blocking}) AND ts >= ? AND ts - wait_ns <= ? AND wait_ns >= {MIN_LOCK_WAIT_NS} "
                        "ORDER BY ts", args)
        callers = _names(db, w.pid, [(caller, ts) for ts, _, _, caller, _ in rows])
        for (ts, wait, mutex, _caller, fn), name in zip(rows, callers):
            call = fns.get(fn, str(fn)).removeprefix("LOCK_FN_").lower()
            ev.append(Event(ts - wait, wait, "lock", f"waited {wait / 1e6:.3f} ms for lock 0x{mutex:x} "
                                                     f"({call} called from {name})"))
    if db.has("alloc"):
        from uetrace.analyze import leaks
        leaks.register_views(db)
        for ts, size, addr, freed in db.query(
                "SELECT ts, size, addr, freed_ts FROM alloc_blocks WHERE pid = ? AND tid = ? AND ts >= ? AND ts <= ? "
                "ORDER BY ts", args):
            fate = "never freed while recording" if freed is None else f"freed {(freed - ts) / 1e6:.3f} ms later"
            ev.append(Event(ts, None, "alloc", f"allocated {size:,} B at 0x{addr:x}, {fate}"))
    if db.has("offcpu"):
        for ts, dur in db.query(
                f"SELECT ts, dur_ns FROM offcpu WHERE pid = ? AND tid = ? AND ts + dur_ns >= ? AND ts <= ? "
                f"AND dur_ns >= {MIN_OFFCPU_NS} ORDER BY ts", args):
            ev.append(Event(ts, dur, "offcpu", f"off CPU {dur / 1e6:.3f} ms"))
    for kid in result.children(st.span):
        kr = result.request(kid.request_id)
        ev.append(Event(kid.window.start_ts, kid.window.duration_ns, "call",
                        f"{kid.side} span {kid.span_id}: {kr.endpoint} {kr.exchange.client} -> {kr.exchange.server} "
                        f"(request {kr.request_id})"))
    ev.sort(key=lambda e: e.ts)
    st.events_dropped = max(len(ev) - MAX_EVENTS, 0)
    st.events = ev[:MAX_EVENTS]


def _names(db: ArchiveDb, pid: int, frames: list[tuple[int, int]]) -> list[str]:
    """Function names of return addresses (a lock call's caller), symbolized from the archive."""
    if not frames:
        return []
    table = pa.table({"id": pa.array(range(len(frames)), pa.int64()),
                      "pid": pa.array([pid] * len(frames), pa.uint32()),
                      "addr": pa.array([a for a, _ in frames], pa.uint64()),
                      "ts": pa.array([t for _, t in frames], pa.uint64()),
                      "leaf": pa.array([False] * len(frames), pa.bool_()),
                      "kernel": pa.array([False] * len(frames), pa.bool_())}, schema=FRAME_SCHEMA)
    got = Symbolizer(db).resolve(table).sort_by("id")
    return got.column("function").to_pylist()


def _stacks(db: ArchiveDb, st: SpanStory) -> None:
    w = st.span.window
    windows = ((w.tid, w.start_ts, w.end_ts),)
    if samples.available(db, "cpu"):
        cpu = samples.load(db, samples.SampleFilter(windows=windows))
        counts: dict[tuple[str, str], int] = {}
        for path, weight in zip(cpu.stacks, cpu.weights):
            user = [cpu.frames[f] for f in path if cpu.frames[f].kind == "user"]
            leaf = user[-1] if user else cpu.frames[path[-1]]
            counts[(leaf.name, leaf.module)] = counts.get((leaf.name, leaf.module), 0) + weight
        total = max(cpu.total, 1)
        st.on_cpu = [{"function": f, "module": m, "samples": n, "pct": 100.0 * n / total}
                     for (f, m), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP]]
    if samples.available(db, "offcpu"):
        off = samples.load(db, samples.SampleFilter(kind="offcpu", windows=windows))
        ranked = sorted(range(len(off.stacks)), key=lambda i: -off.weights[i])[:3]
        st.blocked = [{"stack": _short(off, i), "ms": off.weights[i] / 1e6} for i in ranked]


def _short(stacks: samples.StackSet, i: int) -> list[str]:
    """A blocked stack, leaf end: the user frames nearest the leaf and the kernel's last frames."""
    frames = [stacks.frames[f] for f in stacks.stacks[i]]
    user = [f.name for f in frames if f.kind in ("user", "marker")][-4:]
    kernel = [f.name for f in frames if f.kind == "kernel"][-2:]
    return user + kernel

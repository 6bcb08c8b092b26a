"""The spans of a correlation as columns: one row per captured side of an exchange.

A busy capture has millions of spans; as objects (Span, Window, Evidence and their ints and strings)
they cost ~1.4 KB a request. Here each span is a row of numpy arrays (~80 bytes): its request and side,
its window, its ids as 64-bit integers (rendered as hex only when asked), its parent and how it was
linked, the span whose id its trace derives from, and its evidence. Span, Window and Evidence objects
are made on demand (correlate/result.py), for the few requests a report or story shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from uetrace.analyze.correlate.objects import CLIENT, SERVER, THIN_SAMPLES, Evidence, Span, Window

if TYPE_CHECKING:
    from uetrace.analyze.correlate.spans import IdMaker, TraceParent

SIDES = (CLIENT, SERVER)  # side codes 0, 1
LINKS = ("", "traceparent", "connection", "inside")  # link codes
NO_SPAN = np.uint64(0)  # no span id is 0 (generated ones are never 0, a header's all-zero id is invalid)
BLOCKED_SHARE = 0.9  # off-CPU for this share of a window: few samples there are no gap in the evidence

# Evidence columns: name -> numpy dtype. A column missing from SpanTable.evidence was not recorded
# (None in every span); a column's mask says which spans have it (None: all).
EVIDENCE_FIELDS = {"cpu_samples": np.int32, "offcpu_ms": np.float64, "lock_waits": np.int32,
                   "lock_wait_ms": np.float64, "lock_hold_ms": np.float64, "allocs": np.int64,
                   "alloc_bytes": np.int64, "outstanding_bytes": np.int64, "packets": np.int32,
                   "packet_bytes": np.int64, "retransmits": np.int32, "handshake_rtt_ms": np.float64}


def hex16(v: int) -> str:
    return f"{v:016x}"


@dataclass
class SpanTable:
    """Spans in request order (client side first). `trace_root`: the span whose request's traceparent
    gives the trace id, or whose generated id it derives from (`trace_from_header` says which)."""

    request: np.ndarray  # int64 request id
    side: np.ndarray  # int8, index into SIDES
    pid: np.ndarray
    tid: np.ndarray
    start: np.ndarray
    end: np.ndarray
    exact: np.ndarray  # bool
    span: np.ndarray = field(default=None)  # type: ignore[assignment]  # uint64 span ids
    parent: np.ndarray = field(default=None)  # type: ignore[assignment]  # uint64, NO_SPAN for a root
    link: np.ndarray = field(default=None)  # type: ignore[assignment]  # int8, index into LINKS
    trace_root: np.ndarray = field(default=None)  # type: ignore[assignment]  # int64 span row
    trace_from_header: np.ndarray = field(default=None)  # type: ignore[assignment]  # bool
    evidence: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)
    period_ns: int | None = None  # CPU sampling period: cpu_ms = samples x period
    alloc_rate: int = 1  # allocations kept 1 in N
    headers: dict[int, TraceParent] = field(default_factory=dict)  # request id -> its traceparent
    trace_ids: dict[int, str] = field(default_factory=dict)  # span row -> trace id set from elsewhere

    def __len__(self) -> int:
        return len(self.request)

    @classmethod
    def empty(cls) -> SpanTable:
        z = np.zeros(0, np.int64)
        t = cls(z, z.astype(np.int8), z, z, z, z, z.astype(bool))
        t.span, t.parent, t.link = z.astype(np.uint64), z.astype(np.uint64), z.astype(np.int8)
        t.trace_root, t.trace_from_header = z, z.astype(bool)
        return t

    def trace_id(self, row: int, ids: IdMaker) -> str:
        if row in self.trace_ids:
            return self.trace_ids[row]
        root = int(self.trace_root[row])
        if self.trace_from_header[row]:
            return self.headers[int(self.request[root])].trace_id
        return ids.trace_id(hex16(int(self.span[root])))

    def window(self, row: int) -> Window:
        return Window(int(self.pid[row]), int(self.tid[row]), int(self.start[row]), int(self.end[row]),
                      bool(self.exact[row]))

    def evidence_of(self, row: int) -> Evidence:
        ev = Evidence()
        for name, (values, mask) in self.evidence.items():
            if mask is None or mask[row]:
                v = values[row].item()
                setattr(ev, name, v)
        if self.period_ns:
            ev.cpu_ms = (ev.cpu_samples or 0) * self.period_ns / 1e6 if ev.cpu_samples is not None else None
        if self.alloc_rate > 1 and ev.allocs is not None:
            ev.notes.append(f"allocations sampled 1 in {self.alloc_rate}: alloc figures are estimates")
        if self.period_ns:
            _thin_cpu(ev, self.window(row))
        return ev

    def span_of(self, row: int, ids: IdMaker) -> Span:
        parent = int(self.parent[row])
        tp = self.headers.get(int(self.request[row]))
        return Span(hex16(int(self.span[row])), self.trace_id(row, ids), int(self.request[row]),
                    SIDES[int(self.side[row])], self.window(row), hex16(parent) if parent else None,
                    LINKS[int(self.link[row])], tp.header if tp is not None else None, self.evidence_of(row))


def _thin_cpu(ev: Evidence, window: Window) -> None:
    """Say so when the samples are too few to tell where the CPU time went, unless the thread was
    off-CPU for nearly all the window (it barely ran: the off-CPU figures are the finding)."""
    n = ev.cpu_samples or 0
    wall_ms = window.duration_ns / 1e6
    if n >= THIN_SAMPLES:
        return
    if ev.offcpu_ms is not None and ev.offcpu_ms >= BLOCKED_SHARE * wall_ms:
        return
    ev.notes.append(f"thin: {n} CPU sample{'s' if n != 1 else ''} in {wall_ms:.3f} ms, too few to say where "
                    "its CPU time went")

"""The objects of a correlation, as reports and exports read them: per exchange and side a span (ids,
parent, the thread and the window it was served in, the evidence found there), grouped per request.
The correlation holds them as columns (span_table.py) and makes these on demand (result.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from uetrace.analyze.http.exchange import Exchange

CLIENT, SERVER = "client", "server"
# Below this many samples a CPU figure is a guess (one sample more or less is 100% of it): the
# evidence says so instead of drawing conclusions.
THIN_SAMPLES = 5


@dataclass(frozen=True)
class CorrelateParams:
    slowest: int = 10  # requests in the slowest-requests table of the text report
    request_id: int | None = None  # keep only this request (all spans are still linked first)


@dataclass(slots=True)
class Window:
    """Where one end handled an exchange: the thread and the CLOCK_MONOTONIC ns interval. Server side:
    from the first request byte read to the last response byte written; client side: from the first
    request byte written to the last response byte read. `exact`: the end's own syscalls gave both
    bounds; False when the other end's times stand in (that end's syscalls did not show them)."""

    pid: int
    tid: int
    start_ts: int
    end_ts: int
    exact: bool = True

    @property
    def duration_ns(self) -> int:
        return max(self.end_ts - self.start_ts, 0)

    def contains(self, other: Window) -> bool:
        return self.start_ts <= other.start_ts and other.end_ts <= self.end_ts


@dataclass(slots=True)
class Evidence:
    """What the tracers saw on the span's thread inside its window. A figure is None when its tracer
    did not run (not recorded is not zero)."""

    cpu_samples: int | None = None
    cpu_ms: float | None = None  # samples x sampling period
    offcpu_ms: float | None = None  # off-CPU time overlapping the window (--offcpu)
    lock_waits: int | None = None  # blocking lock calls that waited
    lock_wait_ms: float | None = None  # time blocked in them, inside the window
    lock_hold_ms: float | None = None  # time holding locks, inside the window
    allocs: int | None = None
    alloc_bytes: int | None = None  # bytes allocated in the window
    outstanding_bytes: int | None = None  # of those, not freed when recording stopped
    packets: int | None = None  # of the connection, inside the window
    packet_bytes: int | None = None
    retransmits: int | None = None
    handshake_rtt_ms: float | None = None  # SYN to SYN-ACK, when the connection opened for this exchange
    notes: list[str] = field(default_factory=list)  # thin evidence, said rather than guessed


@dataclass(slots=True)
class Span:
    span_id: str  # 16 hex digits
    trace_id: str  # 32 hex digits
    request_id: int
    side: str  # CLIENT or SERVER
    window: Window
    parent_span_id: str | None = None
    link: str = ""  # how the parent was found: "traceparent", "connection", "inside", or "" (a root)
    traceparent: str | None = None  # the header on the request, as recorded
    evidence: Evidence = field(default_factory=Evidence)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(slots=True)
class Request:
    """One exchange and its spans. `request_id` is the exchange's rank in time order among all the
    capture's exchanges: the same id for the same archive, whatever filters a command applies."""

    request_id: int
    exchange: Exchange
    endpoint: str
    client: Span | None = None
    server: Span | None = None

    @property
    def main(self) -> Span | None:
        """The span that speaks for the request in one-row views: the serving side's when captured."""
        return self.server or self.client

    @property
    def spans(self) -> list[Span]:
        return [s for s in (self.client, self.server) if s is not None]

    def row(self) -> dict:
        """The fields `trace requests --json` adds to an exchange's row."""
        s = self.main
        ev = s.evidence if s else Evidence()
        return {"request_id": self.request_id, "trace_id": s.trace_id if s else None,
                "span_id": s.span_id if s else None, "parent_span_id": s.parent_span_id if s else None,
                "cpu_ms": ev.cpu_ms, "offcpu_ms": ev.offcpu_ms, "lock_wait_ms": ev.lock_wait_ms,
                "alloc_bytes": ev.alloc_bytes, "outstanding_bytes": ev.outstanding_bytes,
                "packets": ev.packets, "retransmits": ev.retransmits}

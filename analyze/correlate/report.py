"""The correlation section as text: the slowest requests and where their time went."""

from __future__ import annotations

from uetrace.analyze.correlate.result import CorrelationResult, Request, Span


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def breakdown(span: Span) -> dict[str, float | None]:
    """Where the span's wall time went, in ms: on-CPU (samples), blocked on locks, other off-CPU time
    (I/O, sleeps, waiting on a callee), and what no tracer accounts for."""
    ev = span.evidence
    wall = span.window.duration_ns / 1e6
    cpu, off, lock = ev.cpu_ms, ev.offcpu_ms, ev.lock_wait_ms
    other_off = None if off is None else max(off - (lock or 0.0), 0.0)
    known = sum(v for v in (cpu, lock, other_off) if v is not None)
    return {"wall_ms": wall, "cpu_ms": cpu, "lock_wait_ms": lock, "other_offcpu_ms": other_off,
            "unaccounted_ms": max(wall - known, 0.0)}


def render_text(result: CorrelationResult) -> str:
    from uetrace.analyze.render import text_table
    if not result.requests:
        return "no requests to correlate"
    out = [f"{len(result.requests):,} requests, {result.span_count():,} spans ({result.linked_count():,} with a "
           f"parent) in {result.trace_count():,} traces; evidence recorded: {', '.join(result.recorded) or 'none'}"]
    rows = []
    for r in result.slowest():
        s = r.main
        assert s is not None
        b = breakdown(s)
        rows.append((r.request_id, r.endpoint, _ms(b["wall_ms"]), s.side, _ms(b["cpu_ms"]), _ms(b["lock_wait_ms"]),
                     _ms(b["other_offcpu_ms"]), _ms(b["unaccounted_ms"]), _alloc(r), _thin(r)))
    out.append(text_table("slowest requests: where the time went (ms)",
                          ("id", "endpoint", "wall", "side", "on-CPU", "lock wait", "other off-CPU",
                           "unaccounted", "kept bytes", "note"), rows))
    out.append("`trace request ARCHIVE ID` tells one request's story")
    out.extend(result.notes)
    return "\n".join(out)


def _alloc(r: Request) -> str:
    s = r.main
    v = s.evidence.outstanding_bytes if s else None
    return "-" if v is None else f"{v:,}"


def _thin(r: Request) -> str:
    s = r.main
    return s.evidence.notes[0] if s and s.evidence.notes else ""

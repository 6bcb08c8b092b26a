"""A request's story as text (see story.py)."""

from __future__ import annotations

from uetrace.analyze.correlate.report import breakdown
from uetrace.analyze.correlate.story import SpanStory, Story
from uetrace.analyze.http.report import status_text


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f} ms"


def render_story(story: Story) -> str:
    r = story.request
    e = r.exchange
    status = status_text(e) or "-"
    main = r.main
    latency = "-" if e.latency_ns is None else f"{e.latency_ns / 1e6:.3f} ms"
    out = [f"request {r.request_id}: {r.endpoint} -> {status}, {latency} ({e.protocol}, {e.client} -> {e.server})"]
    if main is not None:
        out.append(f"trace {main.trace_id}")
    if story.parent is not None:
        out.append(f"called from span {story.parent.span_id} (request {story.parent.request_id})")
    elif main is not None and main.parent_span_id and main.link == "traceparent":
        out.append(f"called from span {main.parent_span_id} (its traceparent; the caller was not captured)")
    if not story.spans:
        out.append("no span: neither end's thread was found in the socket records")
    for st in story.spans:
        out.extend(_span(st))
    return "\n".join(out)


def _span(st: SpanStory) -> list[str]:
    s, w, ev = st.span, st.span.window, st.span.evidence
    pad = "  " * (st.depth + 1)
    b = breakdown(s)
    head = (f"{s.side} span {s.span_id}" + (f" (parent {s.parent_span_id}, by {s.link})" if s.parent_span_id else "")
            + f": {st.request.endpoint}, pid {w.pid} ({st.comm or '?'}) thread {w.tid}, {w.duration_ns / 1e6:.3f} ms"
            + ("" if w.exact else " (window approximate)"))
    lines = ["", pad[:-2] + head]
    parts = [f"on-CPU {_ms(ev.cpu_ms)} ({ev.cpu_samples if ev.cpu_samples is not None else '-'} samples)",
             f"off-CPU {_ms(ev.offcpu_ms)}", f"lock wait {_ms(ev.lock_wait_ms)}", f"lock hold {_ms(ev.lock_hold_ms)}"]
    if ev.alloc_bytes is not None:
        parts.append(f"allocated {ev.alloc_bytes:,} B ({ev.outstanding_bytes:,} B never freed)")
    if ev.packets is not None:
        parts.append(f"packets {ev.packets} ({ev.retransmits} retransmitted)")
    if ev.handshake_rtt_ms is not None:
        parts.append(f"handshake RTT {ev.handshake_rtt_ms:.3f} ms")
    lines.append(pad + ", ".join(parts))
    lines.append(pad + f"unaccounted by the tracers: {_ms(b['unaccounted_ms'])}")
    for note in ev.notes:
        lines.append(pad + note)
    if st.events:
        lines.append(pad + "timeline (ms from the window start):")
        for e in st.events:
            dur = "" if e.duration_ns is None else f" [{e.duration_ns / 1e6:.3f}]"
            lines.append(pad + f"  {(e.ts - w.start_ts) / 1e6:+9.3f}{dur} {e.source:6} {e.what}")
        if st.events_dropped:
            lines.append(pad + f"  ... {st.events_dropped} more (see --json)")
    if st.on_cpu:
        lines.append(pad + "on-CPU: " + ", ".join(f"{f['function']} ({f['module']}) {f['samples']} samples "
                                                  f"{f['pct']:.0f}%" for f in st.on_cpu))
    if st.blocked:
        lines.append(pad + "blocked in:")
        for blk in st.blocked:
            lines.append(pad + f"  {blk['ms']:.3f} ms  " + " > ".join(blk["stack"]))
    return lines

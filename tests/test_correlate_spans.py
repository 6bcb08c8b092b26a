"""Trace construction without a kernel: traceparent parsing against the W3C rules, parent links
(connection, containment, header) on hand-built spans, trace ids that follow headers and parents,
termination on forged cycles, stable ids; sample windows and differential flame graphs on the
synthetic stack archive."""

from __future__ import annotations

import random

import pytest
from stack_archive import app, build

from uetrace.analyze.correlate.result import CLIENT, SERVER, Request, Span, Window
from uetrace.analyze.correlate.spans import IdMaker, TraceParent, link, parse_traceparent
from uetrace.analyze.http.exchange import Exchange
from uetrace.analyze.stacks import folded, samples
from uetrace.analyze.stacks.diff import render_diff_folded, render_diff_svg

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
IDS = IdMaker("test archive")


@pytest.mark.parametrize("head, want", [
    (f"GET / HTTP/1.1\r\ntraceparent: 00-{TRACE}-{PARENT}-01\r\n\r\n", (TRACE, PARENT, "01")),
    (f"GET / HTTP/1.1\r\nTraceParent:00-{TRACE.upper()}-{PARENT}-00\r\n\r\n", (TRACE, PARENT, "00")),
    (f"GET / HTTP/1.1\r\nHost: x\r\ntraceparent: \t00-{TRACE}-{PARENT}-01\r\n", (TRACE, PARENT, "01")),
    (f"GET / HTTP/1.1\r\ntraceparent: ff-{TRACE}-{PARENT}-01\r\n\r\n", None),  # version ff is invalid
    (f"GET / HTTP/1.1\r\ntraceparent: 00-{'0' * 32}-{PARENT}-01\r\n\r\n", None),  # all-zero trace id
    (f"GET / HTTP/1.1\r\ntraceparent: 00-{TRACE}-{'0' * 16}-01\r\n\r\n", None),  # all-zero parent id
    (f"GET / HTTP/1.1\r\ntraceparent: 00-{TRACE[:-1]}-{PARENT}-01\r\n\r\n", None),  # short trace id
    (f"GET / HTTP/1.1\r\nx-traceparent: 00-{TRACE}-{PARENT}-01\r\n\r\n", None),  # another header
    (f"GET /?traceparent: 00-{TRACE}-{PARENT}-01 HTTP/1.1\r\n\r\n", None),  # not a header line
    (f"GET / HTTP/1.1\r\ntraceparent: ff-{TRACE}-{PARENT}-01\r\ntraceparent: 00-{TRACE}-{PARENT}-01\r\n",
     (TRACE, PARENT, "01")),  # the first valid one
])
def test_parse_traceparent(head, want):
    got = parse_traceparent(head.encode())
    assert (None if got is None else (got.trace_id, got.parent_id, got.flags)) == want


def _req(i: int, client: tuple | None, server: tuple | None) -> Request:
    """client/server: (pid, tid, start, end) of that side's window."""
    r = Request(i, Exchange("http/1.1", i, "10.0.0.1:1000", "10.0.0.2:80", "GET", f"/{i}"), f"GET /{i}")
    for side, w in ((CLIENT, client), (SERVER, server)):
        if w is not None:
            span = Span(IDS.span_id(i, int(side == SERVER)), "", i, side, Window(*w))
            setattr(r, side, span)
    return r


def test_call_inside_a_request_nests_under_it():
    front = _req(0, None, (1, 10, 0, 100))
    back = _req(1, (1, 10, 10, 90), (2, 20, 20, 80))
    other = _req(2, None, (1, 11, 0, 100))  # another thread of the same process, also containing the call
    link([front, back, other], {}, IDS)
    assert (back.client.parent_span_id, back.client.link) == (front.server.span_id, "inside")
    assert (back.server.parent_span_id, back.server.link) == (back.client.span_id, "connection")
    assert front.server.parent_span_id is None and other.server.parent_span_id is None
    assert front.server.trace_id == back.client.trace_id == back.server.trace_id
    assert other.server.trace_id != front.server.trace_id
    assert len(front.server.trace_id) == 32 and int(front.server.trace_id, 16)


def test_event_loop_thread_picks_the_innermost_request():
    a = _req(0, None, (1, 10, 0, 100))
    b = _req(1, None, (1, 10, 50, 150))  # the same thread serves both at once
    call = _req(2, (1, 10, 60, 70), None)
    outside = _req(3, (1, 10, 140, 160), None)  # not inside any window
    link([a, b, call, outside], {}, IDS)
    assert call.client.parent_span_id == b.server.span_id
    assert outside.client.parent_span_id is None


def test_another_thread_only_when_unambiguous():
    a = _req(0, None, (1, 10, 0, 100))
    handoff = _req(1, (1, 99, 10, 20), None)  # made by a worker thread of the same process
    link([a, handoff], {}, IDS)
    assert handoff.client.parent_span_id == a.server.span_id
    b = _req(2, None, (1, 11, 0, 100))
    handoff2 = _req(3, (1, 99, 10, 20), None)
    link([a, b, handoff2], {}, IDS)
    assert handoff2.client.parent_span_id is None  # two candidates: no guess


def test_headers_name_the_trace_and_the_calling_span():
    front = _req(0, None, (1, 10, 0, 100))
    back = _req(1, (1, 10, 10, 90), (2, 20, 20, 80))
    call_id = "0000000000000003"
    headers = {0: TraceParent(TRACE, PARENT, "01"), 1: TraceParent(TRACE, call_id, "01")}
    link([front, back], headers, IDS)
    assert (front.server.parent_span_id, front.server.link) == (PARENT, "traceparent")
    assert back.client.span_id == call_id and back.server.parent_span_id == call_id
    assert {s.trace_id for s in (front.server, back.client, back.server)} == {TRACE}
    assert back.server.traceparent == f"00-{TRACE}-{call_id}-01"


def test_header_trace_id_wins_over_the_parents():
    front = _req(0, None, (1, 10, 0, 100))
    back = _req(1, (1, 10, 10, 90), (2, 20, 20, 80))
    other = "1" * 32
    link([front, back], {0: TraceParent(TRACE, PARENT, "01"), 1: TraceParent(other, "2" * 16, "01")}, IDS)
    assert front.server.trace_id == TRACE
    assert back.client.trace_id == back.server.trace_id == other
    assert back.client.parent_span_id == front.server.span_id  # still nested where it ran


def test_a_header_reusing_a_span_id_does_not_steal_it():
    front = _req(0, None, (1, 10, 0, 100))
    back = _req(1, (1, 10, 10, 90), (2, 20, 20, 80))
    # The front end forwarded its own server span's id instead of naming its call.
    link([front, back], {1: TraceParent(TRACE, front.server.span_id, "01")}, IDS)
    ids = [s.span_id for s in (front.server, back.client, back.server)]
    assert len(set(ids)) == 3
    assert back.server.parent_span_id == back.client.span_id


def test_forged_cycles_terminate():
    # Two requests served on one thread in the same window, each making a call inside the other's:
    # the links form a cycle (nothing real does this, but payloads are data, not trusted).
    r1 = _req(0, (1, 10, 10, 20), (1, 10, 0, 100))
    r2 = _req(1, (1, 10, 30, 40), (1, 10, 0, 100))
    link([r1, r2], {}, IDS)
    spans = [r1.client, r1.server, r2.client, r2.server]
    assert all(len(s.trace_id) == 32 for s in spans)
    assert len({s.trace_id for s in spans}) == 1


def test_random_nesting_follows_windows():
    """Random servers and calls on a few threads: every linked call lies inside its parent's window on
    the same thread, and no unlinked call lies inside any same-thread window."""
    rnd = random.Random(12)
    for _ in range(50):
        reqs = []
        for i in range(rnd.randint(1, 12)):
            tid = rnd.randint(1, 3)
            a = rnd.randint(0, 1000)
            w = (1, tid, a, a + rnd.randint(0, 300))
            reqs.append(_req(i, w if rnd.random() < 0.5 else None, w if rnd.random() >= 0.5 else None))
        reqs = [r for r in reqs if r.spans]
        link(reqs, {}, IDS)
        servers = {r.server.span_id: r.server for r in reqs if r.server}
        for r in reqs:
            c = r.client
            if c is None:
                continue
            if c.parent_span_id is not None:
                p = servers[c.parent_span_id]
                assert p.window.contains(c.window) and p.request_id != c.request_id
            else:
                assert not any(s.window.contains(c.window) and s.window.tid == c.window.tid
                               and s.request_id != c.request_id for s in servers.values())


def test_ids_are_stable_and_per_archive():
    a, b = IdMaker("a"), IdMaker("b")
    assert a.span_id(1, 0) == IdMaker("a").span_id(1, 0)
    assert a.span_id(1, 0) != b.span_id(1, 0)
    spans = {a.span_id(i, side) for i in range(20000) for side in (0, 1)}
    assert len(spans) == 40000 and all(len(x) == 16 and x != "0" * 16 for x in spans)
    traces = {a.trace_id(x) for x in spans}
    assert len(traces) == 40000 and all(len(x) == 32 for x in traces)
    assert a.trace_id("00f067aa0ba902b7") != b.trace_id("00f067aa0ba902b7")


# -- samples inside windows, differential flame graphs (synthetic stack archive) ----------------------
STACKS = {1: [app(0x401310), app(0x401210), app(0x401110)],   # spin_a <- caller_a <- main
          2: [app(0x401410), app(0x401110)]}                  # ns::Worker<int>::spin <- main


def _cap(tmp_path):
    rows = [{"pid": 100, "tid": 101, "ustack_id": 1, "t": t} for t in range(0, 100, 10)]
    rows += [{"pid": 100, "tid": 102, "ustack_id": 2, "t": t} for t in range(0, 100, 10)]
    return build(tmp_path / "cap", rows, STACKS)


def test_windows_select_thread_and_time(tmp_path):
    from stack_archive import START_NS as S
    cap = _cap(tmp_path)
    one = samples.load(cap, samples.SampleFilter(windows=((101, S + 20, S + 50),)))
    assert one.total == 4 and all("spin_a" in one.names(i) for i in range(len(one.stacks)))
    # Overlapping windows of one thread count each sample once; windows of two threads add up.
    both = samples.load(cap, samples.SampleFilter(windows=((101, S, S + 50), (101, S + 30, S + 90),
                                                           (102, S, S))))
    assert both.total == 10 + 1
    assert samples.load(cap, samples.SampleFilter(windows=((999, S, S + 100),))).total == 0


def test_differential_outputs(tmp_path):
    from stack_archive import START_NS as S
    cap = _cap(tmp_path)
    after = samples.load(cap, samples.SampleFilter(windows=((101, S, S + 100), (102, S, S + 20))))
    before = samples.load(cap, samples.SampleFilter(windows=((102, S, S + 100),)))
    rows = {tuple(line.rsplit(" ", 2)[0].split(";")): tuple(map(int, line.rsplit(" ", 2)[1:]))
            for line in render_diff_folded(after, before).splitlines()}
    assert sum(b for b, _ in rows.values()) == before.total and sum(a for _, a in rows.values()) == after.total
    assert set(rows) == set(folded.fold(after)) | set(folded.fold(before))
    svg = render_diff_svg(after, before, "diff")
    # spin_a is new (all red), the worker lost share (blue): 10 of 10 before, 3 of 13 after.
    spin = svg[svg.index('data-n="spin_a"'):]
    assert 'fill="rgb(255,55,55)"' in spin[:spin.index("</g>")]
    worker = svg[svg.index('data-n="ns::Worker&lt;int&gt;::spin()"'):]
    assert 'fill="rgb(55,55,255)"' in worker[:worker.index("</g>")]

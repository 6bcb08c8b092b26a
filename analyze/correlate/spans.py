"""Span ids and trace construction: W3C `traceparent` parsing, generated ids, and the parent links.

Links, strongest first:
  traceparent  the request carried one: its trace id is the span's, its parent id is the calling
               span's id (the client span's own id when that client was captured)
  connection   both ends of the connection were captured: the server span is the client span's child
  inside       a client span made by a thread while it served a request (its window inside that
               server span's window): the outgoing call is that request's child
Spans without a header take their parent's trace id; a root without one gets a generated id. Generated
ids are hashes of the archive's identity and the exchange's place in it: the same for the same archive.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from uetrace.analyze.correlate.result import Request, Span

# version-traceid-parentid-flags; version ff is invalid, all-zero ids are invalid (W3C trace context §3.2)
_TRACEPARENT = re.compile(rb"(?im)^traceparent[ \t]*:[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str
    parent_id: str
    flags: str

    @property
    def header(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"


def parse_traceparent(head: bytes) -> TraceParent | None:
    """The first valid traceparent header line in a request's bytes (header names are
    case-insensitive; values are lowercase hex by the spec, upper case is tolerated)."""
    for m in _TRACEPARENT.finditer(head):
        version, trace, parent, flags = (g.decode().lower() for g in m.groups())
        if version == "ff" or set(trace) == {"0"} or set(parent) == {"0"}:
            continue
        return TraceParent(trace, parent, flags)
    return None


_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finalizer: a bijection of 64-bit integers that scatters nearby inputs."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    return x ^ (x >> 31)


class IdMaker:
    """Stable ids from the archive's identity (its clock anchors and host) and a span's key: a keyed
    64-bit mix, a few hundred ns per id (a cryptographic hash per span cost 7 us, a third of the
    correlation's time at 100 000 requests). Ids identify, they do not authenticate."""

    def __init__(self, archive_key: str):
        digest = hashlib.blake2b(archive_key.encode(), digest_size=24, person=b"uetrace-span").digest()
        self._seeds = [int.from_bytes(digest[i:i + 8], "little") for i in (0, 8, 16)]

    def span_id(self, request_id: int, side: int) -> str:
        """side: 0 client, 1 server."""
        v = _mix((self._seeds[0] + 2 * request_id + side) & _MASK) or 1
        return f"{v:016x}"

    def trace_id(self, root_span_id: str) -> str:
        x = int(root_span_id, 16)
        hi = _mix(self._seeds[1] ^ x)
        lo = _mix((self._seeds[2] ^ x) + 0x9E3779B97F4A7C15 & _MASK) or 1
        return f"{hi:016x}{lo:016x}"


def link(requests: list[Request], headers: dict[int, TraceParent], ids: IdMaker) -> None:
    """Set parent_span_id, link and trace_id of every span. headers: request_id -> its traceparent."""
    taken = {s.span_id for r in requests for s in r.spans}
    for r in requests:
        tp = headers.get(r.request_id)
        if tp is None:
            continue
        for s in r.spans:
            s.traceparent = tp.header
        # The header names the calling span: when that call was captured, it is the client span.
        if r.client is not None and tp.parent_id not in taken:
            taken.discard(r.client.span_id)
            r.client.span_id = tp.parent_id
            taken.add(tp.parent_id)
    for r in requests:
        tp = headers.get(r.request_id)
        if r.server is not None:
            if r.client is not None:
                r.server.parent_span_id, r.server.link = r.client.span_id, "connection"
            elif tp is not None:
                r.server.parent_span_id, r.server.link = tp.parent_id, "traceparent"
    _link_outgoing(requests)
    _trace_ids(requests, headers, ids)


def _link_outgoing(requests: list[Request]) -> None:
    """A client span whose window lies inside a server span of the same thread (else of the same
    process, when only one serving window there contains it) is that request's child; the innermost
    window wins (an event loop's thread serves several requests at once)."""
    servers: dict[int, list[Span]] = {}
    for r in requests:
        if r.server is not None:
            servers.setdefault(r.server.window.pid, []).append(r.server)
    for r in requests:
        c = r.client
        if c is None:
            continue
        around = [s for s in servers.get(c.window.pid, ()) if s.request_id != r.request_id
                  and s.window.contains(c.window)]
        same_thread = [s for s in around if s.window.tid == c.window.tid]
        pick = same_thread or (around if len(around) == 1 else [])
        if pick:
            parent = max(pick, key=lambda s: (s.window.start_ts, -s.window.end_ts))
            c.parent_span_id, c.link = parent.span_id, "inside"


def _trace_ids(requests: list[Request], headers: dict[int, TraceParent], ids: IdMaker) -> None:
    by_id = {s.span_id: s for r in requests for s in r.spans}
    done: dict[int, str] = {}  # id(span) -> trace id

    def resolve(s: Span) -> str:
        chain: list[Span] = []
        cur: Span | None = s
        trace = None
        while cur is not None and id(cur) not in done:
            tp = headers.get(cur.request_id)
            if tp is not None:
                trace = tp.trace_id
                break
            chain.append(cur)
            if len(chain) > len(by_id):  # a cycle (ids forged in payloads): stop at the root found
                break
            parent = by_id.get(cur.parent_span_id) if cur.parent_span_id else None
            cur = parent if parent is not cur else None
        if trace is None:
            if cur is not None and id(cur) in done:
                trace = done[id(cur)]
            else:
                root = chain[-1]
                trace = ids.trace_id(root.span_id)
        else:
            done[id(cur)] = trace
        for x in chain:
            done[id(x)] = trace
        return done.get(id(s), trace)

    for r in requests:
        for s in r.spans:
            s.trace_id = resolve(s)


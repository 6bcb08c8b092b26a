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
from typing import TYPE_CHECKING

import numpy as np

from uetrace.analyze.correlate.span_table import LINKS, SIDES, SpanTable, hex16
from uetrace.analyze.distinct import sorted_unique

if TYPE_CHECKING:
    from uetrace.analyze.correlate.objects import Request

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
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: int) -> int:
    """splitmix64's finalizer: a bijection of 64-bit integers that scatters nearby inputs."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    return x ^ (x >> 31)


def _mix_np(x: np.ndarray) -> np.ndarray:
    """_mix of every uint64 (numpy's uint64 products wrap modulo 2**64, as the mask does)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class IdMaker:
    """Stable ids from the archive's identity (its clock anchors and host) and a span's key: a keyed
    64-bit mix (a cryptographic hash per span cost 7 us, a third of the correlation's time at 100 000
    requests), computed for every span at once. Ids identify, they do not authenticate."""

    def __init__(self, archive_key: str):
        digest = hashlib.blake2b(archive_key.encode(), digest_size=24, person=b"uetrace-span").digest()
        self._seeds = [int.from_bytes(digest[i:i + 8], "little") for i in (0, 8, 16)]

    def span_id(self, request_id: int, side: int) -> str:
        """side: 0 client, 1 server."""
        return f"{int(self.span_ids(np.array([request_id]), np.array([side]))[0]):016x}"

    def span_ids(self, request_id: np.ndarray, side: np.ndarray) -> np.ndarray:
        """span_id of each (request, side), as uint64."""
        with np.errstate(over="ignore"):
            v = _mix_np(np.uint64(self._seeds[0]) + np.uint64(2) * request_id.astype(np.uint64)
                        + side.astype(np.uint64))
        return np.where(v == 0, np.uint64(1), v)

    def trace_id(self, root_span_id: str) -> str:
        x = int(root_span_id, 16)
        hi = _mix(self._seeds[1] ^ x)
        lo = _mix((self._seeds[2] ^ x) + _GOLDEN & _MASK) or 1
        return f"{hi:016x}{lo:016x}"

    def trace_words(self, root_span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """trace_id of each root span id (uint64) as its two 64-bit halves, for all at once (the same
        arithmetic modulo 2**64, in uint64)."""
        with np.errstate(over="ignore"):
            hi = _mix_np(np.uint64(self._seeds[1]) ^ root_span)
            lo = _mix_np((np.uint64(self._seeds[2]) ^ root_span) + np.uint64(_GOLDEN))
        return hi, np.where(lo == 0, np.uint64(1), lo)


def link_table(t: SpanTable, ids: IdMaker) -> None:
    """Set the parent, link and trace root of every span of t (its ids and t.headers given); a
    traceparent's parent id replaces the client span's own id when no other span has it. Span ids are
    unique (generated ones are a bijection of (request, side); a header's is adopted only when free),
    so a parent id names one span."""
    n_req = int(t.request.max()) + 1 if len(t) else 0
    client = np.full(n_req, -1, np.int32)
    server = np.full(n_req, -1, np.int32)
    rows = np.arange(len(t), dtype=np.int32)
    client[t.request[t.side == 0]] = rows[t.side == 0]
    server[t.request[t.side == 1]] = rows[t.side == 1]
    del rows
    if t.headers:
        _adopt_header_ids(t, client)
    t.parent = np.zeros(len(t), np.uint64)
    t.link = np.zeros(len(t), np.int8)
    parent_row = np.full(len(t), -1, np.int32)
    # The server span is the child of the client span (connection), else of the header's parent.
    both = (client >= 0) & (server >= 0)
    t.parent[server[both]] = t.span[client[both]]
    t.link[server[both]] = LINKS.index("connection")
    parent_row[server[both]] = client[both]
    del both, client
    by_header = []
    for rid, tp in t.headers.items():
        if server[rid] >= 0 and t.link[server[rid]] == 0:
            t.parent[server[rid]], t.link[server[rid]] = np.uint64(int(tp.parent_id, 16)), LINKS.index("traceparent")
            by_header.append(server[rid])
    if by_header:  # the caller may be a span of this capture
        at = np.array(by_header, np.int64)
        order = np.argsort(t.span)
        pos = np.minimum(np.searchsorted(t.span, t.parent[at], sorter=order), len(t) - 1)
        parent_row[at] = np.where(t.span[order[pos]] == t.parent[at], order[pos], -1)
    _link_outgoing(t, parent_row)
    _trace_roots(t, parent_row)


def _adopt_header_ids(t: SpanTable, client: np.ndarray) -> None:
    """The header names the calling span: when that call was captured, it is the client span."""
    taken = set(t.span.tolist())
    for rid in sorted(t.headers):
        c = client[rid] if rid < len(client) else -1
        parent = int(t.headers[rid].parent_id, 16)
        if c >= 0 and parent not in taken:
            taken.discard(int(t.span[c]))
            t.span[c] = np.uint64(parent)
            taken.add(parent)


def _link_outgoing(t: SpanTable, parent_row: np.ndarray) -> None:
    """A client span whose window lies inside a server span of the same thread (else of the same
    process, when only one serving window there contains it) is that request's child; the innermost
    window wins (an event loop's thread serves several requests at once)."""
    servers = np.flatnonzero(t.side == 1)
    clients = np.flatnonzero(t.side == 0)
    shared = np.intersect1d(t.pid[servers], t.pid[clients])
    if not shared.size:
        return
    for pid in shared.tolist():
        ss = servers[t.pid[servers] == pid]
        ss = ss[np.argsort(t.start[ss], kind="stable")]
        s_start, s_end = t.start[ss], t.end[ss]
        for c in clients[t.pid[clients] == pid].tolist():
            cand = ss[:np.searchsorted(s_start, t.start[c], side="right")]
            around = cand[(s_end[:len(cand)] >= t.end[c]) & (t.request[cand] != t.request[c])]
            same_thread = around[t.tid[around] == t.tid[c]]
            pick = same_thread if same_thread.size else (around if around.size == 1 else around[:0])
            if pick.size:
                # the innermost: latest start, then earliest end, first in request order on ties
                best = pick[np.lexsort((pick, t.end[pick], -t.start[pick]))[0]]
                t.parent[c], t.link[c], parent_row[c] = t.span[best], LINKS.index("inside"), best


def _trace_roots(t: SpanTable, parent_row: np.ndarray) -> None:
    """Each span's trace comes from the first span up its parent chain whose request carried a
    traceparent (that header's trace id), else from the chain's root (an id generated from its span
    id). A chain that loops (ids forged in payloads) stops where it would meet itself."""
    n = len(t)
    header = np.zeros(n, bool)
    if t.headers:
        header = np.isin(t.request, np.fromiter(t.headers, np.int64, len(t.headers)))
    me = np.arange(n, dtype=np.int32)
    stop = header | (parent_row < 0) | (parent_row == me)
    up = np.where(stop, me, parent_row)
    del me
    for _ in range(64):  # pointer jumping: chains halve each round
        if stop[up].all():
            break
        nxt = up[up]
        if np.array_equal(nxt, up):
            break
        up = nxt
    if not stop[up].all():  # a loop
        up = _roots_by_walking(header, parent_row, len(sorted_unique(t.span)))
    t.trace_root, t.trace_from_header = up, header[up]


def _roots_by_walking(header: np.ndarray, parent_row: np.ndarray, distinct_ids: int) -> np.ndarray:
    """The trace roots one span at a time, when chains loop: a walk stops at a header, at a span
    resolved before, at a root, or after more steps than there are span ids (a forged loop: the span it
    stopped on is its root)."""
    done: dict[int, int] = {}
    for s in range(len(parent_row)):
        chain: list[int] = []
        cur: int | None = s
        res = None
        while cur is not None and cur not in done:
            if header[cur]:
                res = done[cur] = cur
                break
            chain.append(cur)
            if len(chain) > distinct_ids:
                break
            p = int(parent_row[cur])
            cur = p if p >= 0 and p != cur else None
        if res is None:
            res = done[cur] if cur is not None and cur in done else chain[-1]
        for x in chain:
            done[x] = res
    return np.array([done[s] for s in range(len(parent_row))], np.int64)


def link(requests: list[Request], headers: dict[int, TraceParent], ids: IdMaker) -> None:
    """link_table on Request objects (hand-built spans): sets their span, parent and trace ids."""
    spans = [s for r in requests for s in r.spans]
    t = SpanTable(np.array([s.request_id for s in spans], np.int64), np.array([SIDES.index(s.side) for s in spans],
                                                                              np.int8),
                  np.array([s.window.pid for s in spans], np.int64), np.array([s.window.tid for s in spans], np.int64),
                  np.array([s.window.start_ts for s in spans], np.int64),
                  np.array([s.window.end_ts for s in spans], np.int64), np.ones(len(spans), bool))
    t.span = np.array([int(s.span_id, 16) for s in spans], np.uint64)
    t.headers = {r.request_id: headers[r.request_id] for r in requests if r.request_id in headers}
    link_table(t, ids)
    for row, s in enumerate(spans):
        s.span_id = hex16(int(t.span[row]))
        parent = int(t.parent[row])
        s.parent_span_id, s.link = (hex16(parent) if parent else None), LINKS[int(t.link[row])]
        tp = t.headers.get(s.request_id)
        s.traceparent = tp.header if tp is not None else None
        s.trace_id = t.trace_id(row, ids)

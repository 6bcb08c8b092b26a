"""Exchanges recorded at both ends by captures of different hosts: pairing, clock alignment, and one
trace per request across hosts.

Pairing: a client end seen by one capture (the client's span, no server span) and a server end seen by
another are the same exchange when they share the connection as both sides see it (client addr:port,
server addr:port; the HTTP/2 stream too) and the same place in it. Either capture may have missed the
first or last exchanges of a connection (it started later, stopped sooner), so the two sequences are
lined up at the shift where most exchanges agree (method, path, status, sizes), ties going to the one
whose time differences vary least; only agreeing exchanges are paired. Addresses are compared as each
side recorded them: through NAT the tuples differ and nothing pairs (said by the pair count).

The pairs give the clock offsets (clock_sync); then the server span of each pair becomes the child of
the client span (unless a traceparent already links them) and every span takes its root's trace id, so
a trace crosses hosts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from uetrace.analyze import correlate
from uetrace.analyze.capture_set import Capture
from uetrace.analyze.clock_sync import ClockOffset, Sample, solve
from uetrace.analyze.correlate.result import SERVER, CorrelationResult, Request, Span

MAX_SHIFT = 64  # exchanges one capture may have seen on a connection before the other started


@dataclass(frozen=True, slots=True)
class End:
    capture: int  # index into the set's captures
    request: Request


@dataclass(frozen=True, slots=True)
class Pair:
    client: End
    server: End


@dataclass
class CrossHost:
    """The captures' correlations linked across hosts; times aligned on the first capture's clock."""

    captures: list[Capture]
    results: list[CorrelationResult]
    pairs: list[Pair] = field(default_factory=list)
    clocks: list[ClockOffset] = field(default_factory=list)
    peers: dict[tuple[int, int], End] = field(default_factory=dict)  # (capture, request_id) -> the other end

    def aligned_ns(self, capture: int, ts: int | None) -> int | None:
        """A CLOCK_MONOTONIC ts of a capture as wall time on the reference capture's clock."""
        if ts is None:
            return None
        return ts + self.captures[capture].wall_offset_ns - self.clocks[capture].offset_ns

    def peer(self, capture: int, request: Request) -> End | None:
        return self.peers.get((capture, request.request_id))

    def row(self, capture: int, request: Request) -> dict:
        """What `trace requests --json` adds to a row when several captures are read."""
        c, clock, e = self.captures[capture], self.clocks[capture], request.exchange
        p = self.peer(capture, request)
        return {"capture_id": c.capture_id, "host": c.host,
                "peer_capture_id": self.captures[p.capture].capture_id if p else None,
                "peer_request_id": p.request.request_id if p else None,
                "wall_start_ns": self.aligned_ns(capture, e.start_ts),
                "wall_end_ns": self.aligned_ns(capture, e.end_ts),
                "clock_offset_ns": clock.offset_ns, "clock_uncertainty_ns": clock.uncertainty_ns}

    def clocks_json(self) -> list[dict]:
        return [{"capture_id": c.capture_id, "host": c.host,
                 "reference": i == 0, **self.clocks[i].to_dict(),
                 "against": self.captures[self.clocks[i].via].capture_id if self.clocks[i].via is not None else None}
                for i, c in enumerate(self.captures)]


    def clock_notes(self) -> list[str]:
        """One line per capture other than the reference: its offset, how sure, from how many pairs."""
        ref = self.captures[0].label if self.captures else ""
        out = []
        for i, c in enumerate(self.captures[1:], 1):
            k = self.clocks[i]
            if not k.aligned:
                out.append(f"clock of {c.label}: not aligned (no exchange paired with the other captures); "
                           "its times are its own wall clock")
                continue
            via = f" with {self.captures[k.via].label}" if k.via else ""
            out.append(f"clock of {c.label}: {k.offset_ns / 1e6:+.3f} ms ± {k.uncertainty_ns / 1e6:.3f} ms "
                       f"against {ref} ({k.pairs} paired exchanges{via}); times aligned on {ref}")
        return out

    def to_json(self) -> dict:
        """The captures section of `trace analyze --json`."""
        captures = []
        for i, c in enumerate(self.captures):
            window = c.window_wall_ns()  # on the capture's own host clock (clocks says how far it is off)
            captures.append({"capture_id": c.capture_id, "host": c.host, "archives": [str(p) for p in c.paths],
                             "start_wall_ns": window[0] if window else None,
                             "stop_wall_ns": window[1] if window else None,
                             "exchanges": len(self.results[i].requests)})
        return {"captures": captures, "clocks": self.clocks_json(), "cross_host_pairs": len(self.pairs)}


    def to_text(self) -> str:
        """The captures section of `trace analyze`: each capture, its window, the clocks, the pairs."""
        from uetrace.analyze.text import printable
        lines = []
        for i, c in enumerate(self.captures):
            window = c.window_wall_ns()
            span = f"{(window[1] - window[0]) / 1e9:.2f} s" if window else "window unknown"
            parts = f", {len(c.paths)} archives" if len(c.paths) > 1 else ""
            lines.append(f"{printable(c.label)}: {span}{parts}, {len(self.results[i].requests)} exchanges"
                         + (" (reference clock)" if i == 0 else ""))
        lines += [printable(n) for n in self.clock_notes()]
        lines.append(f"{len(self.pairs)} exchanges paired across hosts")
        return "\n".join(lines)


def _norm(addr: str) -> str:
    return addr[7:] if addr.startswith("::ffff:") and "." in addr else addr


def _key(r: Request) -> tuple:
    e = r.exchange
    return _norm(e.client), _norm(e.server), e.stream_id or 0


def _signature(r: Request) -> tuple:
    e = r.exchange
    return e.method, e.path, e.status, e.req_bytes, e.resp_bytes


def _start(r: Request, side: Span | None) -> int:
    return side.window.start_ts if side is not None else 0


def _line_up(clients: list[Request], servers: list[Request]) -> list[tuple[Request, Request]]:
    """The exchanges of one connection as each end saw it, in order, paired at the best shift."""
    cs, ss = [_signature(r) for r in clients], [_signature(r) for r in servers]
    best: tuple | None = None
    for shift in range(-min(len(clients) - 1, MAX_SHIFT), min(len(servers) - 1, MAX_SHIFT) + 1):
        idx = [(i, i + shift) for i in range(len(clients)) if 0 <= i + shift < len(servers)
               and cs[i] == ss[i + shift]]
        if not idx:
            continue
        diffs = [_start(servers[j], servers[j].server) - _start(clients[i], clients[i].client) for i, j in idx]
        score = (len(idx), -(max(diffs) - min(diffs)), -abs(shift))
        if best is None or score > best[0]:
            best = (score, idx)
        if shift == 0 and len(idx) == len(clients) == len(servers):
            break  # everything agrees in place: the common case
    return [(clients[i], servers[j]) for i, j in best[1]] if best else []


def pair(results: Sequence[CorrelationResult]) -> list[Pair]:
    """Client ends of one capture with server ends of another, connection by connection."""
    clients: dict[tuple, dict[int, list[Request]]] = {}
    servers: dict[tuple, dict[int, list[Request]]] = {}
    for ci, res in enumerate(results):
        for r in res.requests:
            if r.client is not None and r.server is None:
                clients.setdefault(_key(r), {}).setdefault(ci, []).append(r)
            elif r.server is not None and r.client is None:
                servers.setdefault(_key(r), {}).setdefault(ci, []).append(r)
    pairs: list[Pair] = []
    taken: set[tuple[int, int]] = set()
    for key, by_capture in clients.items():
        for sci, srs in servers.get(key, {}).items():
            for cci, crs in by_capture.items():
                if cci == sci:
                    continue
                crs.sort(key=lambda r: r.client.window.start_ts)  # type: ignore[union-attr]
                srs.sort(key=lambda r: r.server.window.start_ts)  # type: ignore[union-attr]
                for c, s in _line_up(crs, srs):
                    if (cci, c.request_id) in taken or (sci, s.request_id) in taken:
                        continue
                    taken.update({(cci, c.request_id), (sci, s.request_id)})
                    pairs.append(Pair(End(cci, c), End(sci, s)))
    return pairs


def link(captures: Sequence[Capture], results: Sequence[CorrelationResult]) -> CrossHost:
    """Pair, estimate the clocks, and re-link the spans of `results` (changed in place)."""
    xh = CrossHost(list(captures), list(results))
    xh.pairs = pair(results)
    samples: dict[tuple[int, int], list[Sample]] = {}
    for p in xh.pairs:
        c, s = p.client.request.client, p.server.request.server
        assert c is not None and s is not None
        wc, ws = captures[p.client.capture].wall_offset_ns, captures[p.server.capture].wall_offset_ns
        samples.setdefault((p.client.capture, p.server.capture), []).append(
            Sample.of(c.window.start_ts + wc, s.window.start_ts + ws, s.window.end_ts + ws, c.window.end_ts + wc))
        xh.peers[(p.client.capture, p.client.request.request_id)] = p.server
        xh.peers[(p.server.capture, p.server.request.request_id)] = p.client
    xh.clocks = solve(len(captures), samples)
    for p in xh.pairs:
        c, s = p.client.request.client, p.server.request.server
        assert c is not None and s is not None
        if s.link == "traceparent":
            continue  # the header names the caller: already linked (or deliberately elsewhere)
        results[p.server.capture].set_parent(p.server.request.request_id, SERVER, c.span_id, "connection")
    _retrace(results)
    return xh


def _retrace(results: Sequence[CorrelationResult]) -> None:
    """Every span takes the trace id of its root among all captures' spans (a root's own id stands:
    its capture gave it from a traceparent or generated it)."""
    spans = [(res, row, s) for res in results for row, s in zip(range(res.span_count()), res.spans)]
    by_id = {s.span_id: k for k, (_, _, s) in enumerate(spans)}
    roots: list[str] = []
    for k in range(len(spans)):
        cur, seen = k, 0
        while spans[cur][2].parent_span_id and spans[cur][2].parent_span_id in by_id and seen <= len(spans):
            nxt = by_id[spans[cur][2].parent_span_id]
            if nxt == cur:
                break
            cur, seen = nxt, seen + 1
        roots.append(spans[cur][2].trace_id)
    for (res, row, _), trace in zip(spans, roots):
        res.table.trace_ids[row] = trace


def cross_host(captures: Sequence[Capture]) -> CrossHost:
    """The correlation of every capture (those without socket records contribute none), linked."""
    results = [correlate.correlate(c.db) if correlate.applies(c.db) else CorrelationResult(correlate.CorrelateParams())
               for c in captures]
    return link(captures, results)

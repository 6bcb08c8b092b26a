"""HTTP/1.x connections: requests paired with responses, in order, up to a protocol switch.

Messages are located by http1_messages.py (framing as RFC 9112 reads it, anomalies recorded); this
module walks a connection's two streams message by message, resyncs at the next syscall that starts
like a message when the framing was lost to a gap, and pairs each response with its request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from uetrace.analyze.http import anomalies as A
from uetrace.analyze.http.connection import View
from uetrace.analyze.http.exchange import Exchange
from uetrace.analyze.http.http1_messages import REQUEST_LINE, STATUS_LINE, Message, parse_message, skip_empty_lines
from uetrace.analyze.http.streams import Stream

__all__ = ["Exchange", "Message", "Switch", "looks_like_requests", "looks_like_responses", "parse_exchanges",
           "parse_message", "parse_requests"]
_RESYNC_ROWS = 4096  # syscall boundaries tried before giving up on a stream


@dataclass(slots=True)
class Switch:
    """Where a connection stopped speaking HTTP/1 (101 Switching Protocols or a CONNECT tunnel)."""

    protocol: str  # the Upgrade token ("websocket", "h2c") or "tunnel"
    request_end: int  # offset in the request stream where the new protocol begins
    response_end: int  # same in the response stream
    exchange: Exchange


def looks_like_requests(stream: Stream, rows: int = 4) -> bool:
    """Whether one of the stream's first syscalls starts with an HTTP/1 request line."""
    return _first_match(stream, REQUEST_LINE, rows)


def looks_like_responses(stream: Stream, rows: int = 4) -> bool:
    return _first_match(stream, STATUS_LINE, rows)


def _first_match(stream: Stream, line: re.Pattern[bytes], rows: int) -> bool:
    for n, pos in enumerate(stream.row_starts(0)):
        if n >= rows:
            break
        hit = stream.chunk_at(pos)
        if hit is not None:
            data, base = hit
            i = pos - base
            if data[i] == 13 or data[i] == 10:
                i = skip_empty_lines(data, i)
            if line.match(data, i):
                return True
    return False


def _starts_line(stream: Stream, pos: int, line: re.Pattern[bytes]) -> bool:
    hit = stream.chunk_at(pos)
    if hit is None:
        return False
    data, base = hit
    return line.match(data, skip_empty_lines(data, pos - base)) is not None


def _resync(stream: Stream, pos: int, request: bool) -> int | None:
    """The next syscall boundary at or after pos where a message seems to start."""
    line = REQUEST_LINE if request else STATUS_LINE
    for n, p in enumerate(stream.row_starts(pos)):
        if n >= _RESYNC_ROWS:
            return None
        if _starts_line(stream, p, line):
            return p
    return None


def _only_empty_lines(stream: Stream, pos: int) -> bool:
    """Whether the stream holds nothing but CRLFs from pos to its end (left after the last body)."""
    hit = stream.chunk_at(pos)
    if hit is None:
        return False
    data, base = hit
    return base + skip_empty_lines(data, pos - base) >= stream.length


def parse_requests(stream: Stream) -> list[Message]:
    """All requests in a client-to-server stream, in order, up to a CONNECT (tunnel data follows it,
    unless the server declines: see parse_exchanges)."""
    return _parse_requests(stream, 0)[0]


def _parse_requests(stream: Stream, pos: int) -> tuple[list[Message], bool]:
    """Requests from pos, and whether the walk went from message to message without resyncing (then
    no request can be missing after the first one seen). Stops after a CONNECT request."""
    out: list[Message] = []
    append = out.append
    clean = True
    length = stream.length
    while pos < length:
        msg = parse_message(stream, pos, True)
        if msg is not None and msg.complete:
            append(msg)
            if msg.method == "CONNECT":
                break
            pos = msg.end
            continue
        if msg is None and _only_empty_lines(stream, pos):
            break
        clean = False
        if msg is not None:
            out.append(msg)
        nxt = _resync(stream, max(msg.end, pos + 1) if msg is not None else pos + 1, True)
        if nxt is None:
            break
        pos = nxt
    return out, clean


def parse_exchanges(view: View, conn_id: int, tls: bool = False) -> tuple[list[Exchange], Switch | None]:
    """Pair the connection's requests and responses in order. A response that started before the next
    unanswered request answers a request sent before the capture began; it is reported unpaired.
    Stops at a protocol switch (101, CONNECT tunnel) and says where the new protocol begins. A CONNECT
    the server declines lets the requests after it be read; one with no answer captured is taken as
    a tunnel (its exchange carries the `tunnel` anomaly when bytes follow it)."""
    req_s, resp_s = view.requests, view.responses
    note = ""
    try:
        reqs, clean = _parse_requests(req_s, 0)
    except Exception as e:  # a parser bug must not lose the capture's other connections
        reqs, clean, note = [], False, f"unparsed: {type(e).__name__}"
    req_ts = req_s.seen_ts_many([r.start for r in reqs]) if reqs else []
    pairs: list[tuple[Message | None, Message | None]] = []
    switch: tuple[str, Message, Message] | None = None
    i = 0
    pos = 0
    interim: tuple[str, ...] = ()
    while pos < resp_s.length:
        req = reqs[i] if i < len(reqs) else None
        try:
            msg = parse_message(resp_s, pos, False, req.method if req else "")
        except Exception as e:
            msg, note = None, f"unparsed: {type(e).__name__}"
        if msg is None:
            if _only_empty_lines(resp_s, pos):
                break
            nxt = _resync(resp_s, pos + 1, False)
            if nxt is None:
                break
            pos = nxt
            continue
        if 100 <= msg.status < 200 and msg.status != 101:  # interim (100 Continue): the answer follows
            interim += msg.anomalies  # evidence kept for the exchange
            pos = msg.end
            continue
        if interim:
            msg.anomalies, interim = tuple(A.merged(interim, msg.anomalies)), ()
        # A response that predates the request answers one sent before the capture began (only
        # possible before the first pairing, or anywhere once requests were lost to gaps).
        if req is not None and (i == 0 or not clean) and resp_s.seen_ts(msg.start) < req_ts[i]:
            req = None
        else:
            i += 1
        pairs.append((req, msg))
        if req is not None and (msg.status == 101 or req.method == "CONNECT"):
            if (msg.status == 101 and req.upgrade) or (req.method == "CONNECT" and 200 <= msg.status < 300):
                switch = (req.upgrade if msg.status == 101 else "tunnel", req, msg)
                break
            if req.method == "CONNECT" and req is reqs[-1]:  # declined: HTTP goes on after it
                try:
                    more, more_clean = _parse_requests(req_s, req.end)
                except Exception as e:
                    more, more_clean, note = [], False, f"unparsed: {type(e).__name__}"
                reqs.extend(more)
                req_ts.extend(req_s.seen_ts_many([r.start for r in more]) if more else [])
                clean = clean and more_clean
        if msg.complete:
            pos = msg.end
        else:
            nxt = _resync(resp_s, max(msg.end, pos + 1), False)
            if nxt is None:
                break
            pos = nxt
    if switch is None:  # requests left unanswered within the capture
        pairs.extend((r, None) for r in reqs[i:])
    out = _build(view, conn_id, pairs, tls, req_ts)
    if note:
        for ex in out:
            ex.complete, ex.note = False, ex.note or note
    if switch is None:
        last = reqs[-1] if reqs else None
        if last is not None and last.method == "CONNECT" and last.end < req_s.length and out:
            out[-1].anomalies.append(A.TUNNEL)  # unanswered: what follows it is taken as tunnel data
        return out, None
    proto, req, msg = switch
    if proto == "tunnel":
        out[-1].anomalies.append(A.TUNNEL)
    return out, Switch(proto, req.end, msg.end, out[-1])


def _build(view: View, conn_id: int, pairs: list[tuple[Message | None, Message | None]],
           tls: bool, req_ts: list[int]) -> list[Exchange]:
    """Exchanges from paired messages, with times and processes looked up for the whole connection
    at once (per-message lookups dominated the profile). The requests in pairs are the parsed ones in
    order, from the first, so `req_ts` (when each was first in hand) is their start times."""
    req_s, resp_s = view.requests, view.responses
    client, server = view.client_addr, view.server_addr
    measured_at = "client" if view.at_client else "server"
    with_req = [r.start for r, _ in pairs if r is not None]
    starts = iter(req_ts)
    ends_at = [m.end - 1 for _, m in pairs if m is not None and m.end > m.start]
    ends = iter(resp_s.done_ts_many(ends_at) if ends_at else [])
    who_req = iter(zip(*view.who_many(req_s, with_req), strict=True))
    orphans = [m.start for r, m in pairs if r is None and m is not None]
    who_resp = iter(zip(*view.who_many(resp_s, orphans), strict=True))
    out = []
    for req, resp in pairs:
        # One positional constructor call per exchange: keyword calls and attribute sets cost more.
        start = end = latency = None
        cpid = ctid = spid = stid = None
        complete, note = True, ""
        if req is not None:
            start = next(starts)
            cpid, ctid, spid, stid = next(who_req)
        if resp is not None:
            if resp.end > resp.start:
                end = next(ends)
            if req is None:
                cpid, ctid, spid, stid = next(who_resp)
        if start is not None and end is not None:
            latency = end - start if end > start else 0
        if req is None:
            complete, note = False, "request not captured (sent before the capture began)"
        elif resp is None:
            complete, note = False, "no response captured"
        elif not (req.complete and resp.complete):
            complete = False
            note = "request " + req.note if not req.complete else "response " + resp.note
        version = (req or resp).version  # type: ignore[union-attr]
        r = req or _NO_MESSAGE
        out.append(Exchange(
            _PROTOCOLS[version], conn_id, client, server, r.method, r.path, r.host,
            resp.status if resp is not None else None, r.end - r.start,
            resp.end - resp.start if resp is not None else 0, start, end, latency, cpid, ctid, spid, stid,
            measured_at, complete, note, None, "", "", None, "", tls))
        if r.anomalies or (resp is not None and resp.anomalies):
            out[-1].anomalies = A.merged(r.anomalies, resp.anomalies if resp is not None else ())
    return out


_NO_MESSAGE = Message(0, 0, True)
_PROTOCOLS = {"1.0": "http/1.0", "1.1": "http/1.1"}

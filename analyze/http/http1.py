"""HTTP/1.x connections: requests paired with responses, in order, up to a protocol switch.

Messages are located by http1_messages.py (framing as RFC 9112 reads it, anomalies recorded); this
module walks a connection's two streams message by message, resyncs at the next syscall that starts
like a message when the framing was lost to a gap, and pairs each response with its request.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

import numpy as np

from uetrace.analyze.http import anomalies as A
from uetrace.analyze.http.connection import View
from uetrace.analyze.http.exchange import Exchange
from uetrace.analyze.http.exchange_table import ExchangeColumns
from uetrace.analyze.http.http1_messages import REQUEST_LINE, STATUS_LINE, Message, parse_message, skip_empty_lines
from uetrace.analyze.http.streams import Stream

__all__ = ["Exchange", "Message", "Switch", "looks_like_requests", "looks_like_responses", "parse_exchanges",
           "parse_columns", "parse_message", "parse_requests"]
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
    """parse_columns' exchanges as objects, and the switch with its exchange (the last one)."""
    columns, switch = parse_columns(view, conn_id, tls)
    out = columns.objects()
    if switch is None:
        return out, None
    return out, Switch(switch[0], switch[1], switch[2], out[-1])


def parse_columns(view: View, conn_id: int, tls: bool = False) -> tuple[ExchangeColumns, tuple[str, int, int] | None]:
    """Pair the connection's requests and responses in order. A response that started before the next
    unanswered request answers a request sent before the capture began; it is reported unpaired.
    Stops at a protocol switch (101, CONNECT tunnel) and says where the new protocol begins: (the
    protocol, request offset, response offset); the switching exchange is the last. A CONNECT the
    server declines lets the requests after it be read; one with no answer captured is taken as a
    tunnel (its exchange carries the `tunnel` anomaly when bytes follow it)."""
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
    out = _columns(view, conn_id, pairs, tls, req_ts)
    if note and out.n:
        out.values["complete"] = False
        out.values["note"] = [n or note for n in out.column("note")]
    tunnel = switch is not None and switch[0] == "tunnel"
    if switch is None:
        last = reqs[-1] if reqs else None
        tunnel = last is not None and last.method == "CONNECT" and last.end < req_s.length and out.n > 0
        # (unanswered: what follows it is taken as tunnel data)
    if tunnel:
        anomalies = out.column("anomalies")
        anomalies[-1].append(A.TUNNEL)
        out.values["anomalies"] = anomalies
    if switch is None:
        return out, None
    proto, req, msg = switch
    return out, (proto, req.end, msg.end)


_START, _END = operator.attrgetter("start"), operator.attrgetter("end")
_HEAD = operator.attrgetter("method", "path", "host", "version")
_OK = operator.attrgetter("complete")
_ANOMALIES = operator.attrgetter("anomalies")


def _columns(view: View, conn_id: int, pairs: list[tuple[Message | None, Message | None]],
             tls: bool, req_ts: list[int]) -> ExchangeColumns:
    """Exchanges from paired messages as columns, times and processes looked up for the whole
    connection at once. The requests in pairs are the parsed ones in order, from the first, so
    `req_ts` (when each was first in hand) is their start times. A keep-alive connection's exchanges
    are nearly all request-response pairs, complete, without anomalies: those rows cost a few list
    and array operations each, the others are written row by row."""
    req_s, resp_s = view.requests, view.responses
    n = len(pairs)
    reqs = [r for r, _ in pairs]
    resps = [m for _, m in pairs]
    has_req = np.fromiter((r is not None for r in reqs), bool, n)
    has_resp = np.fromiter((m is not None for m in resps), bool, n)
    every_req, every_resp = bool(has_req.all()), bool(has_resp.all())
    if not every_req:
        reqs = [r if r is not None else _NO_MESSAGE for r in reqs]
    if not every_resp:
        resps = [m if m is not None else _NO_MESSAGE for m in resps]
    r_start = np.fromiter(map(_START, reqs), np.int64, n)
    m_start = np.fromiter(map(_START, resps), np.int64, n)
    m_end = np.fromiter(map(_END, resps), np.int64, n)
    methods, paths, hosts, versions = zip(*map(_HEAD, reqs)) if n else ((), (), (), ())
    if not every_req:  # an unanswered response's version
        versions = tuple(v if h else m.version for v, h, m in zip(versions, has_req.tolist(), resps))  # type: ignore[union-attr]
    start = np.zeros(n, np.uint64)
    start[has_req] = req_ts[:int(has_req.sum())]
    has_end = has_resp & (m_end > m_start)
    end = np.zeros(n, np.uint64)
    if has_end.any():
        end[has_end] = resp_s.done_ts_many((m_end[has_end] - 1).tolist())
    timed = has_req & has_end
    latency = np.where(end > start, end.astype(np.int64) - start.astype(np.int64), 0)
    who = view.who_many(req_s, r_start[has_req].tolist())
    if not every_req:  # a response without its request: its processes from where it was read
        orphans = ~has_req & has_resp
        who_resp = view.who_many(resp_s, m_start[orphans].tolist())
        who = tuple(_merged(n, has_req, a, orphans, b) for a, b in zip(who, who_resp))  # type: ignore[assignment]
    # (a missing message stands in as _NO_MESSAGE, complete: only the present ones decide)
    ok = has_req & has_resp & np.fromiter(map(_OK, reqs), bool, n) & np.fromiter(map(_OK, resps), bool, n)
    complete: object = True
    note: object = ""
    if not ok.all():
        complete, note = ok, [_note(r if h else None, m if k else None) if not c else ""
                              for r, m, h, k, c in zip(reqs, resps, has_req.tolist(), has_resp.tolist(),
                                                       ok.tolist())]
    anomalies: object = ()
    if any(map(_ANOMALIES, reqs)) or any(map(_ANOMALIES, resps)):
        anomalies = [A.merged(r.anomalies, m.anomalies) if r.anomalies or m.anomalies else []
                     for r, m in zip(reqs, resps)]
    protocol: object = _PROTOCOLS[versions[0]] if n and versions.count(versions[0]) == n else \
        [_PROTOCOLS[v] for v in versions]
    return ExchangeColumns(n, {
        "protocol": protocol, "conn_id": conn_id, "client": view.client_addr, "server": view.server_addr,
        "method": list(methods), "path": list(paths), "host": list(hosts),
        "status": np.ma.array([m.status for m in resps], mask=~has_resp) if not every_resp
        else [m.status for m in resps],
        "req_bytes": np.fromiter(map(_END, reqs), np.int64, n) - r_start, "resp_bytes": m_end - m_start,
        "start_ts": start if every_req else np.ma.array(start, mask=~has_req),
        "end_ts": np.ma.array(end, mask=~has_end), "latency_ns": np.ma.array(latency, mask=~timed),
        "client_pid": who[0], "client_tid": who[1], "server_pid": who[2], "server_tid": who[3],
        "measured_at": "client" if view.at_client else "server", "complete": complete, "note": note,
        "stream_id": None, "grpc_service": "", "grpc_method": "", "grpc_status": None, "grpc_message": "",
        "tls": tls, "client_comm": "", "server_comm": "", "anomalies": anomalies, "traceparent": ""})


def _merged(n: int, a_rows: np.ndarray, a: list, b_rows: np.ndarray, b: list) -> list:
    out: list = [None] * n
    for i, v in zip(np.flatnonzero(a_rows).tolist(), a):
        out[i] = v
    for i, v in zip(np.flatnonzero(b_rows).tolist(), b):
        out[i] = v
    return out


def _note(req: Message | None, resp: Message | None) -> str:
    """Why an exchange is incomplete."""
    if req is None:
        return "request not captured (sent before the capture began)"
    if resp is None:
        return "no response captured"
    return "request " + req.note if not req.complete else "response " + resp.note


_NO_MESSAGE = Message(0, 0, True)
_PROTOCOLS = {"1.0": "http/1.0", "1.1": "http/1.1"}

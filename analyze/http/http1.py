"""HTTP/1.x over rebuilt streams: messages framed by their headers, requests paired with responses.

Framing follows RFC 9112 section 6: a message's body is chunked, or Content-Length long, or (responses
only) runs to the end of the connection; responses to HEAD, 1xx, 204 and 304 have none. Bodies are
stepped over by length, so a body the snaplen cut off costs nothing and breaks nothing; only a chunked
body needs its chunk-size lines, and if one of those fell in a gap the message is marked incomplete and
the parser resyncs at the next syscall that starts like a message.

Parsing works on whole captured stretches with regex/find per message, never per byte: the benchmark
asks for tens of thousands of exchanges per second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from uetrace.analyze.http.connection import View
from uetrace.analyze.http.exchange import Exchange
from uetrace.analyze.http.streams import Stream

_REQUEST_LINE = re.compile(rb"([A-Z][A-Z_-]{0,23}) ([^ \r\n]{1,16384}) HTTP/1\.([01])\r\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: [^\r\n]*)?\r\n")
_VERSIONS = {b"0": "1.0", b"1": "1.1"}
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT")}
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,15})[^\r\n]{0,1024}\r\n")
_MAX_HEAD = 256 * 1024  # a header block longer than this is not HTTP we can frame
_RESYNC_ROWS = 4096  # syscall boundaries tried before giving up on a stream


@dataclass(slots=True)
class Message:
    """One HTTP/1 request or response, located by stream offsets [start, end)."""

    start: int
    end: int
    request: bool
    version: str = "1.1"
    method: str = ""
    path: str = ""
    host: str = ""
    status: int = 0
    upgrade: str = ""  # the Upgrade header, lowercased ("websocket", "h2c")
    body_len: int = 0
    complete: bool = True
    note: str = ""



@dataclass(slots=True)
class Switch:
    """Where a connection stopped speaking HTTP/1 (101 Switching Protocols or a CONNECT tunnel)."""

    protocol: str  # the Upgrade token ("websocket", "h2c") or "tunnel"
    request_end: int  # offset in the request stream where the new protocol begins
    response_end: int  # same in the response stream
    exchange: Exchange


def looks_like_requests(stream: Stream, rows: int = 4) -> bool:
    """Whether one of the stream's first syscalls starts with an HTTP/1 request line."""
    return _first_match(stream, _REQUEST_LINE, rows)


def looks_like_responses(stream: Stream, rows: int = 4) -> bool:
    return _first_match(stream, _STATUS_LINE, rows)


def _first_match(stream: Stream, line: re.Pattern[bytes], rows: int) -> bool:
    for n, pos in enumerate(stream.row_starts(0)):
        if n >= rows:
            break
        hit = stream.chunk_at(pos)
        if hit is not None and line.match(hit[0], pos - hit[1]):
            return True
    return False


def parse_message(stream: Stream, pos: int, request: bool, req_method: str = "") -> Message | None:
    """The message starting at pos, or None if none starts there. `req_method` is the method of the
    request a response answers (HEAD and CONNECT change response framing)."""
    if len(stream.chunk_starts) == 1:  # chunk_at's common case, without the call
        data = stream.chunks[0]
        base = stream.chunk_starts[0]
        if not base <= pos < base + len(data):
            return None
    else:
        hit = stream.chunk_at(pos)
        if hit is None:
            return None
        data, base = hit
    i = pos - base
    # Fast path: a head (start line and fields) seen before parses as it did then. The first CRLFCRLF
    # from pos is the one the full parse finds (a start line holds no CR or LF before its own CRLF).
    he = data.find(b"\r\n\r\n", i, i + _HEAD_KEY_MAX)
    head = (_REQ_HEADS if request else _RESP_HEADS).get(data[i:he]) if he >= 0 else None
    if head is None:
        head = _parse_head(data, i, request)
        if head is None:
            return None
        if len(head) == 4:  # a start line only: the header block does not end in the captured bytes
            version, method, path, status = head
            return Message(pos, base + len(data), request, version, method, path, "", status, complete=False,
                           note="headers not captured")
    version, method, path, status, host, upgrade, chunked, length, head_len = head
    body = pos + head_len
    if request:
        host_, upgrade_ = host, upgrade
    else:
        host_ = upgrade_ = ""
        if (req_method == "HEAD" or status < 200 or status == 204 or status == 304
                or (req_method == "CONNECT" and status < 300)):
            return Message(pos, body, False, version, "", "", "", status)
    if chunked:
        end, body_len, complete = _skip_chunked(stream, body)
        if complete:
            return Message(pos, end, request, version, method, path, host_, status, upgrade_, body_len)
        note = "chunked body not captured" if end < stream.length else "truncated at capture end"
        return Message(pos, end, request, version, method, path, host_, status, upgrade_, body_len, False, note)
    if length is not None:
        if length < 0:
            return Message(pos, body, request, version, method, path, host_, status, upgrade_, 0, False,
                           "bad content-length")
        body_len = length
        end = body + length
    elif not request:
        end = stream.length  # delimited by the connection's close
        body_len = end - body
    else:
        body_len = 0
        end = body
    if end > stream.length:
        return Message(pos, stream.length, request, version, method, path, host_, status, upgrade_, body_len,
                       False, "truncated at capture end")
    return Message(pos, end, request, version, method, path, host_, status, upgrade_, body_len)


def _parse_head(data: bytes, i: int, request: bool) -> tuple | None:
    """(version, method, path, status, host, upgrade, chunked, content-length, head length) of the head
    at data[i:], kept for the next head with the same bytes; None if no start line is there; only the
    first four if the header block does not end within the captured bytes."""
    m = (_REQUEST_LINE if request else _STATUS_LINE).match(data, i)
    if m is None:
        return None
    if request:
        method = m.group(1)
        line = (_VERSIONS[m.group(3)], _METHODS.get(method) or method.decode(), m.group(2).decode("latin-1"), 0)
    else:
        line = (_VERSIONS[m.group(1)], "", "", int(m.group(2)))
    e = m.end() - 2  # the request/status line's CRLF: header names follow a CRLF
    he = data.find(b"\r\n\r\n", e, e + _MAX_HEAD)
    if he < 0:
        return line
    block = data[e:he + 2]
    fields = _FIELDS.get(block)
    if fields is None:
        fields = _header_fields(block)
        if len(block) <= _FIELDS_KEY_MAX:  # big blocks (cookies) rarely repeat: not worth the memory
            if len(_FIELDS) >= _FIELDS_MAX:
                _FIELDS.clear()
            _FIELDS[block] = fields
    head = (*line, *fields, he + 4 - i)
    if he - i <= _HEAD_KEY_MAX:
        heads = _REQ_HEADS if request else _RESP_HEADS
        if len(heads) >= _FIELDS_MAX:
            heads.clear()
        heads[data[i:he]] = head
    return head


# Header blocks repeat: one client library sends the same fields request after request, one server
# the same response fields (a Date changes once a second). Their parse is kept by the block's bytes
# (start line excluded), which halves the cost of a message on keep-alive traffic.
_FIELDS: dict[bytes, tuple[str, str, bool, int | None]] = {}
_FIELDS_MAX = 8192
_FIELDS_KEY_MAX = 2048  # so the cache holds at most ~16 MiB
# Whole heads (start line included) by their bytes, up to the final CRLFCRLF: a keep-alive client
# repeats its request lines too, and a server its status lines. Same bounds as _FIELDS.
_REQ_HEADS: dict[bytes, tuple] = {}
_RESP_HEADS: dict[bytes, tuple] = {}
_HEAD_KEY_MAX = 2048


def _header_fields(block: bytes) -> tuple[str, str, bool, int | None]:
    """(Host, Upgrade lowercased, chunked?, Content-Length: None if absent, -1 if bad) of a header
    block that starts with the CRLF ending the start line and ends with the last field's CRLF."""
    # Field names are case-insensitive and take no whitespace before the colon (RFC 9112 5.1): one
    # lowercased copy of the block and a find per field beat a case-insensitive regex by 3x here.
    low = block.lower()
    host = upgrade = ""
    k = low.find(b"\r\nhost:")
    if k >= 0:
        host = low[k + 7:low.find(b"\r\n", k + 7)].strip().decode("latin-1")
    k = low.find(b"\r\nupgrade:")
    if k >= 0:
        upgrade = low[k + 10:low.find(b"\r\n", k + 10)].strip().decode("latin-1")
    k = low.find(b"\r\ntransfer-encoding:")
    chunked = k >= 0 and low[k + 20:low.find(b"\r\n", k + 20)].rstrip().endswith(b"chunked")
    length = None
    k = low.find(b"\r\ncontent-length:")
    if k >= 0:
        v = low[k + 17:low.find(b"\r\n", k + 17)].strip()
        length = int(v) if v.isdigit() else -1
    return host, upgrade, chunked, length


def _skip_chunked(stream: Stream, pos: int) -> tuple[int, int, bool]:
    """Walk a chunked body from pos: (offset after it, body bytes, complete?). Chunk data is skipped
    by length; the size lines must have been captured."""
    total = 0
    data, base = b"", 0
    while True:
        if not base <= pos < base + len(data):  # not in the stretch of the last size line
            hit = stream.chunk_at(pos)
            if hit is None:
                return pos, total, False
            data, base = hit
        m = _CHUNK_LINE.match(data, pos - base)
        if m is None:
            return pos, total, False
        size = int(m.group(1), 16)
        if size == 0:
            j = m.end()
            if data[j:j + 2] == b"\r\n":
                return base + j + 2, total, True
            k = data.find(b"\r\n\r\n", j - 2)  # trailer fields, then the empty line
            return (base + k + 4, total, True) if k >= 0 else (base + len(data), total, False)
        total += size
        pos = base + m.end() + size + 2
        if pos > stream.length:
            return stream.length, total, False


def _resync(stream: Stream, pos: int, request: bool) -> int | None:
    """The next syscall boundary at or after pos where a message seems to start."""
    line = _REQUEST_LINE if request else _STATUS_LINE
    for n, p in enumerate(stream.row_starts(pos)):
        if n >= _RESYNC_ROWS:
            return None
        hit = stream.chunk_at(p)
        if hit is not None and line.match(hit[0], p - hit[1]):
            return p
    return None


def parse_requests(stream: Stream) -> list[Message]:
    """All requests in a client-to-server stream, in order."""
    return _parse_requests(stream)[0]


def _parse_requests(stream: Stream) -> tuple[list[Message], bool]:
    """Requests, and whether the walk went from message to message without resyncing (then no
    request can be missing after the first one seen)."""
    out: list[Message] = []
    pos = 0
    clean = True
    while pos < stream.length:
        msg = parse_message(stream, pos, True)
        if msg is not None and msg.complete:
            out.append(msg)
            pos = msg.end
            continue
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
    Stops at a protocol switch (101, CONNECT tunnel) and says where the new protocol begins."""
    req_s, resp_s = view.requests, view.responses
    note = ""
    try:
        reqs, clean = _parse_requests(req_s)
    except Exception as e:  # a parser bug must not lose the capture's other connections
        reqs, clean, note = [], False, f"unparsed: {type(e).__name__}"
    req_ts = req_s.seen_ts_many([r.start for r in reqs]) if reqs else []
    pairs: list[tuple[Message | None, Message | None]] = []
    switch: tuple[str, Message, Message] | None = None
    i = 0
    pos = 0
    while pos < resp_s.length:
        req = reqs[i] if i < len(reqs) else None
        try:
            msg = parse_message(resp_s, pos, False, req.method if req else "")
        except Exception as e:
            msg, note = None, f"unparsed: {type(e).__name__}"
        if msg is None:
            nxt = _resync(resp_s, pos + 1, False)
            if nxt is None:
                break
            pos = nxt
            continue
        if 100 <= msg.status < 200 and msg.status != 101:  # interim (100 Continue): the answer follows
            pos = msg.end
            continue
        # A response that predates the request answers one sent before the capture began (only
        # possible before the first pairing, or anywhere once requests were lost to gaps).
        if req is not None and (i == 0 or not clean) and resp_s.seen_ts(msg.start) < req_ts[i]:
            req = None
        else:
            i += 1
        pairs.append((req, msg))
        if req is not None and ((msg.status == 101 and req.upgrade)
                                or (req.method == "CONNECT" and 200 <= msg.status < 300)):
            switch = (req.upgrade if msg.status == 101 else "tunnel", req, msg)
            break
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
        return out, None
    proto, req, msg = switch
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
    return out


_NO_MESSAGE = Message(0, 0, True)
_PROTOCOLS = {"1.0": "http/1.0", "1.1": "http/1.1"}

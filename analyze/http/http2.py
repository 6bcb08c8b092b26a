"""HTTP/2 (RFC 9113) and gRPC over rebuilt streams: frames, HPACK header blocks, streams paired by id.

Each direction is walked frame by frame on its own, with its own HPACK decoder (each peer's encoder
feeds only the other's decoder). HPACK is stateful: a header block decoded out of order or with a
missing block before it decodes to wrong headers, silently. So headers are decoded only when the
connection preface was captured (the dynamic tables start empty with us watching), and decoding stops
for good in a direction once one of its header blocks was lost to a gap; the affected exchanges say
"headers unavailable" instead of showing headers that might be wrong. DATA payload is skipped by length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote

import hpack

from uetrace.analyze.http.connection import View
from uetrace.analyze.http.exchange import Exchange
from uetrace.analyze.http.streams import Stream

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Frame types (RFC 9113 section 6), in type-code order.
(DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE,
 CONTINUATION) = range(10)
END_STREAM, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x4, 0x8, 0x20
ERRORS = ("NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
          "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
          "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED")
NO_PREFACE = "headers unavailable: connection began before capture"
BLOCK_LOST = "headers unavailable: a header block was not captured (raise the snaplen)"
_RESYNC_ROWS = 4096
# Frames whose payload the parser reads; the rest (DATA above all) are stepped over.
_READ_PAYLOAD = {HEADERS, CONTINUATION, PUSH_PROMISE, RST_STREAM, GOAWAY}


def error_name(code: int) -> str:
    return ERRORS[code] if 0 <= code < len(ERRORS) else f"0x{code:x}"


@dataclass(slots=True)
class Frame:
    offset: int
    length: int
    type: int
    flags: int
    sid: int
    payload: bytes | None  # read for _READ_PAYLOAD types when captured, else None


def _plausible(b: bytes | None) -> bool:
    """A frame header that fits the rules on type, stream id and length (used to find frames where
    the framing was lost or the preface was not seen; generous frame sizes are rare)."""
    if b is None or len(b) < 9:
        return False
    n, t, sid = int.from_bytes(b[0:3], "big"), b[3], int.from_bytes(b[5:9], "big")
    if t > CONTINUATION or sid & 0x80000000 or n > (1 << 20):
        return False
    if t in (SETTINGS, PING, GOAWAY):
        sizes_ok = (t != SETTINGS or n % 6 == 0) and (t != PING or n == 8) and (t != GOAWAY or n >= 8)
        return sid == 0 and sizes_ok
    if t in (RST_STREAM, WINDOW_UPDATE):
        return n == 4 and (t == WINDOW_UPDATE or sid != 0)
    return sid != 0


def frames(stream: Stream, pos: int, notes: list[str]) -> Iterator[Frame]:
    """Frames from pos to the end of the stream. Where a frame header was not captured the framing is
    lost: a note is added, a frame of type -1 marks the loss, and the walk resumes at the next syscall
    boundary that starts with a plausible frame header."""
    while pos < stream.length:
        head = stream.read(pos, 9)
        if head is None:
            notes.append("frames lost")
            yield Frame(pos, 0, -1, 0, 0, None)
            nxt = None
            for k, p in enumerate(stream.row_starts(pos + 1)):
                if k >= _RESYNC_ROWS:
                    break
                if _plausible(stream.read(p, 9)):
                    nxt = p
                    break
            if nxt is None:
                return
            pos = nxt
            continue
        n = int.from_bytes(head[0:3], "big")
        t = head[3]
        payload = stream.read(pos + 9, n) if t in _READ_PAYLOAD else None
        yield Frame(pos, n, t, head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload)
        pos += 9 + n


@dataclass(slots=True)
class _Side:
    """What one direction said on one stream."""

    headers: list[tuple[bytes, bytes]] | None = None
    trailers: list[tuple[bytes, bytes]] | None = None
    first: int = -1  # offset of the first frame
    end: int = -1  # offset of the last byte of the frame that ended it (END_STREAM or RST_STREAM)
    bytes: int = 0  # frame bytes, headers included
    reset: int | None = None
    headers_lost: bool = False


@dataclass(slots=True)
class Connection:
    """Both directions of one HTTP/2 connection: per stream id, what each side sent."""

    preface: bool
    client: dict[int, _Side] = field(default_factory=dict)
    server: dict[int, _Side] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    goaway: tuple[int, int] | None = None  # (last stream id, error code)
    lost: set[str] = field(default_factory=set)  # directions ("client", "server") whose HPACK state died


def _decoder() -> hpack.Decoder:
    d = hpack.Decoder()
    # We only observe: accept whatever table size and list size the peers agreed on.
    d.max_allowed_table_size = 1 << 30
    d.max_header_list_size = 1 << 26
    return d


def _walk(stream: Stream, pos: int, decode: bool, sides: dict[int, _Side], conn: Connection,
          name: str) -> None:
    """One direction: frames into per-stream sides, header blocks through one HPACK decoder."""
    decoder = _decoder() if decode else None
    block = bytearray()
    block_sid = -1  # stream of the header block being gathered (HEADERS + CONTINUATIONs)
    block_lost = False
    block_push = False
    notes: list[str] = []
    for f in frames(stream, pos, notes):
        if f.type == -1:  # framing lost: any header block in flight is gone, and HPACK state with it
            decoder = None
            block_sid = -1
            continue
        if f.type in (DATA, HEADERS, CONTINUATION, RST_STREAM) and f.sid:
            side = sides.get(f.sid)
            if side is None:
                side = sides[f.sid] = _Side(first=f.offset)
            side.bytes += 9 + f.length
        else:
            side = None
        if f.type == HEADERS or f.type == PUSH_PROMISE:
            frag = _fragment(f)
            block = bytearray(frag or b"")
            block_lost = frag is None
            block_sid = f.sid
            block_push = f.type == PUSH_PROMISE
            if side is not None and f.flags & END_STREAM:
                side.end = f.offset + 8 + f.length
        elif f.type == CONTINUATION and f.sid == block_sid:
            if f.payload is None:
                block_lost = True
            else:
                block += f.payload
        elif f.type == DATA and side is not None and f.flags & END_STREAM:
            side.end = f.offset + 8 + f.length
        elif f.type == RST_STREAM and side is not None:
            side.reset = int.from_bytes(f.payload, "big") if f.payload else 0
            side.end = f.offset + 8 + f.length
        elif f.type == GOAWAY and f.payload is not None and len(f.payload) >= 8:
            conn.goaway = (int.from_bytes(f.payload[0:4], "big") & 0x7FFFFFFF,
                           int.from_bytes(f.payload[4:8], "big"))
        if f.type in (HEADERS, PUSH_PROMISE, CONTINUATION) and f.sid == block_sid and f.flags & END_HEADERS:
            headers = None
            if block_lost:
                decoder = None
            elif decoder is not None:
                try:
                    headers = decoder.decode(bytes(block), raw=True)
                except Exception:  # hpack errors, or a stream that is not what we think
                    decoder = None
                    notes.append("header decoding failed")
            target = sides.get(block_sid) if not block_push else None
            if target is not None:
                if headers is None:
                    target.headers_lost = True
                elif target.headers is None or _interim(target.headers):
                    target.headers = headers
                else:
                    target.trailers = headers
            block_sid = -1
    if decode and decoder is None:
        conn.lost.add(name)
    conn.notes.extend(n for n in dict.fromkeys(notes) if n not in conn.notes)


def _interim(headers: list[tuple[bytes, bytes]]) -> bool:
    """A 1xx response head: the final one follows on the same stream."""
    for k, v in headers:
        if k == b":status":
            return v.startswith(b"1")
    return False


def _fragment(f: Frame) -> bytes | None:
    """The header block fragment of a HEADERS or PUSH_PROMISE frame (padding and priority removed)."""
    p = f.payload
    if p is None:
        return None
    i, pad = 0, 0
    if f.flags & PADDED:
        if not p:
            return None
        pad, i = p[0], 1
    if f.type == HEADERS and f.flags & PRIORITY_FLAG:
        i += 5
    elif f.type == PUSH_PROMISE:
        i += 4
    if i + pad > len(p):
        return None
    return p[i:len(p) - pad]


def starts_with_preface(stream: Stream, pos: int = 0) -> bool:
    return stream.read(pos, len(PREFACE)) == PREFACE


def looks_like_frames(stream: Stream, rows: int = 3, chain: int = 2) -> bool:
    """HTTP/2 without its preface: from one of the first syscall boundaries, plausible frame headers
    chain by their lengths."""
    for k, pos in enumerate(stream.row_starts(0)):
        if k >= rows:
            break
        p, ok = pos, 0
        while ok < chain and p < stream.length:
            head = stream.read(p, 9)
            if not _plausible(head):
                break
            assert head is not None
            p += 9 + int.from_bytes(head[0:3], "big")
            ok += 1
        if ok == chain or (ok and p >= stream.length):
            return True
    return False


def parse_connection(view: View, c2s_pos: int = 0, s2c_pos: int = 0) -> Connection:
    """Walk both directions of an HTTP/2 connection. Never raises: on a parser bug the connection
    comes back with what was gathered and a note."""
    req, resp = view.requests, view.responses
    preface = starts_with_preface(req, c2s_pos)
    conn = Connection(preface)
    try:
        _walk(req, c2s_pos + len(PREFACE) if preface else c2s_pos, preface, conn.client, conn, "client")
        _walk(resp, s2c_pos, preface, conn.server, conn, "server")
    except Exception as e:
        conn.notes.append(f"unparsed: {type(e).__name__}")
    return conn


def exchanges(view: View, conn_id: int, c2s_pos: int = 0, s2c_pos: int = 0, tls: bool = False,
              upgrade: Exchange | None = None) -> list[Exchange]:
    """One exchange per client-initiated stream. `upgrade` is the HTTP/1 request that asked for h2c:
    its stream 1 got no HEADERS frame, the HTTP/1 request stands for them."""
    conn = parse_connection(view, c2s_pos, s2c_pos)
    out: list[Exchange] = []
    try:
        for sid in sorted(set(conn.client) | set(conn.server)):
            if sid % 2 == 0:  # server push: no request of the client's
                continue
            out.append(_exchange(view, conn_id, conn, sid, tls, upgrade if sid == 1 else None))
    except Exception as e:
        for ex in out:
            ex.complete, ex.note = False, ex.note or f"unparsed: {type(e).__name__}"
    return out


def _exchange(view: View, conn_id: int, conn: Connection, sid: int, tls: bool,
              upgrade: Exchange | None) -> Exchange:
    c, s = conn.client.get(sid) or _Side(), conn.server.get(sid) or _Side()
    ex = Exchange("h2", conn_id, view.client_addr, view.server_addr, stream_id=sid, tls=tls,
                  measured_at="client" if view.at_client else "server", req_bytes=c.bytes, resp_bytes=s.bytes)
    req_h = dict(c.headers or ())
    resp_h = dict(s.headers or ())
    trailers = dict(s.trailers or ())
    if upgrade is not None and not req_h:
        ex.method, ex.path, ex.host = upgrade.method, upgrade.path, upgrade.host
    else:
        ex.method = req_h.get(b":method", b"").decode("latin-1")
        ex.path = req_h.get(b":path", b"").decode("latin-1")
        ex.host = req_h.get(b":authority", b"").decode("latin-1")
        ex.traceparent = req_h.get(b"traceparent", b"")[:128].decode("latin-1")
    status = resp_h.get(b":status", b"")
    ex.status = int(status) if status.isdigit() else None
    ctype = req_h.get(b"content-type", b"") or resp_h.get(b"content-type", b"")
    if ctype.startswith(b"application/grpc"):
        ex.protocol = "grpc"
        service, _, method = ex.path.lstrip("/").rpartition("/")
        ex.grpc_service, ex.grpc_method = service, method
        final = trailers or resp_h  # "trailers-only" responses carry the status in the only block
        code = final.get(b"grpc-status", b"")
        ex.grpc_status = int(code) if code.isdigit() else None
        ex.grpc_message = unquote(final.get(b"grpc-message", b"").decode("latin-1"))
    if c.first >= 0:
        ex.start_ts = view.requests.seen_ts(c.first)
        ex.client_pid, ex.client_tid, ex.server_pid, ex.server_tid = view.who(view.requests, c.first)
    elif s.first >= 0:
        ex.client_pid, ex.client_tid, ex.server_pid, ex.server_tid = view.who(view.responses, s.first)
    ends = [view.responses.done_ts(s.end)] if s.end >= 0 else []
    if c.reset is not None and c.end >= 0:
        ends.append(view.requests.done_ts(c.end))
    if ends:
        ex.end_ts = max(ends)
    if ex.start_ts is not None and ex.end_ts is not None:
        ex.latency_ns = max(ex.end_ts - ex.start_ts, 0)
    notes = []
    headers_missing = (c.headers_lost or s.headers_lost
                       or (c.headers is None and upgrade is None and "client" in conn.lost)
                       or (s.headers is None and "server" in conn.lost))
    if not conn.preface:
        notes.append(NO_PREFACE)
    elif headers_missing:
        notes.append(BLOCK_LOST)
    reset = s.reset if s.reset is not None else c.reset
    if reset is not None:
        notes.append(f"reset: {error_name(reset)}")
    if c.first < 0:
        notes.append("request not captured")
    elif s.end < 0 and reset is None:
        notes.append("no response end captured")
    ex.complete = c.first >= 0 and (s.end >= 0 or reset is not None) and conn.preface and not headers_missing
    if not ex.complete:  # say what else went wrong on the connection
        notes.extend(n for n in conn.notes if n not in notes)
    ex.note = "; ".join(notes)
    return ex

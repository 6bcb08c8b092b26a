"""Property tests of the protocol parsers: no input makes them raise, and how the writer split its
bytes into syscalls (and where the snaplen cut them) never changes what a valid conversation parses to."""

from __future__ import annotations

import duckdb
import hpack
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uetrace.analyze.http import HttpParams, analyze_http, http1, http2, store_tables, tls, websocket
from uetrace.analyze.http.connection import Connection, Socket, View
from uetrace.analyze.http.exchange_table import SCHEMA, ExchangeTable
from uetrace.analyze.http.streams import EGRESS, INGRESS, stream_from_writes

# No example database: the tests leave no files behind in the working tree.
FAST = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# -- building blocks -------------------------------------------------------------------------------


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """data cut at the given offsets (in any order, out-of-range ones ignored) into syscall payloads."""
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


def view_of(c2s: list, s2c: list) -> View:
    """A connection seen at the client: c2s are its writes, s2c its reads (responses after requests)."""
    out = stream_from_writes(c2s, ts0=1_000, step=1_000, direction=EGRESS)
    back = stream_from_writes(s2c, ts0=1_500, step=1_000, direction=INGRESS)
    sock = Socket(1, 2, "127.0.0.1", 40000, "127.0.0.1", 80, out, back)
    return View(Connection(sock), out, back, True)


pieces = st.lists(st.one_of(st.binary(max_size=64), st.integers(1, 200),
                            st.tuples(st.binary(max_size=32), st.integers(0, 200))), max_size=12)
cuts = st.lists(st.integers(0, 4000), max_size=12)


# -- no exception escapes, whatever the bytes ------------------------------------------------------


@FAST
@given(pieces, pieces)
def test_arbitrary_bytes_never_raise(c2s, s2c):
    v = view_of(c2s, s2c)
    http1.parse_requests(v.requests)
    http1.parse_exchanges(v, 0)
    http1.parse_message(v.responses, 0, False, "HEAD")
    http2.exchanges(v, 0)
    http2.looks_like_frames(v.requests)
    websocket.parse_session(http1.Exchange("http/1.1", 0, "c", "s"), v.requests, 0, v.responses, 0)
    tls.detect(v.requests, v.responses)
    tls.client_hello_in(v.requests)


@FAST
@given(st.binary(max_size=300), st.sampled_from([b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n",
                                                   http2.PREFACE, b"\x16\x03\x01\x00\x30\x01\x00\x00\x2c\x03\x03",
                                                   b"\x81\xfe", b""]))
def test_protocol_prefix_then_garbage_never_raises(tail, prefix):
    data = prefix + tail
    for c2s, s2c in (([data], [data]), ([data], []), ([], [data])):
        v = view_of(c2s, s2c)
        http1.parse_exchanges(v, 0)
        http2.exchanges(v, 0)
        websocket.parse_session(http1.Exchange("http/1.1", 0, "c", "s"), v.requests, 0, v.responses, 0)
        tls.detect(v.requests, v.responses)
    body = data[4:]
    info = tls.TlsInfo(True)
    tls.parse_client_hello(body, info)
    tls.parse_server_hello(body, info)


COLUMNS = pa.schema([
    ("cpu", pa.uint32()), ("ts_enter", pa.uint64()), ("ts_exit", pa.uint64()), ("sock_id", pa.uint64()),
    ("pid", pa.uint32()), ("tid", pa.uint32()), ("fd", pa.int32()), ("syscall", pa.uint16()),
    ("direction", pa.uint8()), ("bytes", pa.int64()), ("captured", pa.uint32()), ("family", pa.uint16()),
    ("protocol", pa.uint16()), ("laddr", pa.string()), ("raddr", pa.string()), ("lport", pa.uint16()),
    ("rport", pa.uint16()), ("payload", pa.binary()),
])


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(1, 3), st.integers(0, 1), st.integers(0, 50), st.binary(max_size=40),
                          st.integers(0, 100), st.sampled_from([6, 17])), max_size=20))
def test_analyze_http_on_arbitrary_rows_never_raises(rows):
    """Whole pipeline, rows as the capture might write them (sizes larger than payloads, UDP mixed in)."""
    records = [{"cpu": 0, "ts_enter": ts, "ts_exit": ts + 1, "sock_id": sock, "pid": 1, "tid": 1, "fd": 3,
                "syscall": 1, "direction": d, "bytes": len(p) + extra or 1, "captured": len(p),
                "family": 2, "protocol": proto, "laddr": "127.0.0.1", "raddr": "127.0.0.1",
                "lport": 1000 + sock, "rport": 80, "payload": p}
               for sock, d, ts, p, extra, proto in rows]
    con = duckdb.connect()
    con.register("rows", pa.Table.from_pylist(records, schema=COLUMNS))
    con.execute("CREATE VIEW sock_data AS SELECT * FROM rows")
    res = analyze_http(con, HttpParams())
    assert not [n for n in res.notes if "unparsed" in n]
    res.to_text()
    res.to_json()
    store_tables(con, res)


# -- split anywhere, parse the same ----------------------------------------------------------------

methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD"])
paths = st.from_regex(r"/[a-z0-9/._-]{0,20}", fullmatch=True)
bodies = st.binary(max_size=200)


def _chunked(body: bytes, size: int) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\nX-Trailer: t\r\n\r\n"


@st.composite
def http1_conversation(draw) -> tuple[bytes, bytes, list[tuple[str, str, int]]]:
    reqs, resps, expect = b"", b"", []
    for _ in range(draw(st.integers(1, 6))):
        method, path = draw(methods), draw(paths)
        body = draw(bodies) if method in ("POST", "PUT") else b""
        chunked = draw(st.booleans())
        head = f"{method} {path} HTTP/1.1\r\nHOST: h\r\n".encode()
        if chunked and body:
            reqs += head + b"transfer-encoding: chunked\r\n\r\n" + _chunked(body, draw(st.integers(1, 50)))
        else:
            reqs += head + b"Content-Length: %d\r\n\r\n" % len(body) + body
        status = draw(st.sampled_from([200, 201, 204, 304, 404, 500]))
        rbody = b"" if status in (204, 304) else draw(bodies)
        rhead = b"HTTP/1.1 %d Whatever\r\n" % status
        if method == "HEAD":
            resps += rhead + b"Content-Length: 12345\r\n\r\n"  # HEAD: the length of what GET would send
        elif draw(st.booleans()) and status not in (204, 304):
            resps += rhead + b"Transfer-Encoding: chunked\r\n\r\n" + _chunked(rbody, draw(st.integers(1, 50)))
        else:
            resps += rhead + b"content-length: %d\r\n\r\n" % len(rbody) + rbody
        expect.append((method, path, status))
    return reqs, resps, expect


def _summary(exchanges: list[http1.Exchange]) -> list[tuple]:
    return [(e.method, e.path, e.host, e.status, e.req_bytes, e.resp_bytes, e.complete) for e in exchanges]


@FAST
@given(http1_conversation(), cuts, cuts)
def test_http1_split_anywhere_parses_the_same(conv, req_cuts, resp_cuts):
    reqs, resps, expect = conv
    whole, _ = http1.parse_exchanges(view_of([reqs], [resps]), 0)
    assert [(e.method, e.path, e.status) for e in whole] == expect
    assert all(e.complete for e in whole)
    parts, _ = http1.parse_exchanges(view_of(split(reqs, req_cuts), split(resps, resp_cuts)), 0)
    assert _summary(parts) == _summary(whole)


@FAST
@given(http1_conversation(), st.integers(0, 2000))
def test_http1_truncated_never_raises_and_keeps_prefix(conv, cut):
    reqs, resps, expect = conv
    exs, _ = http1.parse_exchanges(view_of([reqs[:cut]], [resps[:cut]]), 0)
    done = [(e.method, e.path, e.status) for e in exs if e.complete]
    assert done == expect[:len(done)]


@FAST
@given(http1_conversation(), st.integers(0, 2000), st.integers(0, 2000), cuts, st.binary(max_size=40))
def test_http1_columns_and_objects_agree(conv, req_cut, resp_cut, resp_cuts, junk):
    """The record batch the reconstruction stores and the objects parse_exchanges gives are made from
    the same columns: read back, the batch holds the same exchanges, be they incomplete, unanswered,
    or (after junk that delays the first request) answers to requests the capture missed."""
    reqs, resps, _ = conv
    for c2s, s2c in (([reqs[:req_cut]], split(resps[:resp_cut], resp_cuts)), ([b"\0" + junk, b"\0", reqs], [resps])):
        columns, _ = http1.parse_columns(view_of(c2s, s2c), 7, tls=True)
        stored = ExchangeTable(pa.Table.from_batches([columns.batch()], schema=SCHEMA))
        assert list(stored) == columns.objects()


def _frame(t: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([t, flags]) + sid.to_bytes(4, "big") + payload


@st.composite
def grpc_conversation(draw) -> tuple[bytes, bytes, list[tuple[str, int]]]:
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    c2s = http2.PREFACE + _frame(4, 0, 0, b"")
    s2c = _frame(4, 0, 0, b"") + _frame(4, 1, 0, b"")
    expect = []
    for i in range(draw(st.integers(1, 5))):
        sid = 2 * i + 1
        method = draw(st.sampled_from(["Get", "List", "Put"]))
        block = enc_c.encode([(":method", "POST"), (":path", f"/pkg.Svc/{method}"), (":scheme", "http"),
                              (":authority", "x"), ("content-type", "application/grpc")])
        # split the header block over HEADERS + CONTINUATION at a drawn point
        k = draw(st.integers(0, len(block)))
        c2s += _frame(1, 0, sid, block[:k]) + _frame(9, 4, sid, block[k:])
        c2s += _frame(0, 1, sid, b"\x00\x00\x00\x00\x01z")
        code = draw(st.sampled_from([0, 2, 5]))
        s2c += _frame(1, 4, sid, enc_s.encode([(":status", "200"), ("content-type", "application/grpc")]))
        s2c += b"".join(_frame(0, 0, sid, b"\x00\x00\x00\x00\x01y") for _ in range(draw(st.integers(0, 3))))
        s2c += _frame(1, 5, sid, enc_s.encode([("grpc-status", str(code))]))
        expect.append((method, code))
    return c2s, s2c, expect


@FAST
@given(grpc_conversation(), cuts, cuts)
def test_http2_split_anywhere_parses_the_same(conv, c_cuts, s_cuts):
    c2s, s2c, expect = conv
    whole = http2.exchanges(view_of([c2s], [s2c]), 0)
    assert [(e.grpc_method, e.grpc_status) for e in whole] == expect
    assert all(e.complete for e in whole), [e.note for e in whole]
    parts = http2.exchanges(view_of(split(c2s, c_cuts), split(s2c, s_cuts)), 0)
    key = [(e.stream_id, e.method, e.path, e.grpc_status, e.req_bytes, e.resp_bytes, e.complete) for e in whole]
    assert [(e.stream_id, e.method, e.path, e.grpc_status, e.req_bytes, e.resp_bytes, e.complete)
            for e in parts] == key


@st.composite
def ws_frames(draw) -> tuple[bytes, list[tuple[int, int]]]:
    data, expect = b"", []
    for _ in range(draw(st.integers(1, 6))):
        opcode = draw(st.sampled_from([1, 2, 9, 10]))
        n = draw(st.sampled_from([0, 5, 125, 126, 300, 70000]))
        length = bytes([n]) if n < 126 else (bytes([126]) + n.to_bytes(2, "big") if n < 65536
                                              else bytes([127]) + n.to_bytes(8, "big"))
        data += bytes([0x80 | opcode]) + length + b"p" * n
        expect.append((opcode, n))
    return data, expect


@FAST
@given(ws_frames(), cuts)
def test_websocket_split_anywhere_parses_the_same(conv, c):
    data, expect = conv
    whole, note = websocket.parse_frames(stream_from_writes([data]), 0, websocket.SERVER_TO_CLIENT)
    assert [(f.opcode, f.length) for f in whole] == expect and note == ""
    parts, _ = websocket.parse_frames(stream_from_writes(split(data, c)), 0, websocket.SERVER_TO_CLIENT)
    assert [(f.opcode, f.length, f.offset) for f in parts] == [(f.opcode, f.length, f.offset) for f in whole]

"""Unit tests of the http analyzer: sock_data rows built in code, written to Parquet, read back through
DuckDB exactly as `trace analyze` does, then checked exchange by exchange."""

from __future__ import annotations

from pathlib import Path

import duckdb
import hpack
import pytest
from http_rows import MS, Conn, keepalive, open_rows, request, response

from uetrace.analyze.http import HttpParams, analyze_http, http1, store_tables, tls
from uetrace.analyze.http.streams import stream_from_writes

# -- streams ---------------------------------------------------------------------------------------


def test_stream_gaps_are_sized_never_filled():
    s = stream_from_writes([b"abc", (b"de", 6), b"xyz"])
    assert s.length == 12
    assert s.read(0, 3) == b"abc"
    assert s.read(3, 2) == b"de"
    assert s.read(3, 3) is None  # runs into the gap
    assert s.chunk_at(6) is None and s.chunk_at(8) is None
    assert s.read(9, 3) == b"xyz"
    assert s.captured_bytes == 8
    assert [s.seen_ts(p) for p in (0, 4, 11)] == [1000, 2000, 3000]
    assert list(s.row_starts(1)) == [3, 9]


def test_rows_are_ordered_by_ts_enter_then_ts_exit(tmp_path):
    rows: list[dict] = []
    c = Conn(rows, capture_server=False)
    c.send(True, b"GET /b HTTP/1.1\r\n\r\n", 20 * MS)
    c.send(True, b"GET /a HTTP/1.1\r\n\r\n", 10 * MS)
    c.send(False, response(200), 15 * MS)
    c.send(False, response(201), 25 * MS)
    res = analyze_http(open_rows(tmp_path, rows[::-1]))
    assert [(e.path, e.status) for e in res.exchanges] == [("/a", 200), ("/b", 201)]


# -- HTTP/1 ----------------------------------------------------------------------------------------


def test_keepalive_methods_statuses_sizes_and_both_ends(tmp_path):
    rows: list[dict] = []
    c = Conn(rows)
    big = b"x" * 10_000  # beyond the snaplen: skipped by length
    pairs = [
        (request("GET", "/items?page=2"), response(200, b"hello"), 2 * MS),
        (request("POST", "/items", b'{"a": 1}'), response(201, b"made", chunked=True), 3 * MS),
        (request("PUT", "/items/7", big), response(500, b"boom"), 200 * MS),
        (request("DELETE", "/items/7"), response(404, big, chunked=False), 1 * MS),
        (request("GET", "/chunked"), response(200, b"abcdefghijklmnopqrstuvwxyz", chunked=True), 4 * MS),
    ]
    keepalive(c, pairs)
    res = analyze_http(open_rows(tmp_path, rows))
    ex = res.exchanges
    assert [(e.method, e.path, e.status) for e in ex] == [
        ("GET", "/items?page=2", 200), ("POST", "/items", 201), ("PUT", "/items/7", 500),
        ("DELETE", "/items/7", 404), ("GET", "/chunked", 200)]
    assert all(e.complete for e in ex), [e.note for e in ex]
    assert [e.req_bytes for e in ex] == [len(p[0]) for p in pairs]
    assert [e.resp_bytes for e in ex] == [len(p[1]) for p in pairs]
    assert all(e.host == "example.test" and e.protocol == "http/1.1" for e in ex)
    ends = {(e.client_pid, e.client_tid, e.server_pid, e.server_tid) for e in ex}
    assert ends == {(1000, 1001, 2000, 2001)}
    assert all(e.measured_at == "client" for e in ex)
    lat = [e.latency_ns for e in ex]
    assert all(v is not None and v > 0 for v in lat)
    assert max(lat) == lat[2] and abs(lat[2] - 200 * MS) < 0.2 * 200 * MS
    assert res.slowest()[0].path == "/items/7" and res.slowest()[0].method == "PUT"
    assert res.connections == 1


def test_chunk_line_in_gap_is_incomplete_then_resyncs(tmp_path):
    rows: list[dict] = []
    c = Conn(rows, capture_server=False, snaplen=64)
    body = b"y" * 500
    keepalive(c, [(request("GET", "/a"), response(200, body, chunked=True), MS),
                  (request("GET", "/b"), response(200, b"ok"), MS)])
    ex = analyze_http(open_rows(tmp_path, rows)).exchanges
    assert [(e.path, e.status) for e in ex] == [("/a", 200), ("/b", 200)]
    assert not ex[0].complete and "chunked" in ex[0].note
    assert ex[1].complete


def test_pipelined_requests_in_one_write(tmp_path):
    rows: list[dict] = []
    c = Conn(rows)
    c.send(True, request("GET", "/1") + request("GET", "/2") + request("HEAD", "/3"), 10 * MS)
    c.send(False, response(200, b"one") + response(200, b"two")
           + b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 12 * MS)
    ex = analyze_http(open_rows(tmp_path, rows)).exchanges
    assert [(e.method, e.path, e.status, e.complete) for e in ex] == [
        ("GET", "/1", 200, True), ("GET", "/2", 200, True), ("HEAD", "/3", 200, True)]


def test_interim_100_continue_is_not_an_answer(tmp_path):
    rows: list[dict] = []
    c = Conn(rows)
    c.send(True, request("POST", "/up", b"data", headers="Expect: 100-continue\r\n"), 10 * MS)
    c.send(False, b"HTTP/1.1 100 Continue\r\n\r\n", 11 * MS)
    c.send(False, response(204, b""), 12 * MS)
    ex = analyze_http(open_rows(tmp_path, rows)).exchanges
    assert [(e.path, e.status) for e in ex] == [("/up", 204)]


def test_capture_began_mid_connection(tmp_path):
    rows: list[dict] = []
    c = Conn(rows, capture_server=False)
    c.send(False, b"ta of a response sent before\r\n", 5 * MS)  # tail of an earlier response
    c.send(False, response(200, b"late"), 6 * MS)  # its request was sent before the capture
    keepalive(c, [(request("GET", "/next"), response(200, b"x"), MS)])
    ex = analyze_http(open_rows(tmp_path, rows)).exchanges
    assert [(e.path, e.status, e.complete) for e in ex] == [("", 200, False), ("/next", 200, True)]
    assert "request not captured" in ex[0].note


def test_only_server_end_captured_and_ipv4_mapped(tmp_path):
    rows: list[dict] = []
    keepalive(Conn(rows, capture_client=False, server_laddr="::ffff:10.0.0.2"),
              [(request("GET", "/s"), response(200, b"x"), 5 * MS)])
    ex = analyze_http(open_rows(tmp_path, rows)).exchanges
    assert len(ex) == 1 and ex[0].measured_at == "server"
    assert (ex[0].client_pid, ex[0].server_pid) == (None, 2000)
    assert ex[0].client == "10.0.0.1:40000" and ex[0].server == "10.0.0.2:8080"

    rows = []
    keepalive(Conn(rows, server_laddr="::ffff:10.0.0.2"),
              [(request("GET", "/s"), response(200, b"x"), 5 * MS)])
    ex = analyze_http(open_rows(tmp_path, rows)).exchanges
    assert (ex[0].client_pid, ex[0].server_pid, ex[0].measured_at) == (1000, 2000, "client")


def test_unanswered_request_and_close_delimited_body():
    req = stream_from_writes([request("GET", "/x"), request("GET", "/y")])
    resp = stream_from_writes([b"HTTP/1.0 200 OK\r\n\r\nuntil the end"], ts0=1500, direction=1)
    msgs = http1.parse_requests(req)
    assert [m.path for m in msgs] == ["/x", "/y"]
    m = http1.parse_message(resp, 0, False, "GET")
    assert m is not None and m.end == resp.length and m.body_len == len(b"until the end")


# -- HTTP/2 and gRPC -------------------------------------------------------------------------------


def h2_frame(t: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([t, flags]) + sid.to_bytes(4, "big") + payload


def grpc_conversation(preface: bool = True) -> tuple[list[bytes], list[bytes]]:
    """Client and server writes of a gRPC connection: unary OK, server streaming, and an error."""
    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()

    def req(sid: int, method: str) -> bytes:
        block = enc_c.encode([(":method", "POST"), (":scheme", "http"), (":path", f"/demo.Greeter/{method}"),
                              (":authority", "localhost:50051"), ("content-type", "application/grpc"),
                              ("te", "trailers")])
        return h2_frame(1, 0x4, sid, block) + h2_frame(0, 0x1, sid, b"\x00\x00\x00\x00\x03abc")

    def resp(sid: int, messages: int, status: int, message: str = "") -> list[bytes]:
        head = h2_frame(1, 0x4, sid, enc_s.encode([(":status", "200"), ("content-type", "application/grpc")]))
        data = [h2_frame(0, 0, sid, b"\x00\x00\x00\x00\x02hi") for _ in range(messages)]
        trailers = [("grpc-status", str(status))] + ([("grpc-message", message)] if message else [])
        return [head, *data, h2_frame(1, 0x5, sid, enc_s.encode(trailers))]

    settings = h2_frame(4, 0, 0, b"\x00\x03\x00\x00\x00\x64")
    client = [(http_preface() if preface else b"") + settings, req(1, "SayHello"), req(3, "ListHellos"),
              req(5, "Fail")]
    server = [settings, h2_frame(4, 1, 0, b""), *resp(1, 1, 0), *resp(3, 3, 0),
              *resp(5, 0, 13, "bad%20thing")]
    return client, server


def http_preface() -> bytes:
    return b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def send_h2(c: Conn, client: list[bytes], server: list[bytes]) -> None:
    t = 10 * MS
    c.send(True, client[0], t)
    c.send(False, server[0] + server[1], t + MS)
    c.send(True, client[1], t + 2 * MS)
    for i, w in enumerate(server[2:5]):  # distinct times: equal ones would leave the order to the sort
        c.send(False, w, t + 3 * MS + i * 10_000)
    c.send(True, client[2], t + 4 * MS)
    for i, w in enumerate(server[5:10]):
        c.send(False, w, t + 5 * MS + i * 10_000)
    c.send(True, client[3], t + 6 * MS)
    for i, w in enumerate(server[10:]):
        c.send(False, w, t + 300 * MS + i * 10_000)


def test_grpc_unary_streaming_and_error(tmp_path):
    rows: list[dict] = []
    send_h2(Conn(rows, server=("10.0.0.2", 50051)), *grpc_conversation())
    res = analyze_http(open_rows(tmp_path, rows))
    ex = res.exchanges
    assert [(e.protocol, e.stream_id, e.grpc_service, e.grpc_method, e.grpc_status) for e in ex] == [
        ("grpc", 1, "demo.Greeter", "SayHello", 0), ("grpc", 3, "demo.Greeter", "ListHellos", 0),
        ("grpc", 5, "demo.Greeter", "Fail", 13)]
    assert ex[2].grpc_message == "bad thing"
    assert all(e.complete and e.status == 200 and e.method == "POST" for e in ex), [e.note for e in ex]
    assert all((e.client_pid, e.server_pid) == (1000, 2000) for e in ex)
    assert ex[2].latency_ns and ex[2].latency_ns > 250 * MS
    assert res.summary()["grpc_errors"] == 1
    assert "demo.Greeter/Fail" in res.to_text()


def test_h2_without_preface_says_headers_unavailable(tmp_path):
    client, server = grpc_conversation(preface=False)
    rows: list[dict] = []
    send_h2(Conn(rows, server=("10.0.0.2", 50051)), client, server)
    ex = analyze_http(open_rows(tmp_path, rows)).exchanges
    assert [e.stream_id for e in ex] == [1, 3, 5]
    assert all("connection began before capture" in e.note and not e.complete for e in ex)
    assert all(e.method == "" for e in ex)


def test_h2_header_block_in_gap_stops_decoding(tmp_path):
    client, server = grpc_conversation()
    client[2] = h2_frame(0, 0, 1, b"z" * 5000) + client[2]  # pushes stream 3's HEADERS beyond the snaplen
    rows: list[dict] = []
    send_h2(Conn(rows, server=("10.0.0.2", 50051)), client, server)
    ex = analyze_http(open_rows(tmp_path, rows)).exchanges
    by_id = {e.stream_id: e for e in ex}
    assert by_id[1].grpc_method == "SayHello"
    assert by_id[1].complete and not by_id[3].complete and not by_id[5].complete
    assert by_id[3].grpc_method == "" and "headers unavailable" in by_id[3].note
    assert by_id[5].grpc_method == "" and "headers unavailable" in by_id[5].note
    assert by_id[5].grpc_status == 13  # the other direction's HPACK state is intact


# -- WebSocket -------------------------------------------------------------------------------------


def ws_frame(opcode: int, payload: bytes, masked: bool) -> bytes:
    n = len(payload)
    head = bytes([0x80 | opcode])
    m = 0x80 if masked else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 65536:
        head += bytes([m | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([m | 127]) + n.to_bytes(8, "big")
    if masked:
        key = b"\x01\x02\x03\x04"
        return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def test_websocket_upgrade_and_frames(tmp_path):
    rows: list[dict] = []
    c = Conn(rows)
    t = 10 * MS
    c.send(True, request("GET", "/chat", headers="Upgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n"), t)
    c.send(False, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
           t + MS)
    for i in range(3):
        c.send(True, ws_frame(1, b"hello %d" % i, True), t + (2 + 2 * i) * MS)
        c.send(False, ws_frame(1, b"hello %d" % i, False), t + (3 + 2 * i) * MS)
    c.send(False, ws_frame(2, b"B" * 70_000, False), t + 20 * MS)  # 64-bit length, mostly uncaptured
    c.send(True, ws_frame(8, b"\x03\xe8bye", True), t + 30 * MS)
    c.send(False, ws_frame(8, b"\x03\xe8", False), t + 31 * MS)
    res = analyze_http(open_rows(tmp_path, rows))
    assert [(e.path, e.status) for e in res.exchanges] == [("/chat", 101)]
    (ws,) = res.websockets
    assert ws.complete, ws.note
    assert ws.counts() == {"client->server text": 3, "server->client text": 3, "server->client binary": 1,
                           "client->server close": 1, "server->client close": 1}
    assert all(f.masked == (f.direction == "client->server") for f in ws.frames)
    assert [f.close_code for f in ws.frames if f.opcode == 8] == [1000, 1000]
    assert [f.length for f in ws.frames if f.opcode == 2] == [70_000]


# -- TLS -------------------------------------------------------------------------------------------


def client_hello(sni: str, alpn: list[str]) -> bytes:
    def vec(b: bytes, w: int) -> bytes:
        return len(b).to_bytes(w, "big") + b

    name = vec(b"\x00" + vec(sni.encode(), 2), 2)
    alpn_b = vec(b"".join(vec(a.encode(), 1) for a in alpn), 2)
    exts = (b"\x00\x00" + vec(name, 2)) + (b"\x00\x10" + vec(alpn_b, 2))
    body = b"\x03\x03" + b"r" * 32 + vec(b"", 1) + vec(b"\x13\x01", 2) + vec(b"\x00", 1) + vec(exts, 2)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + vec(hs, 2)


def server_hello(alpn: str) -> bytes:
    def vec(b: bytes, w: int) -> bytes:
        return len(b).to_bytes(w, "big") + b

    exts = b"\x00\x2b" + vec(b"\x03\x04", 2) + b"\x00\x10" + vec(vec(vec(alpn.encode(), 1), 2), 2)
    body = b"\x03\x03" + b"s" * 32 + vec(b"", 1) + b"\x13\x01\x00" + vec(exts, 2)
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + vec(hs, 2)


def test_tls_client_hello_sni_and_decrypted_plaintext(tmp_path):
    rows: list[dict] = []
    c = Conn(rows, server=("10.0.0.2", 443))
    c.send(True, client_hello("api.example.test", ["h2", "http/1.1"]), 10 * MS)
    c.send(False, server_hello("http/1.1"), 11 * MS)
    c.send(True, b"\x17\x03\x03\x00\x05" + b"E" * 5, 12 * MS)
    plain: list[dict] = []
    keepalive(Conn(plain, server=("10.0.0.2", 443)), [(request("GET", "/secret"), response(200, b"s"), MS)])
    con = open_rows(tmp_path, rows, extra={"tls_data": plain})
    res = analyze_http(con)
    (t,) = res.tls
    assert (t.info.sni, t.info.alpn, t.info.version, t.info.handshake_seen, t.decrypted) == (
        "api.example.test", "http/1.1", "TLS 1.3", True, True)
    assert t.info.alpn_offered == ["h2", "http/1.1"]
    assert [(e.path, e.tls, e.conn_id) for e in res.exchanges] == [("/secret", True, t.conn_id)]


def test_tls_records_without_handshake():
    rec = b"\x17\x03\x03\x00\x10" + b"e" * 16
    info = tls.detect(stream_from_writes([rec, rec, rec]), stream_from_writes([rec * 3], direction=1))
    assert info is not None and not info.handshake_seen


# -- result, filters, SQL --------------------------------------------------------------------------


def _mixed(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    rows: list[dict] = []
    keepalive(Conn(rows), [(request("GET", f"/users/{i}"), response(200 if i % 3 else 503, b"u"),
                            (i + 1) * MS) for i in range(30)])
    keepalive(Conn(rows, client=("10.0.0.9", 40001), client_sock=5, server_sock=6, client_pid=3000),
              [(request("GET", "/health"), response(200), MS)] * 5)
    return open_rows(tmp_path, rows)


def test_result_text_json_and_endpoints(tmp_path):
    res = analyze_http(_mixed(tmp_path))
    eps = {e.endpoint: e for e in res.endpoints()}
    assert eps["GET /users/{id}"].count == 30 and eps["GET /users/{id}"].errors == 10
    assert eps["GET /health"].count == 5
    p = eps["GET /users/{id}"]
    assert p.p50_ms is not None and p.p90_ms is not None and p.p99_ms is not None
    assert 0 < p.p50_ms <= p.p90_ms <= p.p99_ms <= (p.max_ms or 0)
    text = res.to_text()
    assert "GET /users/{id}" in text and "Slowest requests" in text and "p99 ms" in text
    js = res.to_json()
    assert js["summary"]["exchanges"] == 35 and js["summary"]["status_5xx"] == 10
    assert len(js["exchanges"]) == 35 and len(js["slowest"]) == 10


def test_filters(tmp_path):
    con = _mixed(tmp_path)
    assert len(analyze_http(con, HttpParams(status="5xx")).exchanges) == 10
    assert len(analyze_http(con, HttpParams(status="200,503")).exchanges) == 35
    assert len(analyze_http(con, HttpParams(path="/health")).exchanges) == 5
    assert len(analyze_http(con, HttpParams(pid=3000)).exchanges) == 5
    slow = analyze_http(con, HttpParams(min_latency_ms=25))
    assert slow.exchanges and all((e.latency_ns or 0) >= 25 * MS for e in slow.exchanges)


def test_register_views(tmp_path):
    con = _mixed(tmp_path)
    store_tables(con, analyze_http(con))
    ((n, errors),) = con.execute("SELECT count(*), count(*) FILTER (status >= 500) FROM http_exchanges").fetchall()
    assert (n, errors) == (35, 10)
    assert con.execute("SELECT count(*) FROM http_websocket_frames").fetchall() == [(0,)]
    assert con.execute("SELECT count(*) FROM http_tls").fetchall() == [(0,)]


def test_no_sock_data_view():
    res = analyze_http(duckdb.connect())
    assert res.exchanges == [] and res.notes
    assert "HTTP: 0 exchanges" in res.to_text()


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 100, b"GET", b"HTTP/1.1 200", b"PRI * HTTP/2.0\r\n"])
def test_garbage_connection_is_unrecognized_or_incomplete(tmp_path, garbage):
    rows: list[dict] = []
    c = Conn(rows)
    if garbage:
        c.send(True, garbage, MS)
        c.send(False, garbage, 2 * MS)
    res = analyze_http(open_rows(tmp_path, rows))
    assert not res.notes or "unparsed" not in " ".join(res.notes)
    assert all(not e.complete for e in res.exchanges)

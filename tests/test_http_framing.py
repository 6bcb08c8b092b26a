"""HTTP/1 framing as RFC 9112 reads it (issue 15): message boundaries, body lengths and counts for the
cases where uetrace disagreed with a strict parser, each in one write and split over many; every
anomaly kind flagged with the message after it intact; and, as properties, framing that does not
depend on write boundaries."""

from __future__ import annotations

import pytest
from http_rows import MS, Conn, keepalive, open_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uetrace.analyze.http import analyze_http, http1
from uetrace.analyze.http import anomalies as A
from uetrace.analyze.http.connection import Connection, Socket, View
from uetrace.analyze.http.streams import EGRESS, INGRESS, stream_from_writes

FAST = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"
NEXT_RESP = b"HTTP/1.1 204 No Content\r\n\r\n"


def writings(data: bytes) -> list[list[bytes]]:
    """The same bytes as one write, one write per byte, and cut in three at fixed points."""
    n = len(data)
    thirds = [data[:n // 3], data[n // 3:2 * n // 3], data[2 * n // 3:]]
    return [[data], [data[i:i + 1] for i in range(n)], [p for p in thirds if p]]


def requests_of(writes: list[bytes]) -> list[tuple]:
    return [(m.start, m.end, m.method, m.path, m.body_len, m.complete, m.anomalies)
            for m in http1.parse_requests(stream_from_writes(writes))]


def view_of(c2s: list[bytes], s2c: list[bytes]) -> View:
    out = stream_from_writes(c2s, ts0=1_000, step=1_000, direction=EGRESS)
    back = stream_from_writes(s2c, ts0=1_500, step=1_000, direction=INGRESS)
    sock = Socket(1, 2, "127.0.0.1", 40000, "127.0.0.1", 80, out, back)
    return View(Connection(sock), out, back, True)


def exchanges_of(c2s: bytes, s2c: bytes, split: bool = False) -> list[tuple]:
    """(method, path, status, req bytes, resp bytes, complete, anomalies) per exchange."""
    v = view_of(writings(c2s)[1] if split else [c2s], writings(s2c)[1] if split else [s2c])
    exs, _ = http1.parse_exchanges(v, 0)
    return [(e.method, e.path, e.status, e.req_bytes, e.resp_bytes, e.complete, e.anomalies) for e in exs]


def same_whatever_the_writes(data: bytes) -> list[tuple]:
    """The requests of data, asserting every way of writing it frames the same."""
    results = [requests_of(w) for w in writings(data)]
    assert results[1] == results[0] and results[2] == results[0]
    return results[0]


# -- 1. empty lines before a message (RFC 9112 2.2) ------------------------------------------------

def test_empty_lines_before_and_between_pipelined_requests():
    a = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    data = b"\r\n" + a + b"\r\n\r\n" + NEXT + b"\r\n"
    got = same_whatever_the_writes(data)
    assert got == [(2, 2 + len(a), "POST", "/a", 3, True, ()),
                   (len(data) - 2 - len(NEXT), len(data) - 2, "GET", "/next", 0, True, ())]


def test_empty_line_after_a_response_body_in_the_same_write():
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\r\n" + NEXT_RESP
    for split in (False, True):
        got = exchanges_of(b"GET /a HTTP/1.1\r\n\r\n" + NEXT, resp, split)
        assert [(g[1], g[2], g[4], g[5]) for g in got] == [("/a", 200, 40, True), ("/next", 204, len(NEXT_RESP), True)]


def test_a_lone_lf_also_counts_as_an_empty_line():
    got = same_whatever_the_writes(b"\n" + NEXT + b"\n" + NEXT)
    assert [(s, e) for s, e, *_ in got] == [(1, 1 + len(NEXT)), (2 + len(NEXT), 2 + 2 * len(NEXT))]


# -- 2. Transfer-Encoding (RFC 9110 5.3, RFC 9112 6.1, 6.3) ----------------------------------------

@pytest.mark.parametrize("fields", [
    b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",  # two fields form one list
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"transfer-encoding: CHUNKED\r\n",  # codings are case-insensitive
])
def test_chunked_is_the_final_coding_of_all_fields(fields):
    body = b"3\r\nabc\r\n0\r\n\r\n"
    msg = b"POST /a HTTP/1.1\r\n" + fields + b"\r\n" + body
    got = same_whatever_the_writes(msg + NEXT)
    assert got == [(0, len(msg), "POST", "/a", 3, True, ()), (len(msg), len(msg) + len(NEXT), "GET", "/next", 0,
                                                             True, ())]


def test_chunkedchunked_is_not_chunked():
    msg = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunkedchunked\r\nContent-Length: 3\r\n\r\nabc"
    got = same_whatever_the_writes(msg + NEXT)
    assert [g[1:2] + g[4:6] for g in got] == [(len(msg), 3, True), (len(msg) + len(NEXT), 0, True)]
    assert A.TE_NOT_FINAL_CHUNKED in got[0][6] and A.CL_AND_TE in got[0][6]


def test_a_request_whose_final_coding_is_not_chunked_cannot_be_framed():
    got = same_whatever_the_writes(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\nzzzz")
    assert [(g[1], g[5], g[6]) for g in got] == [(54, False, (A.TE_NOT_FINAL_CHUNKED,))]


def test_a_response_whose_final_coding_is_not_chunked_runs_to_the_close():
    resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n" + b"1\r\nx\r\n0\r\n\r\n" + NEXT_RESP
    for split in (False, True):
        (got,) = exchanges_of(b"GET /a HTTP/1.1\r\n\r\n", resp, split)
        assert got[2:6] == (200, 19, len(resp), True)
        assert got[6] == [A.TE_NOT_FINAL_CHUNKED, A.DESYNC]  # a recipient that reads it as chunked stops earlier


# -- 3. CONNECT (RFC 9110 9.3.6) -------------------------------------------------------------------

def test_connect_request_body_is_not_read_and_the_bytes_after_it_are_tunnel_data():
    head = b"CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\nContent-Length: 3\r\n\r\n"
    tunnel = b"abc\x16\x03\x01 GET /x HTTP/1.1\r\n\r\n"
    got = same_whatever_the_writes(head + tunnel)
    assert got == [(0, len(head), "CONNECT", "db.example:5432", 0, True, ())]
    (ex,) = exchanges_of(head + tunnel, b"")  # no answer captured: still a tunnel
    assert ex[0] == "CONNECT" and ex[6] == [A.TUNNEL]


def test_connect_answered_2xx_switches_to_a_tunnel():
    head = b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"
    resp = b"HTTP/1.1 200 Connection established\r\nContent-Length: 5\r\n\r\n"
    for split in (False, True):
        v = view_of(writings(head + b"\x16\x03\x01tls")[1] if split else [head + b"\x16\x03\x01tls"],
                    [resp + b"\x16\x03\x03xx"])
        exs, switch = http1.parse_exchanges(v, 0)
        assert [(e.method, e.status, e.req_bytes, e.resp_bytes, e.anomalies) for e in exs] == [
            ("CONNECT", 200, len(head), len(resp), [A.TUNNEL])]
        assert switch is not None and (switch.protocol, switch.request_end, switch.response_end) == \
            ("tunnel", len(head), len(resp))


def test_connect_declined_lets_the_next_request_be_read():
    head = b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n"
    resp = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n" + NEXT_RESP
    for split in (False, True):
        got = exchanges_of(head + NEXT, resp, split)
        assert [(g[0], g[2], g[5], g[6]) for g in got] == [("CONNECT", 407, True, []), ("GET", 204, True, [])]


# -- 4. Content-Length (RFC 9112 6.3) --------------------------------------------------------------

def test_equal_content_lengths_frame_and_are_flagged():
    for fields in (b"Content-Length: 3\r\nContent-Length: 3\r\n", b"Content-Length: 3, 3\r\n"):
        msg = b"POST /a HTTP/1.1\r\n" + fields + b"\r\nabc"
        got = same_whatever_the_writes(msg + NEXT)
        assert got == [(0, len(msg), "POST", "/a", 3, True, (A.DUPLICATE_CONTENT_LENGTH,)),
                       (len(msg), len(msg) + len(NEXT), "GET", "/next", 0, True, ())]


@pytest.mark.parametrize("fields", [b"Content-Length: 3\r\nContent-Length: 5\r\n", b"Content-Length: 5, 3\r\n"])
def test_conflicting_content_lengths_are_flagged_and_the_next_request_is_kept(fields):
    msg = b"POST /a HTTP/1.1\r\n" + fields + b"\r\nabcde"  # the 5-byte reading is the one a request follows
    got = same_whatever_the_writes(msg + NEXT)
    assert [g[:2] + g[4:6] for g in got] == [(0, len(msg), 5, True), (len(msg), len(msg) + len(NEXT), 0, True)]
    assert got[0][6] == (A.CONFLICTING_CONTENT_LENGTH, A.DESYNC) and got[1][2:4] == ("GET", "/next")


def test_a_content_length_that_is_not_a_number_is_a_framing_error():
    got = same_whatever_the_writes(b"POST /a HTTP/1.1\r\nContent-Length: 0x3\r\n\r\nabc")
    assert [(g[5], g[6]) for g in got] == [(False, (A.INVALID_CONTENT_LENGTH,))]


def test_cl_and_te_frame_by_te_and_flag_desync_only_when_the_readings_differ():
    body = b"3\r\nabc\r\n0\r\n\r\n"
    for cl, desync in ((len(body), False), (3, True)):
        msg = b"POST /a HTTP/1.1\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % cl + body
        got = same_whatever_the_writes(msg + NEXT)
        assert [g[1] for g in got] == [len(msg), len(msg) + len(NEXT)]
        assert got[0][6] == ((A.CL_AND_TE, A.DESYNC) if desync else (A.CL_AND_TE,))


# -- 5. not HTTP/1 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("c2s, s2c", [
    (b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n\r\n", b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n"),
    (b"GET /\r\n", b"<html>hello</html>"),  # HTTP/0.9
    (b"GET /x ICE/1.0\r\n\r\n", b"ICE/1.0 200 OK\r\n\r\n"),
    (b"GET / HTTP/2.0\r\n\r\n", b""),
])
def test_other_protocols_are_never_http1_exchanges(c2s, s2c):
    v = view_of([c2s], [s2c] if s2c else [])
    assert not http1.looks_like_requests(v.requests) and not http1.looks_like_responses(v.responses)
    assert http1.parse_exchanges(v, 0)[0] == []


def test_an_rtsp_connection_is_not_reported_as_http(tmp_path):
    rows: list[dict] = []
    keepalive(Conn(rows), [(b"OPTIONS rtsp://cam/1 RTSP/1.0\r\nCSeq: 1\r\n\r\n",
                            b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: DESCRIBE\r\n\r\n", MS)])
    res = analyze_http(open_rows(tmp_path, rows))
    assert res.exchanges == [] and res.unrecognized == 1


# -- every anomaly kind, flagged, with the next message intact -------------------------------------

REQUEST_ANOMALIES = [
    (A.CL_AND_TE, b"POST /a HTTP/1.1\r\nContent-Length: 15\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    (A.DUPLICATE_CONTENT_LENGTH, b"POST /a HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx"),
    (A.CONFLICTING_CONTENT_LENGTH, b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx"),
    (A.INVALID_CONTENT_LENGTH,
     b"POST /a HTTP/1.1\r\nContent-Length: +1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    (A.TE_NOT_FINAL_CHUNKED, b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked, identity\r\nContent-Length: 1\r\n\r\nx"),
    (A.TE_CHUNKED_TWICE, b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    (A.TE_IN_HTTP10, b"POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    (A.BARE_LF, b"GET /a HTTP/1.1\nHost: h\n\n"),
    (A.BARE_CR, b"GET /a HTTP/1.1\r\nX-A: 1\rX-B: 2\r\n\r\n"),
    (A.SPACE_BEFORE_COLON, b"POST /a HTTP/1.1\r\nContent-Length : 1\r\n\r\nx"),
    (A.LEADING_WHITESPACE_HEADER, b"GET /a HTTP/1.1\r\n Host: h\r\n\r\n"),
    (A.OBS_FOLD, b"GET /a HTTP/1.1\r\nX-Long: one\r\n\ttwo\r\n\r\n"),
    (A.INVALID_HEADER_NAME, b"GET /a HTTP/1.1\r\nX(y): 1\r\n\r\n"),
    (A.INVALID_HEADER_NAME, b"GET /a HTTP/1.1\r\nno colon here\r\n\r\n"),
    (A.INVALID_HEADER_VALUE, b"GET /a HTTP/1.1\r\nX-A: a\x00b\r\n\r\n"),
    (A.INVALID_METHOD, b"G@T /a HTTP/1.1\r\n\r\n"),
    (A.INVALID_TARGET, b"GET /a|<b> HTTP/1.1\r\n\r\n"),
    (A.INVALID_TARGET, b"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n"),
    (A.INVALID_CHUNK_SIZE, b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 x\r\nx\r\n0\r\n\r\n"),
    (A.INVALID_CHUNK_SIZE, b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;\r\nx\r\n0\r\n\r\n"),
    (A.BARE_LF, b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\nx\n0\n\n"),
    (A.CHUNK_MISSING_CRLF, b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxyz0\r\n\r\n"),
    (A.DESYNC, b"POST /a HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"),
    (A.DESYNC, b"POST /a HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("kind, msg", REQUEST_ANOMALIES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(REQUEST_ANOMALIES)])
def test_each_request_anomaly_is_flagged_and_the_next_request_intact(kind, msg):
    got = same_whatever_the_writes(msg + NEXT)
    assert kind in got[0][6], got
    assert got[-1] == (len(msg), len(msg) + len(NEXT), "GET", "/next", 0, True, ())
    assert len(got) == 2


RESPONSE_ANOMALIES = [
    (A.CL_AND_TE, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    (A.CONFLICTING_CONTENT_LENGTH, b"HTTP/1.1 200 OK\r\nContent-Length: 2, 1\r\n\r\nx"),
    (A.BARE_LF, b"HTTP/1.1 200 OK\nContent-Length: 1\n\nx"),
    (A.OBS_FOLD, b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 1\r\n\r\nx"),
    (A.INVALID_CHUNK_SIZE, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1x\r\nx\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("kind, msg", RESPONSE_ANOMALIES)
def test_each_response_anomaly_is_flagged_and_the_next_exchange_intact(kind, msg):
    for split in (False, True):
        got = exchanges_of(b"GET /a HTTP/1.1\r\n\r\n" + NEXT, msg + NEXT_RESP, split)
        assert kind in got[0][6], got
        assert got[0][4] == len(msg) and got[1] == ("GET", "/next", 204, len(NEXT), len(NEXT_RESP), True, [])


def test_an_interim_response_gives_its_anomalies_to_the_exchange():
    resp = b"HTTP/1.1 100 Continue\nX: 1\n\n" + NEXT_RESP
    for split in (False, True):
        assert exchanges_of(NEXT, resp, split) == [("GET", "/next", 204, len(NEXT), len(NEXT_RESP), True, [A.BARE_LF])]


def test_kinds_are_stable_snake_case_names():
    assert len(set(A.KINDS)) == len(A.KINDS)
    assert all(k.replace("_", "").isalnum() and k == k.lower() for k in A.KINDS)
    flagged = {k for k, _ in REQUEST_ANOMALIES + RESPONSE_ANOMALIES} | {A.TUNNEL}
    assert flagged == set(A.KINDS)  # every kind has a test above


# -- properties: valid framing does not depend on write boundaries --------------------------------

tokens = st.from_regex(rb"[a-z][a-z0-9-]{0,10}", fullmatch=True)


@st.composite
def valid_requests(draw) -> tuple[bytes, list[tuple[str, int]]]:
    """Pipelined requests, valid by RFC 9112, with what each is: (path, body length)."""
    data, expect = b"", []
    for n in range(draw(st.integers(1, 5))):
        data += b"\r\n" * draw(st.integers(0, 2))
        body = draw(st.binary(max_size=60))
        head = b"POST /r%d HTTP/1.1\r\nHost: h\r\n" % n
        for _ in range(draw(st.integers(0, 2))):
            head += draw(tokens) + b":" + b" " * draw(st.integers(0, 2)) + draw(tokens) + b"\r\n"
        kind = draw(st.sampled_from(["length", "list", "chunked", "te-list", "none"]))
        if kind == "none":
            body = b""
        if kind == "length":
            head += b"Content-Length: %d\r\n" % len(body)
        elif kind == "list":
            head += b"Content-Length: %d\r\nContent-Length: %d\r\n" % (len(body), len(body))
        elif kind in ("chunked", "te-list"):
            head += b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n" if kind == "te-list" \
                else b"Transfer-Encoding: chunked\r\n"
            size = draw(st.integers(1, 20))
            parts = [body[i:i + size] for i in range(0, len(body), size)]
            body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        data += head + b"\r\n" + body
        expect.append((f"/r{n}", len(head) + 2 + len(body)))
    return data, expect


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c for c in cuts if 0 < c < len(data)})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True) if b > a]


@FAST
@given(valid_requests(), st.lists(st.integers(0, 2000), max_size=15))
def test_valid_requests_frame_the_same_whatever_the_writes(reqs, cuts):
    data, expect = reqs
    whole = requests_of([data])
    assert [(path, end - start) for start, end, _, path, *_ in whole] == expect
    # Equal Content-Length fields are valid framing, but still worth a flag.
    assert all(complete and set(anomalies) <= {A.DUPLICATE_CONTENT_LENGTH} for *_, complete, anomalies in whole)
    assert requests_of(_cut(data, cuts)) == whole


@FAST
@given(st.sampled_from(REQUEST_ANOMALIES), st.lists(st.integers(0, 400), max_size=10))
def test_anomalies_are_flagged_whatever_the_writes(case, cuts):
    kind, msg = case
    data = msg + NEXT
    assert requests_of(_cut(data, cuts)) == requests_of([data])


FRAGMENTS = [b"GET / HTTP/1.1\r\n", b"POST /p HTTP/1.0\r\n", b"CONNECT h:1 HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n",
             b"HTTP/1.1 101 S\r\n", b"Upgrade: websocket\r\n", b"Content-Length: 3\r\n", b"Content-Length: 2, 3\r\n",
             b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n", b"Content-Length : 1\r\n",
             b" folded\r\n", b"X: \x00\r\n", b"\r\n", b"\n", b"\r", b"0\r\n", b"5;x=\"y\"\r\n",
             b"fffffffffffffffffff\r\n", b"abc", b"hello", b"\x16\x03\x01"]


@FAST
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=30), st.lists(st.sampled_from(FRAGMENTS), max_size=30),
       st.lists(st.integers(0, 600), max_size=8))
def test_http_shaped_garbage_never_raises(c2s, s2c, cuts):
    reqs, resps = b"".join(c2s), b"".join(s2c)
    for v in (view_of([reqs], [resps]), view_of(_cut(reqs, cuts), _cut(resps, cuts))):
        exs, _ = http1.parse_exchanges(v, 0)
        assert all(not e.note.startswith("unparsed") for e in exs)
        assert all(set(e.anomalies) <= set(A.KINDS) for e in exs)

"""The maskers on their own: HTTP/1 header values and URLs (split across payloads, folded, any case),
HPACK literals (raw and Huffman-coded, decoded back by the hpack library the analyzer uses), command
lines, and the table redactor's cheap test and per-stream state."""

from __future__ import annotations

import hpack
import pyarrow as pa
import pytest

from uetrace.redaction.cmdline import mask_cmdline
from uetrace.redaction.hpack_values import PREFACE, H2Direction, mask_h2
from uetrace.redaction.http1 import mask_http1, mask_url
from uetrace.redaction.policy import RedactionPolicy
from uetrace.redaction.tables import TableRedactor

P = RedactionPolicy()


def masked(text: bytes, policy: RedactionPolicy = P) -> bytes:
    buf = bytearray(text)
    mask_http1(buf, policy)
    assert len(buf) == len(text)
    return bytes(buf)


def test_deny_list_any_case_and_words():
    req = (b"GET / HTTP/1.1\r\nHost: h\r\nauthorization: Bearer abc\r\nPROXY-AUTHORIZATION: Basic xyz\r\n"
           b"CoOkIe: a=b\r\nX-Api-Key: k1\r\nX-Csrf-Token: t1\r\nX-Session-Id: s1\r\nX-My-Secret: q\r\n"
           b"Db-Password: pw\r\nAccept: text/html\r\n\r\n")
    out = masked(req)
    for secret in (b"abc", b"xyz", b"a=b", b"k1", b"t1", b"s1", b": q", b"pw"):
        assert secret not in out
    assert b"Host: h\r\n" in out and b"Accept: text/html" in out and b"authorization: **********\r\n" in out


def test_response_set_cookie_and_redact_keep_options():
    resp = b"HTTP/1.1 200 OK\r\nSet-Cookie: sid=1; HttpOnly\r\nX-Trace: t\r\nCookie: c\r\n\r\n"
    out = masked(resp, RedactionPolicy.make(redact=["x-trace"], keep=["Cookie"]))
    assert b"sid=1" not in out and b"X-Trace: *\r\n" in out and b"Cookie: c\r\n" in out


def test_query_values_and_userinfo():
    out = masked(b"GET /a/b?token=s3cr3t&x=&flag&y=2#frag HTTP/1.1\r\nReferer: https://u:p@host/p?k=v\r\n\r\n")
    assert out.startswith(b"GET /a/b?token=******&x=&flag&y=*#frag HTTP/1.1\r\n")
    assert b"Referer: https://***@host/p?k=*\r\n" in out
    buf = bytearray(b"https://user:pw@example.com:8080/x?a=1")
    assert mask_url(buf, 0, len(buf)) == 2 and buf == bytearray(b"https://*******@example.com:8080/x?a=*")


def test_folded_value_is_masked():
    out = masked(b"GET / HTTP/1.1\r\nAuthorization: Bearer\r\n  abcdef\r\n\tghi\r\nAccept: x\r\n\r\n")
    assert b"abcdef" not in out and b"ghi" not in out and b"Accept: x" in out


def test_header_split_across_payloads_through_the_carry():
    first = bytearray(b"GET /x HTTP/1.1\r\nHost: h\r\nAuthori")
    n, carry = mask_http1(first, P)
    assert n == 0 and carry == b"Authori"
    second = bytearray(carry + b"zation: Bearer abc\r\nX: y\r\n\r\n")
    n, carry = mask_http1(second, P, start=len(carry))
    assert n == 1 and bytes(second[7:]) == b"zation: **********\r\nX: y\r\n\r\n"
    # a value split: the part in the next payload is masked too
    first = bytearray(b"Cookie: ab")
    _, carry = mask_http1(first, P)
    assert first == bytearray(b"Cookie: **")
    second = bytearray(carry + b"cd\r\n\r\n")
    mask_http1(second, P, start=len(carry))
    assert bytes(second[len(carry):]) == b"**\r\n\r\n"


def test_truncated_prefix_masks_what_is_visible():
    assert masked(b"GET /p?token=abc") == b"GET /p?token=***"
    assert masked(b"POST / HTTP/1.1\r\nAuthorization: Bea") == b"POST / HTTP/1.1\r\nAuthorization: ***"


def test_bodies_that_are_not_headers_are_left_alone():
    body = b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"a\": 1, \"b\": [2]}\r\n"
    assert masked(body) == body


@pytest.mark.parametrize("huffman", [False, True])
def test_hpack_literals_masked_and_still_decodable(huffman):
    enc = hpack.Encoder()
    headers = [(":method", "GET"), (":path", "/x?token=SECRETQ&a=1"), ("authorization", "Bearer SECRETA"),
               ("cookie", "sid=SECRETC"), ("x-my-token", "SECRETT"), ("user-agent", "ua/1")]
    blocks = [enc.encode(headers, huffman=huffman), enc.encode(headers, huffman=huffman)]  # 2nd: indexed

    def frame(ftype, flags, stream, body):
        return len(body).to_bytes(3, "big") + bytes([ftype, flags]) + stream.to_bytes(4, "big") + body

    data = PREFACE + frame(4, 0, 0, b"") + frame(1, 4, 1, blocks[0]) + frame(1, 4, 3, blocks[1])
    buf = bytearray(data)
    assert mask_h2(buf, len(buf), H2Direction(), P) == 5
    assert len(buf) == len(data) and b"SECRET" not in buf
    dec = hpack.Decoder()
    off = len(PREFACE) + 9
    got = []
    for _ in blocks:
        n = int.from_bytes(buf[off:off + 3], "big")
        got.append(dec.decode(bytes(buf[off + 9:off + 9 + n])))
        off += 9 + n
    first = dict(got[0])
    assert got[0] == got[1]          # the dynamic table stayed in step: same decoded lengths
    assert first[":method"] == "GET" and first["user-agent"] == "ua/1"
    assert first[":path"].startswith("/x?token=") and "SECRET" not in first[":path"]
    assert len(first[":path"]) == len("/x?token=SECRETQ&a=1")
    assert all(len(first[k]) == len(v) and "SECRET" not in first[k] for k, v in headers[2:5])


def test_hpack_frames_split_across_payloads():
    enc = hpack.Encoder()
    block = enc.encode([(":path", "/"), ("authorization", "SECRETVALUE")], huffman=False)
    data = (len(block).to_bytes(3, "big") + bytes([1, 4]) + (1).to_bytes(4, "big") + block
            + (4).to_bytes(3, "big") + bytes([0, 0]) + (1).to_bytes(4, "big") + b"body")
    d = H2Direction()
    cut = 9 + len(block) + 3   # the second frame's header is cut
    a, b = bytearray(data[:cut]), bytearray(data[cut:])
    mask_h2(a, len(a), d, P)
    assert b"SECRET" not in a
    mask_h2(b, len(b), d, P)   # framing lost at the cut: nothing to parse, nothing broken
    assert bytes(b) == data[cut:]


@pytest.mark.parametrize("line, want", [
    ("psql --password=hunter2 -h db", "psql --password=******* -h db"),
    ("app --db-password=abc --port 5", "app --db-password=*** --port 5"),
    ("app --token abc --verbose", "app --token *** --verbose"),
    ("app --auth --verbose", "app --auth --verbose"),
    ("env PGPASSWORD=xyz FOO=1", "env PGPASSWORD=*** FOO=1"),
    ("tool token=abc", "tool token=***"),
    ("psql postgres://me:pw@db/x?sslpassword=q", "psql postgres://*****@db/x?sslpassword=*"),
    ("python3 server.py --port 8080", "python3 server.py --port 8080"),
    # curl's header arguments, as a capture of a curl that lived long enough records them
    ("curl -s -H Authorization: Bearer Zq123 -b session=Zq456 -H X-Api-Key: Zq789 http://h/",
     "curl -s -H Authorization: Bearer ***** -b session=***** -H X-Api-Key: ***** http://h/"),
    ("curl -H Authorization:Basic dXNlcjpw -H Cookie:a=b http://h/",
     "curl -H Authorization:Basic ******** -H Cookie:*** http://h/"),
    ("curl -H Proxy-Authorization: abc -H Accept: */* http://h/",
     "curl -H Proxy-Authorization: *** -H Accept: */* http://h/"),
    ("curl -H X-Session-Token: -v http://h/", "curl -H X-Session-Token: -v http://h/"),
    ("app oauth://h/x", "app oauth://h/x"),
])
def test_command_lines(line, want):
    got, n = mask_cmdline(line)
    assert got == want and (n > 0) == (line != want)


def _sock_table(payloads: list[bytes], sock_id: int = 7) -> pa.Table:
    n = len(payloads)
    return pa.table({"sock_id": pa.array([sock_id] * n, pa.uint64()), "pid": pa.array([1] * n, pa.uint32()),
                     "fd": pa.array([3] * n, pa.int32()), "direction": pa.array([0] * n, pa.uint8()),
                     "bytes": pa.array([len(p) for p in payloads], pa.int64()),
                     "captured": pa.array([len(p) for p in payloads], pa.uint32()),
                     "payload": pa.array(payloads, pa.binary()).cast(pa.binary_view())})


def test_table_redactor_keeps_types_rows_and_stream_state_across_batches():
    r = TableRedactor()
    plain = [b"\x00binary", b"HTTP/1.1 200 OK\r\n\r\nno secret here"]
    t = _sock_table(plain)
    assert r.redact("sock_data", t) is t      # nothing matched: the table itself, untouched
    first = _sock_table([b"GET /?a=1 HTTP/1.1\r\nX-Api-"])
    out = r.redact("sock_data", first)
    assert out.schema == first.schema and out.column("payload").to_pylist()[0] == b"GET /?a=* HTTP/1.1\r\nX-Api-"
    second = _sock_table([b"Key: k123\r\n\r\n"])   # no trigger word of its own: the stream's carry finds it
    assert r.redact("sock_data", second).column("payload").to_pylist() == [b"Key: ****\r\n\r\n"]
    assert r.to_manifest()["masked"] == {"sock_data": 2}


def test_table_redactor_processes_and_other_tables():
    r = TableRedactor()
    procs = pa.table({"pid": pa.array([1, 2], pa.uint32()), "cmdline": ["db --password=pw", "sleep 1"]})
    assert r.redact("processes", procs).column("cmdline").to_pylist() == ["db --password=**", "sleep 1"]
    other = pa.table({"payload": pa.array([b"token=1"], pa.binary())})
    assert r.redact("lock_event", other) is other


def test_a_body_end_carried_over_does_not_swallow_the_next_message():
    r = TableRedactor()
    r.redact("tls_data", _sock_table([b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", b"secret: 9"]))
    status = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 2\r\n\r\n"
    assert r.redact("tls_data", _sock_table([status])).column("payload").to_pylist() == [status]


def test_tls_records_in_sock_data_are_not_searched_but_tls_data_is():
    r = TableRedactor()
    record = b"\x17\x03\x03\x00\x20" + b"token=x Cookie: y\r\n"   # ciphertext that happens to look like text
    assert r.redact("sock_data", _sock_table([record])).column("payload").to_pylist() == [record]
    assert r.redact("tls_data", _sock_table([b"GET /?token=1 HTTP/1.1\r\n\r\n"])).column("payload").to_pylist() == \
        [b"GET /?token=* HTTP/1.1\r\n\r\n"]


def test_a_failure_masks_the_whole_column_and_is_recorded(monkeypatch):
    import uetrace.redaction.tables as tables

    def broken(*a, **k):
        raise IndexError("a bug")

    monkeypatch.setattr(tables, "mask_http1", broken)
    r = TableRedactor()
    t = _sock_table([b"GET /?token=1 HTTP/1.1\r\n\r\n", b"ab"])
    out = r.redact("sock_data", t)
    assert out.schema == t.schema
    assert out.column("payload").to_pylist() == [b"*" * 26, b"**"]
    m = r.to_manifest()
    assert m["blanked"] == {"sock_data": 2} and "IndexError" in m["error"]


def test_http2_connection_whose_start_was_not_captured():
    enc = hpack.Encoder()
    enc.encode([("x-old", "warm the dynamic table")], huffman=False)   # what the capture never saw
    block = enc.encode([(":path", "/svc/Get"), ("authorization", "Bearer SECRETMID"), ("x-id", "SECRETDYN")],
                       huffman=False)
    block += enc.encode([("x-id", "SECRETDYN2")], huffman=False)   # a literal named by a dynamic-table index
    frame = len(block).to_bytes(3, "big") + bytes([1, 4]) + (7).to_bytes(4, "big") + block
    assert frame.count(b"SECRET") == 3
    out = TableRedactor().redact("sock_data", _sock_table([frame])).column("payload").to_pylist()[0]
    assert len(out) == len(frame) and b"/svc/Get" in out
    assert b"SECRETMID" not in out and b"SECRETDYN2" not in out   # a static name; a dynamic one, unknown
    assert b"x-id\tSECRETDYN" in out    # a literal name that is no secret: kept


def _tcp_checksum(frame: bytes, l4: int) -> int:
    """The TCP checksum of an Ethernet/IPv4 frame computed from scratch (what tshark's check does)."""
    import struct

    ip = frame[14:l4]
    segment = bytearray(frame[l4:])
    segment[16:18] = b"\0\0"
    pseudo = ip[12:20] + bytes([0, 6]) + struct.pack("!H", len(segment))
    data = pseudo + segment + (b"\0" if len(segment) % 2 else b"")
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _tcp_frame(payload: bytes, seq: int = 1000, ack: int = 0, window: int = 512) -> bytes:
    import struct

    tcp = struct.pack("!HHIIBBHHH", 40000, 80, seq, ack, 5 << 4, 0x18, window, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, bytes([127, 0, 0, 1]),
                     bytes([127, 0, 0, 2]))
    frame = bytearray(b"\0" * 12 + b"\x08\x00" + ip + tcp)
    frame[34 + 16:34 + 18] = struct.pack("!H", _tcp_checksum(bytes(frame), 34))
    return bytes(frame)


def _packets(frames: list[bytes], payloads: list[bytes], seqs: list[int]) -> pa.Table:
    n = len(frames)
    return pa.table({"ifindex": pa.array([1] * n, pa.uint32()), "direction": pa.array([0] * n, pa.uint8()),
                     "sport": pa.array([40000] * n, pa.uint16()), "dport": pa.array([80] * n, pa.uint16()),
                     "protocol": pa.array([6] * n, pa.uint8()), "l4_offset": pa.array([34] * n, pa.uint16()),
                     "payload_len": pa.array([len(p) for p in payloads], pa.uint16()),
                     "seq": pa.array(seqs, pa.uint32()),
                     "payload": pa.array(frames, pa.binary()).cast(pa.binary_view())})


def test_packet_payload_masked_with_its_tcp_checksum_updated():
    import struct

    payload = b"GET /x?token=s3cr3t HTTP/1.1\r\nCookie: a=b\r\n\r\n"
    frame = _tcp_frame(payload)
    (out,) = TableRedactor().redact("net_packet", _packets([frame], [payload], [1000])).column("payload").to_pylist()
    assert len(out) == len(frame) and b"s3cr3t" not in out and b"a=b" not in out
    assert out.endswith(b"GET /x?token=****** HTTP/1.1\r\nCookie: ***\r\n\r\n")
    assert struct.unpack("!H", out[50:52])[0] == _tcp_checksum(out, 34)


def test_packet_flow_state_only_while_a_header_continues():
    """A trigger in a frame's own headers ('?' and '=' in the ack and window fields) is not the payload's:
    nothing is kept for the flow. A header name cut at a packet's end keeps the flow's state until the
    next packet completes it, then none is left."""
    r = TableRedactor()
    plain = b"HTTP/1.1 204 No Content\r\n\r\n"
    frame = _tcp_frame(plain, ack=0x3F414243, window=0x3D3D)
    (out,) = r.redact("net_packet", _packets([frame], [plain], [1000])).column("payload").to_pylist()
    assert out == frame and not r._by_kind["net_packet"]
    first, second = b"GET / HTTP/1.1\r\nX-Api-", b"Key: k123\r\n\r\n"
    t = _packets([_tcp_frame(first, seq=5000), _tcp_frame(second, seq=5000 + len(first))], [first, second],
                 [5000, 5000 + len(first)])
    outs = r.redact("net_packet", t.slice(0, 1)).column("payload").to_pylist()
    assert outs[0].endswith(first) and len(r._by_kind["net_packet"]) == 1
    outs = r.redact("net_packet", t.slice(1, 1)).column("payload").to_pylist()
    assert outs[0].endswith(b"Key: ****\r\n\r\n") and not r._by_kind["net_packet"]


def test_form_and_json_fields_in_bodies():
    form = masked(b"POST /login HTTP/1.1\r\nContent-Length: 36\r\n\r\nuser=bob&password=hunter2&remember=1")
    assert form.endswith(b"\r\n\r\nuser=bob&password=*******&remember=1")
    body = masked(b'HTTP/1.1 200 OK\r\n\r\n'
                  b'{"access_token": "eyJabc", "n": 1, "Session_Id":"s\\"1", "refresh_token": "cu')
    assert body.endswith(b'{"access_token": "******", "n": 1, "Session_Id":"****", "refresh_token": "**')


def test_a_trigger_word_in_a_value_does_not_hide_a_secret_name():
    assert masked(b"X-Token: session=abc\r\n\r\n") == b"X-Token: ***********\r\n\r\n"

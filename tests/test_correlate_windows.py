"""Windows and evidence from hand-made socket records (no kernel): the far end's window bounded by
causality on a keep-alive connection, a server-only capture measured at the server, an event loop's
thread split by the windows of the requests it serves at once, and the traceparent read from the
request bytes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from uetrace.analyze import correlate
from uetrace.analyze.archive import ExtractedArchive
from uetrace.analyze.archive_db import ArchiveDb

REQ = b"GET /%s HTTP/1.1\r\nHost: x\r\n%s\r\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
TP = b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
EGRESS, INGRESS = 0, 1

# (pid, tid, local, remote, direction, ts_enter, ts_exit, payload)
ROWS = [
    # Both ends of one keep-alive connection, two exchanges (the server's reads block before the data).
    (1, 11, ("10.0.0.1", 5000), ("10.0.0.2", 80), EGRESS, 100, 105, REQ % (b"a", b"")),
    (2, 21, ("10.0.0.2", 80), ("10.0.0.1", 5000), INGRESS, 50, 110, REQ % (b"a", b"")),
    (2, 21, ("10.0.0.2", 80), ("10.0.0.1", 5000), EGRESS, 200, 210, RESP),
    (1, 11, ("10.0.0.1", 5000), ("10.0.0.2", 80), INGRESS, 102, 215, RESP),
    (1, 11, ("10.0.0.1", 5000), ("10.0.0.2", 80), EGRESS, 300, 305, REQ % (b"b", b"")),
    (2, 21, ("10.0.0.2", 80), ("10.0.0.1", 5000), INGRESS, 215, 310, REQ % (b"b", b"")),
    (2, 21, ("10.0.0.2", 80), ("10.0.0.1", 5000), EGRESS, 400, 405, RESP),
    (1, 11, ("10.0.0.1", 5000), ("10.0.0.2", 80), INGRESS, 306, 410, RESP),
    # A server-only capture of a client that sent a traceparent.
    (2, 22, ("10.0.0.2", 80), ("10.0.0.3", 6000), INGRESS, 500, 520, REQ % (b"c", TP)),
    (2, 22, ("10.0.0.2", 80), ("10.0.0.3", 6000), EGRESS, 600, 610, RESP),
    # An event loop: one thread serves two connections at once.
    (3, 31, ("10.0.0.4", 8080), ("10.0.0.5", 7001), INGRESS, 990, 1000, REQ % (b"d", b"")),
    (3, 31, ("10.0.0.4", 8080), ("10.0.0.5", 7002), INGRESS, 1005, 1010, REQ % (b"e", b"")),
    (3, 31, ("10.0.0.4", 8080), ("10.0.0.5", 7002), EGRESS, 1045, 1050, RESP),
    (3, 31, ("10.0.0.4", 8080), ("10.0.0.5", 7001), EGRESS, 1095, 1100, RESP),
]
SAMPLES = [(3, 31, 1020), (3, 31, 1070), (3, 32, 1030), (2, 21, 150), (2, 21, 250)]


@pytest.fixture
def db(tmp_path: Path):
    root = tmp_path / "cap"
    (root / "events" / "sock_data").mkdir(parents=True)
    (root / "events" / "stack_sample").mkdir(parents=True)
    n = len(ROWS)
    base = 1_000_000_000
    pq.write_table(pa.table({
        "cpu": pa.array([0] * n, pa.uint32()),
        "ts_enter": pa.array([base + r[5] for r in ROWS], pa.uint64()),
        "ts_exit": pa.array([base + r[6] for r in ROWS], pa.uint64()),
        "sock_id": pa.array([hash((r[0], r[2], r[3])) & 0xFFFFFFFF for r in ROWS], pa.uint64()),
        "pid": pa.array([r[0] for r in ROWS], pa.uint32()), "tid": pa.array([r[1] for r in ROWS], pa.uint32()),
        "fd": pa.array([5] * n, pa.int32()), "syscall": pa.array([1] * n, pa.uint16()),
        "direction": pa.array([r[4] for r in ROWS], pa.uint8()),
        "bytes": pa.array([len(r[7]) for r in ROWS], pa.int64()),
        "captured": pa.array([len(r[7]) for r in ROWS], pa.uint32()),
        "family": pa.array([2] * n, pa.uint16()), "protocol": pa.array([6] * n, pa.uint16()),
        "laddr": pa.array([r[2][0] for r in ROWS]), "raddr": pa.array([r[3][0] for r in ROWS]),
        "lport": pa.array([r[2][1] for r in ROWS], pa.uint16()),
        "rport": pa.array([r[3][1] for r in ROWS], pa.uint16()),
        "payload": pa.array([r[7] for r in ROWS], pa.binary())}), root / "events" / "sock_data" / "0.parquet")
    m = len(SAMPLES)
    pq.write_table(pa.table({
        "cpu": pa.array([0] * m, pa.uint32()), "ts": pa.array([base + s[2] for s in SAMPLES], pa.uint64()),
        "pid": pa.array([s[0] for s in SAMPLES], pa.uint32()), "tid": pa.array([s[1] for s in SAMPLES], pa.uint32()),
        "kstack_id": pa.array([-14] * m, pa.int32()), "ustack_id": pa.array([-14] * m, pa.int32()),
        "flags": pa.array([0] * m, pa.uint32()), "comm": pa.array(["srv"] * m)}),
        root / "events" / "stack_sample" / "0.parquet")
    manifest = {"tool": "uetrace", "format_version": 1, "complete": True, "options": {"freq": 1000},
                "clock": {"start": {"monotonic_ns": base, "realtime_ns": 2 * base}}, "tracers": {}}
    cap = ArchiveDb(ExtractedArchive(root, manifest, []))
    yield cap
    cap.con.close()


def _by_path(result) -> dict[str, correlate.Request]:
    return {r.exchange.path: r for r in result.requests}


def test_far_server_window_by_causality(db):
    reqs = _by_path(correlate.correlate(db))
    base = 1_000_000_000
    for path, client_w, server_w in (("/a", (100, 215), (110, 210)), ("/b", (300, 410), (310, 405))):
        r = reqs[path]
        assert r.exchange.measured_at == "client"
        c, s = r.client.window, r.server.window
        assert (c.pid, c.tid, c.start_ts - base, c.end_ts - base) == (1, 11, *client_w)
        assert (s.pid, s.tid, s.start_ts - base, s.end_ts - base, s.exact) == (2, 21, *server_w, True)
        assert r.server.parent_span_id == r.client.span_id and r.server.link == "connection"
    # The server thread's samples at 150 and 250: the first inside /a's window (110-210), the second
    # between the two exchanges, in neither.
    assert reqs["/a"].server.evidence.cpu_samples == 1
    assert reqs["/b"].server.evidence.cpu_samples == 0


def test_server_only_capture_and_its_traceparent(db):
    r = _by_path(correlate.correlate(db))["/c"]
    assert r.client is None and r.exchange.measured_at == "server"
    w = r.server.window
    assert (w.tid, w.start_ts - 1_000_000_000, w.end_ts - 1_000_000_000) == (22, 520, 610)
    assert r.server.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert (r.server.parent_span_id, r.server.link) == ("00f067aa0ba902b7", "traceparent")


def test_event_loop_thread_is_split_by_windows(db):
    reqs = _by_path(correlate.correlate(db))
    d, e = reqs["/d"].server, reqs["/e"].server
    assert (d.window.tid, e.window.tid) == (31, 31)
    assert (d.window.start_ts % 10_000, d.window.end_ts % 10_000) == (1000, 1100)
    assert (e.window.start_ts % 10_000, e.window.end_ts % 10_000) == (1010, 1050)
    # 1020 is inside both windows, 1070 only in /d's; 1030 was another thread.
    assert (d.evidence.cpu_samples, e.evidence.cpu_samples) == (2, 1)
    assert d.evidence.cpu_ms == pytest.approx(2 * 1.0)


def test_an_unreadable_source_is_left_out_with_a_note(db):
    """A lock table this version cannot read (an archive from elsewhere): the other evidence stays."""
    (db.archive.root / "events" / "lock").mkdir()
    pq.write_table(pa.table({"ts": pa.array([1], pa.uint64())}), db.archive.root / "events" / "lock" / "0.parquet")
    db.con.execute(f"CREATE VIEW lock AS SELECT * FROM read_parquet('{db.archive.root}/events/lock/*.parquet')")
    db.views["lock"] = db.archive.root / "events" / "lock"
    result = correlate.correlate(db)
    assert any(n.startswith("lock evidence left out") for n in result.notes), result.notes
    d = _by_path(result)["/d"].server.evidence
    assert d.cpu_samples == 2 and d.lock_wait_ms is None


def test_grpc_traceparent_from_the_decoded_headers(tmp_path):
    """gRPC over HTTP/2: the header is HPACK-encoded (Huffman), invisible to a byte search; the h2
    parser's decoded value links the spans."""
    import hpack
    from http_rows import MS, SOCK_SCHEMA, Conn

    trace, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"

    def frame(t: int, flags: int, sid: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes([t, flags]) + sid.to_bytes(4, "big") + payload

    enc_c, enc_s = hpack.Encoder(), hpack.Encoder()
    req = enc_c.encode([(":method", "POST"), (":scheme", "http"), (":path", "/demo.Items/Get"),
                        (":authority", "x"), ("content-type", "application/grpc"),
                        ("traceparent", f"00-{trace}-{parent}-01")], huffman=True)
    assert b"traceparent" not in req and trace.encode() not in req
    settings = frame(4, 0, 0, b"")
    rows: list[dict] = []
    c = Conn(rows, server=("10.0.0.2", 50051))
    c.send(True, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings, 10 * MS)
    c.send(False, settings + frame(4, 1, 0, b""), 11 * MS)
    c.send(True, frame(1, 0x4, 1, req) + frame(0, 0x1, 1, b"\x00\x00\x00\x00\x01a"), 12 * MS)
    c.send(False, frame(1, 0x4, 1, enc_s.encode([(":status", "200"), ("content-type", "application/grpc")]))
           + frame(0, 0, 1, b"\x00\x00\x00\x00\x01b") + frame(1, 0x5, 1, enc_s.encode([("grpc-status", "0")])),
           15 * MS)
    root = tmp_path / "cap"
    (root / "events" / "sock_data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SOCK_SCHEMA), root / "events" / "sock_data" / "0.parquet")
    cap = ArchiveDb(ExtractedArchive(root, {"tool": "uetrace", "format_version": 1, "complete": True,
                                            "clock": {"start": {"monotonic_ns": 1}}, "tracers": {}}, []))
    try:
        (r,) = correlate.correlate(cap).requests
    finally:
        cap.con.close()
    assert r.exchange.protocol == "grpc" and r.exchange.traceparent == f"00-{trace}-{parent}-01"
    assert r.client.span_id == parent and r.server.parent_span_id == parent
    assert r.client.trace_id == r.server.trace_id == trace

"""The http analyzer as `trace analyze` and `trace query` drive it (registry protocol, params from a
dict, comm of both ends, views), TLS plaintext preferred over ciphertext, and gaps of one end filled
from the other end's capture. Data built from code; the real captures are in test_http_capture.py."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from http_rows import MS, Conn, keepalive, open_rows, request, response

from uetrace.analyze import http
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.enums import DEFAULT
from uetrace.analyze.manifest_info import ManifestInfo
from uetrace.analyze.sections import ANALYZERS


class FakeCapture(ArchiveDb):
    """An ArchiveDb (analyze/archive_db.py) over views made by the test instead of an archive's
    folders, with an empty manifest and no enums in its schema."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        self.views = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        self.manifest: dict = {}
        self.info = ManifestInfo({})
        self.enums = DEFAULT
        self.warnings = []
        self.cache = {}
        self._process_names = None


def add_processes(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    """A snapshot naming pid 1000 (later exec'd into "client"), and a proc exec record for 2000."""
    procs = pa.table({"ts": pa.array([1, 5], pa.uint64()), "pid": pa.array([1000, 1000], pa.uint32()),
                      "comm": ["bash", "client"]})
    proc = pa.table({"ts": pa.array([3], pa.uint64()), "op": pa.array([1], pa.uint32()),
                     "pid": pa.array([2000], pa.uint32()), "tid": pa.array([2000], pa.uint32()),
                     "comm": ["server"]})
    for name, table in (("processes", procs), ("proc", proc)):
        pq.write_table(table, tmp_path / f"{name}.parquet")
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{tmp_path / name}.parquet')")


def test_registered_and_driven_like_trace_analyze(tmp_path):
    assert "uetrace.analyze.http" in ANALYZERS
    assert http.NAME == "http" and http.VIEWS == ("http_exchanges", "http_websocket_frames", "http_tls")
    rows: list[dict] = []
    keepalive(Conn(rows), [(request("GET", f"/r/{i}"), response(200 if i else 500), (i + 1) * MS) for i in range(5)])
    con = open_rows(tmp_path, rows)
    add_processes(con, tmp_path)
    cap = FakeCapture(con)
    assert http.applies(cap)
    res = http.run(cap, http.ANALYZER.report_params(top=2))  # what `trace analyze --top 2` passes
    assert len(res.exchanges) == 5 and [e.path for e in res.slowest()] == ["/r/4", "/r/3"]
    assert {(e.client_comm, e.server_comm) for e in res.exchanges} == {("client", "server")}
    assert "1000 (client)" in res.to_text()
    # Filters give a new result; the full one stays cached for the views.
    assert [e.path for e in http.run(cap, http.HttpParams(status="5xx")).exchanges] == ["/r/0"]
    http.register_views(cap)
    assert cap.query("SELECT count(*), min(client_comm), min(server_comm) FROM http_exchanges") == [
        (5, "client", "server")]
    assert cap.query("SELECT count(*) FROM http_websocket_frames")[0][0] == 0


def test_no_socket_tables_does_not_apply():
    assert not http.applies(FakeCapture(duckdb.connect()))


def test_tls_plaintext_preferred_over_ciphertext(tmp_path):
    """The socket bytes of a decrypted connection are ciphertext, whatever they happen to look like:
    only the TLS tracer's plaintext gives exchanges."""
    enc: list[dict] = []
    c = Conn(enc, server=("10.0.0.2", 443))
    c.send(True, b"\x17\x03\x03\x00\x08" + b"GET / HT", 10 * MS)  # application data record, no handshake
    c.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 11 * MS)  # looks like HTTP: is not
    plain: list[dict] = []
    keepalive(Conn(plain, server=("10.0.0.2", 443)), [(request("GET", "/secret"), response(200, b"s"), MS)])
    res = http.analyze_http(open_rows(tmp_path, enc, extra={"tls_data": plain}))
    assert [(e.path, e.tls) for e in res.exchanges] == [("/secret", True)]


def test_tls_data_alone(tmp_path):
    plain: list[dict] = []
    keepalive(Conn(plain), [(request("GET", "/only"), response(204), MS)])
    res = http.analyze_http(open_rows(tmp_path, plain, table="tls_data"))
    assert [(e.path, e.status, e.tls) for e in res.exchanges] == [("/only", 204, True)]


def _chunked_response(n: int, size: int) -> list[bytes]:
    return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"] + \
        [b"%x\r\n%s\r\n" % (size, b"c" * size) for _ in range(n)] + [b"0\r\n\r\n"]


def test_gap_at_the_reader_filled_from_the_writer(tmp_path):
    """The server writes each chunk on its own (every chunk-size line captured); the client reads the
    whole body at once and keeps only 64 bytes of it. Reading the client's end, the chunk lines come
    from the server's capture."""
    rows: list[dict] = []
    client_end = Conn(rows, capture_server=False, snaplen=64)
    server_end = Conn(rows, capture_client=False, snaplen=64)
    req = request("GET", "/stream")
    for end in (client_end, server_end):
        end.send(True, req, 10 * MS)
    pieces = _chunked_response(4, 300)
    client_end.send(False, b"".join(pieces), 12 * MS)
    for i, p in enumerate(pieces):
        server_end.send(False, p, 11 * MS + i * 1000)
    (e,) = http.analyze_http(open_rows(tmp_path, rows)).exchanges
    assert (e.path, e.status, e.complete, e.measured_at) == ("/stream", 200, True, "client"), e.to_dict()
    assert e.resp_bytes == sum(len(p) for p in pieces)
    assert (e.client_pid, e.server_pid) == (1000, 2000)


def test_ends_aligned_at_the_head_when_the_reader_stopped_early(tmp_path):
    """The server wrote bytes the client never read (a gRPC GOAWAY before close): the streams differ
    in length at the tail, not the head, and the server's end, with more bytes, is the one read. Its
    response was a sendmsg whose first iovec alone was captured; the client's read has it all."""
    rows: list[dict] = []
    client_end = Conn(rows, capture_server=False)
    server_end = Conn(rows, capture_client=False)
    req = request("POST", "/submit", b"x" * 40)
    for end in (client_end, server_end):
        end.send(True, req, 10 * MS)
    resp = response(201, b"made", headers="X-Long: " + "h" * 60 + "\r\n")
    client_end.send(False, resp, 12 * MS)
    server_end.send(False, resp, 12 * MS)
    rows[-1]["payload"], rows[-1]["captured"] = resp[:9], 9  # "HTTP/1.1 " only: the first iovec
    server_end.send(False, b"\x00" * 17, 13 * MS)  # never read by the client
    (e,) = http.analyze_http(open_rows(tmp_path, rows)).exchanges
    assert (e.method, e.path, e.status, e.complete) == ("POST", "/submit", 201, True), e.to_dict()
    assert e.measured_at == "server" and (e.client_pid, e.server_pid) == (1000, 2000)


def test_framing_anomalies_counted_per_connection_and_queryable(tmp_path):
    rows: list[dict] = []
    keepalive(Conn(rows), [(request("GET", "/clean"), response(200), MS)])
    smuggled = b"POST /s HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" \
               b"1\r\nx\r\n0\r\n\r\n"
    twice = b"POST /d HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    keepalive(Conn(rows, client=("10.0.0.1", 40001), client_sock=103, server_sock=204),
              [(request("GET", "/before"), response(200), MS), (smuggled, response(200), MS),
               (twice, response(201), MS), (request("GET", "/after"), response(200), MS)], t0=50 * MS)
    cap = FakeCapture(open_rows(tmp_path, rows))
    res = http.run(cap)
    assert [(e.path, e.status, e.complete, e.anomalies) for e in res.exchanges] == [
        ("/clean", 200, True, []), ("/before", 200, True, []), ("/s", 200, True, ["cl_and_te", "desync"]),
        ("/d", 201, True, ["duplicate_content_length"]), ("/after", 200, True, [])]
    (conn,) = res.connection_anomalies()
    assert (conn.client, conn.exchanges, conn.smuggling) == ("10.0.0.1:40001", 2, True)
    assert conn.counts == {"cl_and_te": 1, "desync": 1, "duplicate_content_length": 1}
    text = res.to_text(width=200)
    assert "Framing anomalies" in text and "cl_and_te (1)" in text
    assert "frame the same bytes differently): 10.0.0.1:40001 -> 10.0.0.2:8080 (conn 1)" in text
    assert "with framing anomalies 2" in text
    js = res.to_json()
    assert js["summary"]["exchanges_with_anomalies"] == 2 and js["anomalies"][0]["smuggling"] is True
    assert [e.path for e in http.run(cap, http.HttpParams(anomalies=True)).exchanges] == ["/s", "/d"]
    http.register_views(cap)
    assert cap.query("SELECT path FROM http_exchanges WHERE list_contains(anomalies, 'cl_and_te')") == [("/s",)]

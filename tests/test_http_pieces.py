"""Long connections read in pieces (analyze/http/pieces.py) give exactly what one whole read gives:
cut between exchanges where both ends are quiet, every piece parsed perfectly, else read whole. (A
real capture read in pieces: tests/test_http_batches.py.)"""

from __future__ import annotations

import pytest
from http_rows import MS, Conn, Loads, keepalive, open_rows, request, response

from uetrace.analyze.http import analyze_http, pieces

WHOLE = 10**9


def _as_tracepoints(rows: list[dict]) -> list[dict]:
    """Reads timed as the socket tracepoints time them (a receive's ts_enter is its ts_exit)."""
    for r in rows:
        if r["direction"] == 1:
            r["ts_enter"] = r["ts_exit"]
    return rows


def _long(rows: list[dict], n: int, capture_server: bool = True, expect_at: int | None = None) -> None:
    conn = Conn(rows, capture_server=capture_server)
    t = 10 * MS
    for j in range(n):
        if j == expect_at:  # headers, 100 Continue, then the body: the body's write looks like a cut
            head = request("POST", f"/up/{j}", b"b" * 9, headers="Expect: 100-continue\r\n")
            split = head.index(b"\r\n\r\n") + 4
            conn.send(True, head[:split], t)
            conn.send(False, b"HTTP/1.1 100 Continue\r\n\r\n", t + MS)
            conn.send(True, head[split:], t + 2 * MS)
            conn.send(False, response(200, b"ok"), t + 3 * MS)
            t += 5 * MS
            continue
        keepalive(conn, [(request("GET", f"/k/{j}"), response(200, b"x" * (j % 50)), MS)], t0=t)
        t += 3 * MS


@pytest.mark.parametrize("capture_server", [True, False])
def test_pieces_equal_the_whole_connection(tmp_path, monkeypatch, capture_server):
    rows: list[dict] = []
    _long(rows, 60, capture_server)
    con = open_rows(tmp_path, _as_tracepoints(rows))
    whole = analyze_http(con, batch_rows=WHOLE)
    assert len(whole.exchanges) == 60
    loads = Loads(monkeypatch)
    monkeypatch.setattr(pieces, "PIECE_ROWS", 16)
    cut = analyze_http(con, batch_rows=WHOLE)
    assert loads.pieces >= 6 and loads.wholes == 0  # really read in pieces
    assert cut.to_json() == whole.to_json()
    assert cut.exchanges.table.to_pylist() == whole.exchanges.table.to_pylist()  # row numbers too



def test_a_record_lost_at_one_end_still_leaves_later_cuts(tmp_path, monkeypatch):
    """The client's read of one early response was lost: from then on the server has sent more than
    the client read, at every instant. Cuts after the loss are still quiet (nothing more in flight),
    so the connection is still read in pieces, and gives what the whole read gives."""
    rows: list[dict] = []
    _long(rows, 60)
    rows = _as_tracepoints(rows)
    client_reads = [r for r in rows if r["sock_id"] == 101 and r["direction"] == 1]
    rows.remove(client_reads[3])
    con = open_rows(tmp_path, rows)
    whole = analyze_http(con, batch_rows=WHOLE)
    assert len(whole.exchanges) == 60
    loads = Loads(monkeypatch)
    monkeypatch.setattr(pieces, "PIECE_ROWS", 16)
    cut = analyze_http(con, batch_rows=WHOLE)
    assert loads.pieces >= 6 and loads.wholes == 0
    assert cut.to_json() == whole.to_json()

def test_a_piece_that_does_not_parse_perfectly_reads_the_connection_whole(tmp_path, monkeypatch):
    rows: list[dict] = []
    _long(rows, 40, expect_at=20)
    con = open_rows(tmp_path, _as_tracepoints(rows))
    whole = analyze_http(con, batch_rows=WHOLE)
    assert [e.path for e in whole.exchanges][20] == "/up/20" and whole.exchanges[20].complete
    loads = Loads(monkeypatch)
    monkeypatch.setattr(pieces, "PIECE_ROWS", 8)
    cut = analyze_http(con, batch_rows=WHOLE)
    assert loads.wholes == 1  # a piece began with the body of /up/20
    assert cut.to_json() == whole.to_json()


def test_blocking_reads_timed_at_entry_are_never_cut(tmp_path, monkeypatch):
    """The system-call hooks time a blocking read from before its data was sent: no point is quiet,
    so the connection is read whole (as before pieces)."""
    rows: list[dict] = []
    _long(rows, 30)
    con = open_rows(tmp_path, rows)
    whole = analyze_http(con, batch_rows=WHOLE)
    loads = Loads(monkeypatch)
    monkeypatch.setattr(pieces, "PIECE_ROWS", 8)
    assert analyze_http(con, batch_rows=WHOLE).to_json() == whole.to_json()
    assert loads.pieces <= 1

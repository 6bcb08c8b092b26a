"""The HTTP reconstruction read in bounded batches of connections (analyze/http/batches.py) gives
exactly what one batch gives: same exchanges in the same order, same conn ids, same sessions and TLS
connections, whatever the batch size."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from helpers import need_program, run_fixture
from http_rows import MS, Conn, Loads, keepalive, open_rows, request, response

from uetrace.analyze.archive_db import open_archive_db
from uetrace.analyze.http import analyze_http, batches, pieces, store_tables
from uetrace.analyze.http.batches import connection_batches, plan

FIXTURE = Path(__file__).parent / "data" / "format1" / "http_keepalive.tar.zst"
WHOLE = 10**9  # rows: every connection in one batch


def test_batched_equals_whole_on_the_format1_fixture():
    with open_archive_db(FIXTURE) as db:
        whole = analyze_http(db.con, enums=db.enums, batch_rows=WHOLE)
        assert len(whole.exchanges) > 10
        assert analyze_http(db.con, enums=db.enums, batch_rows=1).to_json() == whole.to_json()


def test_batches_and_pieces_equal_one_batch_on_a_real_capture(kernel, tmp_path, capture_run, monkeypatch):
    """nginx serving curl over three connections (one keep-alive, a 100 kB body with gaps), in a
    system-wide capture: whatever else ran on the host is in it too. Read a connection per batch, or
    connections cut into pieces of a few rows (pieces.py): the same exchanges."""
    need_program("nginx")
    need_program("curl")
    out = tmp_path / "run.tar.zst"
    run = capture_run(out, "-d", "60s", "--tracers", "sock,proc")
    run.wait_attached()
    try:
        fx = run_fixture("nginx_files.py", timeout=60)
    finally:
        run.signal(signal.SIGTERM)  # still writes a complete archive
    rc, _, err = run.wait()
    assert rc == 0, err
    with open_archive_db(out) as db:
        pairs = plan(db.con, "sock_data", enums=db.enums)
        assert len(pairs) >= 3  # several connections, so batch_rows=1 makes several batches
        sizes = [len(b) for b in connection_batches(db.con, pairs, "sock_data", enums=db.enums, batch_rows=1)]
        assert sizes == [1] * len(pairs)  # never more than one connection, never a split one
        whole = analyze_http(db.con, enums=db.enums, batch_rows=WHOLE)
        assert len({e.conn_id for e in whole.exchanges if e.server_pid == fx["worker_pid"]}) == 3
        for batch_rows in (1, 7, 100):
            batched = analyze_http(db.con, enums=db.enums, batch_rows=batch_rows)
            assert batched.to_json() == whole.to_json()
        # The rows `trace query` sees are the same too.
        store_tables(db.con, whole)
        one = db.query("SELECT * FROM http_exchanges")
        store_tables(db.con, analyze_http(db.con, enums=db.enums, batch_rows=1))
        assert db.query("SELECT * FROM http_exchanges") == one
        loads = Loads(monkeypatch)
        monkeypatch.setattr(pieces, "PIECE_ROWS", 4)
        assert analyze_http(db.con, enums=db.enums, batch_rows=WHOLE).to_json() == whole.to_json()
        assert loads.pieces > loads.wholes  # some connection was read in pieces


@pytest.mark.parametrize("sort_group_rows", [1, 40, batches.SORT_GROUP_ROWS])
def test_batches_keep_tls_ids_reused_tuples_and_both_ends(tmp_path, monkeypatch, sort_group_rows):
    """Decrypted TLS connections, a 4-tuple reused by a later connection and one-ended sockets, cut
    into batches at every connection, sorted by DuckDB in one query or in several: ids and exchanges
    as in one batch."""
    monkeypatch.setattr(batches, "SORT_GROUP_ROWS", sort_group_rows)
    rows: list[dict] = []
    plain: list[dict] = []
    for i in range(4):
        keepalive(Conn(rows, client=("10.0.0.1", 40000 + i), client_sock=100 + i, server_sock=200 + i,
                       capture_server=i % 2 == 0),
                  [(request("GET", f"/c{i}/{j}"), response(200, b"x" * j), MS) for j in range(3)],
                  t0=(10 + 20 * i) * MS)
    # The first 4-tuple again, on new sockets, later on.
    keepalive(Conn(rows, client=("10.0.0.1", 40000), client_sock=300, server_sock=400),
              [(request("POST", "/again", b"b"), response(201), MS)], t0=500 * MS)
    tls = Conn(plain, client=("10.0.0.1", 40009), server=("10.0.0.2", 443))
    keepalive(tls, [(request("GET", "/secret"), response(200, b"s"), MS)], t0=600 * MS)
    con = open_rows(tmp_path, rows, extra={"tls_data": plain})
    whole = analyze_http(con, batch_rows=WHOLE)
    assert len(whole.exchanges) == 4 * 3 + 1 + 1
    assert analyze_http(con, batch_rows=1).to_json() == whole.to_json()

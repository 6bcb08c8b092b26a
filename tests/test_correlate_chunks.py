"""The correlation's windows read in chunks of queries, with far clients' lookback narrowed from the
recent rows or by an ASOF join (analyze/correlate/lookback.py), are exactly the windows of one read
of the whole lookback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from http_rows import MS, SOCK_SCHEMA, Conn, keepalive, request, response

from uetrace.analyze import correlate, http
from uetrace.analyze.archive import ExtractedArchive
from uetrace.analyze.archive_db import ArchiveDb, open_archive_db
from uetrace.analyze.correlate import windows

FIXTURE = Path(__file__).parent / "data" / "format1" / "http_keepalive.tar.zst"


def _db(tmp_path: Path, rows: list[dict]) -> ArchiveDb:
    root = tmp_path / "cap"
    (root / "events" / "sock_data").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SOCK_SCHEMA), root / "events" / "sock_data" / "0.parquet")
    return ArchiveDb(ExtractedArchive(root, {"tool": "uetrace", "format_version": 1, "complete": True,
                                             "clock": {"start": {"monotonic_ns": 1}}, "tracers": {}}, []))


def _lossy_client(rows: list[dict]) -> None:
    """Keep-alive connections whose client lost the reads of some responses: their ends differ, the
    server's holds more bytes and is the one read, so the client's windows come from the lookback."""
    for i in range(3):
        conn = Conn(rows, client=("10.0.0.1", 41000 + i), client_sock=10 + i, server_sock=20 + i,
                    client_pid=1000 + i)
        keepalive(conn, [(request("GET", f"/k{i}/{j}"), response(200, b"r" * (j + 1)), (j + 1) * MS)
                         for j in range(6)], t0=(10 + 100 * i) * MS)
    lost = [r for r in rows if r["sock_id"] in (10, 11) and r["direction"] == 1][1::2]
    for r in lost:
        rows.remove(r)


def _windows(db: ArchiveDb) -> list[tuple]:
    x = http.run(db, http.HttpParams()).exchanges
    w = windows.side_windows(db, x, correlate.exchange_order(x))
    return [(int(w.index[k]), int(w.side[k]), int(w.pid[k]), int(w.tid[k]), int(w.start[k]), int(w.end[k]),
             bool(w.exact[k]), w.heads.get(k, b"")) for k in range(len(w))]


@pytest.mark.parametrize("chunk", [1, 2, 7])
@pytest.mark.parametrize("recent", [windows.RECENT_NS, 1, 2 * MS])  # latest writes read, joined, or some of each
def test_chunked_narrowed_windows_equal_one_whole_read(tmp_path, monkeypatch, chunk, recent):
    monkeypatch.setattr(windows, "RECENT_NS", recent)
    rows: list[dict] = []
    _lossy_client(rows)
    db = _db(tmp_path, rows)
    try:
        x = http.run(db, http.HttpParams()).exchanges
        exchanges = x.take(correlate.exchange_order(x))
        assert {e.measured_at for e in exchanges} == {"client", "server"}
        got = _windows(db)
        # Far clients: windows found through the lookback.
        assert any(side == 0 and exchanges[i].measured_at == "server" for i, side, *_ in got)
        with monkeypatch.context() as m:
            m.setattr(windows, "REQUESTS_PER_CHUNK", chunk)
            assert _windows(db) == got
        with monkeypatch.context() as m:  # the whole lookback, read at once: the windows as they were
            m.setattr(windows, "_narrowed", lambda db, source, egress, cols, *_: np.asarray(cols["lo"]))
            m.setattr(windows, "REQUESTS_PER_CHUNK", 10**9)
            assert _windows(db) == got
    finally:
        db.close()


def test_chunked_correlation_of_a_real_capture(monkeypatch):
    with open_archive_db(FIXTURE) as db:
        whole = correlate.correlate(db).to_json()
        db.cache.clear()
        monkeypatch.setattr(windows, "REQUESTS_PER_CHUNK", 3)
        assert correlate.correlate(db).to_json() == whole

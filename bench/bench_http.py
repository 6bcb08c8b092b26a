"""Throughput of the http analyzer on a synthetic capture of HTTP/1.1 keep-alive exchanges.

    python bench/bench_http.py [--exchanges 100000] [--per-conn 100] [--keep out.parquet]

Builds a sock_data Parquet segment in which both ends of every connection were captured (4 rows per
exchange: client write + server read of the request, server write + client read of the response), with
a mix of small GETs, POSTs with bodies, chunked responses and responses larger than the snaplen (gaps).
Then times analyze_http over a DuckDB view of it, as `trace analyze` would run it, and prints
exchanges/s. The goal (issue 3) is >= 50 000 exchanges/s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from uetrace.analyze.http import HttpParams, analyze_http, store_tables

SNAPLEN = 4096


def _chunked(body: bytes, size: int = 512) -> bytes:
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def _messages(i: int) -> tuple[bytes, bytes]:
    kind = i % 20
    if kind < 14:
        req = b"GET /api/items/%d?verbose=1 HTTP/1.1\r\nHost: bench.local\r\nUser-Agent: bench/1\r\n" \
              b"Accept: */*\r\n\r\n" % (i % 500)
        body = b"{\"id\": %d, \"ok\": true}" % i
        resp = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body), body)
    elif kind < 17:
        body = b"x" * 300
        req = b"POST /api/orders HTTP/1.1\r\nHost: bench.local\r\nContent-Type: application/json\r\n" \
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        resp = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok"
    elif kind < 19:
        req = b"GET /stream HTTP/1.1\r\nHost: bench.local\r\n\r\n"
        resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(b"c" * 2000)
    else:
        req = b"GET /big.bin HTTP/1.1\r\nHost: bench.local\r\n\r\n"
        resp = b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n" + b"b" * 20000  # mostly beyond snaplen
    return req, resp


def build(path: Path, exchanges: int, per_conn: int) -> int:
    """Write the synthetic sock_data segment; returns its row count."""
    cols: dict[str, list] = {k: [] for k in (
        "ts_enter", "ts_exit", "sock_id", "pid", "tid", "direction", "bytes", "laddr", "raddr", "lport",
        "rport", "payload")}
    t = 1_000_000_000
    for c in range(0, exchanges, per_conn):
        conn = c // per_conn
        cport, sport = 30000 + conn % 30000, 8080
        ends = ((2 * conn + 1, 1000 + conn % 7, "10.1.0.1", cport, "10.1.0.2", sport),  # client socket
                (2 * conn + 2, 2000, "10.1.0.2", sport, "10.1.0.1", cport))  # server socket
        for i in range(c, min(c + per_conn, exchanges)):
            req, resp = _messages(i)
            for data, sender in ((req, 0), (resp, 1)):
                t += 50_000
                for end, (sock, pid, la, lp, ra, rp) in enumerate(ends):
                    writes = end == sender
                    cols["ts_enter"].append(t if writes else t - 40_000)
                    cols["ts_exit"].append(t + 5_000 if writes else t + 10_000)
                    cols["sock_id"].append(sock)
                    cols["pid"].append(pid)
                    cols["tid"].append(pid + 1)
                    cols["direction"].append(0 if writes else 1)
                    cols["bytes"].append(len(data))
                    cols["laddr"].append(la)
                    cols["raddr"].append(ra)
                    cols["lport"].append(lp)
                    cols["rport"].append(rp)
                    cols["payload"].append(data[:SNAPLEN])
    n = len(cols["bytes"])
    table = pa.table({
        "cpu": pa.array(np.zeros(n, np.uint32)),
        "ts_enter": pa.array(cols["ts_enter"], pa.uint64()),
        "ts_exit": pa.array(cols["ts_exit"], pa.uint64()),
        "sock_id": pa.array(cols["sock_id"], pa.uint64()), "pid": pa.array(cols["pid"], pa.uint32()),
        "tid": pa.array(cols["tid"], pa.uint32()), "fd": pa.array(np.full(n, 7, np.int32)),
        "syscall": pa.array([2 if d == 0 else 1 for d in cols["direction"]], pa.uint16()),
        "direction": pa.array(cols["direction"], pa.uint8()), "bytes": pa.array(cols["bytes"], pa.int64()),
        "captured": pa.array([len(p) for p in cols["payload"]], pa.uint32()),
        "family": pa.array(np.full(n, 2, np.uint16)), "protocol": pa.array(np.full(n, 6, np.uint16)),
        "laddr": pa.array(cols["laddr"], pa.string()), "raddr": pa.array(cols["raddr"], pa.string()),
        "lport": pa.array(cols["lport"], pa.uint16()), "rport": pa.array(cols["rport"], pa.uint16()),
        "payload": pa.array(cols["payload"], pa.binary()),
    })
    pq.write_table(table, path, compression="zstd")
    return n


def _cpu() -> float:
    """CPU seconds of this process (DuckDB's threads included): on a shared host, wall time alone
    says more about the neighbours than about the analyzer."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exchanges", type=int, default=100_000)
    ap.add_argument("--per-conn", type=int, default=100, help="exchanges per keep-alive connection")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    ap.add_argument("--keep", type=Path, help="write the synthetic segment here and keep it")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "sock_data.parquet"
        t0 = time.perf_counter()
        rows = build(path, args.exchanges, args.per_conn)
        print(f"built {rows} rows ({args.exchanges} exchanges) in {time.perf_counter() - t0:.1f} s, "
              f"{path.stat().st_size / 1e6:.1f} MB; load average {os.getloadavg()[0]:.1f} on "
              f"{os.cpu_count()} CPUs")
        con = duckdb.connect()
        con.execute(f"SET threads = {min(os.cpu_count() or 2, 2)}")
        con.execute(f"CREATE VIEW sock_data AS SELECT * FROM read_parquet('{path}')")
        best = None
        for _ in range(args.repeat):
            c0, t0 = _cpu(), time.perf_counter()
            result = analyze_http(con, HttpParams())
            took, cpu = time.perf_counter() - t0, _cpu() - c0
            n = len(result.exchanges)
            print(f"  run: {n} exchanges in {took:.2f} s wall ({cpu:.2f} CPU-s) = {n / took:,.0f} exchanges/s")
            if n != args.exchanges:
                raise SystemExit(f"expected {args.exchanges} exchanges, got {n}")
            if best is None or took < best[0]:
                best = (took, cpu, result)
        assert best is not None
        took, cpu, result = best
        complete = sum(e.complete for e in result.exchanges)
        print(f"analyze_http: {n} exchanges ({complete} complete), best of {args.repeat}: {took:.2f} s "
              f"= {n / took:,.0f} exchanges/s ({n / cpu:,.0f} per CPU-second)")
        t1 = time.perf_counter()
        store_tables(con, result)
        text = result.to_text()
        print(f"store_tables + to_text: {time.perf_counter() - t1:.2f} s ({len(text)} chars)")


if __name__ == "__main__":
    main()

"""Per exchange and side: the thread that handled it and the time window, from the socket tracer's
syscalls on that side's socket; and the request bytes that side moved (for its headers).

The parsers time an exchange at one end (`measured_at`): start when the first request byte was in hand
there, end when the syscall with the last response byte returned. That end's window is exactly that.
The other end's window comes from its own syscalls on the same connection, bounded by causality: a
server reads the request only after the client began writing it (ts_exit >= client start) and begins
writing the response before the client's last read returns (ts_enter <= client end); on a sequential
HTTP/1 connection that picks exactly this exchange's syscalls. Measured at the server, the client's
request write is the last one to begin before the server had the request, and its response read the
first to return after the server began answering (exact=False when a response took several reads).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.correlate.lookback import narrowed_lo
from uetrace.analyze.correlate.result import CLIENT, SERVER, Window
from uetrace.analyze.http.exchange import Exchange

# How far before a server's first read a client's request write may have begun (measured at the server).
FAR_CLIENT_LOOKBACK_NS = 10_000_000_000
# Request bytes kept per side to look for headers (a traceparent sits in the header block).
HEAD_BYTES = 8192
# Queries (one per exchange and side) whose rows are read at once.
QUERIES_PER_CHUNK = 20_000


@dataclass(slots=True)
class SideWindow:
    index: int  # into the exchanges given
    side: str
    window: Window
    head: bytes  # the first request bytes this side moved in the window (headers), as captured


@functools.lru_cache(maxsize=65536)
def split_addr(addr: str) -> tuple[str, int] | None:
    """("1.2.3.4", 80) from "1.2.3.4:80" or "[::1]:80"; None when there is no port."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


_NORM = "CASE WHEN starts_with({c}, '::ffff:') AND contains({c}, '.') THEN substr({c}, 8) ELSE {c} END"

_COLS = "direction, ts_enter, ts_exit, pid, tid, payload, protocol, bytes, laddr, lport, raddr, rport"
# A TLS exchange was parsed from the TLS tracer's plaintext: its ends' SSL calls time it and carry its
# headers (the socket's bytes are ciphertext).
_ROWS_SQL = f"""
    SELECT q.q, d.direction, d.ts_enter, d.ts_exit, d.pid, d.tid, d.payload
    FROM _corr_sides q JOIN ({{source}}) d
      ON d.lport = q.lport AND d.rport = q.rport AND {_NORM.format(c='d.laddr')} = q.laddr
         AND {_NORM.format(c='d.raddr')} = q.raddr AND d.tls = q.tls
    WHERE d.protocol = 6 AND d.bytes > 0 AND d.ts_exit >= q.lo AND d.ts_enter <= q.hi
      AND d.ts_exit >= {{lo}} AND d.ts_enter <= {{hi}}
    ORDER BY q.q, d.ts_enter, d.ts_exit"""


def side_windows(db: ArchiveDb, exchanges: list[Exchange]) -> list[SideWindow]:
    """The windows of every exchange's captured ends (an end is captured when the parsers named its
    pid), in exchange order, client side first."""
    wanted: list[tuple[int, str, bool]] = []  # (exchange index, side, measured there)
    cols: dict[str, list] = {c: [] for c in ("q", "laddr", "lport", "raddr", "rport", "lo", "hi", "start", "tls")}
    add_q, add_la, add_lp, add_ra, add_rp, add_lo, add_hi, add_start, add_tls = (cols[c].append for c in cols)
    add = wanted.append
    for i, e in enumerate(exchanges):
        start = e.start_ts if e.start_ts is not None else e.end_ts
        end = e.end_ts if e.end_ts is not None else e.start_ts
        client, server = split_addr(e.client), split_addr(e.server)
        if start is None or end is None or client is None or server is None:
            continue
        for side, pid in ((CLIENT, e.client_pid), (SERVER, e.server_pid)):
            if pid is None:
                continue
            measured = e.measured_at == side
            local, remote = (client, server) if side == CLIENT else (server, client)
            add_q(len(wanted))
            add_la(local[0])
            add_lp(local[1])
            add_ra(remote[0])
            add_rp(remote[1])
            add_lo(max(start - FAR_CLIENT_LOOKBACK_NS if side == CLIENT and not measured else start, 0))
            add_hi(end)
            add_start(start)
            add_tls(e.tls)
            add((i, side, measured))
    if not wanted:
        return []
    n = len(wanted)
    side_server = np.array([w[1] == SERVER for w in wanted])
    measured = np.array([w[2] for w in wanted])
    start = np.array(cols["start"], np.int64)
    end = np.array(cols["hi"], np.int64)
    egress = int(db.enums.value("sock_data", "ue_sock_direction", "DIR_EGRESS"))
    source = _source(db)
    if source is not None:
        try:
            cols["lo"] = narrowed_lo(db.con, source, egress, cols, ~side_server & ~measured).tolist()
        except duckdb.Error:
            source = None
    # Per query: its window, exactness and thread; the defaults hold when it has no rows (measured there:
    # its own times and the thread the parsers named).
    w_start, w_end = start.copy(), end.copy()
    exact = np.ones(n, bool)
    ok = measured.copy()
    thread: dict[int, tuple[int, int]] = {}
    threads: dict[tuple[int, int], tuple[int, int]] = {}  # one (pid, tid) object per thread, not per window
    heads: dict[int, bytes] = {}
    # A chunk of queries at a time (they are in time order: each chunk reads the segments of its own
    # stretch of time), so the rows held at once stay bounded however long the capture.
    for c0 in range(0, n if source is not None else 0, QUERIES_PER_CHUNK):
        got = _rows(db, source, cols, c0, min(c0 + QUERIES_PER_CHUNK, n))
        if got is None:
            continue
        q, direction, ts_enter, ts_exit, pid, tid, payload = got
        qs, first = np.unique(q, return_index=True)
        srv = side_server[q]
        req = (direction == egress) != srv  # the request goes client -> server
        resp = ~req
        lo_r, hi_r = start[q], end[q]

        def seg(values: np.ndarray, mask: np.ndarray, ufunc, fill: int, first: np.ndarray = first) -> np.ndarray:
            return ufunc.reduceat(np.where(mask, values, fill), first)

        big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        # The far server: its reads of the request returned, and its response writes began, in the window.
        in_req_srv = req & (ts_exit >= lo_r) & (ts_exit <= hi_r)
        in_resp_srv = resp & (ts_enter >= lo_r) & (ts_enter <= hi_r)
        fs_start = seg(ts_exit, in_req_srv, np.minimum, big)
        fs_end = seg(ts_exit, in_resp_srv, np.maximum, small)
        # The far client: its last request write begun before the server had the request, its first
        # response read returned after.
        before = req & (ts_enter <= lo_r)
        after = resp & (ts_exit >= lo_r)
        fc_start = seg(ts_enter, before, np.maximum, small)
        fc_end = seg(ts_exit, after, np.minimum, big)
        fc_after = np.add.reduceat(after.astype(np.int64), first)
        m, ss = measured[qs], side_server[qs]
        far_srv, far_cli = ~m & ss, ~m & ~ss
        w_start[qs] = np.select([m, far_srv, far_cli], [start[qs], fs_start, fc_start])
        w_end[qs] = np.select([m, far_srv, far_cli], [end[qs], fs_end, fc_end])
        ok[qs] = m | (far_srv & (fs_start != big) & (fs_end != small)) | (far_cli & (fc_start != small)
                                                                           & (fc_end != big))
        exact[qs] = ~far_cli | (fc_after == 1)
        # Request bytes this side moved in its window (for the headers).
        ws_r, we_r = w_start[q], w_end[q]
        in_req = np.where(srv, req & (ts_exit >= ws_r) & (ts_exit <= we_r),
                          req & (ts_enter >= ws_r) & (ts_enter <= we_r))
        in_req &= np.where(measured[q] | srv, True, ts_enter == ws_r)
        # The thread: the one that wrote (server) or read (client) the response's last byte.
        mine = resp & (ts_exit >= ws_r) & (ts_exit <= we_r)
        last = seg(np.arange(len(q)), mine, np.maximum, -1)
        for qq, li in zip(qs.tolist(), last.tolist()):
            if li >= 0:
                pt = (int(pid[li]), int(tid[li]))
                thread[qq] = threads.setdefault(pt, pt)
        maybe = np.flatnonzero(in_req & payload[1])
        for i in maybe.tolist():
            heads[int(q[i])] = heads.get(int(q[i]), b"") + payload[0][i]
    out = []
    for qq, (i, side, _m), good, a, b, x in zip(range(n), wanted, ok.tolist(), w_start.tolist(), w_end.tolist(),
                                                exact.tolist()):
        if not good:
            continue
        pid_tid = thread.get(qq)
        if pid_tid is None:
            e = exchanges[i]
            pid_tid = (e.client_pid, e.client_tid) if side == CLIENT else (e.server_pid, e.server_tid)
            if pid_tid[0] is None or pid_tid[1] is None:
                continue
        head = heads.get(qq)
        out.append(SideWindow(i, side, Window(pid_tid[0], pid_tid[1], a, b, x), head[:HEAD_BYTES] if head else b""))
    return out


def _source(db: ArchiveDb) -> str | None:
    """The socket rows of both tracers as one relation (a TLS tracer's row has tls = true)."""
    sources = [f"SELECT {_COLS}, {t == 'tls_data'} AS tls FROM {t}" for t in ("sock_data", "tls_data") if db.has(t)]
    return " UNION ALL ".join(sources) if sources else None


def _rows(db: ArchiveDb, source: str, cols: dict[str, list], c0: int, c1: int) -> tuple | None:
    """The sock_data rows of the socket of each query in [c0, c1) in its time bounds, sorted by query:
    (q, direction, ts_enter, ts_exit, pid, tid, (payloads, mask of those that may hold a traceparent))."""
    lo, hi = cols["lo"][c0:c1], cols["hi"][c0:c1]
    table = pa.table({"q": pa.array(cols["q"][c0:c1], pa.int64()), "tls": pa.array(cols["tls"][c0:c1], pa.bool_()),
                      "laddr": pa.array(cols["laddr"][c0:c1], pa.string()),
                      "lport": pa.array(cols["lport"][c0:c1], pa.int32()),
                      "raddr": pa.array(cols["raddr"][c0:c1], pa.string()),
                      "rport": pa.array(cols["rport"][c0:c1], pa.int32()), "lo": pa.array(lo, pa.int64()),
                      "hi": pa.array(hi, pa.int64())})
    db.con.register("_corr_sides", table)
    try:
        # The chunk's whole stretch as constants too: DuckDB skips the row groups outside it.
        got = db.con.sql(_ROWS_SQL.format(source=source, lo=int(min(lo)), hi=int(max(hi)))).to_arrow_table()
    except duckdb.Error:
        return None
    finally:
        db.con.unregister("_corr_sides")
    if got.num_rows == 0:
        return None
    arrays = [got.column(c).to_numpy().astype(np.int64) for c in ("q", "direction", "ts_enter", "ts_exit", "pid",
                                                                    "tid")]
    payload = got.column("payload")
    # Only rows that may carry the header are turned into Python bytes (a cheap scan in Arrow).
    candidate = pc.fill_null(pc.match_substring(payload, "traceparent", ignore_case=True), False)
    mask = candidate.to_numpy(zero_copy_only=False).astype(bool)
    picked = payload.filter(candidate).to_pylist()
    full: list[bytes] = [b""] * got.num_rows
    for i, p in zip(np.flatnonzero(mask).tolist(), picked):
        full[i] = p or b""
    return (*arrays, (full, mask))

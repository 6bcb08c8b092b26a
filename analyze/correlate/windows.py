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
from uetrace.analyze.correlate.objects import SERVER
from uetrace.analyze.http.exchange_table import ExchangeTable

# How far before a server's first read a client's request write may have begun (measured at the server).
FAR_CLIENT_LOOKBACK_NS = 10_000_000_000
# Request bytes kept per side to look for headers (a traceparent sits in the header block).
HEAD_BYTES = 8192
# Requests whose windows are found at once (one query for their rows).
REQUESTS_PER_CHUNK = 10_000


@dataclass
class SideWindows:
    """The windows found, one row per captured side of an exchange, in request order, client first."""

    index: np.ndarray  # the request: position in the order given
    side: np.ndarray  # int8: 0 client, 1 server
    pid: np.ndarray
    tid: np.ndarray
    start: np.ndarray
    end: np.ndarray
    exact: np.ndarray
    heads: dict[int, bytes]  # row -> the first request bytes this side moved in the window (headers), as captured

    def __len__(self) -> int:
        return len(self.index)


@functools.lru_cache(maxsize=65536)
def split_addr(addr: str) -> tuple[str, int] | None:
    """("1.2.3.4", 80) from "1.2.3.4:80" or "[::1]:80"; None when there is no port."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


_NORM = "CASE WHEN starts_with({c}, '::ffff:') AND contains({c}, '.') THEN substr({c}, 8) ELSE {c} END"

_COLS = "direction, ts_enter, ts_exit, pid, tid, payload, protocol, bytes, laddr, lport, raddr, rport"
# The rows of the chunk's sockets in its stretch of time, each socket's rows in time order. A TLS
# exchange was parsed from the TLS tracer's plaintext: its ends' SSL calls time it and carry its
# headers (the socket's bytes are ciphertext). `reach`: the latest ts_exit of the socket's rows so far,
# for the first row whose syscall may still have been running at a window's start.
_ROWS_SQL = f"""
    SELECT k.key, d.direction, d.ts_enter, d.ts_exit, d.pid, d.tid,
           max(d.ts_exit) OVER (PARTITION BY k.key ORDER BY d.ts_enter, d.ts_exit
                                ROWS UNBOUNDED PRECEDING) AS reach,
           CASE WHEN (d.direction = {{egress}}) <> k.srv THEN d.payload END AS payload
    FROM _corr_keys k JOIN ({{source}}) d
      ON d.lport = k.lport AND d.rport = k.rport AND {_NORM.format(c='d.laddr')} = k.laddr
         AND {_NORM.format(c='d.raddr')} = k.raddr AND d.tls = k.tls
    WHERE d.protocol = 6 AND d.bytes > 0 AND d.ts_exit >= {{lo}} AND d.ts_enter <= {{hi}}
    ORDER BY k.key, d.ts_enter, d.ts_exit"""  # payload: of the request bytes only (the headers' side)


def addresses(x: ExchangeTable, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A client or server column split: (host of each row, port of each row, rows with a port)."""
    values, codes = x.strings(column)
    split = [split_addr(v) for v in values] + [None]  # the last: a null address
    hosts = np.array([h[0] if h else "" for h in split], dtype=object)
    ports = np.array([h[1] if h else -1 for h in split], dtype=np.int64)
    return hosts[codes], ports[codes], ports[codes] >= 0


@dataclass
class _Requests:
    """What the windows need of each exchange, in request order."""

    start: np.ndarray  # first timestamp (the end's when there is no start)
    end: np.ndarray
    host: tuple[np.ndarray, np.ndarray]  # (client, server)
    port: tuple[np.ndarray, np.ndarray]
    pid: tuple[np.ndarray, np.ndarray]
    tid: tuple[np.ndarray, np.ndarray]
    tid_ok: tuple[np.ndarray, np.ndarray]
    captured: tuple[np.ndarray, np.ndarray]  # the side's pid is known (and the exchange can be placed)
    at_server: np.ndarray  # measured at the server
    tls: np.ndarray

    @classmethod
    def of(cls, x: ExchangeTable, order: np.ndarray) -> _Requests:
        def col(name: str) -> np.ndarray:
            return x.ints(name)[order]

        def has(name: str) -> np.ndarray:
            return x.valid(name)[order]

        st, en, st_ok, en_ok = col("start_ts"), col("end_ts"), has("start_ts"), has("end_ts")
        chost, cport, c_ok = (a[order] for a in addresses(x, "client"))
        shost, sport, s_ok = (a[order] for a in addresses(x, "server"))
        placed = (st_ok | en_ok) & c_ok & s_ok
        values, codes = x.strings("measured_at")
        return cls(np.where(st_ok, st, en), np.where(en_ok, en, st), (chost, shost), (cport, sport),
                   (col("client_pid"), col("server_pid")), (col("client_tid"), col("server_tid")),
                   (has("client_tid"), has("server_tid")),
                   (placed & has("client_pid"), placed & has("server_pid")),
                   np.array([v == SERVER for v in values] + [False])[codes][order],
                   x.column("tls").to_numpy(zero_copy_only=False)[order])


def side_windows(db: ArchiveDb, x: ExchangeTable, order: np.ndarray) -> SideWindows:
    """The windows of every exchange's captured ends (an end is captured when the parsers named its
    pid), for the exchanges x[order], client side first. A chunk of requests at a time (they are in
    time order: each chunk reads the segments of its own stretch of time), so what is held besides the
    windows found stays bounded however long the capture."""
    reqs = _Requests.of(x, order)
    egress = int(db.enums.value("sock_data", "ue_sock_direction", "DIR_EGRESS"))
    source = _source(db)
    parts: list[SideWindows] = []
    found = 0
    for r0 in range(0, len(order), REQUESTS_PER_CHUNK):
        part = _chunk(db, source, egress, reqs, r0, min(r0 + REQUESTS_PER_CHUNK, len(order)))
        part.heads = {found + k: v for k, v in part.heads.items()}
        found += len(part)
        parts.append(part)
    if not parts:
        return _empty()
    heads = {k: v for p in parts for k, v in p.heads.items()}
    return SideWindows(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                         ("index", "side", "pid", "tid", "start", "end", "exact")), heads)


def _chunk(db: ArchiveDb, source: str | None, egress: int, reqs: _Requests, r0: int, r1: int) -> SideWindows:
    """The windows of requests [r0, r1)."""
    # Queries: one per exchange and captured side, in exchange order, client side first.
    q_client = r0 + np.flatnonzero(reqs.captured[0][r0:r1])
    q_server = r0 + np.flatnonzero(reqs.captured[1][r0:r1])
    req = np.concatenate([q_client, q_server])
    srv = np.concatenate([np.zeros(len(q_client), bool), np.ones(len(q_server), bool)])
    by = np.lexsort((srv, req))
    req, side_server = req[by], srv[by]
    n = len(req)
    if not n:
        return _empty()
    measured = reqs.at_server[req] == side_server
    start, end = reqs.start[req], reqs.end[req]
    local, remote = side_server.astype(np.int64), 1 - side_server.astype(np.int64)

    def pick(pair: tuple[np.ndarray, np.ndarray], which: np.ndarray) -> np.ndarray:
        return np.where(which == 1, pair[1][req], pair[0][req])

    cols: dict[str, np.ndarray] = {
        "q": np.arange(n, dtype=np.int64), "srv": side_server,
        "laddr": pick(reqs.host, local), "lport": pick(reqs.port, local),
        "raddr": pick(reqs.host, remote), "rport": pick(reqs.port, remote),
        "lo": np.maximum(np.where(~side_server & ~measured, start - FAR_CLIENT_LOOKBACK_NS, start), 0),
        "hi": end, "start": start, "tls": reqs.tls[req]}
    if source is not None:
        try:
            cols["lo"] = narrowed_lo(db.con, source, egress, cols, ~side_server & ~measured)
        except duckdb.Error:
            source = None
    # Per query: its window, exactness and thread; the defaults hold when it has no rows (measured there:
    # its own times and the thread the parsers named).
    w_start, w_end = start.copy(), end.copy()
    exact = np.ones(n, bool)
    ok = measured.copy()
    t_pid, t_tid, t_ok = pick(reqs.pid, local), pick(reqs.tid, local), pick(reqs.tid_ok, local)
    heads: dict[int, bytes] = {}
    got = _rows(db, source, cols, egress) if source is not None else None
    if got is not None:
        q, direction, ts_enter, ts_exit, pid, tid, payload = got
        qs, first = np.unique(q, return_index=True)
        srv = side_server[q]
        is_req = (direction == egress) != srv  # the request goes client -> server
        resp = ~is_req
        lo_r, hi_r = start[q], end[q]

        def seg(values: np.ndarray, mask: np.ndarray, ufunc, fill: int, first: np.ndarray = first) -> np.ndarray:
            return ufunc.reduceat(np.where(mask, values, fill), first)

        big, small = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        # The far server: its reads of the request returned, and its response writes began, in the window.
        in_req_srv = is_req & (ts_exit >= lo_r) & (ts_exit <= hi_r)
        in_resp_srv = resp & (ts_enter >= lo_r) & (ts_enter <= hi_r)
        fs_start = seg(ts_exit, in_req_srv, np.minimum, big)
        fs_end = seg(ts_exit, in_resp_srv, np.maximum, small)
        # The far client: its last request write begun before the server had the request, its first
        # response read returned after.
        before = is_req & (ts_enter <= lo_r)
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
        in_req = np.where(srv, is_req & (ts_exit >= ws_r) & (ts_exit <= we_r),
                          is_req & (ts_enter >= ws_r) & (ts_enter <= we_r))
        in_req &= np.where(measured[q] | srv, True, ts_enter == ws_r)
        # The thread: the one that wrote (server) or read (client) the response's last byte.
        mine = resp & (ts_exit >= ws_r) & (ts_exit <= we_r)
        last = seg(np.arange(len(q)), mine, np.maximum, -1)
        hit = last >= 0
        t_pid[qs[hit]], t_tid[qs[hit]], t_ok[qs[hit]] = pid[last[hit]], tid[last[hit]], True
        for i in np.flatnonzero(in_req & payload[1]).tolist():
            heads[int(q[i])] = heads.get(int(q[i]), b"") + payload[0][i]
    keep = np.flatnonzero(ok & t_ok)
    where = {int(qq): k for k, qq in enumerate(keep.tolist()) if int(qq) in heads} if heads else {}
    return SideWindows(req[keep].astype(np.int32), side_server[keep].astype(np.int8), t_pid[keep].astype(np.int32),
                       t_tid[keep].astype(np.int32), w_start[keep], w_end[keep], exact[keep],
                       {k: heads[qq][:HEAD_BYTES] for qq, k in where.items()})


def _empty() -> SideWindows:
    z = np.zeros(0, np.int64)
    return SideWindows(z, z.astype(np.int8), z, z, z, z, z.astype(bool), {})


def _source(db: ArchiveDb) -> str | None:
    """The socket rows of both tracers as one relation (a TLS tracer's row has tls = true)."""
    sources = [f"SELECT {_COLS}, {t == 'tls_data'} AS tls FROM {t}" for t in ("sock_data", "tls_data") if db.has(t)]
    return " UNION ALL ".join(sources) if sources else None


def _rows(db: ArchiveDb, source: str, cols: dict[str, np.ndarray], egress: int) -> tuple | None:
    """The sock_data rows of the socket of each query in its time bounds (ts_exit >= lo, ts_enter <=
    hi), sorted by query, ts_enter, ts_exit: (q, direction, ts_enter, ts_exit, pid, tid, (payloads,
    mask of those that may hold a traceparent)).

    One read of the chunk's sockets, then each query's rows as a range of its socket's: a join of
    every query with every row of its socket cost (queries x rows) on a busy keep-alive connection."""
    lo, hi = cols["lo"], cols["hi"]
    names = ("laddr", "lport", "raddr", "rport", "tls", "srv")
    sockets: dict[tuple, int] = {}
    key = np.array([sockets.setdefault(k, len(sockets)) for k in zip(*(cols[c].tolist() for c in names))],
                   np.int64)
    found = list(zip(*sockets)) if sockets else [[] for _ in names]
    table = pa.table({"key": pa.array(range(len(sockets)), pa.int64()),
                      "laddr": pa.array(found[0], pa.string()), "lport": pa.array(found[1], pa.int32()),
                      "raddr": pa.array(found[2], pa.string()), "rport": pa.array(found[3], pa.int32()),
                      "tls": pa.array(found[4], pa.bool_()), "srv": pa.array(found[5], pa.bool_())})
    db.con.register("_corr_keys", table)
    try:
        # The chunk's whole stretch as constants: DuckDB skips the row groups outside it.
        sql = _ROWS_SQL.format(source=source, lo=int(lo.min()), hi=int(hi.max()), egress=egress)
        got = db.con.sql(sql).to_arrow_table()
    except duckdb.Error:
        return None
    finally:
        db.con.unregister("_corr_keys")
    if got.num_rows == 0:
        return None
    r_key, direction, ts_enter, ts_exit, pid, tid, reach = (
        got.column(c).to_numpy().astype(np.int64)
        for c in ("key", "direction", "ts_enter", "ts_exit", "pid", "tid", "reach"))
    q, row = _in_bounds(key, lo, hi, r_key, ts_enter, reach)
    keep = ts_exit[row] >= lo[q]
    q, row = q[keep], row[keep]
    if not q.size:
        return None
    payload = got.column("payload").take(pa.array(row))
    # Only rows that may carry the header are turned into Python bytes (a cheap scan in Arrow).
    candidate = pc.fill_null(pc.match_substring(payload, "traceparent", ignore_case=True), False)
    mask = candidate.to_numpy(zero_copy_only=False).astype(bool)
    picked = payload.filter(candidate).to_pylist()
    full: list[bytes] = [b""] * len(row)
    for i, p in zip(np.flatnonzero(mask).tolist(), picked):
        full[i] = p or b""
    return q, direction[row], ts_enter[row], ts_exit[row], pid[row], tid[row], (full, mask)


def _in_bounds(key: np.ndarray, lo: np.ndarray, hi: np.ndarray, r_key: np.ndarray, ts_enter: np.ndarray,
               reach: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query, row) for every row of the query's socket from the first whose socket had a syscall
    still running at lo (reach >= lo) to the last begun by hi, in query then row order. Rows are
    sorted by socket key, then ts_enter; reach rises along each socket's rows."""
    # Times as ranks (equal times, equal ranks), so (key, time) packs into one sortable integer.
    times = np.sort(np.concatenate([ts_enter, reach, lo, hi]))

    def packed(k: np.ndarray, t: np.ndarray) -> np.ndarray:
        return (k << 32) | np.searchsorted(times, t)

    first = np.searchsorted(packed(r_key, reach), packed(key, lo), side="left")
    last = np.searchsorted(packed(r_key, ts_enter), packed(key, hi), side="right")
    n = np.maximum(last - first, 0)
    q = np.repeat(np.arange(len(key), dtype=np.int64), n)
    offsets = np.repeat(np.cumsum(n) - n, n)
    return q, np.repeat(first, n) + np.arange(q.size, dtype=np.int64) - offsets

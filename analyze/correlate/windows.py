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
from uetrace.analyze.correlate.lookback import RECENT_NS, narrowed_lo
from uetrace.analyze.correlate.objects import SERVER
from uetrace.analyze.distinct import distinct_rows
from uetrace.analyze.http.exchange_table import ExchangeTable
from uetrace.analyze.packed_sort import order_by
from uetrace.analyze.read_ahead import read_ahead

# How far before a server's first read a client's request write may have begun (measured at the server).
FAR_CLIENT_LOOKBACK_NS = 10_000_000_000
# Request bytes kept per side to look for headers (a traceparent sits in the header block).
HEAD_BYTES = 8192
# Requests whose windows are found at once (one query for their rows).
REQUESTS_PER_CHUNK = 50_000


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
# The rows of the chunk's sockets in its stretch of time. A TLS exchange was parsed from the TLS
# tracer's plaintext: its ends' SSL calls time it and carry its headers (the socket's bytes are
# ciphertext). Sorted in numpy: DuckDB's sort would carry the payloads along.
_ROWS_SQL = f"""
    SELECT k.key, d.direction, d.ts_enter, d.ts_exit, d.pid, d.tid,
           CASE WHEN (d.direction = {{egress}}) <> k.srv THEN d.payload END AS payload
    FROM _corr_keys k JOIN ({{source}}) d
      ON d.lport = k.lport AND d.rport = k.rport AND {_NORM.format(c='d.laddr')} = k.laddr
         AND {_NORM.format(c='d.raddr')} = k.raddr AND d.tls = k.tls
    WHERE d.protocol = 6 AND d.bytes > 0 AND d.ts_exit >= {{lo}} AND d.ts_enter <= {{hi}}"""
# payload: of the request bytes only (the headers' side)


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
    address: tuple[np.ndarray, np.ndarray]  # dictionary codes of the "addr:port" strings, -1 for none
    addresses: int  # codes are below this
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

        def col32(name: str) -> np.ndarray:  # pids and tids: below 2**22 (the kernel's pid_max)
            return x.ints(name)[order].astype(np.int32)

        st, en, st_ok, en_ok = col("start_ts"), col("end_ts"), has("start_ts"), has("end_ts")
        # 32-bit where the values fit: these arrays are held through the whole correlation.
        chost, cport, c_ok = (a[order] for a in addresses(x, "client"))
        shost, sport, s_ok = (a[order] for a in addresses(x, "server"))
        cport, sport = cport.astype(np.int32), sport.astype(np.int32)
        (clients, ccode), (servers, scode) = x.strings("client"), x.strings("server")
        placed = (st_ok | en_ok) & c_ok & s_ok
        values, codes = x.strings("measured_at")
        return cls(np.where(st_ok, st, en), np.where(en_ok, en, st), (chost, shost), (cport, sport),
                   (ccode[order], scode[order]), max(len(clients), len(servers)) + 1,
                   (col32("client_pid"), col32("server_pid")), (col32("client_tid"), col32("server_tid")),
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
    chunks = (_Queries.of(reqs, r0, min(r0 + REQUESTS_PER_CHUNK, len(order)))
              for r0 in range(0, len(order), REQUESTS_PER_CHUNK))
    cursor = db.con.cursor()  # the reads ahead's own: the chunk being worked on may query too
    try:
        def read(qs: _Queries) -> _Fetched | None:
            if source is None or not len(qs):
                return None
            try:
                return _Fetched.read(cursor, source, qs.cols, qs.key, egress, qs.bottom, int(qs.cols["hi"].max()))
            except duckdb.Error:
                return None

        for qs, got in read_ahead(chunks, read):
            part = _chunk(db, source, egress, qs, got)
            part.heads = {found + k: v for k, v in part.heads.items()}
            found += len(part)
            parts.append(part)
    finally:
        cursor.close()
    if not parts:
        return _empty()
    heads = {k: v for p in parts for k, v in p.heads.items()}
    return SideWindows(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                         ("index", "side", "pid", "tid", "start", "end", "exact")), heads)


@dataclass
class _Queries:
    """A chunk's queries: one per exchange and captured side, in exchange order, client side first;
    `cols` what the rows are matched on, `key` each query's socket, `far` the far clients' (whose lower
    bound is narrowed), `bottom` where the first read of the rows begins."""

    req: np.ndarray
    side_server: np.ndarray
    measured: np.ndarray
    cols: dict[str, np.ndarray]
    key: np.ndarray
    far: np.ndarray
    bottom: int

    def __len__(self) -> int:
        return len(self.req)

    @classmethod
    def of(cls, reqs: _Requests, r0: int, r1: int) -> _Queries:
        q_client = r0 + np.flatnonzero(reqs.captured[0][r0:r1])
        q_server = r0 + np.flatnonzero(reqs.captured[1][r0:r1])
        req = np.concatenate([q_client, q_server])
        srv = np.concatenate([np.zeros(len(q_client), bool), np.ones(len(q_server), bool)])
        by = np.lexsort((srv, req))
        req, side_server = req[by], srv[by]
        measured = reqs.at_server[req] == side_server
        start, end = reqs.start[req], reqs.end[req]
        local = side_server.astype(np.int64)

        def pick(pair: tuple[np.ndarray, np.ndarray], which: np.ndarray) -> np.ndarray:
            return np.where(which == 1, pair[1][req], pair[0][req])

        far = ~side_server & ~measured
        cols: dict[str, np.ndarray] = {
            "srv": side_server, "laddr": pick(reqs.host, local), "lport": pick(reqs.port, local),
            "raddr": pick(reqs.host, 1 - local), "rport": pick(reqs.port, 1 - local),
            "lo": np.maximum(np.where(far, start - FAR_CLIENT_LOOKBACK_NS, start), 0),
            "hi": end, "start": start, "tls": reqs.tls[req],
            "pid": pick(reqs.pid, local), "tid": pick(reqs.tid, local), "tid_ok": pick(reqs.tid_ok, local)}
        n = reqs.addresses
        key = distinct_rows([pick(reqs.address, local), pick(reqs.address, 1 - local), cols["tls"], side_server],
                            [n, n, 2, 2])[1] if len(req) else np.zeros(0, np.int64)
        reach_back = np.where(far, np.maximum(start - RECENT_NS, 0), cols["lo"])
        return cls(req, side_server, measured, cols, key, far, int(reach_back.min()) if len(req) else 0)


def _chunk(db: ArchiveDb, source: str | None, egress: int, chunk: _Queries,
           got: _Fetched | None) -> SideWindows:
    """The windows of a chunk's queries, from the rows read for them (`got`, read ahead)."""
    n = len(chunk)
    if not n:
        return _empty()
    req, side_server, measured, cols = chunk.req, chunk.side_server, chunk.measured, chunk.cols
    start, end = cols["start"], cols["hi"]
    # Per query: its window, exactness and thread; the defaults hold when it has no rows (measured there:
    # its own times and the thread the parsers named).
    w_start, w_end = start.copy(), end.copy()
    exact = np.ones(n, bool)
    ok = measured.copy()
    t_pid, t_tid, t_ok = cols["pid"].copy(), cols["tid"].copy(), cols["tid_ok"].copy()
    heads: dict[int, bytes] = {}
    rows = _rows(db, source, chunk, egress, got) if source is not None else None
    if rows is not None:
        q, direction, ts_enter, ts_exit, pid, tid, payload = rows
        first = np.flatnonzero(np.concatenate(([True], q[1:] != q[:-1])))  # q is sorted
        qs = q[first]
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


def _rows(db: ArchiveDb, source: str, chunk: _Queries, egress: int, got: _Fetched | None) -> tuple | None:
    """The rows of the socket of each query in its time bounds (ts_exit >= lo, ts_enter <= hi), sorted
    by query, ts_enter, ts_exit: (q, direction, ts_enter, ts_exit, pid, tid, (payloads, mask of those
    that may hold a traceparent)). The lower bound of a far client's query is first raised to its
    latest request write (lookback.py).

    One read of the chunk's sockets (`got`, from chunk.bottom on), then each query's rows as a range of
    its socket's: a join of every query with every row of its socket cost (queries x rows) on a busy
    keep-alive connection. The read reaches back RECENT_NS before the far clients' starts, where a
    busy connection's latest write is; a query whose write is older is narrowed by SQL and read by a
    second read."""
    cols, key, bottom = chunk.cols, chunk.key, chunk.bottom
    lo, hi = cols["lo"].astype(np.int64), cols["hi"].astype(np.int64)
    try:
        if chunk.far.any():
            lo = _narrowed(db, source, egress, cols, chunk.far, got, key, bottom)
        early = lo < bottom
        parts = [] if got is None else [got.in_bounds(np.flatnonzero(~early), key, lo, hi)]
        if early.any():
            more = _Fetched.read(db.con, source, cols, key, egress, int(lo[early].min()), int(hi[early].max()))
            if more is not None:
                parts.append(more.in_bounds(np.flatnonzero(early), key, lo, hi))
    except duckdb.Error:
        return None
    parts = [p for p in parts if p[0].size]
    if not parts:
        return None
    if len(parts) == 2:
        by = np.argsort(np.concatenate([parts[0][0], parts[1][0]]), kind="stable")
        out = tuple(np.concatenate([a, b])[by] for a, b in zip(parts[0][:6], parts[1][:6]))
        full = [*parts[0][6][0], *parts[1][6][0]]
        mask = np.concatenate([parts[0][6][1], parts[1][6][1]])[by]
        return (*out, ([full[i] for i in by.tolist()], mask))
    return parts[0]


def _narrowed(db: ArchiveDb, source: str, egress: int, cols: dict[str, np.ndarray], far: np.ndarray,
              got: _Fetched | None, key: np.ndarray, bottom: int) -> np.ndarray:
    """cols["lo"] with the far clients' raised as lookback.narrowed_lo raises them: from the rows read
    when the latest write is among them (begun at or after `bottom`, the read's start: no row left
    out began later), else by lookback's SQL."""
    lo = cols["lo"].astype(np.int64)
    rest = far.copy()
    if got is not None:
        known, fc, fc_exit = got.latest_writes(key, cols["start"].astype(np.int64), egress)
        ok = far & known & (fc >= bottom) & (fc_exit >= lo)
        lo[ok] = np.maximum(lo[ok], fc[ok])
        rest &= ~ok
    if rest.any():
        lo = narrowed_lo(db.con, source, egress, {**cols, "lo": lo}, rest)
    return lo


class _Fetched:
    """The rows of the chunk's sockets in a stretch of time, sorted by socket key, ts_enter, ts_exit."""

    def __init__(self, got: pa.Table) -> None:
        key, ts_enter, ts_exit = (got.column(c).to_numpy().astype(np.int64) for c in ("key", "ts_enter", "ts_exit"))
        order = order_by(key, ts_enter, ts_exit)
        self.key, self.ts_enter, self.ts_exit = key[order], ts_enter[order], ts_exit[order]
        self.direction, self.pid, self.tid = (got.column(c).to_numpy().astype(np.int64)[order]
                                              for c in ("direction", "pid", "tid"))
        self.payload = got.column("payload").take(pa.array(order))
        self.reach = _running_max(self.key, self.ts_exit)

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection, source: str, cols: dict[str, np.ndarray], key: np.ndarray,
             egress: int, lo: int, hi: int) -> _Fetched | None:
        first = np.unique(key, return_index=True)[1]
        table = pa.table({"key": pa.array(key[first], pa.int64()), "tls": pa.array(cols["tls"][first], pa.bool_()),
                          "srv": pa.array(cols["srv"][first], pa.bool_()),
                          "laddr": pa.array(cols["laddr"][first], pa.string()),
                          "lport": pa.array(cols["lport"][first], pa.int32()),
                          "raddr": pa.array(cols["raddr"][first], pa.string()),
                          "rport": pa.array(cols["rport"][first], pa.int32())})
        con.register("_corr_keys", table)
        try:
            # The stretch as constants: DuckDB skips the row groups outside it.
            got = con.sql(_ROWS_SQL.format(source=source, lo=lo, hi=hi, egress=egress)).to_arrow_table()
        finally:
            con.unregister("_corr_keys")
        return cls(got) if got.num_rows else None

    def latest_writes(self, key: np.ndarray, start: np.ndarray, egress: int) -> tuple[np.ndarray, ...]:
        """Per query, the latest write on its socket begun at or before start: whether there is one,
        its ts_enter and its ts_exit."""
        writes = np.flatnonzero(self.direction == egress)
        if not writes.size:
            return np.zeros(len(key), bool), np.zeros(len(key), np.int64), np.zeros(len(key), np.int64)
        at = _search(self.key[writes], self.ts_enter[writes], key, start, "right") - 1
        row = writes[np.maximum(at, 0)]
        return (at >= 0) & (self.key[row] == key), self.ts_enter[row], self.ts_exit[row]

    def in_bounds(self, queries: np.ndarray, key: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple:
        """(q, direction, ts_enter, ts_exit, pid, tid, (payloads, traceparent mask)) of those queries'
        rows, sorted by query then time: from the first row of the socket whose syscalls so far reach
        lo (reach >= lo) to the last begun by hi, then those returned at or after lo."""
        k, qlo, qhi = key[queries], lo[queries], hi[queries]
        first = _search(self.key, self.reach, k, qlo, "left")
        last = _search(self.key, self.ts_enter, k, qhi, "right")
        n = np.maximum(last - first, 0)
        at = np.repeat(np.arange(len(queries), dtype=np.int64), n)
        row = np.repeat(first, n) + np.arange(at.size, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
        keep = self.ts_exit[row] >= qlo[at]
        at, row = at[keep], row[keep]
        payload = self.payload.take(pa.array(row))
        # Only rows that may carry the header are turned into Python bytes (a cheap scan in Arrow).
        candidate = pc.fill_null(pc.match_substring(payload, "traceparent", ignore_case=True), False)
        mask = candidate.to_numpy(zero_copy_only=False).astype(bool)
        full: list[bytes] = [b""] * len(row)
        for i, p in zip(np.flatnonzero(mask).tolist(), payload.filter(candidate).to_pylist()):
            full[i] = p or b""
        return (queries[at], self.direction[row], self.ts_enter[row], self.ts_exit[row], self.pid[row],
                self.tid[row], (full, mask))


def _search(r_key: np.ndarray, r_t: np.ndarray, q_key: np.ndarray, q_t: np.ndarray, side: str) -> np.ndarray:
    """np.searchsorted over rows sorted by (key, t), for (key, t) pairs, each pair packed into one
    sortable integer: key * span + t (the rows' times shifted to 1.., a query's clipped to one
    below or above them, so it never reaches another key's)."""
    if not r_t.size:
        return np.zeros(len(q_t), np.int64)
    base = int(r_t.min()) - 1
    span = int(r_t.max()) - base + 2
    if int(max(r_key.max(), q_key.max())) * span < 2**62:
        rows = r_key * span + (r_t - base)
        return np.searchsorted(rows, q_key * span + np.clip(q_t - base, 0, span - 1), side=side)  # type: ignore[call-overload]
    # Times as ranks (equal times, equal ranks) then.
    times = np.sort(np.concatenate([r_t, q_t]))
    rows = (r_key << 32) | np.searchsorted(times, r_t)
    return np.searchsorted(rows, (q_key << 32) | np.searchsorted(times, q_t), side=side)  # type: ignore[call-overload]


def _running_max(key: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The greatest t so far within each key's rows (rows sorted by key)."""
    if not t.size:
        return t
    base = int(t.min())
    span = int(t.max()) - base + 1
    if int(key.max()) * span < 2**62:  # each key lifted above the one before: one running max
        lift = key * span
        return np.maximum.accumulate(t - base + lift) - lift + base
    out = t.copy()
    for a, b in zip(*_runs(key)):
        out[a:b] = np.maximum.accumulate(t[a:b])
    return out


def _runs(key: np.ndarray) -> tuple[list[int], list[int]]:
    edges = np.flatnonzero(np.diff(key)) + 1
    return [0, *edges.tolist()], [*edges.tolist(), len(key)]

"""Connections in bounded batches: the plan from per-socket metadata, the rows sorted by DuckDB and
streamed in Arrow record batches, cut at connection boundaries.

Holding every payload of a big capture in Python costs at least twice its size (the Arrow buffer and
the streams' bytes). Instead the sockets are first planned from a small GROUP BY (counts, first
activity, addresses): that is enough to pair the two ends of each connection and to order the
connections exactly as one whole load would, so conn ids and the order of the exchanges do not
depend on the batch size. DuckDB then sorts the rows by (connection, socket, direction, time), a
group of connections per query under a tighter memory limit (spilling to its temp_directory), and
the rows come back a batch of connections at a time: a batch never splits a connection, and a
connection too long to hold whole is read in pieces cut where it is quiet (pieces.py), so memory is
bounded by the batch or piece size.

Rows of one stream with the same ts_enter and ts_exit come in DuckDB's order (a whole load kept the
segments' order): two syscalls on one socket do not enter and return in the same nanoseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from uetrace.analyze.chunks import packed
from uetrace.analyze.enums import DEFAULT, Enums
from uetrace.analyze.http import pieces
from uetrace.analyze.http.connection import Connection, Ends, pair_ends
from uetrace.analyze.http.stream_loading import RowRun, sockets_from_rows
from uetrace.analyze.http.streams import EGRESS, INGRESS

# Rows of one batch (connections are never split, so a batch holds at least one whole connection).
DEFAULT_BATCH_ROWS = 50_000
_READ_ROWS = 65_536  # rows per Arrow record batch read from DuckDB
SORT_MEMORY_LIMIT = "192MB"
SORT_GROUP_ROWS = 1_000_000  # rows sorted by one query (see _sort_groups)

_WHERE = "bytes > 0 AND protocol = 6"  # UDP datagrams are not byte streams
_META_SQL = "SELECT {key} AS k, laddr, lport, raddr, rport, direction, any_value(family) AS family, " \
            "count(*) AS n, min(ts_enter) AS first, sum(bytes) AS nbytes FROM {table} " \
            "WHERE " + _WHERE + " AND direction IN ({dirs}) " \
            "GROUP BY ALL ORDER BY k, laddr, lport, raddr, rport, direction"
_PLAN = "_uetrace_http_plan"
_ROWS_SQL = "SELECT d.direction, d.ts_enter, d.ts_exit, d.pid, d.tid, d.bytes, d.payload FROM {table} d " \
            "JOIN " + _PLAN + " p ON p.k = {key} AND p.laddr IS NOT DISTINCT FROM d.laddr " \
            "AND p.lport IS NOT DISTINCT FROM d.lport AND p.raddr IS NOT DISTINCT FROM d.raddr " \
            "AND p.rport IS NOT DISTINCT FROM d.rport WHERE " + _WHERE + " AND d.direction IN ({dirs}) " \
            "AND p.seq >= ? AND p.seq < ?{time} " \
            "ORDER BY p.seq, d.direction, d.ts_enter, d.ts_exit"
_PIECE_META_SQL = "SELECT p.seq, d.direction, d.ts_enter, d.bytes FROM {table} d " \
            "JOIN " + _PLAN + " p ON p.k = {key} AND p.laddr IS NOT DISTINCT FROM d.laddr " \
            "AND p.lport IS NOT DISTINCT FROM d.lport AND p.raddr IS NOT DISTINCT FROM d.raddr " \
            "AND p.rport IS NOT DISTINCT FROM d.rport WHERE " + _WHERE + " AND d.direction IN ({dirs}) " \
            "AND p.seq >= ? AND p.seq < ? ORDER BY d.ts_enter, d.ts_exit"


@dataclass(slots=True)
class PlannedSocket(Ends):
    """One socket as the metadata describes it: enough to pair and order it before any payload."""

    k: int
    laddr: str
    lport: int
    raddr: str
    rport: int
    family: int
    first_ts: int = 0
    runs: list[tuple[int, int, int]] = field(default_factory=list)  # (archive direction, model direction, rows)
    nbytes: int = 0  # bytes moved, both directions

    @property
    def rows(self) -> int:
        return sum(n for _, _, n in self.runs)


Pair = tuple[PlannedSocket, PlannedSocket | None]


def _key(source: str) -> str:
    # For the TLS tracer's rows a sock_id of 0 means "socket unknown": those group by (pid, fd).
    return "CASE WHEN sock_id = 0 THEN hash(pid, fd) ELSE sock_id END" if source == "tls" else "sock_id"


def _directions(table: str, enums: Enums) -> dict[int, int]:
    """The archive's direction values, by name, to the stream model's own."""
    return {enums.value(table, "ue_sock_direction", "DIR_EGRESS"): EGRESS,
            enums.value(table, "ue_sock_direction", "DIR_INGRESS"): INGRESS}


def plan(con: duckdb.DuckDBPyConnection, table: str = "sock_data", source: str = "sock",
         enums: Enums = DEFAULT) -> list[Pair]:
    """Every connection of a sock_data-shaped table, as pairs of planned sockets in the order a
    whole load pairs them (pair_ends: by first activity). Rows are grouped by sock_id and 5-tuple (a
    kernel may reuse a socket's address for a later connection); directions the stream model cannot
    read as a byte stream are left out."""
    model = _directions(table, enums)
    dirs = ", ".join(str(int(d)) for d in model)
    sockets: dict[tuple, PlannedSocket] = {}
    for k, laddr, lport, raddr, rport, direction, family, n, first, nbytes in con.execute(
            _META_SQL.format(key=_key(source), table=table, dirs=dirs)).fetchall():
        ident = (k, laddr, lport, raddr, rport)
        s = sockets.get(ident)
        if s is None:
            s = sockets[ident] = PlannedSocket(k, laddr, lport, raddr, rport, family, int(first))
        s.family = family  # as a whole load keeps it: the last direction's
        s.first_ts = min(s.first_ts, int(first))
        s.runs.append((direction, model[direction], n))
        s.nbytes += int(nbytes)
    return pair_ends(list(sockets.values()))


def connection_batches(con: duckdb.DuckDBPyConnection, pairs: list[Pair], table: str = "sock_data",
                       source: str = "sock", enums: Enums = DEFAULT,
                       batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[list[Connection | pieces.PiecedConnection]]:
    """The planned connections with their streams, a batch at a time, in plan order. Each batch's
    payloads are released when the caller lets go of it. A connection of more than PIECE_ROWS rows
    comes alone, as a PiecedConnection that loads its pieces (or itself whole) when asked."""
    if not pairs:
        return
    seq = [s for pair in pairs for s in pair if s is not None]
    # sock_id is unsigned in archives, hash() always is; a test's table may hold signed ids.
    k_type = pa.uint64() if all(s.k >= 0 for s in seq) else pa.int64()
    con.register(_PLAN + "_arrow", pa.table({
        "seq": pa.array(range(len(seq)), pa.int64()),
        "k": pa.array([s.k for s in seq], k_type),
        "laddr": pa.array([s.laddr for s in seq], pa.string()),
        "lport": pa.array([s.lport for s in seq], pa.int64()),
        "raddr": pa.array([s.raddr for s in seq], pa.string()),
        "rport": pa.array([s.rport for s in seq], pa.int64()),
    }))
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {_PLAN} AS SELECT * FROM {_PLAN}_arrow")
    finally:
        con.unregister(_PLAN + "_arrow")
    model = _directions(table, enums)
    dirs = ", ".join(str(int(d)) for d in model)
    sql = _ROWS_SQL.format(table=table, key=_key(source), dirs=dirs, time="")
    timed = _ROWS_SQL.format(table=table, key=_key(source), dirs=dirs, time=" AND d.ts_enter >= ? AND d.ts_enter < ?")
    meta = _PIECE_META_SQL.format(table=table, key=_key(source), dirs=dirs)
    # The sort holds payloads while Python holds a parsed batch beside it: under a tighter limit than
    # the connection's, put back when the rows are read.
    limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    try:
        con.execute(f"SET memory_limit = '{SORT_MEMORY_LIMIT}'")
        first = 0  # seq of the next socket
        for segment in _segments(pairs):
            if isinstance(segment, tuple):  # one long connection: in pieces
                yield [_pieced(con, segment, first, meta, timed, model, source)]
                first += _sockets(segment)
                continue
            for group in _sort_groups(_group(segment, batch_rows)):
                n = sum(_sockets(pair) for batch in group for pair in batch)
                reader = con.sql(sql, params=[first, first + n]).to_arrow_reader(_READ_ROWS)
                first += n
                try:
                    rows = _RowSource(reader)
                    for batch in group:
                        runs = [RowRun(s, d, n) for pair in batch for s in pair if s is not None for _, d, n in s.runs]
                        tbl = rows.take(sum(r.n for r in runs))
                        socks = sockets_from_rows(tbl, runs, source)
                        del tbl
                        yield [Connection(socks[id(a)], socks[id(b)] if b is not None else None) for a, b in batch]
                finally:
                    reader.close()  # the connection takes no other query while a result is open
    finally:
        con.execute(f"SET memory_limit = '{limit}'")
        con.execute(f"DROP TABLE IF EXISTS {_PLAN}")


def _sockets(pair: Pair) -> int:
    return sum(1 for s in pair if s is not None)


def _segments(pairs: list[Pair]) -> Iterator[list[Pair] | Pair]:
    """Runs of consecutive connections read whole (lists), and each long connection alone (a tuple)."""
    run: list[Pair] = []
    for pair in pairs:
        if _rows(pair) > pieces.PIECE_ROWS:
            if run:
                yield run
                run = []
            yield pair
        else:
            run.append(pair)
    if run:
        yield run


def _pieced(con: duckdb.DuckDBPyConnection, pair: Pair, first: int, meta: str, timed: str, model: dict[int, int],
            source: str) -> pieces.PiecedConnection:
    """A long connection's cuts, from its rows' metadata; its pieces load when asked for."""
    ends = [s for s in pair if s is not None]
    got = con.sql(meta, params=[first, first + len(ends)]).to_arrow_table()
    to_model = np.zeros(max(model) + 1, np.int64)
    to_model[list(model)] = list(model.values())
    rows = pieces.Rows(got.column("seq").to_numpy() - first, to_model[got.column("direction").to_numpy()],
                       got.column("ts_enter").to_numpy().astype(np.int64), got.column("bytes").to_numpy())
    at = pieces.cuts(rows, len(ends))
    counts = pieces.piece_counts(rows, at, [(e, d) for e, s in enumerate(ends) for _, d, _ in s.runs])
    del got, rows
    bounds = [0, *at, 2**63 - 1]

    def load(k: int | None) -> Connection:
        if k is None:
            rel = con.sql(timed, params=[first, first + len(ends), 0, 2**63 - 1])
            runs = [RowRun(s, d, n) for s in ends for _, d, n in s.runs]
        else:
            rel = con.sql(timed, params=[first, first + len(ends), bounds[k], bounds[k + 1]])
            runs = [RowRun(s, d, counts[k][(e, d)]) for e, s in enumerate(ends) for _, d, _ in s.runs]
        tbl = rel.to_arrow_table()
        socks = sockets_from_rows(tbl, runs, source)
        del tbl
        a, b = pair
        return Connection(socks[id(a)], socks[id(b)] if b is not None else None)

    return pieces.PiecedConnection(load, len(at) + 1, tuple(s.nbytes if s is not None else 0 for s in pair))


def _sort_groups(batches: Iterator[list[Pair]]) -> Iterator[list[list[Pair]]]:
    """Consecutive batches up to SORT_GROUP_ROWS rows: each group is one sort in DuckDB. A sort of
    every payload of a big capture would not fit its memory limit even spilling (it failed at 7 M
    rows under 192 MB); a group is one scan of the table more, and a bounded sort."""
    return packed(batches, lambda batch: sum(_rows(pair) for pair in batch), SORT_GROUP_ROWS)


def _group(pairs: list[Pair], batch_rows: int) -> Iterator[list[Pair]]:
    """Consecutive connections up to batch_rows rows together; a bigger connection alone."""
    return packed(pairs, _rows, batch_rows)


def _rows(pair: Pair) -> int:
    return sum(s.rows for s in pair if s is not None)


class _RowSource:
    """Exactly n rows at a time from a RecordBatchReader, whatever its batch size."""

    def __init__(self, reader: pa.RecordBatchReader) -> None:
        self.reader = reader
        self.pending: list[pa.RecordBatch] = []
        self.have = 0

    def take(self, n: int) -> pa.Table:
        while self.have < n:
            b = self.reader.read_next_batch()  # StopIteration only if the rows changed under us
            self.pending.append(b)
            self.have += b.num_rows
        out: list[pa.RecordBatch] = []
        need = n
        while need:
            b = self.pending[0]
            if b.num_rows <= need:
                out.append(self.pending.pop(0))
                need -= b.num_rows
            else:
                out.append(b.slice(0, need))
                self.pending[0] = b.slice(need)
                need = 0
        self.have -= n
        return pa.Table.from_batches(out, schema=self.reader.schema)

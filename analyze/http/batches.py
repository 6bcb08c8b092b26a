"""Connections in bounded batches: the plan from per-socket metadata, the rows sorted by DuckDB and
streamed in Arrow record batches, cut at connection boundaries.

Holding every payload of a big capture in Python costs at least twice its size (the Arrow buffer and
the streams' bytes). Instead the sockets are first planned from a small GROUP BY (counts, first
activity, addresses): that is enough to pair the two ends of each connection and to order the
connections exactly as one whole load would, so conn ids and the order of the exchanges do not
depend on the batch size. DuckDB then sorts the rows by (connection, socket, direction, time), a
group of connections per query under a tighter memory limit (spilling to its temp_directory), and
the rows come back a batch of connections at a time: a batch never splits a connection, and the
connections too long to hold whole are read first, in pieces cut where they are quiet, all of them
together (long_connections.py), so memory is bounded by the batch or piece size.

Rows of one stream with the same ts_enter and ts_exit come in DuckDB's order (a whole load kept the
segments' order): two syscalls on one socket do not enter and return in the same nanoseconds.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from uetrace.analyze.chunks import packed
from uetrace.analyze.enums import DEFAULT, Enums
from uetrace.analyze.http import pieces
from uetrace.analyze.http.connection import Connection, Ends, pair_ends
from uetrace.analyze.http.long_connections import LongConnection, LongConnections, Piece
from uetrace.analyze.http.stream_loading import RowRun, RowSource, sockets_from_rows
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
_JOIN_PLAN = "JOIN " + _PLAN + " p ON p.k = {key} AND p.laddr IS NOT DISTINCT FROM d.laddr " \
             "AND p.lport IS NOT DISTINCT FROM d.lport AND p.raddr IS NOT DISTINCT FROM d.raddr " \
             "AND p.rport IS NOT DISTINCT FROM d.rport "
_ROWS = "d.direction, d.ts_enter, d.ts_exit, d.pid, d.tid, d.bytes, d.payload"
_ROWS_SQL = "SELECT " + _ROWS + " FROM {table} d " + _JOIN_PLAN + "WHERE " + _WHERE + \
            " AND d.direction IN ({dirs}) AND p.seq >= ? AND p.seq < ?{time} " \
            "ORDER BY p.seq, d.direction, d.ts_enter, d.ts_exit"
# The long connections' rows (long_connections.py): their metadata, each connection's in ts_enter order;
# then their pieces, each piece's rows as _ROWS_SQL sorts a connection's ({{lo}}, {{hi}}: the stretch).
_LONG_META_SQL = "SELECT p.seq, d.direction, d.ts_enter, d.bytes FROM {table} d " + _JOIN_PLAN + \
                 "JOIN _uetrace_http_long l ON l.seq = p.seq WHERE " + _WHERE + " AND d.direction IN ({dirs}) " \
                 "ORDER BY l.conn, d.ts_enter"  # ts_exit too would double the sort's time
_PIECES_SQL = "SELECT " + _ROWS + " FROM {table} d " + _JOIN_PLAN + "JOIN _uetrace_http_ranges r " \
              "ON r.seq = p.seq AND d.ts_enter >= r.lo AND d.ts_enter < r.hi WHERE " + _WHERE + \
              " AND d.direction IN ({dirs}) AND d.ts_enter >= {{lo}} AND d.ts_enter < {{hi}} " \
              "ORDER BY r.piece, p.seq, d.direction, d.ts_enter, d.ts_exit"


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
                       source: str = "sock", enums: Enums = DEFAULT, batch_rows: int = DEFAULT_BATCH_ROWS
                       ) -> Iterator[list[Connection | LongConnection | Piece]]:
    """First the pieces of the connections of more than PIECE_ROWS rows that can be cut
    (long_connections.py), each alone; then every planned connection with its streams, a batch at a
    time, in plan order, a long connection as a LongConnection that loads it whole when asked. Each
    batch's payloads are released when the caller lets go of it."""
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
    # The sort holds payloads while Python holds a parsed batch beside it: under a tighter limit than
    # the connection's, put back when the rows are read.
    limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    try:
        con.execute(f"SET memory_limit = '{SORT_MEMORY_LIMIT}'")
        starts = np.cumsum([0] + [_sockets(pair) for pair in pairs]).tolist()
        long = {i: (pair, starts[i]) for i, pair in enumerate(pairs) if _rows(pair) > pieces.PIECE_ROWS}
        cut = LongConnections(con, long,
                              _LONG_META_SQL.format(table=table, key=_key(source), dirs=dirs),
                              _PIECES_SQL.format(table=table, key=_key(source), dirs=dirs), model, source)
        for piece in cut.pieces():
            yield [piece]
        first = 0  # seq of the next socket
        for segment in _segments(pairs, long):
            if isinstance(segment, int):  # a long connection: whole when asked
                pair = pairs[segment]
                yield [LongConnection(segment, functools.partial(_whole, con, pair, first, timed, source))]
                first += _sockets(pair)
                continue
            for group in _sort_groups(_group(segment, batch_rows)):
                n = sum(_sockets(pair) for batch in group for pair in batch)
                reader = con.sql(sql, params=[first, first + n]).to_arrow_reader(_READ_ROWS)
                first += n
                try:
                    rows = RowSource(reader)
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


def _segments(pairs: list[Pair], long: dict) -> Iterator[list[Pair] | int]:
    """Runs of consecutive connections read whole (lists), and each long connection alone (its
    position in pairs)."""
    run: list[Pair] = []
    for i, pair in enumerate(pairs):
        if i in long:
            if run:
                yield run
                run = []
            yield i
        else:
            run.append(pair)
    if run:
        yield run


def _whole(con: duckdb.DuckDBPyConnection, pair: Pair, first: int, timed: str, source: str) -> Connection:
    """A long connection whole (its pieces did not all parse perfectly)."""
    ends = [s for s in pair if s is not None]
    tbl = con.sql(timed, params=[first, first + len(ends), 0, 2**63 - 1]).to_arrow_table()
    socks = sockets_from_rows(tbl, [RowRun(s, d, n) for s in ends for _, d, n in s.runs], source)
    del tbl
    a, b = pair
    return Connection(socks[id(a)], socks[id(b)] if b is not None else None)


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

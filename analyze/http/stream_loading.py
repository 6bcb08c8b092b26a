"""Loading a sock_data-shaped table into sockets with rebuilt streams, one query and no Python work per
fully captured row."""

from __future__ import annotations

import bisect
from collections import defaultdict

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uetrace.analyze.enums import DEFAULT, Enums
from uetrace.analyze.http.connection import Socket
from uetrace.analyze.http.streams import EGRESS, INGRESS, Rows, Stream, assemble, empty_stream

_WHERE = "WHERE bytes > 0 AND protocol = 6"  # UDP datagrams are not byte streams
_LOAD_SQL = "SELECT {key} AS k, direction, ts_enter, ts_exit, pid, tid, bytes, payload FROM {table} " \
            + _WHERE + " ORDER BY {order}, direction, ts_enter, ts_exit"
_LOAD_UNSORTED_SQL = "SELECT {key} AS k, direction, ts_enter, ts_exit, pid, tid, bytes, payload FROM {table} " \
    + _WHERE
# Ordered by the full key: where no socket id carries two 4-tuples this is the order of (k, direction).
_META_SQL = "SELECT {key} AS k, laddr, lport, raddr, rport, direction, any_value(family) AS family, " \
            "count(*) AS n FROM {table} " + _WHERE + " GROUP BY ALL ORDER BY k, laddr, lport, raddr, rport, direction"


def load_sockets(con: duckdb.DuckDBPyConnection, table: str = "sock_data", source: str = "sock",
                 enums: Enums = DEFAULT) -> list[Socket]:
    """Read a sock_data-shaped table into sockets with rebuilt streams.

    Rows are grouped by sock_id and 5-tuple (a kernel may reuse a socket's address for a later
    connection). For the TLS tracer's rows a sock_id of 0 means "socket unknown": those group by
    (pid, fd) instead. Payloads are sliced straight out of the Arrow buffer: rows arrive sorted per
    stream, so a fully captured stream is one contiguous slice, with no Python work per row."""
    key = "CASE WHEN sock_id = 0 THEN hash(pid, fd) ELSE sock_id END" if source == "tls" else "sock_id"
    meta = con.sql(_META_SQL.format(key=key, table=table)).fetchall()
    # Does any socket id carry more than one 4-tuple (an address reused by the kernel within the
    # capture)? Sorting the rows on the address strings costs as much again as the rest of the load:
    # only then.
    reused = any(a[0] == b[0] and a[1:5] != b[1:5] for a, b in zip(meta, meta[1:]))
    order = "k, laddr, lport, raddr, rport"
    if reused:
        tbl = con.sql(_LOAD_SQL.format(key=key, table=table, order=order)).to_arrow_table()
    else:
        # Sorting in DuckDB drags the payload column through the sort; ordering the four key
        # columns in numpy and gathering the rows once costs less than half as much.
        tbl = con.sql(_LOAD_UNSORTED_SQL.format(key=key, table=table)).to_arrow_table()
        cols = [tbl.column(c).to_numpy() for c in ("ts_exit", "ts_enter", "direction", "k")]
        order = np.lexsort(cols)
        if not np.array_equal(order, np.arange(len(order))):
            tbl = tbl.take(order)
    total = tbl.num_rows
    if total == 0:
        return []

    column = tbl.column("payload")
    if column.num_chunks == 1 and column.type in (pa.binary(), pa.large_binary()):  # as `take` leaves it
        payload = column.chunk(0)  # read in place: combining would copy every payload byte
    else:
        payload = pc.cast(column, pa.large_binary()).combine_chunks()
        if isinstance(payload, pa.ChunkedArray):  # older pyarrow returns a one-chunk ChunkedArray
            payload = payload.chunk(0) if payload.num_chunks else pa.array([], pa.large_binary())
    off_buf, data_buf = payload.buffers()[1], payload.buffers()[2]
    width = 8 if payload.type == pa.large_binary() else 4
    offsets = np.frombuffer(off_buf, dtype=np.int64 if width == 8 else np.int32, count=total + 1,
                            offset=payload.offset * width).astype(np.int64)
    data = memoryview(data_buf) if data_buf is not None else memoryview(b"")

    sizes = tbl.column("bytes").to_numpy().astype(np.int64)
    paylen = np.diff(offsets)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    # Rows whose payload is not exactly their size break the contiguous slice: short ones leave a gap,
    # over-long ones (malformed input) must be clipped. Only those get per-row handling.
    odd = np.flatnonzero(paylen != sizes).tolist()
    rows = Rows(starts, tbl.column("ts_enter").to_numpy(), tbl.column("ts_exit").to_numpy(),
                tbl.column("pid").to_numpy(), tbl.column("tid").to_numpy())
    # A stream needs the offsets and sizes of its first and last rows and of its odd rows only: a few
    # numpy lookups per stream cost less than a Python list of every row's values.

    def stream(lo: int, hi: int, direction: int) -> Stream:
        a = bisect.bisect_left(odd, lo)
        b = bisect.bisect_left(odd, hi)
        base = rows.start[lo]
        length = (rows.start[hi - 1] + int(sizes[hi - 1])) - base
        if a == b:  # fully captured: one slice of the buffer
            return Stream(length, [0], [bytes(data[int(offsets[lo]):int(offsets[hi])])], rows, lo, hi, base,
                          direction)
        if any(paylen[j] > sizes[j] for j in odd[a:b]):  # malformed rows: clip them one by one
            offs = offsets[lo:hi + 1].tolist()
            caps = [bytes(data[offs[j]:offs[j + 1]]) for j in range(hi - lo)]
            return assemble(rows, lo, hi, sizes[lo:hi].tolist(), caps, direction)
        # A short row ends a stretch (its uncaptured tail is the gap); the rows of one stretch are
        # contiguous in the buffer, so each stretch is one slice.
        offs = offsets[lo:hi + 1].tolist()  # offs[x - lo]: row x's first payload byte in the buffer
        starts: list[int] = []
        chunks: list[bytes] = []
        i = lo
        for j in odd[a:b]:
            if offs[j + 1 - lo] > offs[i - lo]:
                starts.append(rows.start[i] - base)
                chunks.append(bytes(data[offs[i - lo]:offs[j + 1 - lo]]))
            i = j + 1
        if i < hi and offs[hi - lo] > offs[i - lo]:
            starts.append(rows.start[i] - base)
            chunks.append(bytes(data[offs[i - lo]:offs[hi - lo]]))
        if not chunks:
            starts, chunks = [0], [b""]
        return Stream(length, starts, chunks, rows, lo, hi, base, direction)

    # Walk the metadata (same order as the rows) and cut the row range into streams.
    by_sock: dict[tuple, dict[int, Stream]] = defaultdict(dict)
    families: dict[tuple, int] = {}
    i = 0
    # The archive's direction values, by name, to the stream model's own.
    model = {enums.value(table, "ue_sock_direction", "DIR_EGRESS"): EGRESS,
             enums.value(table, "ue_sock_direction", "DIR_INGRESS"): INGRESS}
    for k, laddr, lport, raddr, rport, direction, family, n in meta:
        ident = (k, laddr, lport, raddr, rport)
        families[ident] = family
        if direction in model:  # else a direction this version cannot read as a byte stream
            by_sock[ident][model[direction]] = stream(i, i + n, model[direction])
        i += n
    sockets = []
    for ident, dirs in by_sock.items():
        k, laddr, lport, raddr, rport = ident
        egress = dirs.get(EGRESS) or empty_stream(EGRESS)
        ingress = dirs.get(INGRESS) or empty_stream(INGRESS)
        sockets.append(Socket(k, families[ident], laddr, lport, raddr, rport, egress, ingress, source))
    return sockets

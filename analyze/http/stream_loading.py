"""Rows of sorted sock_data-shaped records into sockets with rebuilt streams, with no Python work per
fully captured row. batches.py plans the sockets and hands over their rows a batch at a time."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uetrace.analyze.http.connection import Socket
from uetrace.analyze.http.streams import EGRESS, INGRESS, Rows, Stream, assemble, empty_stream

if TYPE_CHECKING:
    from uetrace.analyze.http.batches import PlannedSocket


@dataclass(slots=True)
class RowRun:
    """n consecutive rows of the table: one direction (the stream model's) of one planned socket."""

    socket: PlannedSocket
    direction: int
    n: int


def sockets_from_rows(tbl: pa.Table, runs: list[RowRun], source: str = "sock") -> dict[int, Socket]:
    """Sockets (keyed by id() of their planned socket) from rows sorted per stream, in the order and
    counts `runs` gives. Payloads are sliced straight out of the Arrow buffer: a fully captured stream
    is one contiguous slice."""
    total = tbl.num_rows
    column = tbl.column("payload")
    if column.num_chunks == 1 and column.type in (pa.binary(), pa.large_binary()):
        payload = column.chunk(0)  # read in place: combining would copy every payload byte
    else:
        payload = pc.cast(column, pa.large_binary()).combine_chunks()
        if isinstance(payload, pa.ChunkedArray):  # older pyarrow returns a one-chunk ChunkedArray
            payload = payload.chunk(0) if payload.num_chunks else pa.array([], pa.large_binary())
    if total:
        off_buf, data_buf = payload.buffers()[1], payload.buffers()[2]
        width = 8 if payload.type == pa.large_binary() else 4
        offsets = np.frombuffer(off_buf, dtype=np.int64 if width == 8 else np.int32, count=total + 1,
                                offset=payload.offset * width).astype(np.int64)
        data = memoryview(data_buf) if data_buf is not None else memoryview(b"")
    else:
        offsets, data = np.zeros(1, dtype=np.int64), memoryview(b"")

    sizes = tbl.column("bytes").to_numpy().astype(np.int64)
    paylen = np.diff(offsets)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1])) if total else np.zeros(0, dtype=np.int64)
    # Rows whose payload is not exactly their size break the contiguous slice: short ones leave a gap,
    # over-long ones (malformed input) must be clipped. Only those get per-row handling.
    odd_rows = np.flatnonzero(paylen != sizes)
    odd = odd_rows.tolist()
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
        these = odd_rows[a:b]
        if (paylen[these] > sizes[these]).any():  # malformed rows: clip them one by one
            offs = offsets[lo:hi + 1].tolist()
            caps = [bytes(data[offs[j]:offs[j + 1]]) for j in range(hi - lo)]
            return assemble(rows, lo, hi, sizes[lo:hi].tolist(), caps, direction)
        # A short row ends a stretch (its uncaptured tail is the gap); the rows of one stretch are
        # contiguous in the buffer, so each stretch is one slice: rows [first, last) of each.
        first = np.concatenate(([lo], these + 1))
        last = np.concatenate((these + 1, [hi]))
        keep = (first < last) & (offsets[last] > offsets[first])
        first, last = first[keep], last[keep]
        starts = (rows.start_np[first] - base).tolist()
        chunks = [bytes(data[x:y]) for x, y in zip(offsets[first].tolist(), offsets[last].tolist())]
        if not chunks:
            starts, chunks = [0], [b""]
        return Stream(length, starts, chunks, rows, lo, hi, base, direction)

    by_sock: dict[int, dict[int, Stream]] = {}
    i = 0
    for run in runs:
        streams = by_sock.setdefault(id(run.socket), {})
        if run.n:  # a piece of a connection (pieces.py) may have no rows in a direction
            streams[run.direction] = stream(i, i + run.n, run.direction)
        i += run.n
    sockets: dict[int, Socket] = {}
    for run in runs:
        p = run.socket
        if id(p) in sockets:
            continue
        dirs = by_sock[id(p)]
        sockets[id(p)] = Socket(p.k, p.family, p.laddr, p.lport, p.raddr, p.rport,
                                dirs.get(EGRESS) or empty_stream(EGRESS), dirs.get(INGRESS) or empty_stream(INGRESS),
                                source)
    return sockets


class RowSource:
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

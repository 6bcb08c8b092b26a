"""Rebuild each socket's byte streams from the socket tracer's data rows.

One row of `sock_data` is one read- or write-like syscall that moved `bytes` bytes, of which the first
`captured` were recorded. Per (socket, direction) the rows in syscall order give the byte stream as the
process saw it; where a syscall moved more than was captured, the stream has a gap of known length.
Gaps are never filled: parsers ask for bytes and get None where the capture has none, and skip over
gaps by length (a body whose size the headers announced can be stepped over without its bytes).

This module is the model only: stream_loading.py builds streams from the archive, connection.py pairs
the two ends of a connection.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

# The stream model's own direction codes; stream_loading.py maps the archive's ue_sock_direction values
# to these by enumerator name.
EGRESS = 0  # the process wrote
INGRESS = 1  # the process read


class Rows:
    """Per-syscall columns shared by all streams of one load. A stream owns the window [lo, hi).
    Kept as numpy arrays for the vectorized lookups of whole connections at once; `start` also as a
    list, because a scalar bisect on a list costs a fraction of a numpy scalar search."""

    __slots__ = ("start", "start_np", "ts_enter", "ts_exit", "pid", "tid")

    def __init__(self, start: np.ndarray, ts_enter: np.ndarray, ts_exit: np.ndarray, pid: np.ndarray,
                 tid: np.ndarray) -> None:
        self.start_np = np.asarray(start, dtype=np.int64)  # row's first byte in the load-wide concatenation
        self.start: list[int] = self.start_np.tolist()
        self.ts_enter = np.asarray(ts_enter, dtype=np.int64)  # ns; int64 holds CLOCK_MONOTONIC for 292 years
        self.ts_exit = np.asarray(ts_exit, dtype=np.int64)
        self.pid = np.asarray(pid, dtype=np.int64)
        self.tid = np.asarray(tid, dtype=np.int64)


@dataclass(slots=True)
class Stream:
    """One direction of one socket: captured stretches of bytes at stream offsets, with gaps between.

    Offsets count every byte the syscalls moved, captured or not, from the first row seen (0). If the
    connection began before the capture, offset 0 is wherever the capture came in."""

    length: int  # bytes moved in total (captured + gaps)
    chunk_starts: list[int]  # stream offset of each captured stretch, ascending
    chunks: list[bytes]  # the stretch bytes; a gap lies between one stretch's end and the next start
    rows: Rows
    lo: int  # this stream's rows are rows[lo:hi]
    hi: int
    base: int  # rows.start[lo]: global offset of stream offset 0
    direction: int = EGRESS

    def chunk_at(self, pos: int) -> tuple[bytes, int] | None:
        """The captured stretch holding offset pos as (bytes, its start offset), or None in a gap."""
        starts = self.chunk_starts
        if len(starts) == 1:  # the common case: fully captured stream
            start = starts[0]
            data = self.chunks[0]
            return (data, start) if start <= pos < start + len(data) else None
        i = bisect.bisect_right(starts, pos) - 1
        if i < 0:
            return None
        data = self.chunks[i]
        start = starts[i]
        return (data, start) if pos < start + len(data) else None

    def read(self, pos: int, n: int) -> bytes | None:
        """Exactly n captured bytes at pos, or None if any of them fall in a gap or past the end."""
        hit = self.chunk_at(pos)
        if hit is None:
            return None
        data, start = hit
        i = pos - start
        if i + n > len(data):
            return None
        return data[i:i + n]

    def row_index(self, pos: int) -> int:
        """Index into `rows` of the syscall that moved the byte at offset pos (clamped to the stream)."""
        i = bisect.bisect_right(self.rows.start, self.base + pos, self.lo, self.hi) - 1
        return min(max(i, self.lo), self.hi - 1)

    def ts_enter(self, pos: int) -> int:
        return int(self.rows.ts_enter[self.row_index(pos)])

    def ts_exit(self, pos: int) -> int:
        return int(self.rows.ts_exit[self.row_index(pos)])

    def seen_ts(self, pos: int) -> int:
        """When the process first had the byte at pos in hand: a writer when its write began, a reader
        when its read returned (a blocking read's entry time says nothing about the data)."""
        i = self.row_index(pos)
        return int(self.rows.ts_enter[i] if self.direction == EGRESS else self.rows.ts_exit[i])

    def done_ts(self, pos: int) -> int:
        """When the syscall that moved the byte at pos returned."""
        return int(self.rows.ts_exit[self.row_index(pos)])

    def pid_tid(self, pos: int) -> tuple[int, int]:
        i = self.row_index(pos)
        return int(self.rows.pid[i]), int(self.rows.tid[i])

    # Vectorized forms: one numpy search per connection instead of one bisect per message.
    def rows_at(self, positions: Sequence[int]) -> np.ndarray:
        # Searching the stream's own rows gives, once clamped, what a search of all rows gives (starts
        # ascend), and costs less; np.clip's Python wrapper cost more than the search.
        lo, hi = self.lo, max(self.hi, self.lo + 1)
        x = np.asarray(positions, dtype=np.int64) + self.base
        idx = self.rows.start_np[lo:hi].searchsorted(x, side="right")
        idx += lo - 1
        np.maximum(idx, lo, out=idx)
        return idx

    def seen_ts_many(self, positions: Sequence[int]) -> list[int]:
        ts = self.rows.ts_enter if self.direction == EGRESS else self.rows.ts_exit
        return ts[self.rows_at(positions)].tolist()

    def done_ts_many(self, positions: Sequence[int]) -> list[int]:
        return self.rows.ts_exit[self.rows_at(positions)].tolist()

    def pid_tid_many(self, positions: Sequence[int]) -> tuple[list[int], list[int]]:
        idx = self.rows_at(positions)
        return self.rows.pid[idx].tolist(), self.rows.tid[idx].tolist()

    def row_starts(self, pos: int) -> Iterator[int]:
        """Stream offsets of syscall boundaries at or after pos: where a parser can try to resync,
        since writers usually start a message with a fresh syscall."""
        starts = self.rows.start
        base = self.base
        for i in range(bisect.bisect_left(starts, base + pos, self.lo, self.hi), self.hi):
            yield starts[i] - base

    @property
    def captured_bytes(self) -> int:
        return sum(len(c) for c in self.chunks)

    @property
    def first_ts(self) -> int:
        return int(self.rows.ts_enter[self.lo]) if self.hi > self.lo else 0

    @property
    def last_ts(self) -> int:
        return int(self.rows.ts_exit[self.hi - 1]) if self.hi > self.lo else 0


def empty_stream(direction: int = EGRESS) -> Stream:
    zero = np.zeros(1, dtype=np.int64)
    return Stream(0, [0], [b""], Rows(zero, zero, zero, zero, zero), 0, 0, 0, direction)


def stream_from_writes(pieces: Sequence[bytes | int | tuple[bytes, int]], ts0: int = 1_000,
                       step: int = 1_000, pid: int = 1, tid: int = 1, direction: int = EGRESS) -> Stream:
    """A stream from code (tests, fixtures): each piece is one syscall, given as its bytes (fully
    captured), an int (a syscall whose bytes were all missed), or (captured prefix, bytes moved).
    Syscall i entered at ts0 + i*step and exited step/2 later."""
    sizes, caps = [], []
    for p in pieces:
        if isinstance(p, int):
            sizes.append(p)
            caps.append(b"")
        elif isinstance(p, tuple):
            sizes.append(max(p[1], len(p[0])))
            caps.append(p[0])
        else:
            sizes.append(len(p))
            caps.append(bytes(p))
    n = len(sizes)
    starts = np.concatenate(([0], np.cumsum(sizes, dtype=np.int64)[:-1])) if n else np.zeros(0)
    ts = ts0 + np.arange(n, dtype=np.int64) * step
    rows = Rows(starts, ts, ts + step // 2, np.full(n, pid), np.full(n, tid))
    return assemble(rows, 0, n, sizes, caps, direction)


def assemble(rows: Rows, lo: int, hi: int, sizes: Sequence[int], caps: Sequence[bytes],
              direction: int) -> Stream:
    """Join per-row captured prefixes into stretches; sizes/caps are indexed from lo."""
    chunk_starts: list[int] = []
    chunks: list[bytes] = []
    pieces: list[bytes] = []
    pos = 0
    cur = 0
    for size, cap in zip(sizes, caps, strict=True):
        cap = cap[:size]
        if cap:
            if not pieces:
                cur = pos
            pieces.append(cap)
        if len(cap) < size and pieces:  # a gap follows: close the stretch
            chunk_starts.append(cur)
            chunks.append(b"".join(pieces))
            pieces = []
        pos += size
    if pieces:
        chunk_starts.append(cur)
        chunks.append(b"".join(pieces))
    if not chunks:
        chunk_starts, chunks = [0], [b""]
    base = rows.start[lo] if hi > lo else 0
    return Stream(pos, chunk_starts, chunks, rows, lo, hi, base, direction)

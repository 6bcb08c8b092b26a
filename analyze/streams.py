"""Rebuild each socket's byte streams from the socket tracer's data rows.

One row of `sock_data` is one read- or write-like syscall that moved `bytes` bytes, of which the first
`captured` were recorded. Per (socket, direction) the rows in syscall order give the byte stream as the
process saw it; where a syscall moved more than was captured, the stream has a gap of known length.
Gaps are never filled: parsers ask for bytes and get None where the capture has none, and skip over
gaps by length (a body whose size the headers announced can be stepped over without its bytes).

The two sockets of one TCP connection (client and server end, both captured when both processes run on
the traced host) carry the same bytes at the same stream offsets; `Connection` pairs them so that a
parser can read one end and look up who (pid/tid) and when at the other end.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
    return _assemble(rows, 0, n, sizes, caps, direction)


def _assemble(rows: Rows, lo: int, hi: int, sizes: Sequence[int], caps: Sequence[bytes],
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


@dataclass(slots=True)
class Socket:
    """One captured socket (one end of a connection) and its two byte streams."""

    sock_id: int
    family: int
    laddr: str
    lport: int
    raddr: str
    rport: int
    egress: Stream
    ingress: Stream
    source: str = "sock"  # "sock" (raw syscall bytes) or "tls" (plaintext from the TLS tracer)

    @property
    def local(self) -> tuple[str, int]:
        return (_norm_addr(self.laddr), self.lport)

    @property
    def remote(self) -> tuple[str, int]:
        return (_norm_addr(self.raddr), self.rport)

    @property
    def first_ts(self) -> int:
        ts = [s.first_ts for s in (self.egress, self.ingress) if s.hi > s.lo]
        return min(ts) if ts else 0

    @property
    def pid(self) -> int:
        for s in (self.egress, self.ingress):
            if s.hi > s.lo:
                return int(s.rows.pid[s.lo])
        return 0


@dataclass(slots=True)
class Connection:
    """One TCP connection as captured: one socket, or both ends when both processes were traced.
    `peer`'s egress carries the bytes of `sock`'s ingress and vice versa."""

    sock: Socket
    peer: Socket | None = None
    notes: list[str] = field(default_factory=list)
    _shifts: dict[bool, int | None] = field(default_factory=dict)  # see shift(); keyed by "is sock.egress"

    def peer_stream(self, stream: Stream) -> Stream | None:
        """The other end's stream with the same bytes as `stream` (one of sock's two streams)."""
        if self.peer is None:
            return None
        return self.peer.ingress if stream is self.sock.egress else self.peer.egress

    def shift(self, stream: Stream) -> int | None:
        """d such that byte pos of `stream` is byte pos - d of the other end's stream, or None when
        the ends do not line up. The ends differ in length when one capture began later (its head
        is missing: align the tails) or when the reader never read the last bytes written (a gRPC
        GOAWAY before close: align the heads). The captured bytes decide; tails first."""
        key = stream is self.sock.egress
        if key in self._shifts:
            return self._shifts[key]
        other = self.peer_stream(stream)
        d: int | None = None
        if other is not None and other.length:
            tail = stream.length - other.length
            verdicts = {tail: _agreement(stream, other, tail)}
            if tail and verdicts[tail] is not True:
                verdicts[0] = _agreement(stream, other, 0)
            d = next((c for c, v in verdicts.items() if v is True), None)
            if d is None and verdicts[tail] is None:  # nothing to compare: trust the tails
                d = tail
        self._shifts[key] = d
        return d

    def peer_offset(self, stream: Stream, pos: int) -> int | None:
        """Offset at the other end of the byte at `pos` in `stream`, or None when the two ends do not
        line up (see shift), or their bytes at pos differ where both were captured."""
        other = self.peer_stream(stream)
        if other is None or other.length == 0:
            return None
        d = self.shift(stream)
        if d is None:
            return None
        q = pos - d
        if q < 0 or q >= other.length:
            return None
        mine = stream.read(pos, 8)
        theirs = other.read(q, 8)
        if mine is not None and theirs is not None and mine != theirs:
            return None
        return q


def _agreement(stream: Stream, other: Stream, d: int, samples: int = 16) -> bool | None:
    """Whether byte pos of stream equals byte pos - d of other, judged at the start of up to
    `samples` captured stretches of each: True (all compared agree), False (one differs), None
    (no captured byte to compare)."""
    seen = False
    for a, b, shift in ((stream, other, d), (other, stream, -d)):
        for st, data in zip(b.chunk_starts[:samples], b.chunks[:samples]):
            verdict = _same_at(a, st + shift, data)
            if verdict is False:
                return False
            seen = seen or verdict is True
    return True if seen else None


def _same_at(stream: Stream, pos: int, data: bytes) -> bool | None:
    """Whether stream holds data's first bytes (up to 16, at least 4) at pos; None: not captured."""
    hit = stream.chunk_at(pos) if 0 <= pos < stream.length else None
    if hit is None:
        return None
    mine, start = hit
    n = min(16, len(data), start + len(mine) - pos)
    if n < 4:
        return None
    return mine[pos - start:pos - start + n] == data[:n]


def _norm_addr(addr: str) -> str:
    """IPv4-mapped IPv6 ("::ffff:1.2.3.4", a dual-stack server's view of an IPv4 client) as IPv4,
    so that the two ends of one connection compare equal."""
    if addr.startswith("::ffff:") and "." in addr:
        return addr[7:]
    return addr


_WHERE = "WHERE bytes > 0 AND protocol = 6"  # UDP datagrams are not byte streams
_LOAD_SQL = "SELECT {key} AS k, direction, ts_enter, ts_exit, pid, tid, bytes, payload FROM {table} " \
            + _WHERE + " ORDER BY {order}, direction, ts_enter, ts_exit"
_LOAD_UNSORTED_SQL = "SELECT {key} AS k, direction, ts_enter, ts_exit, pid, tid, bytes, payload FROM {table} " \
    + _WHERE
# Ordered by the full key: where no socket id carries two 4-tuples this is the order of (k, direction).
_META_SQL = "SELECT {key} AS k, laddr, lport, raddr, rport, direction, any_value(family) AS family, " \
            "count(*) AS n FROM {table} " + _WHERE + " GROUP BY ALL ORDER BY k, laddr, lport, raddr, rport, direction"


def load_sockets(con: duckdb.DuckDBPyConnection, table: str = "sock_data",
                 source: str = "sock") -> list[Socket]:
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
            return _assemble(rows, lo, hi, sizes[lo:hi].tolist(), caps, direction)
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
    for k, laddr, lport, raddr, rport, direction, family, n in meta:
        ident = (k, laddr, lport, raddr, rport)
        by_sock[ident][direction] = stream(i, i + n, direction)
        families[ident] = family
        i += n
    sockets = []
    for ident, dirs in by_sock.items():
        k, laddr, lport, raddr, rport = ident
        egress = dirs.get(EGRESS) or empty_stream(EGRESS)
        ingress = dirs.get(INGRESS) or empty_stream(INGRESS)
        sockets.append(Socket(k, families[ident], laddr, lport, raddr, rport, egress, ingress, source))
    return sockets


def pair_sockets(sockets: list[Socket]) -> list[Connection]:
    """Match the two ends of each connection: one end's (local, remote) is the other's (remote, local).
    When a 4-tuple was reused within the capture, ends are matched in order of first activity."""
    groups: dict[tuple, list[Socket]] = defaultdict(list)
    for s in sockets:
        groups[tuple(sorted((s.local, s.remote)))].append(s)
    conns: list[Connection] = []
    for members in groups.values():
        members.sort(key=lambda s: s.first_ts)
        one = [s for s in members if s.local <= s.remote]
        other = [s for s in members if s.local > s.remote]
        if members[0].local == members[0].remote:  # a socket connected to itself: no peer to find
            conns.extend(Connection(s) for s in members)
            continue
        for i in range(max(len(one), len(other))):
            a = one[i] if i < len(one) else None
            b = other[i] if i < len(other) else None
            if a is not None and b is not None:
                conns.append(Connection(a, b))
            else:
                conns.append(Connection(a or b))  # type: ignore[arg-type]
    conns.sort(key=lambda c: c.sock.first_ts)
    return conns


def _may_fill(stream: Stream, other: Stream) -> bool:
    """Cheap test before fill_from_peer (which first needs the ends aligned): does stream miss bytes,
    and might other have them? Not when both ends were cut alike, as when each write met one read."""
    if len(stream.chunks) == 1 and stream.chunk_starts[0] == 0 and len(stream.chunks[0]) == stream.length:
        return False
    if other.hi <= other.lo:
        return False
    return not (other.length == stream.length and other.chunk_starts == stream.chunk_starts
                and [len(c) for c in other.chunks] == [len(c) for c in stream.chunks])


def fill_from_peer(stream: Stream, other: Stream, d: int | None) -> Stream:
    """`stream` with its gaps filled where the other end of the connection captured those bytes
    (byte pos of stream is byte pos - d of other; d None: the ends do not line up).

    Both ends see the same byte stream, but each end's syscalls are cut at the snaplen on their own:
    a server writing a chunked body chunk by chunk keeps every chunk-size line, while the client's
    one big read keeps only its first bytes; a sendmsg keeps only its first iovec where the reader's
    recvmsg keeps all. Timing and pids stay those of `stream` (its rows are kept). The two ends must
    agree on the bytes both have; otherwise `stream` is returned as it was."""
    if len(stream.chunks) == 1 and stream.chunk_starts[0] == 0 and len(stream.chunks[0]) == stream.length:
        return stream  # nothing missing
    if d is None or other.hi <= other.lo:
        return stream
    if d == 0 and other.chunk_starts == stream.chunk_starts and \
            [len(c) for c in other.chunks] == [len(c) for c in stream.chunks]:
        return stream  # the same gaps at both ends: nothing to gain
    theirs = []
    for st, c in zip(other.chunk_starts, other.chunks):
        lo, hi = max(st + d, 0), min(st + d + len(c), stream.length)  # clipped to stream's extent
        if lo < hi:
            theirs.append((lo, hi, c[lo - st - d:hi - st - d]))
    pieces = sorted([(st, st + len(c), c) for st, c in zip(stream.chunk_starts, stream.chunks) if c] + theirs,
                    key=lambda p: p[0])
    starts: list[int] = []
    chunks: list[bytes] = []
    cur_start = cur_end = -1
    parts: list[bytes] = []
    for st, end, data in pieces:
        if st <= cur_end:  # overlaps or touches the stretch being built
            overlap = min(end, cur_end) - st
            if overlap > 0 and not _tail_equals(parts, cur_end, data[:overlap], st):
                return stream  # the ends disagree: not the same connection after all
            if end > cur_end:
                parts.append(data[cur_end - st:])
                cur_end = end
            continue
        if parts:
            starts.append(cur_start)
            chunks.append(b"".join(parts))
        cur_start, cur_end, parts = st, end, [data]
    if parts:
        starts.append(cur_start)
        chunks.append(b"".join(parts))
    if not chunks:
        return stream
    return Stream(stream.length, starts, chunks, stream.rows, stream.lo, stream.hi, stream.base, stream.direction)


def _tail_equals(parts: list[bytes], end: int, data: bytes, at: int) -> bool:
    """Whether the stretch being built (parts, ending at offset end) holds `data` at offset `at`.
    Checks at most the first 64 bytes of the overlap: enough to tell two connections apart."""
    want = data[:64]
    need = end - at  # bytes from `at` to the stretch's end
    tail = b""
    for p in reversed(parts):
        tail = p + tail
        if len(tail) >= need:
            break
    got = tail[len(tail) - need:][:len(want)]
    return got == want


@dataclass(slots=True)
class View:
    """A connection seen from the one end a parser reads, with roles decided: `requests` carries the
    client's bytes to the server, `responses` the server's to the client."""

    conn: Connection
    requests: Stream
    responses: Stream
    at_client: bool  # the end read is the client's socket

    @classmethod
    def of(cls, conn: Connection, sock: Socket, sock_is_client: bool) -> View:
        if sock is not conn.sock:  # keep `conn.sock` the end being read, so peer lookups work
            conn = Connection(sock, conn.sock, conn.notes)
        if conn.peer is not None:  # bytes one end missed the other may have: a reader's big recv
            peer = conn.peer
            egress = fill_from_peer(sock.egress, peer.ingress, conn.shift(sock.egress)) \
                if _may_fill(sock.egress, peer.ingress) else sock.egress
            ingress = fill_from_peer(sock.ingress, peer.egress, conn.shift(sock.ingress)) \
                if _may_fill(sock.ingress, peer.egress) else sock.ingress
            if egress is not sock.egress or ingress is not sock.ingress:
                sock = replace(sock, egress=egress, ingress=ingress)
                conn = Connection(sock, conn.peer, conn.notes)
        if sock_is_client:
            return cls(conn, sock.egress, sock.ingress, True)
        return cls(conn, sock.ingress, sock.egress, False)

    def who(self, stream: Stream, pos: int) -> tuple[int | None, int | None, int | None, int | None]:
        """(client pid, client tid, server pid, server tid) of the syscalls that moved byte pos of
        `stream` at both ends; the far end's are None when it was not captured or does not line up."""
        near: tuple[int | None, int | None] = stream.pid_tid(pos) if stream.hi > stream.lo else (None, None)
        far: tuple[int | None, int | None] = (None, None)
        q = self.conn.peer_offset(stream, pos)
        if q is not None:
            other = self.conn.peer_stream(stream)
            if other is not None and other.hi > other.lo:
                far = other.pid_tid(q)
        return (*near, *far) if self.at_client else (*far, *near)

    def who_many(self, stream: Stream, positions: Sequence[int]) -> tuple[list, list, list, list]:
        """`who` for many offsets of one stream: (client pids, client tids, server pids, server tids).
        The far end is mapped by one offset shift checked at the first and last position; if the ends
        do not line up there, each position is checked on its own."""
        n = len(positions)
        none: list[int | None] = [None] * n
        near_pid, near_tid = stream.pid_tid_many(positions) if n and stream.hi > stream.lo else (none, none)
        far_pid, far_tid = none, none
        other = self.conn.peer_stream(stream)
        if n and other is not None and other.hi > other.lo:
            mapped = [self.conn.peer_offset(stream, p) for p in (positions[0], positions[-1])]
            if None not in mapped:
                q = np.asarray(positions, dtype=np.int64) - (self.conn.shift(stream) or 0)
                inside = (q >= 0) & (q < other.length)
                far_pid, far_tid = other.pid_tid_many(q)
                if not inside.all():
                    ok = inside.tolist()
                    far_pid = [p if k else None for p, k in zip(far_pid, ok, strict=True)]
                    far_tid = [t if k else None for t, k in zip(far_tid, ok, strict=True)]
            else:
                far_pid, far_tid = [], []
                for p in positions:
                    qq = self.conn.peer_offset(stream, p)
                    pt = other.pid_tid(qq) if qq is not None else (None, None)
                    far_pid.append(pt[0])
                    far_tid.append(pt[1])
        if self.at_client:
            return near_pid, near_tid, far_pid, far_tid
        return far_pid, far_tid, near_pid, near_tid

    @property
    def client_addr(self) -> str:
        s = self.conn.sock
        return _fmt(*(s.local if self.at_client else s.remote))

    @property
    def server_addr(self) -> str:
        s = self.conn.sock
        return _fmt(*(s.remote if self.at_client else s.local))


def _fmt(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"

"""Filling the gaps of one end's stream from the other end of the connection, where the two agree."""

from __future__ import annotations

from uetrace.analyze.http.streams import Stream


def may_fill(stream: Stream, other: Stream) -> bool:
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

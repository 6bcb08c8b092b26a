"""A long connection read in pieces: cut between exchanges, where both ends are quiet.

A keep-alive connection under load lasts the whole capture: one wrk connection of a 60 s capture
carries gigabytes of responses, and its streams would be held in memory at once. Such a connection
is cut in time at points where one exchange ended and the next had not begun, and each piece is
parsed as a connection of its own: memory is bounded by the piece, not by the connection.

A cut is at the start of a write of the end that spoke first (the client's request, in HTTP/1)
right after that end read (the previous response), and, when both ends were captured, where every
byte either end sent before it had reached the other, unless the other never read it (see _quiet):
then both ends' streams break at the same byte, so a piece's offsets map across the ends. Rows go to
the piece their ts_enter falls in. Which quiet points become cuts, and how the pieces are read:
long_connections.py.

Only HTTP/1 is read this way, and only when every piece parses perfectly: exchanges complete, no
byte left over or skipped, no protocol switch or CONNECT (reconstruct.py checks). Then the pieces
give the exchanges the whole would, since the parser carries nothing from one message to the next
but its position. Otherwise the connection is read whole, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from uetrace.analyze.distinct import sorted_unique
from uetrace.analyze.http.exchange_table import ExchangeColumns
from uetrace.analyze.http.streams import EGRESS

# A connection with more rows than this (both ends) is read in pieces; a query reads about this
# many rows of pieces (long_connections.py).
PIECE_ROWS = 200_000


@dataclass
class Rows:
    """The metadata of one connection's rows, sorted by ts_enter: which end (0, 1), the stream model's
    direction, ts_enter and bytes."""

    end: np.ndarray
    direction: np.ndarray
    ts: np.ndarray
    nbytes: np.ndarray


def quiet_times(rows: Rows, ends: int) -> np.ndarray:
    """The times the connection may be cut at (each a ts_enter: rows at or after it go to the next
    piece), ascending; none when no quiet point is found."""
    speaker = _speaker(rows, ends)
    if speaker is None:
        return np.zeros(0, np.int64)
    mine = np.flatnonzero(rows.end == speaker)
    d = rows.direction[mine]
    first_dir = d[0]
    # A write of the request direction right after a row of the other direction (its previous row).
    turn = mine[1:][(d[1:] == first_dir) & (d[:-1] != first_dir)]
    if ends == 2:
        turn = turn[_quiet(rows, speaker, turn)]
    return sorted_unique(rows.ts[turn])


def _speaker(rows: Rows, ends: int) -> int | None:
    """The end whose first row is a write (the client, in HTTP/1), when exactly one is; with one end
    captured, that end whatever it did first."""
    if ends == 1:
        return 0
    firsts = []
    for end in (0, 1):
        idx = np.flatnonzero(rows.end == end)
        firsts.append(bool(idx.size) and bool(rows.direction[idx[0]] == EGRESS))
    return firsts.index(True) if firsts.count(True) == 1 else None


def _quiet(rows: Rows, speaker: int, turn: np.ndarray) -> np.ndarray:
    """Which candidate cuts have nothing in flight: each end had received, before the cut, every byte
    the other had sent before it and that it ever received.

    Bytes sent minus bytes received, before a cut, is what is in flight plus what the receiver never
    read (a lost record, or a response still unread when the capture or the client stopped). That
    second part only grows, so a cut is quiet where the difference is as low as at any later cut:
    a lost record then costs its own piece's perfect parse, not every later cut of the connection.
    A negative difference (bytes read before they were sent) means reads timed at their entry, as
    the system-call hooks time a blocking read: then no instant is known quiet, and none is cut."""
    ok = np.ones(turn.size, bool)
    t = rows.ts[turn]
    for sender in (speaker, 1 - speaker):
        sent = (rows.end == sender) & (rows.direction == EGRESS)
        got = (rows.end == 1 - sender) & (rows.direction != EGRESS)
        unread = _bytes_before(rows, sent, t) - _bytes_before(rows, got, t)
        if (unread < 0).any():
            return np.zeros(turn.size, bool)
        ok &= unread == np.minimum.accumulate(unread[::-1])[::-1]
    return ok


def _bytes_before(rows: Rows, mask: np.ndarray, t: np.ndarray) -> np.ndarray:
    ts = rows.ts[mask]
    total = np.concatenate(([0], np.cumsum(rows.nbytes[mask])))
    return total[np.searchsorted(ts, t, side="left")]


def perfect(exchanges: ExchangeColumns, request_bytes: int, response_bytes: int) -> bool:
    """Whether a piece's HTTP/1 exchanges account for every byte of its streams, each complete (no
    resync, leftover, unanswered request or response to a request before it), with no CONNECT: the
    parse of the whole connection would have found the same exchanges there."""
    v = exchanges.values
    return (bool(np.all(v["complete"])) and "CONNECT" not in exchanges.column("method")  # type: ignore[call-overload]
            and int(np.sum(v["req_bytes"])) == request_bytes  # type: ignore[call-overload]
            and int(np.sum(v["resp_bytes"])) == response_bytes)  # type: ignore[call-overload]

"""A long connection read in pieces: cut between exchanges, where both ends are quiet.

A keep-alive connection under load lasts the whole capture: one wrk connection of a 60 s capture
carries gigabytes of responses, and its streams would be held in memory at once. Such a connection
is cut in time at points where one exchange ended and the next had not begun, and each piece is
parsed as a connection of its own: memory is bounded by the piece, not by the connection.

A cut is at the start of a write of the end that spoke first (the client's request, in HTTP/1)
right after that end read (the previous response), and, when both ends were captured, where every
byte either end sent before it had reached the other (equal byte counts each way): then both ends'
streams break at the same byte, so a piece's offsets map across the ends as the whole's do. Rows go
to the piece their ts_enter falls in.

Only HTTP/1 is read this way, and only when every piece parses perfectly: exchanges complete, no
byte left over or skipped, no protocol switch or CONNECT (reconstruct.py checks). Then the pieces
give the exchanges the whole would, since the parser carries nothing from one message to the next
but its position. Otherwise the connection is read whole, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from uetrace.analyze.http.connection import Connection
from uetrace.analyze.http.exchange import Exchange
from uetrace.analyze.http.streams import EGRESS

# A connection with more rows than this (both ends) is read in pieces of about this many rows.
PIECE_ROWS = 200_000


@dataclass
class Rows:
    """The metadata of one connection's rows, sorted by ts_enter: which end (0, 1), the stream model's
    direction, ts_enter and bytes."""

    end: np.ndarray
    direction: np.ndarray
    ts: np.ndarray
    nbytes: np.ndarray


def cuts(rows: Rows, ends: int, piece_rows: int | None = None) -> list[int]:
    """Times to cut the connection at (each a ts_enter: rows at or after it go to the next piece), about
    piece_rows (PIECE_ROWS) rows apart; none when no quiet point is found."""
    piece_rows = piece_rows or PIECE_ROWS
    n = len(rows.ts)
    if n <= piece_rows:
        return []
    speaker = _speaker(rows, ends)
    if speaker is None:
        return []
    mine = np.flatnonzero(rows.end == speaker)
    d = rows.direction[mine]
    first_dir = d[0]
    # A write of the request direction right after a row of the other direction (its previous row).
    turn = mine[1:][(d[1:] == first_dir) & (d[:-1] != first_dir)]
    if ends == 2:
        turn = turn[_quiet(rows, speaker, turn)]
    out: list[int] = []
    goal = piece_rows
    for i in turn.tolist():  # turn is in row order: rows before a cut = its row index
        if i >= goal and (not out or rows.ts[i] > out[-1]) and n - i > piece_rows // 4:
            out.append(int(rows.ts[i]))
            goal = i + piece_rows
    return out


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
    the other had sent before it."""
    ok = np.ones(turn.size, bool)
    t = rows.ts[turn]
    for sender in (speaker, 1 - speaker):
        sent = (rows.end == sender) & (rows.direction == EGRESS)
        got = (rows.end == 1 - sender) & (rows.direction != EGRESS)
        ok &= _bytes_before(rows, sent, t) == _bytes_before(rows, got, t)
    return ok


def _bytes_before(rows: Rows, mask: np.ndarray, t: np.ndarray) -> np.ndarray:
    ts = rows.ts[mask]
    total = np.concatenate(([0], np.cumsum(rows.nbytes[mask])))
    return total[np.searchsorted(ts, t, side="left")]


def piece_counts(rows: Rows, at: list[int], keys: list[tuple[int, int]]) -> list[dict[tuple[int, int], int]]:
    """Rows of each (end, direction) in each piece."""
    bounds = np.array(at, np.int64)
    out: list[dict[tuple[int, int], int]] = [{} for _ in range(len(at) + 1)]
    for end, direction in keys:
        ts = rows.ts[(rows.end == end) & (rows.direction == direction)]
        edges = np.concatenate(([0], np.searchsorted(ts, bounds, side="left"), [ts.size]))
        for k, c in enumerate(np.diff(edges).tolist()):
            out[k][(end, direction)] = c
    return out


@dataclass
class PiecedConnection:
    """A connection too long to hold whole: its pieces, loaded one at a time, or the whole when a piece
    does not parse perfectly. `nbytes`: bytes of each end over the whole connection (which end is
    the one to read is decided on the whole, see reconstruct._choose_view)."""

    load: Callable[[int | None], Connection]  # piece index, or None for the whole connection
    count: int
    nbytes: tuple[int, int]

    def pieces(self) -> Iterator[Connection]:
        for k in range(self.count):
            yield self.load(k)

    def whole(self) -> Connection:
        return self.load(None)


def perfect(exchanges: list[Exchange], request_bytes: int, response_bytes: int) -> bool:
    """Whether a piece's HTTP/1 exchanges account for every byte of its streams, each complete (no
    resync, leftover, unanswered request or response to a request before it), with no CONNECT: the
    parse of the whole connection would have found the same exchanges there."""
    return (all(e.complete and e.method != "CONNECT" for e in exchanges)
            and sum(e.req_bytes for e in exchanges) == request_bytes
            and sum(e.resp_bytes for e in exchanges) == response_bytes)

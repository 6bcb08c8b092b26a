"""Long connections read together: their pieces a stretch of time at a time, one query for all.

A connection of more than PIECE_ROWS rows is cut where it is quiet and parsed piece by piece
(pieces.py). Reading each connection's cuts and pieces by queries of its own scanned every row
group of its time once per connection: the 16 keep-alive connections of a load test meant 32 scans
of the whole capture, half the time of the reconstruction. Here one query reads the metadata of every
long connection, for their quiet points. The capture's time is then split into steps of about
PIECE_ROWS rows (of all long connections together), each connection is cut at its last quiet point
before each step's end, and the pieces are read in the order they end, about PIECE_ROWS rows per
query: each row group is read about once, and memory stays bounded by the query's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa

from uetrace.analyze.chunks import packed
from uetrace.analyze.distinct import sorted_unique
from uetrace.analyze.http import pieces
from uetrace.analyze.http.connection import Connection
from uetrace.analyze.http.stream_loading import RowRun, RowSource, sockets_from_rows
from uetrace.analyze.read_ahead import read_ahead

if TYPE_CHECKING:
    from uetrace.analyze.http.batches import Pair

_READ_ROWS = 65_536
_NEVER = 2**63 - 1


@dataclass
class LongConnection:
    """A long connection at its place in the plan: `index`, its position in the plan (its pieces
    carry it), and `whole()` that loads it whole, for when its pieces did not all parse perfectly."""

    index: int
    whole: Callable[[], Connection]


@dataclass
class Piece:
    """One piece of a long connection, in the connection's order."""

    index: int  # the connection's position in the plan
    connection: Connection
    nbytes: tuple[int, int]  # bytes of each end over the whole connection (see reconstruct._choose_view)
    drop: Callable[[int], None]  # drop(index): read no more of that connection


@dataclass
class _Cut:
    """A long connection's pieces: cut times, and each (end, archive direction)'s sorted ts_enter to
    count the rows of a piece."""

    pair: Pair
    seq: int  # plan seq of its first socket
    times: list[int]
    ts: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)

    def runs(self, lo: int, hi: int) -> list[RowRun]:
        """The piece's row runs, in the order the rows query sorts them (socket, direction, time)."""
        ends = [s for s in self.pair if s is not None]
        return [RowRun(s, d, int(np.searchsorted(self.ts[(e, a)], hi) - np.searchsorted(self.ts[(e, a)], lo)))
                for e, s in enumerate(ends) for a, d, _ in s.runs]


class LongConnections:
    """The long connections of a plan: those with a quiet point to cut at (`cuts`), then their pieces
    (`pieces()`). A connection the caller `drop()`s is not read further (it will be read whole)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, long: dict[int, tuple[Pair, int]], meta_sql: str,
                 rows_sql: str, model: dict[int, int], source: str) -> None:
        self.con, self.rows_sql, self.source = con, rows_sql, source
        self.cuts: dict[int, _Cut] = {}
        self.dropped: set[int] = set()
        if long:
            self._plan(long, meta_sql, model)

    def drop(self, index: int) -> None:
        self.dropped.add(index)

    def _plan(self, long: dict[int, tuple[Pair, int]], meta_sql: str, model: dict[int, int]) -> None:
        """long: plan position -> (pair, plan seq of its first socket), in plan order."""
        to_model = np.zeros(max(model) + 1, np.int64)
        to_model[list(model)] = list(model.values())
        self.con.register("_uetrace_http_long", pa.table({
            "seq": pa.array([seq + e for pair, seq in long.values() for e in range(_ends(pair))], pa.int64()),
            "conn": pa.array([i for i, (pair, _) in long.items() for _ in range(_ends(pair))], pa.int64())}))
        try:
            reader = self.con.sql(meta_sql).to_arrow_reader(_READ_ROWS)
            try:
                rows = RowSource(reader)
                all_ts: list[np.ndarray] = []
                quiet: dict[int, np.ndarray] = {}
                for i, (pair, seq) in long.items():
                    got = rows.take(sum(s.rows for s in pair if s is not None))
                    direction = got.column("direction").to_numpy()
                    end = got.column("seq").to_numpy() - seq
                    ts = got.column("ts_enter").to_numpy().astype(np.int64)
                    nbytes = got.column("bytes").to_numpy()
                    quiet[i] = pieces.quiet_times(pieces.Rows(end, to_model[direction], ts, nbytes), _ends(pair))
                    cut = self.cuts[i] = _Cut(pair, seq, [])
                    for e, s in enumerate(x for x in pair if x is not None):
                        for a, _, _ in s.runs:
                            cut.ts[(e, a)] = ts[(end == e) & (direction == a)]
                    all_ts.append(ts)
            finally:
                reader.close()
        finally:
            self.con.unregister("_uetrace_http_long")
        every = np.sort(np.concatenate(all_ts))
        steps = every[pieces.PIECE_ROWS::pieces.PIECE_ROWS]
        del every, all_ts
        for i, q in quiet.items():
            last = np.searchsorted(q, steps, side="right") - 1
            times = sorted_unique(q[last[last >= 0]]).tolist()
            if times:
                self.cuts[i].times = times
            else:
                del self.cuts[i]

    def pieces(self) -> Iterator[Piece]:
        """Every piece of the connections cut, each connection's in order, those of connections
        dropped meanwhile left out. The next group's rows are read while the caller parses this
        group's pieces: DuckDB works on one core while Python parses on the other."""
        todo = sorted((hi, i, k) for i, c in self.cuts.items() for k, hi in enumerate([*c.times, _NEVER]))

        def groups() -> Iterator[list[tuple[int, int, int]]]:
            nonlocal todo
            while True:
                group, todo = self._next_group(todo)
                if not group:
                    return
                yield group

        for group, got in read_ahead(groups(), self._read):
            yield from self._split(group, got)

    def _next_group(self, todo: list[tuple[int, int, int]]) -> tuple[list[tuple[int, int, int]], list]:
        """The next pieces to read together (about PIECE_ROWS rows), and those left after them."""
        todo = [t for t in todo if t[1] not in self.dropped]
        if not todo:
            return [], []
        group = next(packed(todo, lambda t: sum(r.n for r in self._piece_runs(t[1], t[2])), pieces.PIECE_ROWS))
        return group, todo[len(group):]

    def _bounds(self, i: int, k: int) -> tuple[int, int]:
        times = self.cuts[i].times
        return (times[k - 1] if k else 0), (times[k] if k < len(times) else _NEVER)

    def _piece_runs(self, i: int, k: int) -> list[RowRun]:
        return self.cuts[i].runs(*self._bounds(i, k))

    def _read(self, group: list[tuple[int, int, int]]) -> pa.Table:
        """The rows of a group of pieces, piece after piece, each sorted as a connection's rows."""
        ranges: dict[str, list[int]] = {"piece": [], "seq": [], "lo": [], "hi": []}
        for n, (_, i, k) in enumerate(group):
            cut = self.cuts[i]
            lo, hi = self._bounds(i, k)
            for e in range(_ends(cut.pair)):
                for name, v in zip(ranges, (n, cut.seq + e, lo, hi)):
                    ranges[name].append(v)
        lo, hi = min(ranges["lo"]), max(ranges["hi"])
        self.con.register("_uetrace_http_ranges", pa.table({k: pa.array(v, pa.int64()) for k, v in ranges.items()}))
        try:
            # The group's whole stretch as constants too: DuckDB skips the row groups outside it.
            return self.con.sql(self.rows_sql.format(lo=lo, hi=hi)).to_arrow_table()
        finally:
            self.con.unregister("_uetrace_http_ranges")

    def _split(self, group: list[tuple[int, int, int]], got: pa.Table) -> Iterator[Piece]:
        at = 0
        for _, i, k in group:
            runs = self._piece_runs(i, k)
            n = sum(r.n for r in runs)
            socks = sockets_from_rows(got.slice(at, n), runs, self.source)
            at += n
            a, b = self.cuts[i].pair
            yield Piece(i, Connection(socks[id(a)], socks[id(b)] if b is not None else None),
                        (a.nbytes, b.nbytes if b is not None else 0), self.drop)


def _ends(pair: Pair) -> int:
    return sum(1 for s in pair if s is not None)

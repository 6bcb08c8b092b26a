"""Evidence inside a window: what each tracer saw on the span's thread between its start and end, for
every window at once (one read per source, then binary searches per window: see timeline.py).

    cpu      stack_sample rows of the thread in the window: samples x sampling period
    offcpu   off-CPU intervals (--offcpu) of the thread, clipped to the window
    lock     blocking lock calls (not condition waits: those wait for an event, not a lock) whose wait
             overlaps the window, clipped to it; hold time: while the thread held at least one lock
             (from an acquisition to its unlock of that lock), clipped to the window
    alloc    blocks the thread allocated in the window; outstanding: never freed while recording
             (scaled back when --alloc-sample kept 1 in N)
    net      packets of the exchange's connection in the window (loopback: the egress copy only),
             retransmissions (a segment starting below the highest sequence number already sent
             that way), and the handshake RTT of the connection for its first exchange
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.chunks import packed
from uetrace.analyze.correlate import timeline
from uetrace.analyze.distinct import sorted_unique
from uetrace.analyze.retransmissions import retransmissions

PACKETS_PER_QUERY = 500_000  # packets read and summed at once (see _packets)
BLOCKING_LOCK_FNS = ("LOCK_FN_LOCK", "LOCK_FN_TIMEDLOCK", "LOCK_FN_RDLOCK", "LOCK_FN_WRLOCK",
                     "LOCK_FN_TIMEDRDLOCK", "LOCK_FN_TIMEDWRLOCK")
EOWNERDEAD = 130


@dataclass
class Probes:
    """The windows to gather evidence in, as arrays (one per span), with the connection of each: a code
    into `conns` ((client addr, port, server addr, port)), -1 when unknown."""

    pid: np.ndarray
    tid: np.ndarray
    start: np.ndarray
    end: np.ndarray
    conn: np.ndarray
    conns: list[tuple[str, int, str, int]]
    first_on_connection: np.ndarray  # bool

    @property
    def key(self) -> np.ndarray:
        return (self.pid.astype(np.int64) << 32) | self.tid.astype(np.int64)


Columns = dict[str, tuple[np.ndarray, "np.ndarray | None"]]


def recorded_sources(db: ArchiveDb) -> tuple[str, ...]:
    out = []
    if db.has("stack_sample"):
        out.append("cpu")
    if db.has("offcpu") or db.info.option("offcpu"):
        out.append("offcpu")
    if db.has("lock"):
        out.append("lock")
    if db.has("alloc"):
        out.append("alloc")
    if db.has("net_packet"):
        out.append("net")
    return tuple(out)


def sampling_period_ns(db: ArchiveDb) -> int | None:
    freq = db.info.option("freq")
    if not db.has("stack_sample") or not freq:
        return None
    return int(round(1e9 / float(freq)))


def gather(db: ArchiveDb, probes: Probes, notes: list[str] | None = None) -> Columns:
    """Evidence columns (see span_table.EVIDENCE_FIELDS), a row per probe. A source whose table cannot
    be read as this version expects (an archive from elsewhere) is left out with a line in `notes`, not
    the whole analysis."""
    out: Columns = {}
    if not len(probes.pid):
        return out
    w = _Windows(probes)
    steps = {"cpu": lambda: _cpu(db, out, w), "offcpu": lambda: _offcpu(db, out, w),
             "lock": lambda: _locks(db, out, w), "alloc": lambda: _allocs(db, out, w),
             "net": lambda: _packets(db, out, probes, w)}
    db.con.register("_corr_threads", pa.table({"pid": pa.array(sorted_unique(w.key >> 32), pa.int64())}))
    try:
        for name in recorded_sources(db):
            try:
                steps[name]()
            except duckdb.Error as e:
                if notes is not None:
                    notes.append(f"{name} evidence left out: its table could not be read ({str(e).splitlines()[0]})")
    finally:
        db.con.unregister("_corr_threads")
    return out


def alloc_rate(db: ArchiveDb) -> int:
    """Allocations were kept 1 in this many (1 when all were, or none recorded)."""
    if not db.has("alloc"):
        return 1
    from uetrace.analyze import leaks
    return max(int(leaks.sample_rate(db)), 1)


class _Windows:
    """The probes' windows as arrays; key = pid << 32 | tid (a tid alone may be reused by another process)."""

    def __init__(self, probes: Probes):
        self.key = probes.key
        self.s = probes.start.astype(np.int64, copy=False)
        self.e = probes.end.astype(np.int64, copy=False)


def _arrays(db: ArchiveDb, sql: str) -> list[np.ndarray]:
    t = db.con.sql(sql).to_arrow_table()
    out = []
    for i in range(t.num_columns):  # a column at a time, each let go of in Arrow once in numpy
        col = t.column(i)
        out.append((pc.fill_null(col, 0) if col.null_count else col).to_numpy().astype(np.int64, copy=False))
    del t
    return out


# Only the processes that served or made a request: the rest of a system-wide capture is not read twice.
_KEY = "(pid::BIGINT << 32) | tid::BIGINT"
_MINE = "pid IN (SELECT pid FROM _corr_threads)"


def _cpu(db: ArchiveDb, out: Columns, w: _Windows) -> None:
    keys, ts = _arrays(db, f"SELECT {_KEY}, ts::BIGINT FROM stack_sample WHERE {_MINE}")
    counts, _ = timeline.points_in(keys, ts, [], w.key, w.s, w.e)
    out["cpu_samples"] = (counts.astype(np.int32), None)


def _offcpu(db: ArchiveDb, out: Columns, w: _Windows) -> None:
    if not db.has("offcpu"):
        out["offcpu_ms"] = (np.zeros(len(w.key)), None)
        return
    keys, a, b = _arrays(db, f"SELECT {_KEY}, ts::BIGINT, ts::BIGINT + dur_ns::BIGINT FROM offcpu WHERE {_MINE}")
    _, total = timeline.overlap(keys, a, b, w.key, w.s, w.e)
    out["offcpu_ms"] = (total / 1e6, None)


def _locks(db: ArchiveDb, out: Columns, w: _Windows) -> None:
    enums = db.enums
    acquire = int(enums.value("lock", "ue_lock_op", "LOCK_OP_ACQUIRE"))
    trylock = int(enums.value("lock", "ue_lock_op", "LOCK_OP_TRYLOCK"))
    unlock = int(enums.value("lock", "ue_lock_op", "LOCK_OP_UNLOCK"))
    blocking = enums.sql_list("lock", "ue_lock_fn", BLOCKING_LOCK_FNS)
    keys, a, b = _arrays(db, f"""SELECT {_KEY}, ts::BIGINT - wait_ns::BIGINT, ts::BIGINT FROM lock
                                 WHERE {_MINE} AND op = {acquire} AND fn IN ({blocking})""")
    waits, waited = timeline.overlap(keys, a, b, w.key, w.s, w.e)
    keys, a, b = _arrays(db, f"""
        WITH ev AS (
            SELECT pid, tid, ts::BIGINT AS ts, op, ret, lead(op) OVER o AS next_op, lead(ts::BIGINT) OVER o AS next_ts
            FROM lock WHERE {_MINE} WINDOW o AS (PARTITION BY pid, tid, mutex ORDER BY ts, op))
        SELECT {_KEY}, ts, next_ts FROM ev
        WHERE op IN ({acquire}, {trylock}) AND ret IN (0, {EOWNERDEAD}) AND next_op = {unlock}""")
    _, held = timeline.overlap(*timeline.union(keys, a, b), w.key, w.s, w.e)
    out["lock_waits"] = (waits.astype(np.int32), None)
    out["lock_wait_ms"] = (waited / 1e6, None)
    out["lock_hold_ms"] = (held / 1e6, None)


def _allocs(db: ArchiveDb, out: Columns, w: _Windows) -> None:
    from uetrace.analyze import leaks
    leaks.register_views(db)
    rate = alloc_rate(db)
    keys, ts, size, kept = _arrays(db, f"""
        SELECT {_KEY}, ts::BIGINT, size::BIGINT,
               CASE WHEN freed_ts IS NULL AND NOT coalesce(missed_free, false) THEN size ELSE 0 END::BIGINT
        FROM alloc_blocks WHERE {_MINE}""")
    counts, (sizes, kepts) = timeline.points_in(keys, ts, [size, kept], w.key, w.s, w.e)
    out["allocs"] = (counts.astype(np.int64) * rate, None)
    out["alloc_bytes"] = (sizes.astype(np.int64) * rate, None)
    out["outstanding_bytes"] = (kepts.astype(np.int64) * rate, None)


def _packets(db: ArchiveDb, out: Columns, probes: Probes, w: _Windows) -> None:
    from uetrace.analyze import flows
    flows.register_views(db)
    conns, wconn = probes.conns, probes.conn
    if not conns:
        return
    table = pa.table({
        "code": pa.array(range(len(conns)), pa.int64()), "caddr": pa.array([c[0] for c in conns], pa.string()),
        "cport": pa.array([c[1] for c in conns], pa.int64()), "saddr": pa.array([c[2] for c in conns], pa.string()),
        "sport": pa.array([c[3] for c in conns], pa.int64())})
    db.con.register("_corr_conns", table)
    try:
        rtts = db.query(_HANDSHAKE_SQL)
    finally:
        db.con.unregister("_corr_conns")
    n = len(wconn)
    counts, sizes, retxs = np.zeros(n, np.int32), np.zeros(n, np.int64), np.zeros(n, np.int32)
    # The packets of a group of connections at a time: their sequence windows in DuckDB and their
    # arrays here hold one group's packets, not every packet of the capture.
    per_conn = {c: n for c, _, _, n in rtts}
    for group in packed(range(len(conns)), lambda c: per_conn.get(c, 0), PACKETS_PER_QUERY):
        db.con.register("_corr_conns", table.take(pa.array(group, pa.int64())))
        try:
            code, ifindex, fwd, ts, seq, seg_len, size = _arrays(db, _PACKETS_SQL)
        finally:
            db.con.unregister("_corr_conns")
        retx = retransmissions(code, ifindex, fwd, ts, seq, seg_len)
        del ifindex, fwd, seq, seg_len
        mine = np.flatnonzero(np.isin(wconn, group))
        got, (nbytes, r) = timeline.points_in(code, ts, [size, retx], wconn[mine], w.s[mine], w.e[mine])
        counts[mine], sizes[mine], retxs[mine] = got, nbytes, r
        del code, ts, size, retx
    known = wconn >= 0
    out["packets"] = (counts, known)
    out["packet_bytes"] = (sizes, known)
    out["retransmits"] = (retxs, known)
    syn = np.full(len(conns), -1, np.int64)
    synack = np.full(len(conns), -1, np.int64)
    for c, a, b, _ in rtts:
        if a is not None and b is not None:
            syn[c], synack[c] = a, b
    c = np.where(known, wconn, 0)
    s, sa = syn[c], synack[c]
    # The handshake belongs to the connection's first exchange, when it came before that window ended.
    has = known & probes.first_on_connection & (s >= 0) & (sa >= s) & (s <= probes.end)
    out["handshake_rtt_ms"] = ((sa - s) / 1e6, has)


# The connection's packets (loopback: the egress copy only, see flows.py), unsorted: which are
# retransmissions is decided in numpy (retransmissions()), where DuckDB's two window functions over
# every packet cost twice as much.
_PACKETS_SQL = """
    SELECT c.code, p.ifindex::BIGINT, (p.saddr = c.caddr AND p.sport = c.cport)::BIGINT AS fwd, p.ts::BIGINT,
           p.seq::BIGINT, CASE WHEN p.protocol = 6 THEN p.payload_len + (p.tcp_flags & 2 <> 0)::INT
                                                   + (p.tcp_flags & 1 <> 0)::INT ELSE 0 END AS seg_len,
           p.len::BIGINT
    FROM net_observed p JOIN _corr_conns c
      ON (p.saddr = c.caddr AND p.sport = c.cport AND p.daddr = c.saddr AND p.dport = c.sport)
      OR (p.saddr = c.saddr AND p.sport = c.sport AND p.daddr = c.caddr AND p.dport = c.cport)"""


_HANDSHAKE_SQL = """
    SELECT c.code, min(p.ts) FILTER (WHERE p.saddr = c.caddr AND p.tcp_flags & 18 = 2),
           min(p.ts) FILTER (WHERE p.saddr = c.saddr AND p.tcp_flags & 18 = 18), count(*)
    FROM net_observed p JOIN _corr_conns c
      ON p.protocol = 6 AND ((p.saddr = c.caddr AND p.sport = c.cport AND p.daddr = c.saddr AND p.dport = c.sport)
          OR (p.saddr = c.saddr AND p.sport = c.sport AND p.daddr = c.caddr AND p.dport = c.cport))
    GROUP BY c.code"""

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
from uetrace.analyze.correlate import timeline
from uetrace.analyze.correlate.result import THIN_SAMPLES, Evidence, Window

BLOCKING_LOCK_FNS = ("LOCK_FN_LOCK", "LOCK_FN_TIMEDLOCK", "LOCK_FN_RDLOCK", "LOCK_FN_WRLOCK",
                     "LOCK_FN_TIMEDRDLOCK", "LOCK_FN_TIMEDWRLOCK")
EOWNERDEAD = 130
BLOCKED_SHARE = 0.9  # off-CPU for this share of a window: few samples there are no gap in the evidence


@dataclass(slots=True)
class Probe:
    """One window to gather evidence in, with the connection it belongs to ("addr", port pairs)."""

    window: Window
    client: tuple[str, int] | None = None
    server: tuple[str, int] | None = None
    first_on_connection: bool = False


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


def gather(db: ArchiveDb, probes: list[Probe], notes: list[str] | None = None) -> list[Evidence]:
    """Evidence per probe, in the same order. A source whose table cannot be read as this version
    expects (an archive from elsewhere) is left out with a line in `notes`, not the whole analysis."""
    out = [Evidence() for _ in probes]
    if not probes:
        return out
    sources = recorded_sources(db)
    w = _Windows(probes)
    steps = {"cpu": lambda: _cpu(db, out, w, sampling_period_ns(db)), "offcpu": lambda: _offcpu(db, out, w),
             "lock": lambda: _locks(db, out, w), "alloc": lambda: _allocs(db, out, w),
             "net": lambda: _packets(db, out, probes, w)}
    db.con.register("_corr_threads", pa.table({"pid": pa.array(np.unique(w.key >> 32), pa.int64())}))
    try:
        for name in sources:
            try:
                steps[name]()
            except duckdb.Error as e:
                if notes is not None:
                    notes.append(f"{name} evidence left out: its table could not be read ({str(e).splitlines()[0]})")
    finally:
        db.con.unregister("_corr_threads")
    period = sampling_period_ns(db)
    if period:
        for ev, p in zip(out, probes):
            _thin_cpu(ev, p.window)
    return out


class _Windows:
    """The probes' windows as arrays; key = pid << 32 | tid (a tid alone may be reused by another process)."""

    def __init__(self, probes: list[Probe]):
        self.key = np.array([(p.window.pid << 32) | p.window.tid for p in probes], np.int64)
        self.s = np.array([p.window.start_ts for p in probes], np.int64)
        self.e = np.array([p.window.end_ts for p in probes], np.int64)


def _arrays(db: ArchiveDb, sql: str) -> list[np.ndarray]:
    t = db.con.sql(sql).to_arrow_table()
    return [pc.fill_null(t.column(i), 0).to_numpy().astype(np.int64) for i in range(t.num_columns)]


# Only the processes that served or made a request: the rest of a system-wide capture is not read twice.
_KEY = "(pid::BIGINT << 32) | tid::BIGINT"
_MINE = "pid IN (SELECT pid FROM _corr_threads)"


def _thin_cpu(ev: Evidence, window: Window) -> None:
    """Say so when the samples are too few to tell where the CPU time went, unless the thread was
    off-CPU for nearly all the window (it barely ran: the off-CPU figures are the finding)."""
    n = ev.cpu_samples or 0
    wall_ms = window.duration_ns / 1e6
    if n >= THIN_SAMPLES:
        return
    if ev.offcpu_ms is not None and ev.offcpu_ms >= BLOCKED_SHARE * wall_ms:
        return
    ev.notes.append(f"thin: {n} CPU sample{'s' if n != 1 else ''} in {wall_ms:.3f} ms, too few to say where "
                    "its CPU time went")


def _cpu(db: ArchiveDb, out: list[Evidence], w: _Windows, period_ns: int | None) -> None:
    keys, ts = _arrays(db, f"SELECT {_KEY}, ts::BIGINT FROM stack_sample WHERE {_MINE}")
    counts, _ = timeline.points_in(keys, ts, [], w.key, w.s, w.e)
    for ev, n in zip(out, counts.tolist()):
        ev.cpu_samples = n
        ev.cpu_ms = n * period_ns / 1e6 if period_ns else None


def _offcpu(db: ArchiveDb, out: list[Evidence], w: _Windows) -> None:
    if not db.has("offcpu"):
        for ev in out:
            ev.offcpu_ms = 0.0
        return
    keys, a, b = _arrays(db, f"SELECT {_KEY}, ts::BIGINT, ts::BIGINT + dur_ns::BIGINT FROM offcpu WHERE {_MINE}")
    _, total = timeline.overlap(keys, a, b, w.key, w.s, w.e)
    for ev, ns in zip(out, total.tolist()):
        ev.offcpu_ms = ns / 1e6


def _locks(db: ArchiveDb, out: list[Evidence], w: _Windows) -> None:
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
    for ev, n, ns, hold in zip(out, waits.tolist(), waited.tolist(), held.tolist()):
        ev.lock_waits, ev.lock_wait_ms, ev.lock_hold_ms = n, ns / 1e6, hold / 1e6


def _allocs(db: ArchiveDb, out: list[Evidence], w: _Windows) -> None:
    from uetrace.analyze import leaks
    leaks.register_views(db)
    rate = max(int(leaks.sample_rate(db)), 1)
    keys, ts, size, kept = _arrays(db, f"""
        SELECT {_KEY}, ts::BIGINT, size::BIGINT,
               CASE WHEN freed_ts IS NULL AND NOT coalesce(missed_free, false) THEN size ELSE 0 END::BIGINT
        FROM alloc_blocks WHERE {_MINE}""")
    counts, (sizes, kepts) = timeline.points_in(keys, ts, [size, kept], w.key, w.s, w.e)
    for ev, n, nbytes, k in zip(out, counts.tolist(), sizes.tolist(), kepts.tolist()):
        ev.allocs, ev.alloc_bytes, ev.outstanding_bytes = n * rate, nbytes * rate, k * rate
        if rate > 1:
            ev.notes.append(f"allocations sampled 1 in {rate}: alloc figures are estimates")


def _packets(db: ArchiveDb, out: list[Evidence], probes: list[Probe], w: _Windows) -> None:
    from uetrace.analyze import flows
    flows.register_views(db)
    codes: dict[tuple, int] = {}
    wconn = np.array([codes.setdefault((*p.client, *p.server), len(codes)) if p.client and p.server else -1
                      for p in probes], np.int64)
    if not codes:
        return
    conns = list(codes)
    db.con.register("_corr_conns", pa.table({
        "code": pa.array(range(len(conns)), pa.int64()), "caddr": pa.array([c[0] for c in conns], pa.string()),
        "cport": pa.array([c[1] for c in conns], pa.int64()), "saddr": pa.array([c[2] for c in conns], pa.string()),
        "sport": pa.array([c[3] for c in conns], pa.int64())}))
    try:
        code, ts, size, retx = _arrays(db, _PACKETS_SQL)
        rtts = db.query(_HANDSHAKE_SQL)
    finally:
        db.con.unregister("_corr_conns")
    counts, (sizes, retxs) = timeline.points_in(code, ts, [size, retx], wconn, w.s, w.e)
    for ev, c, n, nbytes, r in zip(out, wconn.tolist(), counts.tolist(), sizes.tolist(), retxs.tolist()):
        if c >= 0:
            ev.packets, ev.packet_bytes, ev.retransmits = n, nbytes, r
    handshakes = {c: (syn, synack) for c, syn, synack in rtts}
    for ev, p, c in zip(out, probes, wconn.tolist()):
        syn, synack = handshakes.get(c, (None, None))
        if p.first_on_connection and syn is not None and synack is not None and synack >= syn \
                and syn <= p.window.end_ts:
            ev.handshake_rtt_ms = (synack - syn) / 1e6


# The connection's packets (loopback: the egress copy only, see flows.py), each marked when it is a
# retransmission: a segment starting below the highest sequence number already sent that way.
_PACKETS_SQL = """
    WITH pk AS (
        SELECT c.code, p.ts::BIGINT AS ts, p.len::BIGINT AS len, p.ifindex, p.seq,
               p.saddr = c.caddr AND p.sport = c.cport AS fwd,
               CASE WHEN p.protocol = 6 THEN p.payload_len + (p.tcp_flags & 2 <> 0)::INT
                                             + (p.tcp_flags & 1 <> 0)::INT ELSE 0 END AS seg_len
        FROM net_observed p JOIN _corr_conns c
          ON (p.saddr = c.caddr AND p.sport = c.cport AND p.daddr = c.saddr AND p.dport = c.sport)
          OR (p.saddr = c.saddr AND p.sport = c.sport AND p.daddr = c.caddr AND p.dport = c.cport)),
    rel AS (
        SELECT *, ((seq::BIGINT - first_value(seq::BIGINT) OVER d) % 4294967296 + 4294967296) % 4294967296
                  AS rel_seq
        FROM pk WINDOW d AS (PARTITION BY code, ifindex, fwd ORDER BY ts, seq))
    SELECT code, ts, len,
           coalesce(seg_len > 0 AND rel_seq < max(rel_seq + seg_len) OVER (
               PARTITION BY code, ifindex, fwd ORDER BY ts, seq
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), false)::BIGINT AS retx
    FROM rel"""

_HANDSHAKE_SQL = """
    SELECT c.code, min(p.ts) FILTER (WHERE p.saddr = c.caddr AND p.tcp_flags & 18 = 2),
           min(p.ts) FILTER (WHERE p.saddr = c.saddr AND p.tcp_flags & 18 = 18)
    FROM net_observed p JOIN _corr_conns c
      ON p.protocol = 6 AND ((p.saddr = c.caddr AND p.sport = c.cport AND p.daddr = c.saddr AND p.dport = c.sport)
          OR (p.saddr = c.saddr AND p.sport = c.sport AND p.daddr = c.caddr AND p.dport = c.cport))
    GROUP BY c.code"""

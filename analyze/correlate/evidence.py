"""Evidence inside a window: what each tracer saw on the span's thread between its start and end, for
every window at once (one range join per source in DuckDB, so the cost is per record, not per window).

    cpu      stack_sample rows of the thread in the window: samples x sampling period
    offcpu   off-CPU intervals (--offcpu) of the thread, clipped to the window
    lock     blocking lock calls (not condition waits: those wait for an event, not a lock) whose wait
             overlaps the window, clipped to it; hold times from an acquisition to the same thread's
             unlock of that lock, clipped to the window
    alloc    blocks the thread allocated in the window; outstanding: never freed while recording
             (scaled back when --alloc-sample kept 1 in N)
    net      packets of the exchange's connection in the window (loopback: the egress copy only),
             retransmissions (a segment starting below the highest sequence number already sent
             that way), and the handshake RTT of the connection for its first exchange
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.correlate.result import THIN_SAMPLES, Evidence, Window

BLOCKING_LOCK_FNS = ("LOCK_FN_LOCK", "LOCK_FN_TIMEDLOCK", "LOCK_FN_RDLOCK", "LOCK_FN_WRLOCK",
                     "LOCK_FN_TIMEDRDLOCK", "LOCK_FN_TIMEDWRLOCK")
EOWNERDEAD = 130


@dataclass(frozen=True, slots=True)
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


def gather(db: ArchiveDb, probes: list[Probe]) -> list[Evidence]:
    """Evidence per probe, in the same order."""
    out = [Evidence() for _ in probes]
    if not probes:
        return out
    sources = recorded_sources(db)
    table = pa.table({
        "w": pa.array(range(len(probes)), pa.int64()),
        "pid": pa.array([p.window.pid for p in probes], pa.int64()),
        "tid": pa.array([p.window.tid for p in probes], pa.int64()),
        "s": pa.array([p.window.start_ts for p in probes], pa.int64()),
        "e": pa.array([p.window.end_ts for p in probes], pa.int64()),
        "caddr": pa.array([p.client[0] if p.client else None for p in probes], pa.string()),
        "cport": pa.array([p.client[1] if p.client else None for p in probes], pa.int64()),
        "saddr": pa.array([p.server[0] if p.server else None for p in probes], pa.string()),
        "sport": pa.array([p.server[1] if p.server else None for p in probes], pa.int64()),
    })
    db.con.register("_corr_win", table)
    try:
        if "cpu" in sources:
            _cpu(db, out, sampling_period_ns(db))
        if "offcpu" in sources:
            _offcpu(db, out)
        if "lock" in sources:
            _locks(db, out)
        if "alloc" in sources:
            _allocs(db, out)
        if "net" in sources:
            _packets(db, out, probes)
    finally:
        db.con.unregister("_corr_win")
    period = sampling_period_ns(db)
    if period:
        for ev, p in zip(out, probes):
            _thin_cpu(ev, p.window, period)
    return out


def _thin_cpu(ev: Evidence, window: Window, period_ns: int) -> None:
    """Say so when the samples are too few to tell where the CPU time went, unless off-CPU time
    accounts for the window (the thread barely ran: few samples is the finding, not a gap)."""
    n = ev.cpu_samples or 0
    if n >= THIN_SAMPLES:
        return
    if ev.offcpu_ms is not None and window.duration_ns / 1e6 - ev.offcpu_ms < THIN_SAMPLES * period_ns / 1e6:
        return
    ev.notes.append(f"thin: {n} CPU sample{'s' if n != 1 else ''} in {window.duration_ns / 1e6:.3f} ms, too few to "
                    "say where its CPU time went")


def _fill(rows: list[tuple], out: list[Evidence], setter) -> None:
    for w, *values in rows:
        setter(out[int(w)], *values)


def _cpu(db: ArchiveDb, out: list[Evidence], period_ns: int | None) -> None:
    rows = db.query("""
        SELECT w.w, count(*) FROM stack_sample x JOIN _corr_win w
          ON x.tid = w.tid AND x.pid = w.pid AND x.ts >= w.s AND x.ts <= w.e
        GROUP BY w.w""")
    counts = dict(rows)
    for i, ev in enumerate(out):
        n = int(counts.get(i, 0))
        ev.cpu_samples = n
        ev.cpu_ms = n * period_ns / 1e6 if period_ns else None


def _offcpu(db: ArchiveDb, out: list[Evidence]) -> None:
    for ev in out:
        ev.offcpu_ms = 0.0
    if not db.has("offcpu"):
        return
    rows = db.query("""
        SELECT w.w, sum(least(x.ts::BIGINT + x.dur_ns::BIGINT, w.e) - greatest(x.ts::BIGINT, w.s))
        FROM offcpu x JOIN _corr_win w
          ON x.tid = w.tid AND x.pid = w.pid AND x.ts::BIGINT < w.e AND x.ts::BIGINT + x.dur_ns::BIGINT > w.s
        GROUP BY w.w""")
    _fill(rows, out, lambda ev, ns: setattr(ev, "offcpu_ms", int(ns) / 1e6))


def _locks(db: ArchiveDb, out: list[Evidence]) -> None:
    enums = db.enums
    acquire = int(enums.value("lock", "ue_lock_op", "LOCK_OP_ACQUIRE"))
    trylock = int(enums.value("lock", "ue_lock_op", "LOCK_OP_TRYLOCK"))
    unlock = int(enums.value("lock", "ue_lock_op", "LOCK_OP_UNLOCK"))
    blocking = enums.sql_list("lock", "ue_lock_fn", BLOCKING_LOCK_FNS)
    for ev in out:
        ev.lock_waits, ev.lock_wait_ms, ev.lock_hold_ms = 0, 0.0, 0.0
    waits = db.query(f"""
        SELECT w.w, count(*),
               sum(least(x.ts::BIGINT, w.e) - greatest(x.ts::BIGINT - x.wait_ns::BIGINT, w.s))
        FROM lock x JOIN _corr_win w
          ON x.tid = w.tid AND x.pid = w.pid AND x.ts::BIGINT - x.wait_ns::BIGINT < w.e AND x.ts::BIGINT > w.s
        WHERE x.op = {acquire} AND x.fn IN ({blocking})
        GROUP BY w.w""")
    _fill(waits, out, lambda ev, n, ns: (setattr(ev, "lock_waits", int(n)),
                                         setattr(ev, "lock_wait_ms", max(int(ns), 0) / 1e6)))
    holds = db.query(f"""
        WITH ev AS (
            SELECT pid, tid, ts::BIGINT AS ts, op, ret, lead(op) OVER o AS next_op, lead(ts::BIGINT) OVER o AS next_ts
            FROM lock WINDOW o AS (PARTITION BY pid, tid, mutex ORDER BY ts, op)),
        held AS (
            SELECT pid, tid, ts AS a, next_ts AS b FROM ev
            WHERE op IN ({acquire}, {trylock}) AND ret IN (0, {EOWNERDEAD}) AND next_op = {unlock})
        SELECT w.w, sum(least(h.b, w.e) - greatest(h.a, w.s))
        FROM held h JOIN _corr_win w ON h.tid = w.tid AND h.pid = w.pid AND h.a < w.e AND h.b > w.s
        GROUP BY w.w""")
    _fill(holds, out, lambda ev, ns: setattr(ev, "lock_hold_ms", max(int(ns), 0) / 1e6))


def _allocs(db: ArchiveDb, out: list[Evidence]) -> None:
    from uetrace.analyze import leaks
    leaks.register_views(db)
    rate = max(int(leaks.sample_rate(db)), 1)
    for ev in out:
        ev.allocs, ev.alloc_bytes, ev.outstanding_bytes = 0, 0, 0
        if rate > 1:
            ev.notes.append(f"allocations sampled 1 in {rate}: alloc figures are estimates")
    rows = db.query("""
        SELECT w.w, count(*), sum(b.size),
               coalesce(sum(b.size) FILTER (WHERE b.freed_ts IS NULL AND NOT coalesce(b.missed_free, false)), 0)
        FROM alloc_blocks b JOIN _corr_win w
          ON b.tid = w.tid AND b.pid = w.pid AND b.ts::BIGINT >= w.s AND b.ts::BIGINT <= w.e
        GROUP BY w.w""")
    _fill(rows, out, lambda ev, n, size, kept: (setattr(ev, "allocs", int(n) * rate),
                                                setattr(ev, "alloc_bytes", int(size) * rate),
                                                setattr(ev, "outstanding_bytes", int(kept) * rate)))


def _packets(db: ArchiveDb, out: list[Evidence], probes: list[Probe]) -> None:
    from uetrace.analyze import flows
    flows.register_views(db)
    for ev, p in zip(out, probes):
        if p.client is not None:
            ev.packets, ev.packet_bytes, ev.retransmits = 0, 0, 0
    rows = db.query("""
        WITH conn AS (SELECT DISTINCT caddr, cport, saddr, sport FROM _corr_win WHERE caddr IS NOT NULL),
        pk AS (
            SELECT p.ts::BIGINT AS ts, p.len, p.protocol, c.caddr, c.cport, c.saddr, c.sport,
                   p.ifindex, p.saddr = c.caddr AND p.sport = c.cport AS fwd,
                   CASE WHEN p.protocol = 6 THEN p.payload_len + (p.tcp_flags & 2 <> 0)::INT
                                                 + (p.tcp_flags & 1 <> 0)::INT ELSE 0 END AS seg_len, p.seq
            FROM net_observed p JOIN conn c
              ON (p.saddr = c.caddr AND p.sport = c.cport AND p.daddr = c.saddr AND p.dport = c.sport)
              OR (p.saddr = c.saddr AND p.sport = c.sport AND p.daddr = c.caddr AND p.dport = c.cport)),
        rel AS (
            SELECT *, ((seq::BIGINT - first_value(seq::BIGINT) OVER d) % 4294967296 + 4294967296) % 4294967296
                      AS rel_seq
            FROM pk WINDOW d AS (PARTITION BY ifindex, caddr, cport, saddr, sport, fwd ORDER BY ts, seq)),
        marked AS (
            -- as in flows.py: a segment starting below the highest sequence already sent that way
            SELECT *, seg_len > 0 AND rel_seq < max(rel_seq + seg_len) OVER (
                          PARTITION BY ifindex, caddr, cport, saddr, sport, fwd ORDER BY ts, seq
                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS retx
            FROM rel)
        SELECT w.w, count(*), sum(pk.len), count(*) FILTER (WHERE pk.retx)
        FROM marked pk JOIN _corr_win w ON pk.caddr = w.caddr AND pk.cport = w.cport AND pk.saddr = w.saddr
                                 AND pk.sport = w.sport AND pk.ts >= w.s AND pk.ts <= w.e
        GROUP BY w.w""")
    _fill(rows, out, lambda ev, n, size, retx: (setattr(ev, "packets", int(n)),
                                                setattr(ev, "packet_bytes", int(size or 0)),
                                                setattr(ev, "retransmits", int(retx))))
    firsts = [i for i, p in enumerate(probes) if p.first_on_connection]
    if not firsts:
        return
    rtts = dict(((c, cp, s, sp), (syn, synack)) for c, cp, s, sp, syn, synack in db.query("""
        SELECT c.caddr, c.cport, c.saddr, c.sport,
               min(p.ts) FILTER (WHERE p.saddr = c.caddr AND p.tcp_flags & 18 = 2),
               min(p.ts) FILTER (WHERE p.saddr = c.saddr AND p.tcp_flags & 18 = 18)
        FROM net_observed p JOIN (SELECT DISTINCT caddr, cport, saddr, sport FROM _corr_win
                                  WHERE caddr IS NOT NULL) c
          ON p.protocol = 6 AND ((p.saddr = c.caddr AND p.sport = c.cport AND p.daddr = c.saddr AND p.dport = c.sport)
              OR (p.saddr = c.saddr AND p.sport = c.sport AND p.daddr = c.caddr AND p.dport = c.cport))
        GROUP BY ALL"""))
    for i in firsts:
        p = probes[i]
        assert p.client is not None and p.server is not None
        syn, synack = rtts.get((*p.client, *p.server), (None, None))
        if syn is not None and synack is not None and synack >= syn and syn <= p.window.end_ts:
            out[i].handshake_rtt_ms = (synack - syn) / 1e6

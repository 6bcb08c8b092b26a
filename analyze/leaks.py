"""Leaks: heap blocks allocated during the capture and not freed by its end,
grouped by the stack that allocated them.

Pairing is per (pid, address) in time order: an ALLOC followed by a FREE is a
freed block; an ALLOC with nothing after it is outstanding; an ALLOC followed by
another ALLOC lost its free somewhere (the address was handed out again, so it
was freed): it is counted as `missed_frees`, never as a leak. A FREE with no
ALLOC before it frees a block from before the capture (or one whose record was
lost): counted as `unknown_frees`, not guessed at.

The end is the capture's end, or the process's exit when the proc tracer saw
it. Blocks younger than min_age at the end are left out (they are likely
in use). With --alloc-sample N the kernel kept 1 block in N by address hash,
so the counts and bytes below are the kept ones times N (estimates).
Growth: bytes outstanding from that stack's blocks (freed later or not) at
`points` evenly spaced instants of the capture, and the least-squares slope.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from uetrace.analyze.analyzer import ResultRendering
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.render import human_bytes
from uetrace.analyze.stacks.stack_text import PYTHON_MARK, StackNamer

NAME = "leaks"
VIEWS = ("alloc_blocks",)


@dataclass(frozen=True)
class LeaksParams:
    min_age_s: float = 1.0  # leave out blocks younger than this at the end (likely in use)
    top: int = 20  # stacks listed
    points: int = 8  # instants of the growth series


def _ops(cap: ArchiveDb) -> tuple[int, int]:
    """(ALLOC, FREE) values of alloc.op in this archive (enum ue_alloc_op)."""
    return (int(cap.enums.value("alloc", "ue_alloc_op", "ALLOC_OP_ALLOC")),
            int(cap.enums.value("alloc", "ue_alloc_op", "ALLOC_OP_FREE")))


@dataclass
class LeakReport:
    sample_rate: int
    min_age_s: float
    allocations: int = 0          # ALLOC records seen (x sample_rate for an estimate)
    frees: int = 0
    leaked_bytes: int = 0
    leaked_blocks: int = 0
    unknown_frees: int = 0
    missed_frees: int = 0
    groups: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return self.__dict__.copy()

    def to_text(self) -> str:
        from uetrace.analyze.render import text_table
        est = f" (estimated: 1 in {self.sample_rate} blocks recorded)" if self.sample_rate > 1 else ""
        out = [f"{self.leaked_blocks:,} blocks, {human_bytes(self.leaked_bytes)} not freed by the end and older "
               f"than {self.min_age_s:g}s, from {len(self.groups)} stacks{est}",
               f"{self.allocations:,} allocations, {self.frees:,} frees; {self.unknown_frees:,} frees of blocks "
               f"allocated before the capture; {self.missed_frees:,} frees missed"]
        if not self.groups:
            return "\n".join(out)
        out.append(text_table("leaks by allocating stack", ("pid", "comm", "bytes", "blocks", "oldest",
                                                              "growth/s", "allocated at"),
                              [(g["pid"], g["comm"], f"{g['bytes']:,}", f"{g['blocks']:,}",
                                f"{g['oldest_age_s']:.1f}s", human_bytes(g["growth_bytes_per_s"]),
                                _site(g["frames"]) if g["frames"] else f"stack {g['stack_id']}")
                               for g in self.groups]))
        for i, g in enumerate(self.groups, 1):
            out.append(f"\n#{i} pid {g['pid']}: {g['bytes']:,} bytes in {g['blocks']:,} blocks; outstanding over "
                       "time: " + " ".join(human_bytes(b) for b in g["growth"]))
            out += [f"    {f}" for f in g["frames"][:16]] or ["    (no stack)"]
        return "\n".join(out)


def _site(frames: list[str]) -> str:
    """Where a group allocates, in one frame: its innermost Python frame when it has any (what a
    Python developer acts on; the native ones under it are the interpreter's), else the leaf."""
    return next((f for f in frames if f.endswith(PYTHON_MARK)), frames[0])


def applies(cap: ArchiveDb) -> bool:
    return cap.has("alloc")


def sample_rate(cap: ArchiveDb) -> int:
    return cap.info.alloc_sample


def register_views(cap: ArchiveDb) -> None:
    """alloc_blocks: one row per allocation, with when (and whether) it was freed. A block's end is
    the first exit of its pid at or after the allocation (a pid reused by a later process must not
    end the earlier one's blocks, nor the reverse), else the end of recording."""
    op_alloc, op_free = _ops(cap)
    if cap.has("proc"):
        op_exit = int(cap.enums.value("proc", "ue_proc_op", "PROC_EXIT"))
        exits = f"(SELECT pid, ts AS exit_ts FROM proc WHERE op = {op_exit})"
    else:
        exits = "(SELECT NULL::UINTEGER AS pid, NULL::UBIGINT AS exit_ts)"
    end = _end(cap)
    # Archives from before alloc records named their Python frames have no pystack_id.
    columns = [d[0] for d in cap.con.execute("SELECT * FROM alloc LIMIT 0").description]
    py = "pystack_id" if "pystack_id" in columns else "-1::INTEGER AS pystack_id"
    cap.con.execute(f"""
        CREATE OR REPLACE VIEW alloc_blocks AS
        WITH ev AS (
            SELECT pid, tid, ts, op, fn, addr, size, ustack_id, {py},
                   lead(op) OVER w AS next_op, lead(ts) OVER w AS next_ts, lag(op) OVER w AS prev_op
            FROM alloc WINDOW w AS (PARTITION BY pid, addr ORDER BY ts, op = {op_free} DESC))
        SELECT ev.pid, ev.tid, ev.ts, ev.fn, ev.addr, ev.size, ev.ustack_id, ev.pystack_id,
               CASE WHEN next_op = {op_free} THEN next_ts END AS freed_ts,
               next_op = {op_alloc} AS missed_free,
               greatest(least(coalesce(x.exit_ts, {end}), {end}), ev.ts) AS end_ts
        FROM ev ASOF LEFT JOIN {exits} x ON x.pid = ev.pid AND x.exit_ts >= ev.ts
        WHERE ev.op = {op_alloc}""")


def _end(cap: ArchiveDb) -> int:
    """When recording stopped (programs detached), not when the archive was closed."""
    return int(cap.info.stop_ns or cap.query("SELECT max(ts) FROM alloc")[0][0] or 0)


def run(cap: ArchiveDb, params: LeaksParams = LeaksParams()) -> LeakReport:
    min_age_ns = int(params.min_age_s * 1e9)
    points = params.points
    limit = params.top
    op_alloc, op_free = _ops(cap)
    rate = sample_rate(cap)
    register_views(cap)
    report = LeakReport(rate, min_age_ns / 1e9)
    (allocs, frees, unknown, missed) = cap.query(f"""
        WITH ev AS (SELECT op, lag(op) OVER (PARTITION BY pid, addr ORDER BY ts, op = {op_free} DESC) AS prev_op
                    FROM alloc)
        SELECT count(*) FILTER (op = {op_alloc}), count(*) FILTER (op = {op_free}),
               count(*) FILTER (op = {op_free} AND coalesce(prev_op, {op_free}) = {op_free}),
               (SELECT count(*) FROM alloc_blocks WHERE missed_free)
        FROM ev""")[0]
    report.allocations, report.frees = int(allocs) * rate, int(frees) * rate
    report.unknown_frees, report.missed_frees = int(unknown) * rate, int(missed) * rate
    start = int(cap.info.start_ns or cap.query("SELECT min(ts) FROM alloc")[0][0])
    end = _end(cap)
    groups = cap.query("""
        SELECT pid, ustack_id, pystack_id, sum(size)::HUGEINT, count(*), max(end_ts - ts), min(ts)
        FROM alloc_blocks
        WHERE freed_ts IS NULL AND NOT coalesce(missed_free, false) AND end_ts - ts >= ?
        GROUP BY pid, ustack_id, pystack_id ORDER BY sum(size) DESC, pid, ustack_id, pystack_id""", [min_age_ns])
    comms = cap.process_names()
    stacks = StackNamer(cap, "alloc", first_frame_exact=False)
    stacks.load((pid, sid, 0, pysid) for pid, sid, pysid, *_ in groups[:limit])
    instants = [start + (end - start) * (i + 1) // points for i in range(points)]
    for _pid, _sid, _pysid, nbytes, count, _oldest, _first in groups:
        report.leaked_bytes += int(nbytes) * rate
        report.leaked_blocks += int(count) * rate
    for pid, sid, pysid, nbytes, count, oldest, _first in groups[:limit]:
        growth = _growth(cap, pid, sid, pysid, instants)
        report.groups.append({
            "pid": pid, "comm": comms.get(pid, ""), "stack_id": sid, "pystack_id": pysid, "bytes": int(nbytes) * rate,
            "blocks": int(count) * rate, "oldest_age_s": oldest / 1e9,
            "growth": [b * rate for b in growth], "growth_at_s": [(t - start) / 1e9 for t in instants],
            "growth_bytes_per_s": _slope([(t - start) / 1e9 for t in instants], [b * rate for b in growth]),
            "frames": stacks.frames(pid, sid, 0, pysid)})
    return report


def _growth(cap: ArchiveDb, pid: int, sid: int, pysid: int, instants: list[int]) -> list[int]:
    rows = cap.query("""
        SELECT t.i, coalesce(sum(b.size), 0)::HUGEINT
        FROM (SELECT unnest(?::UBIGINT[]) AS t, generate_subscripts(?::UBIGINT[], 1) AS i) t
        LEFT JOIN alloc_blocks b ON b.pid = ? AND b.ustack_id = ? AND b.pystack_id = ? AND b.ts <= t.t
             AND (b.freed_ts IS NULL OR b.freed_ts > t.t)
        GROUP BY t.i ORDER BY t.i""", [instants, instants, pid, sid, pysid])
    return [int(r[1]) for r in rows]


def _slope(xs: list[float], ys: list[int]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else 0.0


class LeaksAnalyzer(ResultRendering[LeakReport]):
    name, views = NAME, VIEWS

    def applies(self, db: ArchiveDb) -> bool:
        return applies(db)

    def report_params(self, top: int) -> LeaksParams:
        return LeaksParams(top=top)

    def run(self, db: ArchiveDb, params: LeaksParams) -> LeakReport:
        return run(db, params)

    def register_views(self, db: ArchiveDb) -> None:
        register_views(db)


ANALYZER = LeaksAnalyzer()

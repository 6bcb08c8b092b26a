"""Stack samples of a capture as weighted, symbolized stacks: what every profile
output (top functions, folded, SVG, speedscope) is drawn from.

Samples are grouped in DuckDB by (pid, comm, kernel stack, user stack, Python stack), so the
Python side works per distinct stack, never per sample; then every distinct
frame is symbolized once (analyze/symbolize.py).

A stack reads root first: the thread's comm, then the user frames from the
outermost caller to the leaf, then the kernel frames from the syscall or
interrupt entry to the kernel leaf. In CPython processes the Python frames the sample
recorded (kind "python") take the place of each _PyEval_EvalFrameDefault frame, or hang
under the thread root when the native walk was truncated (analyze/stacks/python_frames.py).
Markers (frames in brackets) keep what is missing visible instead of drawing a misleading
graph:

    [truncated user stack: <module>]  the frame-pointer walk stopped before reaching
                                      an entry function (main, start_thread, ...);
                                      <module> is where it stopped, usually code
                                      built without frame pointers
    [user stack cut at max depth]     all slots of the stack map value were used
    [user stack lost: EEXIST]         no stack id (map collision or full; counted
    [kernel stack lost: ENOMEM] ...   in the manifest as stack drops)
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.manifest_info import as_count
from uetrace.analyze.stacks import python_frames
from uetrace.analyze.stacks.symbolize import FRAME_SCHEMA, Symbolizer

DEFAULT_MAX_DEPTH = 127
# Where a complete user stack starts. A frame-pointer walk that reaches none of
# these stopped early (the usual cause: a library built without frame pointers).
ROOT_FUNCTIONS = frozenset({
    "main", "_start", "__libc_start_main", "__libc_start_call_main", "__libc_start_main_impl",
    "start_thread", "clone", "clone3", "__clone", "__clone3", "__clone_internal", "thread_start",
    "_dl_start_user", "_dl_start",
})

KIND_TABLES = {"cpu": "stack_sample", "offcpu": "offcpu"}
# Kernel frames of the tracer itself (the BPF program and the tracepoint glue that ran it)
# sit at the leaf of stacks taken from a tracepoint, e.g. off-CPU ones; they are dropped.
TRACER_FRAME_PREFIXES = ("bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_", "bpf_dispatcher_")


@dataclass(frozen=True)
class Frame:
    name: str              # function, or a stable module+0xoffset, or a [marker]
    module: str = ""
    kind: str = "user"     # "process" (the comm at the root), "user", "kernel", "python", "marker"
    file: str = field(default="", compare=False)  # source file, when the line table knew it

    @property
    def kernel(self) -> bool:
        return self.kind == "kernel"


@dataclass
class SampleFilter:
    """Which samples to draw: empty tuples mean all; times are seconds from the capture start."""

    pids: tuple[int, ...] = ()
    tids: tuple[int, ...] = ()
    comms: tuple[str, ...] = ()
    start_s: float | None = None
    end_s: float | None = None
    kind: str = "cpu"      # "cpu": on-CPU samples; "offcpu": off-CPU intervals weighted by ns
    idle: bool = True      # False: leave out the idle task (pid 0), which dominates a quiet machine
    # Only samples of these threads inside these CLOCK_MONOTONIC ns intervals: (tid, start, end), e.g. the
    # windows requests were served in. Off-CPU intervals are clipped to them.
    windows: tuple[tuple[int, int, int], ...] = ()


@dataclass
class StackSet:
    frames: list[Frame] = field(default_factory=list)    # index = frame id
    stacks: list[tuple[int, ...]] = field(default_factory=list)  # frame ids, root first
    weights: list[int] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    comms: list[str] = field(default_factory=list)
    truncated: list[str] = field(default_factory=list)   # "" or the marker's reason
    keys: list[tuple[int, str, int, int, int]] = field(default_factory=list)  # pid, comm, kstack, ustack, pystack
    unit: str = "samples"
    max_depth: int = DEFAULT_MAX_DEPTH

    @property
    def total(self) -> int:
        return sum(self.weights)

    def names(self, i: int) -> list[str]:
        return [self.frames[f].name for f in self.stacks[i]]


class _Interner:
    def __init__(self, out: list[Frame]):
        self.out = out
        self.ids: dict[Frame, int] = {}

    def __call__(self, frame: Frame) -> int:
        fid = self.ids.get(frame)
        if fid is None:
            fid = self.ids[frame] = len(self.out)
            self.out.append(frame)
        return fid


def available(cap: ArchiveDb, kind: str = "cpu") -> bool:
    return cap.has(KIND_TABLES[kind]) and cap.has("stacks")


def load(cap: ArchiveDb, flt: SampleFilter | None = None) -> StackSet:
    """The filtered samples as weighted, symbolized stacks."""
    flt = flt or SampleFilter()
    table = KIND_TABLES[flt.kind]
    out = StackSet(unit="samples" if flt.kind == "cpu" else "nanoseconds",
                   max_depth=_max_depth(cap))
    if not cap.has(table):
        return out
    where, params = _where(cap, flt)
    weight = "count(*)" if flt.kind == "cpu" else "sum(dur_ns)"
    source = f'"{table}"'
    if flt.windows:
        if not _register_windows(cap, flt.windows):
            return out
        source = _WINDOWED[flt.kind].format(table=table)
    kthread_flag = int(cap.enums.value(table, "ue_stack_flag", "UE_STACK_KTHREAD"))
    pystack = "pystack_id" if table == "stack_sample" and python_frames.available(cap) else "-1"
    try:
        groups = cap.con.execute(f"""
            SELECT pid, comm, kstack_id, ustack_id, bit_or(flags) & {kthread_flag} <> 0 AS kthread,
                   {weight} AS weight, min(ts) AS ts, {pystack} AS pystack_id
            FROM {source} {where}
            GROUP BY ALL ORDER BY pid, comm, kstack_id, ustack_id, pystack_id""",
                                 params).fetchall()
    finally:
        if flt.windows:
            cap.con.unregister("_sample_windows")
    if not groups:
        return out
    kstacks, ustacks = _resolve(cap, groups, tracer="stack")
    py = python_frames.PyFrames(cap, {(g[0], g[7]) for g in groups if g[7] >= 0})
    intern = _Interner(out.frames)
    for pid, comm, kid, uid, kthread, weight, _ts, pyid in groups:
        path = [intern(Frame(comm, kind="process"))]
        reason = ""
        pygroups = py.groups.get((pid, pyid))
        if uid >= 0:
            frames = ustacks.get((pid, uid), [])
            reason = _truncation(frames, out.max_depth)
            native = frames[::-1]
            if pygroups:
                native = python_frames.merge(native, pygroups, bool(reason), _python_frames)
            elif reason:
                path.append(intern(Frame(reason, kind="marker")))
            path.extend(intern(f) for f in native)
        elif uid != -errno.EFAULT and not kthread:
            path.extend(intern(f) for g in pygroups or [] for f in _python_frames(g))
            path.append(intern(Frame(f"[user stack lost: {_errname(uid)}]", kind="marker")))
        elif pygroups:
            path.extend(intern(f) for g in pygroups for f in _python_frames(g))
        if kid >= 0:
            path.extend(intern(f) for f in reversed(kstacks.get(kid, [])))
        elif kid != -errno.EFAULT:
            path.append(intern(Frame(f"[kernel stack lost: {_errname(kid)}]", kind="marker")))
        out.stacks.append(tuple(path))
        out.weights.append(int(weight))
        out.pids.append(int(pid))
        out.comms.append(comm)
        out.truncated.append("" if pygroups else reason)  # Python frames reach the root themselves
        out.keys.append((int(pid), comm, int(kid), int(uid), int(pyid)))
    return out


# Samples inside the windows of SampleFilter.windows (merged per thread first, so none counts twice).
_WINDOWED = {
    "cpu": """(SELECT x.* FROM "{table}" x JOIN _sample_windows w
                ON x.tid = w.tid AND x.ts >= w.s AND x.ts <= w.e)""",
    "offcpu": """(SELECT x.* REPLACE (least(x.ts + x.dur_ns, w.e) - greatest(x.ts, w.s) AS dur_ns)
                FROM "{table}" x JOIN _sample_windows w
                ON x.tid = w.tid AND x.ts < w.e AND x.ts + x.dur_ns > w.s)""",
}


def _register_windows(cap: ArchiveDb, windows: tuple[tuple[int, int, int], ...]) -> bool:
    merged: list[list[int]] = []
    for tid, s, e in sorted(windows):
        if merged and merged[-1][0] == tid and s <= merged[-1][2]:
            merged[-1][2] = max(merged[-1][2], e)
        elif e >= s:
            merged.append([tid, s, e])
    if not merged:
        return False
    cap.con.register("_sample_windows", pa.table({
        "tid": pa.array([m[0] for m in merged], pa.uint32()),
        "s": pa.array([m[1] for m in merged], pa.uint64()),
        "e": pa.array([m[2] for m in merged], pa.uint64())}))
    return True


def _python_frames(group: list[tuple[str, str, int | None]]) -> list[Frame]:
    return [Frame(python_frames.frame_label(q, f, line), f, "python", f"{f}:{line}" if f and line else "")
            for q, f, line in group]


def _where(cap: ArchiveDb, flt: SampleFilter) -> tuple[str, list]:
    conds, params = [], []
    for col, values in (("pid", flt.pids), ("tid", flt.tids), ("comm", flt.comms)):
        if values:
            conds.append(f"{col} IN ({', '.join('?' * len(values))})")
            params.extend(values)
    if not flt.idle:
        conds.append("pid <> 0")
    start_ns = cap.info.start_ns
    if (flt.start_s is not None or flt.end_s is not None) and start_ns is None:
        from uetrace.errors import BadInputError
        raise BadInputError("a time window needs the capture's start clock, which this manifest lacks")
    if flt.start_s is not None:
        conds.append("ts >= ?")
        params.append(int(start_ns + flt.start_s * 1e9))
    if flt.end_s is not None:
        conds.append("ts < ?")
        params.append(int(start_ns + flt.end_s * 1e9))
    return ("WHERE " + " AND ".join(conds)) if conds else "", params


def _max_depth(cap: ArchiveDb) -> int:
    return as_count(cap.info.tracer_stats("stack").get("stack_max_depth")) or DEFAULT_MAX_DEPTH


def _resolve(cap: ArchiveDb, groups: list[tuple], tracer: str) -> tuple[dict[int, list[Frame]],
                                                                     dict[tuple[int, int], list[Frame]]]:
    """Frames (leaf first) of every kernel stack id and every (pid, user stack id) in groups."""
    con = cap.con
    kids = sorted({g[2] for g in groups if g[2] >= 0})
    ukeys: dict[tuple[int, int], int] = {}
    for pid, _comm, _kid, uid, _kt, _w, ts, _py in groups:
        if uid >= 0:
            ukeys[(pid, uid)] = min(ts, ukeys.get((pid, uid), ts))
    keys = pa.table({"pid": pa.array([k[0] for k in ukeys] + [0] * len(kids), pa.uint32()),
                     "stack_id": pa.array([k[1] for k in ukeys] + kids, pa.int32()),
                     "ts": pa.array(list(ukeys.values()) + [0] * len(kids), pa.uint64()),
                     "kernel": pa.array([False] * len(ukeys) + [True] * len(kids), pa.bool_())})
    con.register("_stack_keys", keys)
    try:
        frames = con.sql("""
            WITH s AS (SELECT stack_id, frames FROM stacks WHERE tracer = ?)
            SELECT k.pid, k.stack_id, k.kernel, k.ts,
                   unnest(s.frames) AS addr, generate_subscripts(s.frames, 1) AS pos
            FROM _stack_keys k JOIN s ON s.stack_id = k.stack_id""", params=[tracer]).to_arrow_table()
    finally:
        con.unregister("_stack_keys")
    n = frames.num_rows
    req = pa.Table.from_arrays([pa.array(range(n), pa.int64()), frames.column("pid").cast(pa.uint32()),
                                frames.column("addr"), frames.column("ts"),
                                pc.equal(frames.column("pos"), 1), frames.column("kernel")],
                               schema=FRAME_SCHEMA)
    resolved = Symbolizer(cap).resolve(req).sort_by("id")
    fn, mod, file, line = (resolved.column(c).to_pylist() for c in ("function", "module", "file", "line"))
    kstacks: dict[int, list[tuple[int, Frame]]] = {}
    ustacks: dict[tuple[int, int], list[tuple[int, Frame]]] = {}
    for i, (pid, sid, kernel, pos) in enumerate(zip(*(frames.column(c).to_pylist() for c in
                                                      ("pid", "stack_id", "kernel", "pos")))):
        f = Frame(fn[i], mod[i], "kernel" if kernel else "user", file[i] if line[i] else "")
        (kstacks.setdefault(sid, []) if kernel else ustacks.setdefault((pid, sid), [])).append((pos, f))
    return ({k: _drop_tracer_frames([f for _, f in sorted(v, key=lambda x: x[0])]) for k, v in kstacks.items()},
            {k: [f for _, f in sorted(v, key=lambda x: x[0])] for k, v in ustacks.items()})


def _drop_tracer_frames(frames: list[Frame]) -> list[Frame]:
    i = 0
    while i < len(frames) and frames[i].name.startswith(TRACER_FRAME_PREFIXES):
        i += 1
    return frames[i:]


def _truncation(frames: list[Frame], max_depth: int) -> str:
    """Why a user stack (leaf first) is incomplete, or "" when it reaches an entry function."""
    if len(frames) >= max_depth:
        return "[user stack cut at max depth]"
    if not frames or any(f.name in ROOT_FUNCTIONS for f in frames):
        return ""
    return f"[truncated user stack: {frames[-1].module}]"


def _errname(neg_errno: int) -> str:
    return errno.errorcode.get(-neg_errno, str(neg_errno))

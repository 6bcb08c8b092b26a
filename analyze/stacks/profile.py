"""Profile: where the CPU time went, from the stack tracer's samples.

Top functions by self samples (the function was the leaf) and total samples
(it was anywhere on the stack, counted once per sample even when recursive),
and each process's heaviest stacks. User stacks that the frame-pointer walk
could not finish are counted per module where the walk stopped, and the report
says so: their callers are missing from every graph drawn from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from uetrace.analyze.analyzer import ResultRendering
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.manifest_info import as_count
from uetrace.analyze.stacks import samples as stack_samples
from uetrace.analyze.stacks.samples import SampleFilter, StackSet

NAME = "profile"
VIEWS: tuple[str, ...] = ()
STACK_TAIL = 6  # frames of a stack shown in the text report (the leaf end)


@dataclass(frozen=True)
class ProfileParams:
    top: int = 10  # functions, and processes with their heaviest stacks
    # The idle task is most samples of a quiet machine and hides the work: left out unless asked
    # (the report says how much it was).
    filter: SampleFilter = field(default_factory=lambda: SampleFilter(idle=False))


@dataclass
class Profile:
    unit: str
    total: int
    processes: int
    top_functions: list[dict] = field(default_factory=list)
    per_process: list[dict] = field(default_factory=list)
    truncated: dict = field(default_factory=dict)
    lost_stacks: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return self.__dict__.copy()

    def to_text(self) -> str:
        from rich.markup import escape  # titles are markup; cells are escaped by render_table

        from uetrace.analyze.render import text_table
        if not self.total:
            return "no stack samples in this capture (record with --tracers stack)"
        out = [f"{self.total:,} {self.unit} from {self.processes} processes"]
        out.append(text_table("top functions", ("function", "module", "self", "self %", "total", "total %"),
                              [(f["function"] + (" [k]" if f["kernel"] else " [py]" if f.get("python") else ""),
                                f["module"], f"{f['self']:,}",
                                f"{f['self_pct']:.1f}", f"{f['total']:,}", f"{f['total_pct']:.1f}")
                               for f in self.top_functions]))
        for p in self.per_process:
            rows = [("…;" if len(s["frames"]) > STACK_TAIL else "") + ";".join(s["frames"][-STACK_TAIL:])
                    for s in p["top_stacks"]]
            out.append(text_table(escape(f"pid {p['pid']} {p['comm']}: {p['samples']:,} {self.unit} "
                                         f"({p['pct']:.1f}%)"),
                                  ("stack (root … leaf)", self.unit, "%"),
                                  [(r, f"{s['samples']:,}", f"{s['pct']:.1f}") for r, s in
                                   zip(rows, p["top_stacks"])]))
        out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)


def applies(cap: ArchiveDb) -> bool:
    return stack_samples.available(cap)


def run(cap: ArchiveDb, params: ProfileParams = ProfileParams()) -> Profile:
    limit = params.top
    flt = params.filter
    st = stack_samples.load(cap, flt)
    idle = 0 if flt.idle else _idle_samples(cap, flt.kind)
    prof = Profile(st.unit, st.total, len(set(st.pids)))
    prof.lost_stacks = _lost_stacks(cap)
    if not st.total:
        return prof
    prof.top_functions = top_functions(st, limit)
    prof.per_process = per_process(cap, st, limit)
    prof.truncated = truncation(st)
    t = prof.truncated
    if t["samples"]:
        where = ", ".join(f"{m['module']} {m['pct']:.1f}%" for m in t["by_module"][:5])
        prof.notes.append(f"{t['pct']:.1f}% of {st.unit} with a user stack have it truncated (walk stopped in: "
                          f"{where}); their callers are missing: build those modules with "
                          "-fno-omit-frame-pointer, or read them as partial")
    if idle:
        prof.notes.append(f"{idle:,} samples of the idle task (pid 0) are not shown")
    if prof.lost_stacks:
        prof.notes.append(f"{prof.lost_stacks:,} stacks were lost in the kernel (stack map collisions or full); "
                          "their samples show a [... stack lost] frame")
    return prof


def _frame_key(st: StackSet, fid: int) -> tuple | None:
    f = st.frames[fid]
    return (f.name, f.module, f.kind) if f.kind in ("user", "kernel", "python") else None


def top_functions(st: StackSet, limit: int) -> list[dict]:
    self_w: dict[tuple, int] = {}
    total_w: dict[tuple, int] = {}
    for path, w in zip(st.stacks, st.weights):
        keys = [k for k in (_frame_key(st, f) for f in path) if k]
        if not keys:
            continue
        self_w[keys[-1]] = self_w.get(keys[-1], 0) + w
        for k in set(keys):
            total_w[k] = total_w.get(k, 0) + w
    total = st.total
    ranked = sorted(total_w, key=lambda k: (-self_w.get(k, 0), -total_w[k], k))[:limit]
    return [{"function": k[0], "module": k[1], "kernel": k[2] == "kernel", "python": k[2] == "python",
             "self": self_w.get(k, 0),
             "self_pct": 100.0 * self_w.get(k, 0) / total, "total": total_w[k],
             "total_pct": 100.0 * total_w[k] / total} for k in ranked]


def per_process(cap: ArchiveDb, st: StackSet, limit: int) -> list[dict]:
    by_pid: dict[int, list[int]] = {}
    for i, pid in enumerate(st.pids):
        by_pid.setdefault(pid, []).append(i)
    names = cap.process_names()
    total = st.total
    out = []
    for pid, idx in sorted(by_pid.items(), key=lambda kv: -sum(st.weights[i] for i in kv[1]))[:limit]:
        weight = sum(st.weights[i] for i in idx)
        merged: dict[tuple[str, ...], int] = {}
        for i in idx:
            key = tuple(st.names(i))
            merged[key] = merged.get(key, 0) + st.weights[i]
        top = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
        comm = names.get(pid) or st.comms[max(idx, key=lambda i: st.weights[i])]
        out.append({"pid": pid, "comm": comm, "samples": weight, "pct": 100.0 * weight / total,
                    "top_stacks": [{"frames": list(k), "samples": w, "pct": 100.0 * w / total} for k, w in top]})
    return out


def truncation(st: StackSet) -> dict:
    """Share of samples whose user stack is incomplete, by the module where the walk stopped."""
    with_user = truncated = 0
    by_module: dict[str, int] = {}
    for path, w, reason in zip(st.stacks, st.weights, st.truncated):
        if any(st.frames[f].kind in ("user", "python") for f in path):
            with_user += w
        if reason:
            truncated += w
            module = reason.split(": ", 1)[1].rstrip("]") if ": " in reason else "max depth"
            by_module[module] = by_module.get(module, 0) + w
    base = max(with_user, 1)
    return {"samples": truncated, "pct": 100.0 * truncated / base, "with_user_stack": with_user,
            "by_module": [{"module": m, "samples": w, "pct": 100.0 * w / base}
                          for m, w in sorted(by_module.items(), key=lambda kv: (-kv[1], kv[0]))]}


def _idle_samples(cap: ArchiveDb, kind: str) -> int:
    table = "stack_sample" if kind == "cpu" else "offcpu"
    return cap.query(f'SELECT count(*) FROM "{table}" WHERE pid = 0')[0][0] if cap.has(table) else 0


def _lost_stacks(cap: ArchiveDb) -> int:
    per_cpu = cap.info.tracer("stack").get("lost_per_cpu")
    lost = per_cpu.get("stack") if isinstance(per_cpu, dict) else None
    return sum(as_count(n) or 0 for n in lost) if isinstance(lost, list) else 0


class ProfileAnalyzer(ResultRendering[Profile]):
    name, views = NAME, VIEWS

    def applies(self, db: ArchiveDb) -> bool:
        return applies(db)

    def report_params(self, top: int) -> ProfileParams:
        return ProfileParams(top=top)

    def run(self, db: ArchiveDb, params: ProfileParams) -> Profile:
        return run(db, params)


ANALYZER = ProfileAnalyzer()

"""Uprobes on named functions of one binary, for the tracers that use them (tls, lock, alloc).

Where the kernel has uprobe_multi links and the object was loaded for them, each program gets one
link for all its functions in that binary (and process): those detach behind one RCU grace period
each, concurrently, where classic uprobe links took one grace period each, in turn (capture/
uprobe_multi.py). Entry programs are attached before return programs, so a return is never seen
without the chance of its entry. The manifest still lists one attach point per function."""

from __future__ import annotations

from uetrace.capture.libbpf import BpfObject
from uetrace.capture.tracers.contract import Tracer

# (BPF program, function, is a return probe)
Probe = tuple[str, str, bool]


def attach_functions(tracer: Tracer, obj: BpfObject, probes: list[Probe], binary: str, offsets: dict[str, int],
                     pid: int = -1, point_pid: bool = True) -> set[str]:
    """Attach each probe at its function's file offset in binary, in process pid (-1: every process).
    Points go to tracer.attached, misses and errors to tracer.failures ("... pid N" when point_pid).
    Returns the functions that got at least one probe."""
    def point(func: str, ret: bool) -> str:
        return f"{'uretprobe' if ret else 'uprobe'} {binary}:{func}" + (f" pid {pid}" if point_pid else "")

    groups: dict[tuple[str, bool], list[str]] = {}
    for prog, func, ret in probes:
        if func not in offsets:
            tracer.failures.append({"point": point(func, ret), "error": f"find function {func}: not in {binary}"})
            continue
        groups.setdefault((prog, ret), []).append(func)
    done: set[str] = set()
    for (prog, ret), funcs in sorted(groups.items(), key=lambda kv: kv[0][1]):   # entries first, stable
        program = obj.program(prog)
        if program.uprobe_multi:
            points = [point(f, ret) for f in funcs]
            if tracer.try_attach(points[0], program.attach_uprobe_multi, binary, [offsets[f] for f in funcs], pid,
                                 ret) is not None:
                tracer.attached.extend(points[1:])
                done.update(funcs)
            else:
                err = tracer.failures[-1]["error"]
                tracer.failures.extend({"point": p, "error": err} for p in points[1:])
            continue
        for f in funcs:
            # By offset: libbpf 1.1 rejects names with two versions (see capture/tracers/uprobe_offsets.py).
            if tracer.try_attach(point(f, ret), program.attach_uprobe, binary, "", pid, ret, offsets[f]) is not None:
                done.add(f)
    return done

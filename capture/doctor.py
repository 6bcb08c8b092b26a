"""`trace doctor`: what this machine allows, and how to fix what it does not.

Each attach type is tried for real with a tiny program from bpf/doctor.bpf.c,
loaded on its own so that one refused type does not hide the others.
"""

from __future__ import annotations

import ctypes
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

from uetrace.bpf import object_path
from uetrace.capture import libbpf, socket_hooks
from uetrace.capture.libbpf import BpfObject
from uetrace.capture.privileges import missing_caps, tracefs_path
from uetrace.capture.procfs import read_maps
from uetrace.capture.tracers.perf_event import open_cpu_clock
from uetrace.capture.tracers.uprobe_offsets import function_offset
from uetrace.errors import UetraceError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    needed_by: str = ""      # tracers that need it ("" = optional extra)
    fix: str = ""


def _libc_path() -> str:
    for m in read_maps(os.getpid()):
        if "/libc.so" in m["path"] or "/libc-" in m["path"]:
            return m["path"]
    return "/lib/x86_64-linux-gnu/libc.so.6"


def _attach_one(prog_name: str, attach: Callable, multi: bool = False) -> tuple[bool, str]:
    try:
        with BpfObject(object_path("doctor")) as obj:
            for p in obj.programs():
                p.set_autoload(p.name == prog_name)
            if multi and not obj.use_uprobe_multi():
                return False, f"kernel {os.uname().release} is older than 6.6"
            obj.load()
            link = attach(obj.program(prog_name))
            if link is not None:
                link.destroy()
        return True, "ok"
    except UetraceError as e:
        return False, str(e).split(" [libbpf")[0].split(": ", 1)[-1]


def _perf(prog):
    fd = open_cpu_clock(0, 99)
    try:
        return prog.attach_perf_event(fd)
    finally:
        os.close(fd)


def run_checks() -> list[Check]:
    checks: list[Check] = []
    missing = missing_caps()
    checks.append(Check("privileges", not missing, "root/CAP_BPF,CAP_PERFMON present" if not missing
                        else "missing " + ", ".join(missing), "all", "run as root (sudo trace ...)"))
    btf = os.path.exists("/sys/kernel/btf/vmlinux")
    checks.append(Check("kernel BTF", btf, "/sys/kernel/btf/vmlinux" if btf else "absent", "all",
                        "use a kernel built with CONFIG_DEBUG_INFO_BTF=y"))
    tfs = tracefs_path()
    checks.append(Check("tracefs", bool(tfs), tfs or "not mounted (capture mounts it)", "sock, proc",
                        "mount -t tracefs nodev /sys/kernel/tracing"))
    bpffs = os.path.ismount("/sys/fs/bpf")
    checks.append(Check("bpffs", bpffs, "/sys/fs/bpf" if bpffs else "not mounted (not needed by uetrace)", "",
                        "mount -t bpf bpf /sys/fs/bpf"))
    try:
        major, minor = libbpf.version()
        checks.append(Check("libbpf", (major, minor) >= (1, 1), f"{major}.{minor}", "all",
                            "apt-get install libbpf1"))
        tcx = libbpf.has_symbol("bpf_program__attach_tcx")
        checks.append(Check("libbpf TCX API", tcx, "present" if tcx else f"absent in {major}.{minor} "
                            "(net uses bpf_link_create or clsact)", "", "libbpf >= 1.3"))
    except UetraceError as e:
        checks.append(Check("libbpf", False, str(e), "all", "apt-get install libbpf1"))
        return checks
    if missing:
        return checks
    libc = _libc_path()
    lo = socket.if_nametoindex("lo")
    probes = [
        ("tracepoint", "ue_doc_tp", lambda p: p.attach(), ""),
        ("tp_btf (BTF tracepoint)", "ue_doc_tp_btf", lambda p: p.attach(), "proc, sock, stack"),
        ("raw tracepoint", "ue_doc_raw_tp", lambda p: p.attach(), ""),
        ("uprobe", "ue_doc_uprobe", lambda p: p.attach_uprobe(libc, "getpid", os.getpid()), "lock, alloc, tls"),
        ("perf_event cpu-clock", "ue_doc_perf", _perf, "stack"),
        ("XDP (generic, lo)", "ue_doc_xdp", lambda p: p.attach_xdp(lo), "net"),
        ("TC program load", "ue_doc_tc", lambda p: None, "net"),
        ("TCX link (lo egress)", "ue_doc_tc", lambda p: p.attach_tcx(lo, egress=True), ""),
        ("kprobe", "ue_doc_kprobe", lambda p: p.attach(), ""),
        ("fentry", "ue_doc_fentry", lambda p: p.attach(), ""),
    ]
    for name, prog, fn, needed in probes:
        ok, detail = _attach_one(prog, fn)
        fix = "" if needed else "optional: uetrace does not need it"
        if not ok and needed:
            fix = "kernel lockdown or missing CONFIG option; the tracers listed cannot run"
        checks.append(Check(name, ok, detail if not ok else "works", needed, fix))
    ok, detail = _attach_one("ue_doc_uprobe", lambda p: p.attach_uprobe_multi(
        libc, [function_offset(libc, "getpid")], os.getpid()), multi=True)
    checks.append(Check("uprobe_multi link", ok, "works" if ok else detail, "", "" if ok else
                        "optional: without it each uprobe detaches on its own (~80 ms each when a capture stops)"))
    from uetrace.capture.tracers.netlink_cleanup import leftover_filters
    left = leftover_filters()
    checks.append(Check("leftover clsact filters", not left, ", ".join(f"{f[1]} prog {f[4]}" for f in left) or
                        "none", "", "sudo trace doctor --cleanup (a capture crashed while attached)"))
    checks.append(_socket_tracepoints())
    checks.append(_python_check())
    ctypes.set_errno(0)
    return checks


def _socket_tracepoints() -> Check:
    """The BTF tracepoints the sock and tls programs attach to, looked up in the kernel's BTF: without
    one of them those tracers load their programs on every system call instead (slower)."""
    try:
        missing = socket_hooks.missing_tracepoints()
    except OSError as e:
        return Check("socket tracepoints", False, f"kernel BTF: {e.strerror}", "", "")
    detail = f"missing {', '.join(missing)}" if missing else ", ".join(sorted(socket_hooks.tracepoints_wanted()))
    return Check("socket tracepoints", not missing, detail, "", "" if not missing else
                 "optional: sock and tls then hook every system call (~1.3 us more per request); Linux 6.10+ has them")


def _python_check() -> Check:
    """CPython interpreters running now, and whether the tracers can walk their frames (the stack
    tracer in samples, lock and alloc in their stacks)."""
    from uetrace.capture.procfs import live_pids
    from uetrace.capture.snapshot.python_runtime import OFFSETS, find_runtime

    seen: dict[tuple[str, str, bool], int] = {}
    for pid in live_pids():
        rt = find_runtime(pid)
        if rt is not None:
            key = (rt.version, rt.path, rt.offsets is not None)
            seen[key] = seen.get(key, 0) + 1
    # 3.13 describes itself (_Py_DebugOffsets): no table entry, checked per process.
    known = ", ".join(f"{a}.{b}" for a, b in sorted({*OFFSETS, (3, 13)}))
    detail = "; ".join(f"{v} {path}: {n} process{'es' if n > 1 else ''}, frames "
                       f"{'recorded' if ok else 'not recorded'}" for (v, path, ok), n in sorted(seen.items()))
    return Check("Python frames (stack)", all(ok for _v, _p, ok in seen),
                 detail or f"no CPython running (frames recorded for {known})", "",
                 f"frames are recorded for CPython {known}; others are sampled natively")

"""Which programs the sock and tls tracers load: on the kernel's socket tracepoints, or on every system
call where the kernel lacks those.

bpf/sock.bpf.c and bpf/tls.bpf.c attach to BTF tracepoints that fire only where socket data moves
(sock_send_length and sock_recv_length: Linux 6.3; tcp_sendmsg_locked, for a TCP send's start: 6.10;
inet_sock_set_state). Older kernels get bpf/sock_syscalls.bpf.c and bpf/tls_syscalls.bpf.c, the
earlier programs on the raw sys_enter/sys_exit tracepoints: the same records, ~1.3 us more kernel time
per request on nginx (they run on every system call of every process), and a receive's ts_enter is
its entry (the tracepoint programs have none: ts_enter = ts_exit). `--sock-hooks syscalls` asks for
them on any kernel (a blocking read's wait, at that cost).
"""

from __future__ import annotations

from functools import cache

from uetrace.bpf import object_path
from uetrace.errors import BadInputError

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"


@cache
def tracepoints_wanted() -> frozenset[str]:
    """The BTF tracepoints the sock and tls objects attach to (their tp_btf sections)."""
    from uetrace.capture.libbpf import BpfObject

    wanted: set[str] = set()
    for name in ("sock", "tls"):
        with BpfObject(object_path(name)) as obj:
            wanted |= {p.section.removeprefix("tp_btf/") for p in obj.programs() if p.section.startswith("tp_btf/")}
    return frozenset(wanted)


@cache
def missing_tracepoints(btf_path: str = VMLINUX_BTF) -> tuple[str, ...]:
    """Those of tracepoints_wanted() this kernel lacks. Raises OSError when its BTF cannot be read."""
    with open(btf_path, "rb") as fh:
        strings = fh.read()
    # Each BTF tracepoint has a `btf_trace_<name>` typedef, whose name is a NUL-terminated string.
    return tuple(sorted(tp for tp in tracepoints_wanted() if b"\0btf_trace_" + tp.encode() + b"\0" not in strings))


def use_syscall_hooks(choice: str) -> bool:
    """Whether the sock and tls tracers load their system-call objects, for --sock-hooks `choice`."""
    if choice == "syscalls":
        return True
    try:
        missing = missing_tracepoints()
    except OSError:
        missing = ("(kernel BTF unreadable)",)
    if choice == "tracepoints" and missing:
        raise BadInputError(f"--sock-hooks tracepoints: this kernel lacks {', '.join(missing)}")
    return bool(missing)


def object_name(tracer: str, choice: str) -> str:
    """bpf/<name>.bpf.o of the sock or tls tracer."""
    return f"{tracer}_syscalls" if use_syscall_hooks(choice) else tracer


def note(choice: str) -> str:
    """The manifest's word (tracers.sock.notes) on what the socket records' times mean."""
    if not use_syscall_hooks(choice):
        return ("socket data from the sock_send_length/sock_recv_length tracepoints: a receive's and a UDP "
                "send's ts_enter is its ts_exit (no hook marks their start); connections: TCP only")
    why = "asked for (--sock-hooks syscalls)" if choice == "syscalls" else \
        f"this kernel lacks {', '.join(missing_tracepoints())}"
    return (f"socket data from programs on every system call (raw sys_enter/sys_exit), {why}: ts_enter is the "
            "call's entry")

"""What the capture needs from the system before it can load anything:
capabilities, and tracefs mounted (libbpf resolves tracepoint ids there)."""

from __future__ import annotations

import os
import subprocess

from uetrace.errors import UetraceError

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39
TRACEFS_PATHS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class PermissionDenied(UetraceError):
    exit_code = 77  # sysexits EX_NOPERM


def effective_caps() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing_caps() -> list[str]:
    caps = effective_caps()
    if caps >> CAP_SYS_ADMIN & 1:
        return []
    need = {"CAP_BPF": CAP_BPF, "CAP_PERFMON": CAP_PERFMON}
    return [name for name, bit in need.items() if not caps >> bit & 1]


def require_tracing_privileges() -> None:
    missing = missing_caps()
    if missing:
        who = f"uid {os.geteuid()}" if os.geteuid() != 0 else "uid 0 without capabilities"
        raise PermissionDenied(f"not permitted: capture needs {', '.join(missing)} (running as {who}); "
                               "run with sudo or grant CAP_BPF,CAP_PERFMON")


def tracefs_path() -> str | None:
    for path in TRACEFS_PATHS:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    return None


def ensure_tracefs() -> str:
    """Mount tracefs at /sys/kernel/tracing if no tracefs is mounted (as perf does)."""
    path = tracefs_path()
    if path:
        return path
    res = subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS_PATHS[0]], capture_output=True, text=True)
    if res.returncode != 0 or not tracefs_path():
        raise UetraceError(f"mount tracefs at {TRACEFS_PATHS[0]}: {res.stderr.strip() or 'failed'}; "
                           "tracepoints need it (mount -t tracefs nodev /sys/kernel/tracing)")
    return TRACEFS_PATHS[0]

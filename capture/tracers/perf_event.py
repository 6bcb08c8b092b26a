"""perf_event_open(2) for software events, through libc's syscall().

Only PERF_TYPE_SOFTWARE / PERF_COUNT_SW_CPU_CLOCK is used: these machines have
no hardware PMU. Layout of struct perf_event_attr from
include/uapi/linux/perf_event.h (PERF_ATTR_SIZE_VER5 prefix is enough).
"""

from __future__ import annotations

import ctypes
import os

from uetrace.capture.libbpf import BpfError

SYS_PERF_EVENT_OPEN = 298  # x86_64
PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_FLAG_FD_CLOEXEC = 1 << 3
ATTR_FREQ = 1 << 10  # bit 10 of the flags word: sample_freq instead of sample_period


class PerfEventAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32), ("config", ctypes.c_uint64),
                ("sample_period_or_freq", ctypes.c_uint64), ("sample_type", ctypes.c_uint64),
                ("read_format", ctypes.c_uint64), ("flags", ctypes.c_uint64),
                ("wakeup_events", ctypes.c_uint32), ("bp_type", ctypes.c_uint32),
                ("config1", ctypes.c_uint64), ("config2", ctypes.c_uint64),
                ("branch_sample_type", ctypes.c_uint64), ("sample_regs_user", ctypes.c_uint64),
                ("sample_stack_user", ctypes.c_uint32), ("clockid", ctypes.c_int32),
                ("sample_regs_intr", ctypes.c_uint64), ("aux_watermark", ctypes.c_uint32),
                ("sample_max_stack", ctypes.c_uint16), ("reserved", ctypes.c_uint16)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def open_cpu_clock(cpu: int, freq: int, pid: int = -1) -> int:
    """A cpu-clock sampling event on one CPU at `freq` Hz; returns its fd."""
    attr = PerfEventAttr(type=PERF_TYPE_SOFTWARE, size=ctypes.sizeof(PerfEventAttr),
                         config=PERF_COUNT_SW_CPU_CLOCK, sample_period_or_freq=freq, flags=ATTR_FREQ)
    fd = _libc.syscall(SYS_PERF_EVENT_OPEN, ctypes.byref(attr), pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        raise BpfError(f"perf_event_open cpu-clock on cpu {cpu}", ctypes.get_errno())
    return fd


def online_cpus() -> list[int]:
    """CPUs listed in /sys/devices/system/cpu/online (e.g. "0-1,4")."""
    try:
        with open("/sys/devices/system/cpu/online") as fh:
            text = fh.read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus

"""The manifest: where a capture came from and what it holds."""

from __future__ import annotations

import os
import platform
import socket
import time

from uetrace import __version__
from uetrace.archive_format import FORMAT_VERSION


def clock_anchors() -> dict:
    """The same instant on each clock, so that CLOCK_MONOTONIC record timestamps map to wall time."""
    return {"monotonic_ns": time.clock_gettime_ns(time.CLOCK_MONOTONIC),
            "boottime_ns": time.clock_gettime_ns(time.CLOCK_BOOTTIME),
            "realtime_ns": time.clock_gettime_ns(time.CLOCK_REALTIME)}


def host_info() -> dict:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot_id = fh.read().strip()
    except OSError:
        boot_id = ""
    return {"hostname": socket.gethostname(), "kernel": platform.release(), "arch": platform.machine(),
            "cpus": os.cpu_count(), "boot_id": boot_id}


def base_manifest(options: dict, command_line: list[str]) -> dict:
    return {"format_version": FORMAT_VERSION, "tool": "uetrace", "tool_version": __version__,
            "complete": False, "host": host_info(), "command_line": command_line, "options": options,
            "clock": {"start": clock_anchors()}, "tracers": {}, "segments": [], "redaction": None}

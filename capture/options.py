"""What the user asked `trace capture` to do, and the one place each option's
default and limits are defined (the CLI's click options take theirs from here)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from uetrace.redaction.policy import RedactionPolicy


@dataclass(frozen=True)
class Bounds:
    """Default and inclusive limits of a numeric option (max None: unbounded)."""

    default: int
    min: int
    max: int | None = None

    def clamp(self, value: int) -> int:
        value = max(self.min, int(value))
        return value if self.max is None else min(self.max, value)


# SOCK_MAX_SNAPLEN in bpf/sock.h, NET_MAX_SNAPLEN in bpf/net.h (both 4096): the BPF side copies at most this.
SNAPLEN = Bounds(default=512, min=0, max=4096)        # --snaplen: payload bytes per socket/TLS call
NET_SNAPLEN = Bounds(default=128, min=0, max=4096)    # --net-snaplen: bytes per packet, headers included
RING_MIB = Bounds(default=8, min=1, max=1024)          # --ring-size, MiB per tracer ring (a power of two)
# 99 Hz: not a divisor of common timer periods, so sampling does not lock step with them.
FREQ = Bounds(default=99, min=1, max=10000)            # --freq, Hz per CPU
ALLOC_SAMPLE = Bounds(default=1, min=1)                # --alloc-sample N: keep 1 heap block in N
SEGMENT_BYTES = 64 << 20   # roll a Parquet segment at this size...
SEGMENT_SECONDS = 5.0      # ...or this age (--segment-seconds)
STACK_ENTRIES = 16384    # stack map slots, x 1016 bytes each, preallocated by the kernel
MIN_OFFCPU_US = 1.0                                    # shorter off-CPU intervals are not recorded
XDP_MODES = ("generic", "native")
TC_ATTACH_MODES = ("auto", "tcx", "clsact")


@dataclass
class NetOptions:
    ifaces: list[str] = field(default_factory=list)   # --iface; empty: every interface that is up
    xdp_mode: str = XDP_MODES[0]
    snaplen: int = NET_SNAPLEN.default
    tc_attach: str = TC_ATTACH_MODES[0]


@dataclass
class StackOptions:
    freq: int = FREQ.default
    offcpu: bool = False
    min_offcpu_us: float = MIN_OFFCPU_US
    stack_entries: int = STACK_ENTRIES


@dataclass
class UprobeOptions:
    """lock and alloc tracers."""

    all_processes: bool = False      # probe every process, not only --pid/--comm
    alloc_sample: int = ALLOC_SAMPLE.default


# --sock-hooks: what the sock and tls tracers' programs sit on (capture/socket_hooks.py)
SOCK_HOOKS = ("auto", "tracepoints", "syscalls")


@dataclass
class CaptureOptions:
    output: Path
    duration: float | None = None          # seconds; None: until Ctrl-C / SIGTERM / SIGHUP
    tracers: list[str] = field(default_factory=list)  # empty: the default set
    pids: list[int] = field(default_factory=list)     # --pid, repeatable (kernel-side filter)
    comms: list[str] = field(default_factory=list)    # --comm (kernel-side filter, first one)
    snaplen: int = SNAPLEN.default
    sock_hooks: str = "auto"                # --sock-hooks: see capture/socket_hooks.py
    ring_size: int = RING_MIB.default << 20  # bytes per tracer ring: mapped twice, so twice that of RSS
    segment_bytes: int = SEGMENT_BYTES
    segment_seconds: float = SEGMENT_SECONDS
    poll_interval: float = 0.01             # ring drain period (programs use BPF_RB_NO_WAKEUP)
    progress: bool = True
    command_line: list[str] = field(default_factory=list)
    force: bool = False                     # --force: replace an existing output
    mode: int = 0o600                       # --mode of the archive
    spool_dir: Path | None = None           # --spool-dir; None: beside the output
    max_size: int | None = None             # --max-size: stop recording when the archive nears it
    rotate: int | None = None               # --rotate: roll into numbered parts of about this size
    keep: int | None = None                 # --keep: with --rotate, keep only the newest N parts
    encrypt_to: list[str] = field(default_factory=list)  # --encrypt-to: age recipients (age1...)
    user: str | None = None                 # --user: who writes the archive (default: SUDO_UID)
    net: NetOptions = field(default_factory=NetOptions)
    stack: StackOptions = field(default_factory=StackOptions)
    uprobe: UprobeOptions = field(default_factory=UprobeOptions)
    # --no-redact: None; otherwise what to mask before anything is written (uetrace/redaction/).
    redaction: RedactionPolicy | None = field(default_factory=RedactionPolicy)
    # Key that hides kernel socket addresses in sock_id; one per capture so that the sock and tls
    # tracers give one socket the same id. Never written to the manifest.
    sock_id_key: int = field(default_factory=lambda: int.from_bytes(os.urandom(8), "little") >> 1)

    def to_manifest(self) -> dict:
        # Flat keys, as archives have always had them: analyze reads options.net_snaplen, alloc_sample...
        return {"duration": self.duration, "tracers": self.tracers, "pids": self.pids, "comms": self.comms,
                "snaplen": self.snaplen, "sock_hooks": self.sock_hooks, "ring_size": self.ring_size,
                "segment_bytes": self.segment_bytes,
                "segment_seconds": self.segment_seconds, "max_size": self.max_size,
                "alloc_sample": self.uprobe.alloc_sample, "all_processes": self.uprobe.all_processes,
                "net_ifaces": list(self.net.ifaces), "net_xdp_mode": self.net.xdp_mode,
                "net_snaplen": self.net.snaplen, "net_tc_attach": self.net.tc_attach,
                "freq": self.stack.freq, "offcpu": self.stack.offcpu, "redact": self.redaction is not None,
                **({"rotate": self.rotate, "keep": self.keep} if self.rotate is not None else {})}

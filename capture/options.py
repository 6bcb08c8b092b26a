"""What the user asked `trace capture` to do."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class CaptureOptions:
    output: Path
    duration: float | None = None          # seconds; None: until Ctrl-C / SIGTERM
    tracers: list[str] = field(default_factory=list)  # empty: the default set
    pids: list[int] = field(default_factory=list)     # --pid, repeatable (kernel-side filter)
    comms: list[str] = field(default_factory=list)    # --comm (kernel-side filter, first one)
    snaplen: int = 512
    ring_size: int = 8 << 20                # bytes per tracer ring: mapped twice, so 16 MiB of RSS each
    segment_bytes: int = 64 << 20           # roll a segment at this many bytes...
    segment_seconds: float = 5.0            # ...or this age
    poll_interval: float = 0.01             # ring drain period (programs use BPF_RB_NO_WAKEUP)
    progress: bool = True
    command_line: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # tracer-specific options (freq, iface, ...)
    # Key that hides kernel socket addresses in sock_id; one per capture so that the sock and tls
    # tracers give one socket the same id. Never written to the manifest.
    sock_id_key: int = field(default_factory=lambda: int.from_bytes(os.urandom(8), "little") >> 1)

    def to_manifest(self) -> dict:
        return {"duration": self.duration, "tracers": self.tracers, "pids": self.pids, "comms": self.comms,
                "snaplen": self.snaplen, "ring_size": self.ring_size, "segment_bytes": self.segment_bytes,
                "segment_seconds": self.segment_seconds, **self.extra}

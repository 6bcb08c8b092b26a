"""speedscope's file format (https://www.speedscope.app/file-format-schema.json,
defined in speedscope's src/lib/file-format-spec.ts).

One "sampled" profile per process, heaviest first: each distinct stack is one
sample (root-first indices into shared.frames) with its weight, in samples for
on-CPU profiles (unit "none") or nanoseconds for off-CPU ones. The comm frame
at the root is kept, so threads of one process stay apart.
"""

from __future__ import annotations

from uetrace.analyze.stacks.folded import frame_name
from uetrace.analyze.stacks.samples import StackSet

SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"


def to_speedscope(stacks: StackSet, name: str = "uetrace profile") -> dict:
    frames = []
    for f in stacks.frames:
        entry: dict = {"name": frame_name(f)}
        if f.file:
            entry["file"] = f.file
        frames.append(entry)
    by_pid: dict[int, list[int]] = {}
    for i, pid in enumerate(stacks.pids):
        by_pid.setdefault(pid, []).append(i)
    unit = "none" if stacks.unit == "samples" else "nanoseconds"
    profiles = []
    for pid, idx in sorted(by_pid.items(), key=lambda kv: (-sum(stacks.weights[i] for i in kv[1]), kv[0])):
        weights = [stacks.weights[i] for i in idx]
        comm = stacks.comms[idx[0]]
        profiles.append({"type": "sampled", "name": f"{comm} (pid {pid})", "unit": unit,
                         "startValue": 0, "endValue": sum(weights),
                         "samples": [list(stacks.stacks[i]) for i in idx], "weights": weights})
    return {"$schema": SCHEMA_URL, "shared": {"frames": frames}, "profiles": profiles, "name": name,
            "activeProfileIndex": 0, "exporter": "uetrace"}

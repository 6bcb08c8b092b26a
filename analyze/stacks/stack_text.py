"""User stacks of the uprobe tracers (lock, alloc) as readable frames.

A record's ustack_id points into its tracer's rows of the `stacks` table
(capture/tracers/stack_maps.py); frames are named offline by analyze/stacks/symbolize.py.
Whether the first frame is an exact instruction or a return address depends on
where the stack was taken: at a function's entry (lock: the probed function's
first instruction) or at its return (alloc: the caller's return address, which
is looked up at addr - 1 like every other caller frame).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pyarrow as pa

from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.stacks.symbolize import FRAME_SCHEMA, Symbolizer


class StackNamer:
    def __init__(self, cap: ArchiveDb, tracer: str, first_frame_exact: bool = True):
        self.cap, self.tracer, self.first_exact = cap, tracer, first_frame_exact
        self.ok = cap.has("stacks")
        self._cache: dict[tuple[int, int, int], list[str]] = {}
        self._symbolizer = Symbolizer(cap) if self.ok else None

    def frames(self, pid: int, stack_id: int, caller: int = 0) -> list[str]:
        """Innermost first: "function+0xoff (module) file:line"; [] when the stack was not recorded.
        `caller`: the return address read at a function's entry (lock records), put back as
        the second frame when the kernel's walk skipped it."""
        self.load([(pid, stack_id, caller)])
        return self._cache.get((pid, stack_id, caller), [])

    def load(self, sites: Iterable[tuple[int, int, int]]) -> None:
        """Resolve many (pid, stack id, caller) sites in one symbolizer pass."""
        todo = sorted({(int(p), int(s), int(c)) for p, s, c in sites
                       if s >= 0 and (p, s, c) not in self._cache})
        if not todo or not self.ok:
            return
        ids = sorted({s for _, s, _ in todo})
        rows = self.cap.query(f"""SELECT stack_id, frames FROM stacks WHERE tracer = ?
                                   AND stack_id IN ({",".join(map(str, ids))})""", [self.tracer])
        by_id = {int(sid): [int(a) for a in frames] for sid, frames in rows}
        frames_in, slots = [], []
        for pid, sid, caller in todo:
            addrs = by_id.get(sid, [])
            if caller and addrs and (len(addrs) < 2 or addrs[1] != caller):
                addrs = [addrs[0], caller, *addrs[1:]]
            slots.append(((pid, sid, caller), len(addrs)))
            for depth, addr in enumerate(addrs):
                frames_in.append({"id": len(frames_in), "pid": pid, "addr": addr, "ts": 0,
                                  "leaf": depth == 0 and self.first_exact, "kernel": False})
        names: list[str] = []
        if frames_in:
            resolved = self._symbolizer.resolve(pa.Table.from_pylist(frames_in, schema=FRAME_SCHEMA))
            named = {r["id"]: _text(r) for r in resolved.to_pylist()}
            names = [named[i] for i in range(len(frames_in))]
        pos = 0
        for key, n in slots:
            self._cache[key] = names[pos: pos + n]
            pos += n


def _text(r: dict) -> str:
    where = f" {os.path.basename(r['file'])}:{r['line']}" if r["line"] else ""
    if r["resolved"]:
        return f"{r['function']}+{r['offset']:#x} ({r['module']}){where}"
    return f"{r['function']}{where}"

"""User stacks of the uprobe tracers (lock, alloc) as readable frames.

A record's ustack_id points into its tracer's rows of the `stacks` table
(capture/tracers/stack_maps.py); frames are named offline by analyze/stacks/symbolize.py.
Whether the first frame is an exact instruction or a return address depends on
where the stack was taken: at a function's entry (lock: the probed function's
first instruction) or at its return (alloc: the caller's return address, which
is looked up at addr - 1 like every other caller frame).

A record of a CPython process also names its Python stack (`pystack_id`, rows of
`py_stacks` of the same tracer): its frames replace the `_PyEval_EvalFrameDefault`
frames that ran them, as in CPU samples (analyze/stacks/python_frames.py: merge), and
read "qualname (file.py:line) [py]".
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa

from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.stacks import python_frames
from uetrace.analyze.stacks.samples import ROOT_FUNCTIONS
from uetrace.analyze.stacks.symbolize import FRAME_SCHEMA, Symbolizer

PYTHON_MARK = " [py]"


@dataclass(frozen=True)
class _Native:
    name: str   # function, what merge() pairs eval frames by
    text: str


class StackNamer:
    def __init__(self, cap: ArchiveDb, tracer: str, first_frame_exact: bool = True):
        self.cap, self.tracer, self.first_exact = cap, tracer, first_frame_exact
        self.ok = cap.has("stacks")
        self._cache: dict[tuple[int, int, int], list[_Native]] = {}
        self._merged: dict[tuple[int, int, int, int], list[str]] = {}
        self._symbolizer = Symbolizer(cap) if self.ok else None

    def frames(self, pid: int, stack_id: int, caller: int = 0, pystack_id: int = -1) -> list[str]:
        """Innermost first: "function+0xoff (module) file:line"; [] when the stack was not recorded.
        `caller`: the return address read at a function's entry (lock records), put back as
        the second frame when the kernel's walk skipped it. `pystack_id` >= 0: the Python
        frames the record's thread was running, merged in."""
        key = (int(pid), int(stack_id), int(caller), int(pystack_id))
        if key not in self._merged:
            self.load([key])
        return self._merged.get(key, [])

    def load(self, sites: Iterable[tuple[int, ...]]) -> None:
        """Resolve many (pid, stack id, caller[, pystack_id]) sites in one symbolizer pass."""
        keys = {(int(k[0]), int(k[1]), int(k[2]), int(k[3]) if len(k) > 3 else -1) for k in sites}
        keys -= set(self._merged)
        if not keys:
            return
        self._native({k[:3] for k in keys})
        py = python_frames.PyFrames(self.cap, {(k[0], k[3]) for k in keys if k[3] >= 0}, self.tracer)
        for key in keys:
            native = self._cache.get(key[:3], [])
            groups = py.groups.get((key[0], key[3]))
            if not groups:
                self._merged[key] = [f.text for f in native]
                continue
            root_first = native[::-1]
            truncated = not any(f.name in ROOT_FUNCTIONS for f in native)
            merged = python_frames.merge(root_first, groups, truncated, _python) if native else \
                [f for g in groups for f in _python(g)]
            self._merged[key] = [f.text for f in reversed(merged)]

    def _native(self, sites: set[tuple[int, int, int]]) -> None:
        todo = sorted((p, s, c) for p, s, c in sites if s >= 0 and (p, s, c) not in self._cache)
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
        names: list[_Native] = []
        if frames_in:
            resolved = self._symbolizer.resolve(pa.Table.from_pylist(frames_in, schema=FRAME_SCHEMA))
            named = {r["id"]: _Native(r["function"] or "", _text(r)) for r in resolved.to_pylist()}
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


def _python(group: list[tuple[str, str, int | None]]) -> list[_Native]:
    return [_Native(q, python_frames.frame_label(q, f, line) + PYTHON_MARK) for q, f, line in group]

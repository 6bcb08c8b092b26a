"""Python frames of the uprobe tracers' records (lock, alloc): each record carries in
`pystack` the key of its thread's Python stack in the object's `py_stackmap`
(bpf/pystackmap.bpf.h), 0 when it has none. postprocess() reads every key it has not
seen from the map (one lookup each, on the writer thread, as soon as a record shows it)
and interns the frames into `py_stacks` through PythonFrames, which reads the code
objects they name while the process lives; the records get `pystack_id` (-1: none),
the column stack samples have.

Processes are handed to the walk (`py_procs`) when the tracer attaches to them: uprobe
tracers know their targets, no sample has to show them first.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from uetrace.capture.btf import Btf
from uetrace.capture.libbpf import BpfObject
from uetrace.capture.tracers.python_frames import PythonFrames

STACK_MAP = "py_stackmap"
KEY_COLUMN, ID_COLUMN = "pystack", "pystack_id"


class PyStackMap:
    """Per uprobe tracer: its py_procs and py_stackmap, and the Python tables they give."""

    def __init__(self, obj: BpfObject | None, object_file: str | None, tracer: str):
        btf = Btf.from_object(object_file) if object_file else None
        self.obj = obj
        self.frames = PythonFrames(obj, btf.struct("ue_py_proc") if btf else None,
                                   btf.struct("ue_py_frame") if btf else None, tracer=tracer)
        layout = btf.struct("ue_py_stack") if btf else None
        self._fields = {f.name: f for f in layout.fields} if layout else {}
        self._size = layout.size if layout else 0
        self._ids: dict[int, int] = {0: -1}   # key of py_stackmap -> pystack_id

    def target(self, pid: int) -> None:
        """A process the tracer attaches to: its frames are walked from its first record."""
        self.frames.preload([pid])
        self.frames.announce(pid)

    def postprocess(self, table: pa.Table) -> pa.Table:
        """`pystack` (map keys) -> `pystack_id`."""
        if KEY_COLUMN not in table.column_names:
            return table
        keys = table.column(KEY_COLUMN).to_numpy(zero_copy_only=False).astype(np.uint64)
        uniq, inverse = np.unique(keys, return_inverse=True)
        ids = np.array([self._id(int(k)) for k in uniq.tolist()], dtype=np.int32)
        table = table.drop_columns([KEY_COLUMN])
        return table.append_column(ID_COLUMN, pa.array(ids[inverse] if len(keys) else ids[:0], pa.int32()))

    def _id(self, key: int) -> int:
        sid = self._ids.get(key)
        if sid is None:
            sid = self._ids[key] = self._read(key)
        return sid

    def _read(self, key: int) -> int:
        if self.obj is None or not self._fields:
            return -1
        raw = self.obj.map(STACK_MAP).lookup(key.to_bytes(8, "little"), self._size)
        if raw is None:
            return -1   # the map was full when the stack came (counted as a drop)
        pid, n, frames = (self._fields[name] for name in ("pid", "n", "frames"))
        count = int.from_bytes(raw[n.offset:n.offset + n.size], "little")
        item = self.frames.frame.itemsize
        if not 0 < count <= frames.count:
            return -1
        return self.frames.intern(int.from_bytes(raw[pid.offset:pid.offset + pid.size], "little"),
                                  raw[frames.offset:frames.offset + count * item])

    def write(self, write_table) -> None:
        for kind, t in self.frames.take_tables().items():
            write_table(kind, t)

    def finish(self, write_table, stats: dict, notes: list[str]) -> None:
        self.frames.sweep()
        self.write(write_table)
        stats.update(self.frames.stats)
        stats["py_stacks"] = len(self._ids) - 1
        notes.extend(self.frames.notes())

"""Stack maps (bpf/stackmap.bpf.h), shared by every tracer that records stack ids.

Records carry only stack ids; the frames live in the tracer's BPF_MAP_TYPE_STACK_TRACE
map `stacks`, which is read once at the end of the capture (the programs are
detached by then, so it no longer changes) into the `stacks` table:

    tracer    which tracer's map the id belongs to (ids are per map)
    stack_id  the id stored in kstack_id / ustack_id of that tracer's records
    frames    instruction addresses, innermost first (leaf, then its callers)

A stack that fills every slot of the map value was cut at the kernel's maximum
depth; those are counted (`truncated_at_max_depth`) and land in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from uetrace.capture.libbpf import BpfObject

STACK_MAP = "stacks"

STACKS_SCHEMA = pa.schema([
    pa.field("tracer", pa.string()),
    pa.field("stack_id", pa.int32()),
    pa.field("frames", pa.list_(pa.uint64())),
])


@dataclass
class StackDump:
    table: pa.Table
    max_depth: int                 # frames per map value (kernel.perf_event_max_stack)
    truncated_at_max_depth: int    # stacks that used every slot

    def stats(self) -> dict:
        return {"stacks": self.table.num_rows, "stack_max_depth": self.max_depth,
                "stacks_truncated_at_max_depth": self.truncated_at_max_depth}


# Ids that StackInterner gives, above any key of a stack map (maps hold far fewer slots),
# so that one tracer's map ids and interned ids share its rows of `stacks` without clashing.
INTERNED_ID_BASE = 1 << 24


class StackInterner:
    """Stacks that records carry themselves (the stack tracer's samples), turned into
    ids of the `stacks` table: one id per distinct stack, rows written once."""

    def __init__(self, depth: int):
        self.depth = depth
        self._ids: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def intern(self, frames: bytes) -> int:
        sid = self._ids.get(frames)
        if sid is None:
            sid = self._ids[frames] = INTERNED_ID_BASE + len(self._ids)
        return sid

    def dump(self, tracer: str) -> StackDump:
        stacks = list(self._ids)
        lengths = np.fromiter((len(f) // 8 for f in stacks), dtype=np.int32, count=len(stacks))
        offsets = np.zeros(len(stacks) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.frombuffer(b"".join(stacks), dtype="<u8")
        table = pa.Table.from_arrays([
            pa.array([tracer] * len(stacks), pa.string()),
            pa.array(list(self._ids.values()), pa.int32()),
            pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint64())),
        ], schema=STACKS_SCHEMA)
        return StackDump(table, self.depth, int((lengths == self.depth).sum()))


def unwritten(table: pa.Table, written: set[int]) -> pa.Table:
    """The rows of a stacks table whose ids were not written yet (a rotated capture writes its stacks at
    the end of each part; ids are stable: the map has no BPF_F_REUSE_STACKID, interned ids only grow).
    Their ids join `written`."""
    ids = table.column("stack_id").to_pylist()
    keep = [i not in written for i in ids]
    written.update(ids)
    return table if all(keep) else table.filter(pa.array(keep, pa.bool_()))


def size_stack_map(obj: BpfObject, entries: int) -> None:
    """Set the number of stack slots before load (a power of two is what the kernel uses)."""
    obj.map(STACK_MAP).set_max_entries(max(1, int(entries)))


def dump_stacks(obj: BpfObject, tracer: str) -> StackDump:
    """Every stack in the tracer's map, as one Arrow table."""
    m = obj.map(STACK_MAP)
    value_size = m.value_size
    depth = value_size // 8
    ids: list[int] = []
    values: list[bytes] = []
    for key in m.keys():
        raw = m.lookup(key, value_size)
        if raw is not None:
            ids.append(int.from_bytes(key, "little", signed=True))
            values.append(raw)
    if not ids:
        return StackDump(STACKS_SCHEMA.empty_table(), depth, 0)
    frames = np.frombuffer(b"".join(values), dtype="<u8").reshape(len(ids), depth)
    # The kernel zero-fills the slots after the last frame.
    nonzero = frames != 0
    lengths = np.where(nonzero.all(axis=1), depth, np.argmin(nonzero, axis=1)).astype(np.int32)
    offsets = np.zeros(len(ids) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = frames[np.arange(depth)[None, :] < lengths[:, None]]
    table = pa.Table.from_arrays([
        pa.array([tracer] * len(ids), pa.string()),
        pa.array(ids, pa.int32()),
        pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.uint64())),
    ], schema=STACKS_SCHEMA)
    return StackDump(table, depth, int((lengths == depth).sum()))

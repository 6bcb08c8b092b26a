"""Names for data addresses of a recorded process: the global or static
variable an address falls in (`lock_a`, `table+0x40`), or the heap block the
alloc tracer saw being allocated around it.

A variable's address is its ELF vaddr plus the load bias of its object; the
bias comes from any snapshotted mapping of the object (mappings, keyed by
build id) and the object's PT_LOAD segments (elf_segments): a mapping at file
offset o of a segment (offset, vaddr) starts at bias + vaddr + (o - offset).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from uetrace.analyze.archive_db import ArchiveDb

TABLES = ("mappings", "elf_segments", "elf_data_symbols")


@dataclass
class DataName:
    text: str                  # "lock_a (lock_scenarios)", "heap block +0x10 (64 B)" or "0x5581..."
    symbol: str | None = None  # the variable, when static
    module: str | None = None
    alloc_stack_id: int | None = None  # heap: ustack_id of the allocation (alloc tracer's stacks)
    alloc_ts: int | None = None


class DataNamer:
    """Names addresses of one capture; per-process lookups are cached."""

    def __init__(self, cap: ArchiveDb):
        self.cap = cap
        self.static_ok = all(cap.has(t) for t in TABLES)
        self.heap_ok = cap.has("alloc")
        self._biases: dict[int, list[tuple[str, str, int]]] = {}

    def name(self, pid: int, addr: int, before_ts: int | None = None) -> DataName:
        if self.static_ok:
            found = self._static(pid, addr)
            if found:
                return found
        if self.heap_ok:
            found = self._heap(pid, addr, before_ts)
            if found:
                return found
        return DataName(f"{addr:#x}")

    def _objects(self, pid: int) -> list[tuple[str, str, int]]:
        """(build_id, path, load bias) of every object the process mapped."""
        if pid not in self._biases:
            rows = self.cap.query("""
                SELECT DISTINCT m.build_id, m.path,
                       CAST(m.start AS HUGEINT) - (s.vaddr + (m.file_offset - s."offset")) AS bias
                FROM mappings m JOIN elf_segments s ON s.build_id = m.build_id
                     AND m.file_offset >= s."offset" AND m.file_offset < s."offset" + s.size
                WHERE m.pid = ? AND m.build_id <> ''""", [pid])
            self._biases[pid] = [(r[0], r[1], int(r[2])) for r in rows]
        return self._biases[pid]

    def _static(self, pid: int, addr: int) -> DataName | None:
        for bid, path, bias in self._objects(pid):
            vaddr = addr - bias
            if vaddr < 0:
                continue
            rows = self.cap.query("""
                SELECT name, addr FROM elf_data_symbols
                WHERE build_id = ? AND addr <= ? AND ? < addr + size ORDER BY size LIMIT 1""",
                                  [bid, vaddr, vaddr])
            if rows:
                name, sym_addr = rows[0]
                off = vaddr - int(sym_addr)
                symbol = name + (f"+{off:#x}" if off else "")
                module = os.path.basename(path)
                return DataName(f"{symbol} ({module})", symbol=symbol, module=module)
        return None

    def _heap(self, pid: int, addr: int, before_ts: int | None) -> DataName | None:
        """The last block allocated around addr before its first use."""
        op_alloc = self.cap.enums.value("alloc", "ue_alloc_op", "ALLOC_OP_ALLOC")
        rows = self.cap.query("""
            SELECT addr, size, ustack_id, ts FROM alloc
            WHERE pid = ? AND op = ? AND addr <= ? AND ? < addr + greatest(size, 1) AND ts <= ?
            ORDER BY ts DESC LIMIT 1""", [pid, op_alloc, addr, addr, before_ts if before_ts is not None else 2**63 - 1])
        if not rows:
            return None
        base, size, stack, ts = rows[0]
        off = addr - int(base)
        where = f"{addr:#x} (" + (f"+{off:#x} in " if off else "") + f"a {int(size)} B heap block)"
        return DataName(where, alloc_stack_id=int(stack), alloc_ts=int(ts))

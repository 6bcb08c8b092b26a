"""Symbol snapshot: what is needed to name every frame offline, stored in the archive.

Objects are keyed by ELF build id and extracted once per capture, however many
processes map them. Which objects: every executable file mapping of every
process that appears in a stack-carrying record or is a uprobe target (tracers
call saw() from observe() and at attach, and write() from finish()). Tables, under symbols/:

    mappings      extra rows for sampled processes, read when a sampled pid (or a
                  new comm of it, i.e. an exec) is first seen and again at the end,
                  so that libraries loaded after the first snapshot are covered
    elf_objects   build_id, path, debug_file, symbol_source (.symtab/.dynsym/none),
                  symbols, lines, note (why something is missing)
    elf_segments  build_id, offset, vaddr, size: PT_LOAD segments, to turn a
                  file offset (from a mapping) into the address symbols use
    elf_symbols   build_id, name, addr, size, bind: functions, from .symtab (of the
                  debug file when there is one) else .dynsym
    elf_lines     build_id, addr, file, line: DWARF line table (line 0: no line)
    kallsyms      addr, name, module, type: kernel text symbols

A pid's mappings and their build ids are read when it is first handed to saw(),
while it is alive (a target that exits early is named from this first read);
objects are extracted from their files at write(). One object's extraction:
capture/snapshot/elf_objects.py; debug files: debug_files.py; line tables:
dwarf_lines.py; kernel symbols: kallsyms.py.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

import pyarrow as pa

from uetrace.capture.elf import build_id
from uetrace.capture.procfs import read_maps, root_path
from uetrace.capture.snapshot.dwarf_lines import LINE_BUDGET_S, LINE_SCHEMA, LineBudget, line_table_size
from uetrace.capture.snapshot.elf_objects import OBJECT_SCHEMA, SEGMENT_SCHEMA, SYMBOL_SCHEMA, extract_object
from uetrace.capture.snapshot.kallsyms import read_kallsyms
from uetrace.capture.snapshot.processes import MAPPING_SCHEMA


class SymbolSnapshot:
    """Objects mapped by processes seen in stacks; extracted at write().

    One instance per capture (made by the session and handed to every tracer),
    so that an object two tracers saw is stored once. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._comm: dict[int, str] = {}               # pid -> comm when its mappings were last read
        self._objects: dict[str, list[str]] = {}      # build_id -> paths to try, best first
        self._mappings: list[dict] = []               # rows not yet written
        self._maps_read: dict[int, frozenset] = {}     # pid -> the mappings last read
        self._written: set[str] = set()               # build ids already extracted
        self._kallsyms_written = False
        self.stats = {"objects": 0, "objects_without_symbols": 0, "objects_with_lines": 0}

    def saw(self, pids: Sequence[int], comms: Sequence[str] | None = None) -> None:
        """Pids (and their thread comms) from decoded records; a pid is read again
        when it shows a comm not seen before (an exec changes the comm)."""
        pairs = {(int(p), "" if comms is None else str(c)) for p, c in
                 zip(pids, comms if comms is not None else [None] * len(pids))}
        for pid, comm in pairs:
            with self._lock:
                if pid == 0 or self._comm.get(pid) in (comm, "*"):
                    continue
                self._comm[pid] = comm if pid not in self._comm else "*"  # twice is enough
            self._read(pid)

    def _read(self, pid: int, only_changed: bool = False) -> None:
        """/proc/<pid>/maps and the build ids of the mapped files, at once: a short-lived
        process may be gone soon. Build ids are cached per file, so only new files cost
        an ELF read (this runs on the segment writer thread). only_changed: no rows if the
        mappings are those read last time (a --rotate part re-reads every sampled process)."""
        ts = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        rows = []
        for r in read_maps(pid):
            bid, path = _mapped_build_id(r)
            rows.append({"ts": ts, **r, "build_id": bid})
            if bid:
                with self._lock:
                    self._objects.setdefault(bid, [path, r["path"]])
        key = frozenset((r["start"], r["end"], r["file_offset"], r["path"], r["inode"]) for r in rows)
        with self._lock:
            if only_changed and self._maps_read.get(pid) == key:
                return
            self._maps_read[pid] = key
            self._mappings.extend(rows)

    def write(self, write_table, only_changed: bool = False) -> None:
        """Re-read live processes' mappings, then write mappings, objects and kallsyms.
        only_changed (the end of a --rotate part): re-read mappings only where they changed."""
        for pid in list(self._comm):
            if os.path.exists(f"/proc/{pid}"):
                self._read(pid, only_changed)
        with self._lock:
            mappings, self._mappings = self._mappings, []
            todo = {b: p for b, p in self._objects.items() if b not in self._written}
            self._written.update(todo)
        if mappings:
            write_table("mappings", pa.Table.from_pylist(mappings, schema=MAPPING_SCHEMA))
        budget = LineBudget(LINE_BUDGET_S)
        objects, segments, symbols, lines = [], [], [], []
        for bid, paths in sorted(todo.items(), key=lambda kv: line_table_size(kv[1])):
            obj = extract_object(paths, bid, budget)
            objects.append(obj.pop("object"))
            segments.append(obj["segments"])
            symbols.append(obj["symbols"])
            lines.append(obj["lines"])
        for kind, tables, schema in (("elf_objects", [pa.Table.from_pylist(objects, schema=OBJECT_SCHEMA)],
                                      OBJECT_SCHEMA), ("elf_segments", segments, SEGMENT_SCHEMA),
                                     ("elf_symbols", symbols, SYMBOL_SCHEMA), ("elf_lines", lines, LINE_SCHEMA)):
            table = pa.concat_tables(tables) if tables else schema.empty_table()
            if table.num_rows:
                write_table(kind, table)
        self.stats["objects"] += len(objects)
        self.stats["objects_without_symbols"] += sum(1 for o in objects if not o["symbols"])
        self.stats["objects_with_lines"] += sum(1 for o in objects if o["lines"])
        if not self._kallsyms_written:
            self._kallsyms_written = True
            table = read_kallsyms()
            self.stats["kallsyms"] = table.num_rows
            if table.num_rows:
                write_table("kallsyms", table)


def _mapped_build_id(row: dict) -> tuple[str, str]:
    """Build id of a mapped file and the path it was read from: through the process's
    root while it lives, else the host path if it is still the same file (same inode)."""
    own = root_path(row["pid"], row["path"])
    bid = build_id(own)
    if bid:
        return bid, own
    try:
        same = os.stat(row["path"]).st_ino == row["inode"]
    except OSError:
        same = False
    return (build_id(row["path"]), row["path"]) if same else ("", row["path"])



"""Data symbols (STT_OBJECT: globals and statics such as a `pthread_mutex_t
lock_a` in .bss) of the objects the lock tracer's targets map, so that the
deadlock analyzer can name a static mutex offline. Table `elf_data_symbols`
under symbols/: build_id, name, addr (the symbol's ELF vaddr), size.

Read when a target is attached, while it is alive: a target that exits before
the capture ends has no /proc/<pid>/maps left to read at the end (its mutexes
were then shown as bare addresses). Function symbols and the PT_LOAD segments
that turn a mapping into a load bias come from capture/snapshot/symbols.py
(elf_symbols, elf_segments); this adds only what it leaves out, keyed by
build id the same way.
"""

from __future__ import annotations

import threading

import pyarrow as pa
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from uetrace.capture.elf import SHN_UNDEF, STT_OBJECT, symbol_array, symbol_names
from uetrace.capture.procfs import open_regular
from uetrace.capture.snapshot.processes import read_mappings

DATA_SYMBOL_SCHEMA = pa.schema([("build_id", pa.string()), ("name", pa.string()), ("addr", pa.uint64()),
                                ("size", pa.uint64())])


class DataSymbols:
    """Data symbols of the objects mapped by the processes handed to add(), each
    build id read once. Thread-safe (the --comm watcher adds from its thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: set[str] = set()
        self._tables: list[pa.Table] = []

    def add(self, pid: int) -> None:
        """Read now: `pid` may exit at any time after this."""
        for m in read_mappings(pid):
            bid = m["build_id"]
            with self._lock:
                if not bid or bid in self._done:
                    continue
                self._done.add(bid)
            table = object_data_symbols(f"/proc/{pid}/root{m['path']}", bid)
            with self._lock:
                self._tables.append(table)

    def take(self) -> pa.Table:
        """The symbols read since the last take()."""
        with self._lock:
            tables, self._tables = self._tables, []
        return pa.concat_tables(tables) if tables else DATA_SYMBOL_SCHEMA.empty_table()


def object_data_symbols(path: str, bid: str) -> pa.Table:
    """Sized data symbols from .symtab (statics included), else .dynsym."""
    try:
        with open_regular(path) as fh:
            elf = ELFFile(fh)
            for name in (".symtab", ".dynsym"):
                found = symbol_array(elf, name)
                if found is None:
                    continue
                syms, strtab = found
                syms = syms[((syms["info"] & 0xF) == STT_OBJECT) & (syms["shndx"] != SHN_UNDEF) & (syms["size"] > 0)]
                if not len(syms):
                    continue
                names = symbol_names(strtab, syms["name"])
                return pa.Table.from_arrays([pa.array([bid] * len(names), pa.string()),
                                             pa.array(names, pa.string()), pa.array(syms["value"], pa.uint64()),
                                             pa.array(syms["size"], pa.uint64())], schema=DATA_SYMBOL_SCHEMA)
    except (OSError, ELFError, ValueError):
        pass
    return DATA_SYMBOL_SCHEMA.empty_table()

"""Data symbols (STT_OBJECT: globals and statics such as a `pthread_mutex_t
lock_a` in .bss) of the objects the lock tracer's targets map, so that the
deadlock analyzer can name a static mutex offline. Table `elf_data_symbols`
under symbols/: build_id, name, addr (the symbol's ELF vaddr), size.

Function symbols and the PT_LOAD segments that turn a mapping into a load bias
come from capture/snapshot/symbols.py (elf_symbols, elf_segments); this adds
only what it leaves out, keyed by build id the same way.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from uetrace.capture.snapshot.processes import read_mappings

DATA_SYMBOL_SCHEMA = pa.schema([("build_id", pa.string()), ("name", pa.string()), ("addr", pa.uint64()),
                                ("size", pa.uint64())])
# struct Elf64_Sym (elf.h)
_SYM = np.dtype([("name", "<u4"), ("info", "u1"), ("other", "u1"), ("shndx", "<u2"), ("value", "<u8"),
                 ("size", "<u8")])
_STT_OBJECT = 1


def data_symbols_of(pids, done: set[str]) -> pa.Table:
    """Data symbols of every object mapped by `pids` whose build id is not in
    `done` (which is updated)."""
    tables = []
    for pid in pids:
        for m in read_mappings(int(pid)):
            bid = m["build_id"]
            if not bid or bid in done:
                continue
            done.add(bid)
            tables.append(object_data_symbols(f"/proc/{pid}/root{m['path']}", bid))
    return pa.concat_tables(tables) if tables else DATA_SYMBOL_SCHEMA.empty_table()


def object_data_symbols(path: str, bid: str) -> pa.Table:
    """Sized data symbols from .symtab (statics included), else .dynsym."""
    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            if elf.elfclass != 64 or not elf.little_endian:
                return DATA_SYMBOL_SCHEMA.empty_table()
            for name in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(name)
                if sec is None:
                    continue
                syms = np.frombuffer(sec.data(), dtype=_SYM)
                syms = syms[((syms["info"] & 0xF) == _STT_OBJECT) & (syms["shndx"] != 0) & (syms["size"] > 0)]
                if not len(syms):
                    continue
                strtab = elf.get_section(sec["sh_link"]).data()
                names = [strtab[s: strtab.index(b"\0", s)].decode(errors="replace")
                         for s in syms["name"].tolist()]
                return pa.Table.from_arrays([pa.array([bid] * len(names), pa.string()),
                                             pa.array(names, pa.string()), pa.array(syms["value"], pa.uint64()),
                                             pa.array(syms["size"], pa.uint64())], schema=DATA_SYMBOL_SCHEMA)
    except (OSError, ELFError, ValueError):
        pass
    return DATA_SYMBOL_SCHEMA.empty_table()

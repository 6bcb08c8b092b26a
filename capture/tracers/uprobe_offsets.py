"""Where a function starts in an ELF file, as the file offset a uprobe takes.

libbpf 1.1 resolves function names itself, but refuses a name that has two
non-weak versioned definitions ("ambiguous match"), which is the case of
glibc's pthread_mutex_trylock and pthread_mutex_timedlock (@GLIBC_2.2.5 and
@@GLIBC_2.34, same address). So names are resolved here: the default version
of a symbol wins, and aliases at one address are one answer.
"""

from __future__ import annotations

import os

import numpy as np
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from uetrace.capture.elf import STT_FUNC, symbol_array
from uetrace.capture.procfs import open_regular
from uetrace.errors import UetraceError

_HIDDEN = 0x8000  # versym bit: a non-default version (name@VER, not name@@VER)
_cache: dict[tuple[int, int, int], dict[str, int]] = {}


def function_offsets(path: str) -> dict[str, int]:
    """Function name -> file offset of its first instruction, for every defined
    function symbol (dynamic symbols first, then the static table if present)."""
    try:
        with open_regular(path, follow_symlinks=True) as fh:   # never blocks: a FIFO is refused
            st = os.fstat(fh.fileno())
            key = (st.st_dev, st.st_ino, st.st_mtime_ns)
            if key not in _cache:
                _cache[key] = _read_offsets(ELFFile(fh))
            return _cache[key]
    except (OSError, ELFError) as e:
        raise UetraceError(f"read symbols of {path}: {e}") from e


def function_offset(path: str, name: str) -> int:
    offsets = function_offsets(path)
    if name not in offsets:
        raise UetraceError(f"find function {name} in {path}: no such symbol")
    return offsets[name]




def _read_offsets(elf: ELFFile) -> dict[str, int]:
    """Symbol tables read as arrays: pyelftools' per-symbol objects take ~0.5 s for libc."""
    if elf.elfclass != 64 or not elf.little_endian:
        raise ELFError("only 64-bit little-endian ELF files are supported")
    loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    out: dict[str, int] = {}
    for table in (".symtab", ".dynsym"):  # later tables win: the dynamic one is what callers bind to
        found = symbol_array(elf, table)
        if found is None:
            continue
        syms, strtab = found
        hidden = np.zeros(len(syms), dtype=bool)
        versym = elf.get_section_by_name(".gnu.version") if table == ".dynsym" else None
        if versym is not None:
            hidden = (np.frombuffer(versym.data(), dtype="<u2")[: len(syms)] & _HIDDEN) != 0
        funcs = np.nonzero(((syms["info"] & 0xF) == STT_FUNC) & (syms["shndx"] != 0) & (syms["value"] != 0))[0]
        # Default versions last, so that they overwrite a hidden version of the same name.
        for i in sorted(funcs, key=lambda i: not hidden[i]):
            off = _file_offset(loads, int(syms["value"][i]))
            if off is not None:
                start = int(syms["name"][i])
                out[strtab[start: strtab.index(b"\0", start)].decode(errors="replace")] = off
    return out


def _file_offset(loads, vaddr: int) -> int | None:
    for seg in loads:
        if seg["p_vaddr"] <= vaddr < seg["p_vaddr"] + seg["p_filesz"]:
            return vaddr - seg["p_vaddr"] + seg["p_offset"]
    return None

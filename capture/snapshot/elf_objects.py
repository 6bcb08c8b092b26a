"""One object's symbols, as the archive stores them per build id (tables under
symbols/): elf_objects (path, debug file, symbol source, counts, note),
elf_segments (PT_LOAD: to turn a mapped file offset into a symbol address),
elf_symbols (functions, from .symtab of the debug file when there is one, else
of the object, else .dynsym) and elf_lines (capture/snapshot/dwarf_lines.py).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from elftools.common.exceptions import DWARFError, ELFError
from elftools.elf.elffile import ELFFile

from uetrace.capture.elf import SHN_UNDEF, STT_FUNC, STT_GNU_IFUNC, build_id, symbol_array, symbol_names
from uetrace.capture.procfs import open_regular
from uetrace.capture.snapshot.debug_files import find_debug_file, host_path
from uetrace.capture.snapshot.dwarf_lines import LINE_BUDGET_S, LINE_SCHEMA, LineBudget, read_lines

OBJECT_SCHEMA = pa.schema([("build_id", pa.string()), ("path", pa.string()), ("debug_file", pa.string()),
                           ("symbol_source", pa.string()), ("symbols", pa.int64()), ("lines", pa.int64()),
                           ("note", pa.string())])
SEGMENT_SCHEMA = pa.schema([("build_id", pa.string()), ("offset", pa.uint64()), ("vaddr", pa.uint64()),
                            ("size", pa.uint64())])
SYMBOL_SCHEMA = pa.schema([("build_id", pa.string()), ("name", pa.string()), ("addr", pa.uint64()),
                           ("size", pa.uint64()), ("bind", pa.string())])
_BINDS = {0: "local", 1: "global", 2: "weak", 10: "unique"}


def extract_object(paths: list[str] | str, bid: str, budget: LineBudget | None = None) -> dict:
    """Segments, function symbols and line table of one object (and its debug file)."""
    paths = [paths] if isinstance(paths, str) else paths
    info = {"build_id": bid, "path": host_path(paths[0]), "debug_file": "", "symbol_source": "none",
            "symbols": 0, "lines": 0, "note": ""}
    out = {"object": info, "segments": SEGMENT_SCHEMA.empty_table(), "symbols": SYMBOL_SCHEMA.empty_table(),
           "lines": LINE_SCHEMA.empty_table()}
    path, fh = _open_object(paths, bid)
    if path is None:
        info["note"] = fh
        return out
    with fh:
        try:
            elf = ELFFile(fh)
            out["segments"] = _segments(elf, bid)
            debug_path = find_debug_file(path, elf, bid)
            dfh = open_regular(debug_path, follow_symlinks=True) if debug_path else None
            try:
                delf = ELFFile(dfh) if dfh else None
                info["debug_file"] = host_path(debug_path or "")
                for src_elf, name in ((delf, ".symtab"), (elf, ".symtab"), (elf, ".dynsym")):
                    if src_elf is None or src_elf.get_section_by_name(name) is None:
                        continue
                    table = _symbols(src_elf, name, bid)
                    if table.num_rows:
                        out["symbols"], info["symbol_source"] = table, name
                        break
                info["symbols"] = out["symbols"].num_rows
                out["lines"], info["note"] = read_lines(delf if delf is not None and delf.has_dwarf_info() else elf,
                                                    bid, budget or LineBudget(LINE_BUDGET_S))
                info["lines"] = out["lines"].num_rows
            finally:
                if dfh:
                    dfh.close()
        except (ELFError, DWARFError, ValueError, KeyError, IndexError, OSError) as e:
            info["note"] = f"read ELF: {e}"
    return out


def _open_object(paths: list[str], bid: str) -> tuple[str, object] | tuple[None, str]:
    """The first path that opens and (for fallbacks) still has the build id."""
    why = "no path"
    for i, path in enumerate(paths):
        try:
            if i and build_id(path) != bid:
                why = f"{path}: a different file now (build id changed)"
                continue
            return path, open_regular(path)
        except OSError as e:
            why = f"open {host_path(path)}: {e.strerror}"
    return None, why


def _segments(elf: ELFFile, bid: str) -> pa.Table:
    rows = [{"build_id": bid, "offset": s["p_offset"], "vaddr": s["p_vaddr"], "size": s["p_filesz"]}
            for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    return pa.Table.from_pylist(rows, schema=SEGMENT_SCHEMA)


def _symbols(elf: ELFFile, section: str, bid: str) -> pa.Table:
    found = symbol_array(elf, section)
    if found is not None:
        syms, strtab = found
        stype = syms["info"] & 0xF
        syms = syms[((stype == STT_FUNC) | (stype == STT_GNU_IFUNC)) & (syms["shndx"] != SHN_UNDEF)
                    & (syms["value"] != 0)]
        names = symbol_names(strtab, syms["name"])
        binds = [_BINDS.get(b, str(b)) for b in (syms["info"] >> 4).tolist()]
        addrs, sizes = syms["value"], syms["size"]
    else:  # 32-bit or big-endian objects: the slow, general path
        sec = elf.get_section_by_name(section)
        rows = [s for s in sec.iter_symbols() if s["st_info"]["type"] in ("STT_FUNC", "STT_LOOS")
                and s["st_shndx"] != "SHN_UNDEF" and s["st_value"]]
        names = [s.name for s in rows]
        binds = [s["st_info"]["bind"].removeprefix("STB_").lower() for s in rows]
        addrs = np.array([s["st_value"] for s in rows], dtype=np.uint64)
        sizes = np.array([s["st_size"] for s in rows], dtype=np.uint64)
    return pa.Table.from_arrays([pa.array([bid] * len(names), pa.string()), pa.array(names, pa.string()),
                                 pa.array(addrs, pa.uint64()), pa.array(sizes, pa.uint64()),
                                 pa.array(binds, pa.string())], schema=SYMBOL_SCHEMA)



"""DWARF line tables (table `elf_lines` under symbols/: build_id, addr, file,
line; line 0 ends a sequence), so that frames get a source file and line offline.

pyelftools decodes line programs at ~10^4 rows/s and this runs while the capture
closes (libc6-dbg's libc: 300k rows, 18 s). So line tables get a time budget per
capture, smallest first (a program built with -g is small and comes early); the
objects left out say so in elf_objects.note, and their frames still get function
names from the symbol table.
"""

from __future__ import annotations

import os
import time

import pyarrow as pa
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from uetrace.capture.elf import build_id_of
from uetrace.capture.procfs import open_regular
from uetrace.capture.snapshot.debug_files import find_debug_file

LINE_BUDGET_S = 0.5  # measured: the 2 s of the first version doubled the time a -d 3s stack capture took to return
LINE_SCHEMA = pa.schema([("build_id", pa.string()), ("addr", pa.uint64()), ("file", pa.string()),
                         ("line", pa.uint32())])


class LineBudget:
    """Seconds left for decoding DWARF line tables in this snapshot."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def exhausted(self) -> bool:
        return time.monotonic() >= self.deadline


def line_table_size(paths: list[str]) -> int:
    """Size of the .debug_line the object would use (0 if none), to do small ones first."""
    for path in paths:
        try:
            with open_regular(path) as fh:
                elf = ELFFile(fh)
                dbg = find_debug_file(path, elf, build_id_of(elf))
                if dbg:
                    with open_regular(dbg, follow_symlinks=True) as dfh:
                        sec = ELFFile(dfh).get_section_by_name(".debug_line")
                        return sec["sh_size"] if sec is not None else 0
                sec = elf.get_section_by_name(".debug_line")
                return sec["sh_size"] if sec is not None else 0
        except (OSError, ELFError, ValueError):
            continue
    return 0


def read_lines(elf: ELFFile, bid: str, budget: LineBudget) -> tuple[pa.Table, str]:
    """The DWARF line table as (addr, file, line) rows; line 0 ends a sequence."""
    sec = elf.get_section_by_name(".debug_line")
    if sec is None or not elf.has_dwarf_info():
        return LINE_SCHEMA.empty_table(), ""
    skipped = LINE_SCHEMA.empty_table(), f"line table skipped: over the {LINE_BUDGET_S:g} s budget"
    if budget.exhausted():
        return skipped
    dwarf = elf.get_dwarf_info()
    addrs: list[int] = []
    files: list[str] = []
    lines: list[int] = []
    for cu in dwarf.iter_CUs():
        prog = dwarf.line_program_for_CU(cu)
        if prog is None:
            continue
        if budget.exhausted():
            return skipped  # a partial table would give some frames lines and others not
        names = _file_names(prog, cu)
        for entry in prog.get_entries():
            st = entry.state
            if st is None:
                continue
            addrs.append(st.address)
            if st.end_sequence:
                files.append("")
                lines.append(0)
            else:
                files.append(names.get(st.file, ""))
                lines.append(st.line)
    table = pa.Table.from_arrays([pa.array([bid] * len(addrs), pa.string()), pa.array(addrs, pa.uint64()),
                                  pa.array(files, pa.string()), pa.array(lines, pa.uint32())], schema=LINE_SCHEMA)
    return table, ""


def _file_names(prog, cu) -> dict[int, str]:
    """File index -> path. DWARF 5 numbers files and directories from 0, earlier versions from 1."""
    hdr = prog.header
    v5 = hdr["version"] >= 5
    dirs = [d.decode(errors="replace") if isinstance(d, bytes) else str(d) for d in hdr["include_directory"]]
    out = {}
    for i, fe in enumerate(hdr["file_entry"]):
        name = fe.name.decode(errors="replace") if isinstance(fe.name, bytes) else str(fe.name)
        d = fe.dir_index
        if v5:
            base = dirs[d] if d < len(dirs) else ""
        else:
            base = dirs[d - 1] if 0 < d <= len(dirs) else _comp_dir(cu)
        out[i if v5 else i + 1] = os.path.normpath(os.path.join(base, name)) if base else name
    return out


def _comp_dir(cu) -> str:
    """DW_AT_comp_dir (parsing the CU's first DIE is costly: only for DWARF < 5, directory 0)."""
    attr = cu.get_top_DIE().attributes.get("DW_AT_comp_dir")
    return attr.value.decode(errors="replace") if attr is not None else ""



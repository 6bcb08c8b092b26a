"""Symbol snapshot: what is needed to name every frame offline, stored in the archive.

Objects are keyed by ELF build id and extracted once per capture, however many
processes map them. Which objects: every executable file mapping of every
process that appears in a stack-carrying record (tracers call saw() from
observe(), and write() from finish()). Tables, under symbols/:

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

Debug files are looked up as gdb does: /usr/lib/debug/.build-id/xx/yyyy.debug,
then .gnu_debuglink next to the object, in .debug/ beside it and under
/usr/lib/debug; a candidate is used only if its build id matches.

ELF structure (headers, sections, notes, DWARF) is read with pyelftools; the
symbol array itself is read in one numpy view (Elf64_Sym, from elf.h), which is
~50x faster than a Python object per symbol on libraries with 10^5 symbols.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pyarrow as pa
from elftools.common.exceptions import DWARFError, ELFError
from elftools.elf.elffile import ELFFile

from uetrace.capture.snapshot.processes import MAPPING_SCHEMA, build_id

DEBUG_ROOT = "/usr/lib/debug"
# pyelftools decodes line programs at ~10^4 rows/s and this runs while the capture closes
# (libc6-dbg's libc: 300k rows, 18 s). So line tables get a time budget per capture, smallest
# first (a program built with -g is small and comes early); the objects left out say so in
# elf_objects.note, and their frames still get function names from the symbol table.
LINE_BUDGET_S = 2.0

OBJECT_SCHEMA = pa.schema([("build_id", pa.string()), ("path", pa.string()), ("debug_file", pa.string()),
                           ("symbol_source", pa.string()), ("symbols", pa.int64()), ("lines", pa.int64()),
                           ("note", pa.string())])
SEGMENT_SCHEMA = pa.schema([("build_id", pa.string()), ("offset", pa.uint64()), ("vaddr", pa.uint64()),
                            ("size", pa.uint64())])
SYMBOL_SCHEMA = pa.schema([("build_id", pa.string()), ("name", pa.string()), ("addr", pa.uint64()),
                           ("size", pa.uint64()), ("bind", pa.string())])
LINE_SCHEMA = pa.schema([("build_id", pa.string()), ("addr", pa.uint64()), ("file", pa.string()),
                         ("line", pa.uint32())])
KALLSYMS_SCHEMA = pa.schema([("addr", pa.uint64()), ("name", pa.string()), ("module", pa.string()),
                             ("type", pa.string())])

# struct Elf64_Sym (elf.h)
_ELF64_SYM = np.dtype([("st_name", "<u4"), ("st_info", "u1"), ("st_other", "u1"), ("st_shndx", "<u2"),
                       ("st_value", "<u8"), ("st_size", "<u8")])
_STT_FUNC, _STT_GNU_IFUNC = 2, 10
_BINDS = {0: "local", 1: "global", 2: "weak", 10: "unique"}


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
        self._written: set[str] = set()               # build ids already extracted
        self._kallsyms_written = False
        self.stats = {"objects": 0, "objects_without_symbols": 0, "objects_with_lines": 0}

    def saw(self, pids: np.ndarray, comms: np.ndarray | None = None) -> None:
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

    def _read(self, pid: int) -> None:
        """Only /proc/<pid>/maps, at once: this runs on the segment writer thread, and a
        short-lived process may be gone soon. Build ids are read at write()."""
        ts = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        rows = read_maps(pid)
        with self._lock:
            self._mappings.extend({"ts": ts, **r} for r in rows)

    def write(self, write_table) -> None:
        """Re-read live processes' mappings, then write mappings, objects and kallsyms."""
        for pid in list(self._comm):
            if os.path.exists(f"/proc/{pid}"):
                self._read(pid)
        with self._lock:
            mappings, self._mappings = self._mappings, []
        for r in mappings:
            r["build_id"], path = _mapped_build_id(r)
            if r["build_id"] and r["build_id"] not in self._objects:
                self._objects[r["build_id"]] = [path, r["path"]]
        with self._lock:
            todo = {b: p for b, p in self._objects.items() if b not in self._written}
            self._written.update(todo)
        if mappings:
            write_table("mappings", pa.Table.from_pylist(mappings, schema=MAPPING_SCHEMA))
        budget = LineBudget(LINE_BUDGET_S)
        objects, segments, symbols, lines = [], [], [], []
        for bid, paths in sorted(todo.items(), key=lambda kv: _line_table_size(kv[1])):
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


class LineBudget:
    """Seconds left for decoding DWARF line tables in this snapshot."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def exhausted(self) -> bool:
        return time.monotonic() >= self.deadline


def _open_object(paths: list[str], bid: str) -> tuple[str, object] | tuple[None, str]:
    """The first path that opens and (for fallbacks) still has the build id."""
    why = "no path"
    for i, path in enumerate(paths):
        try:
            if i and build_id(path) != bid:
                why = f"{path}: a different file now (build id changed)"
                continue
            return path, open(path, "rb")
        except OSError as e:
            why = f"open {_host_path(path)}: {e.strerror}"
    return None, why


def _line_table_size(paths: list[str]) -> int:
    """Size of the .debug_line the object would use (0 if none), to do small ones first."""
    for path in paths:
        try:
            with open(path, "rb") as fh:
                elf = ELFFile(fh)
                dbg = find_debug_file(path, elf, _build_id_of(elf))
                if dbg:
                    with open(dbg, "rb") as dfh:
                        sec = ELFFile(dfh).get_section_by_name(".debug_line")
                        return sec["sh_size"] if sec is not None else 0
                sec = elf.get_section_by_name(".debug_line")
                return sec["sh_size"] if sec is not None else 0
        except (OSError, ELFError, ValueError):
            continue
    return 0


def _build_id_of(elf: ELFFile) -> str:
    sec = elf.get_section_by_name(".note.gnu.build-id")
    for note in sec.iter_notes() if sec is not None else ():
        if note["n_type"] == "NT_GNU_BUILD_ID":
            return note["n_desc"]
    return ""


def read_maps(pid: int) -> list[dict]:
    """Executable file mappings of a process (mappings table rows, build_id left empty);
    the same selection as capture/process_snapshot.read_mappings, without opening files."""
    try:
        with open(f"/proc/{pid}/maps") as fh:
            text = fh.read()
    except OSError:
        return []
    rows = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6 or "x" not in parts[1] or not parts[5].startswith("/"):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        rows.append({"pid": pid, "start": start, "end": end, "file_offset": int(parts[2], 16),
                     "perms": parts[1], "path": parts[5].removesuffix(" (deleted)"), "build_id": "",
                     "inode": int(parts[4])})
    return rows


def _mapped_build_id(row: dict) -> tuple[str, str]:
    """Build id of a mapped file and the path it was read from: through the process's
    root while it lives, else the host path if it is still the same file (same inode)."""
    own = f"/proc/{row['pid']}/root{row['path']}"
    bid = build_id(own)
    if bid:
        return bid, own
    try:
        same = os.stat(row["path"]).st_ino == row["inode"]
    except OSError:
        same = False
    return (build_id(row["path"]), row["path"]) if same else ("", row["path"])


def extract_object(paths: list[str] | str, bid: str, budget: LineBudget | None = None) -> dict:
    """Segments, function symbols and line table of one object (and its debug file)."""
    paths = [paths] if isinstance(paths, str) else paths
    info = {"build_id": bid, "path": _host_path(paths[0]), "debug_file": "", "symbol_source": "none",
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
            dfh = open(debug_path, "rb") if debug_path else None
            try:
                delf = ELFFile(dfh) if dfh else None
                info["debug_file"] = _host_path(debug_path or "")
                for src_elf, name in ((delf, ".symtab"), (elf, ".symtab"), (elf, ".dynsym")):
                    if src_elf is None or src_elf.get_section_by_name(name) is None:
                        continue
                    table = _symbols(src_elf, name, bid)
                    if table.num_rows:
                        out["symbols"], info["symbol_source"] = table, name
                        break
                info["symbols"] = out["symbols"].num_rows
                out["lines"], info["note"] = _lines(delf if delf is not None and delf.has_dwarf_info() else elf,
                                                    bid, budget or LineBudget(LINE_BUDGET_S))
                info["lines"] = out["lines"].num_rows
            finally:
                if dfh:
                    dfh.close()
        except (ELFError, DWARFError, ValueError, KeyError, IndexError, OSError) as e:
            info["note"] = f"read ELF: {e}"
    return out


def _host_path(path: str) -> str:
    """/proc/<pid>/root/usr/lib/x.so -> /usr/lib/x.so (the name a user knows)."""
    if path.startswith("/proc/"):
        parts = path.split("/", 4)
        if len(parts) == 5 and parts[3] == "root":
            return "/" + parts[4]
    return path


def _segments(elf: ELFFile, bid: str) -> pa.Table:
    rows = [{"build_id": bid, "offset": s["p_offset"], "vaddr": s["p_vaddr"], "size": s["p_filesz"]}
            for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
    return pa.Table.from_pylist(rows, schema=SEGMENT_SCHEMA)


def find_debug_file(path: str, elf: ELFFile, bid: str) -> str | None:
    """A separate debug file with the same build id, or None."""
    root = path[: len(path) - len(_host_path(path)) + 1].rstrip("/") if path.startswith("/proc/") else ""
    candidates = []
    if len(bid) > 2:
        candidates.append(f"{root}{DEBUG_ROOT}/.build-id/{bid[:2]}/{bid[2:]}.debug")
    link = elf.get_section_by_name(".gnu_debuglink")
    if link is not None:
        name = link.data().split(b"\0", 1)[0].decode(errors="replace")
        host_dir = os.path.dirname(_host_path(path))
        candidates += [f"{root}{host_dir}/{name}", f"{root}{host_dir}/.debug/{name}",
                       f"{root}{DEBUG_ROOT}{host_dir}/{name}"]
    for cand in candidates:
        if os.path.isfile(cand) and os.path.realpath(cand) != os.path.realpath(path) and build_id(cand) == bid:
            return cand
    return None


def _symbols(elf: ELFFile, section: str, bid: str) -> pa.Table:
    sec = elf.get_section_by_name(section)
    strtab = elf.get_section(sec["sh_link"]).data()
    if elf.elfclass == 64 and elf.little_endian and sec["sh_entsize"] == _ELF64_SYM.itemsize:
        syms = np.frombuffer(sec.data(), dtype=_ELF64_SYM)
        stype = syms["st_info"] & 0xF
        keep = ((stype == _STT_FUNC) | (stype == _STT_GNU_IFUNC)) & (syms["st_shndx"] != 0) & (syms["st_value"] != 0)
        syms = syms[keep]
        raw = np.frombuffer(strtab, dtype=np.uint8)
        nuls = np.flatnonzero(raw == 0)
        starts = syms["st_name"].astype(np.int64)
        ends = nuls[np.minimum(np.searchsorted(nuls, starts), len(nuls) - 1)]
        names = [strtab[s:e].decode(errors="replace") for s, e in zip(starts.tolist(), ends.tolist())]
        binds = [_BINDS.get(b, str(b)) for b in (syms["st_info"] >> 4).tolist()]
        addrs, sizes = syms["st_value"], syms["st_size"]
    else:  # 32-bit or big-endian objects: the slow, general path
        rows = [s for s in sec.iter_symbols() if s["st_info"]["type"] in ("STT_FUNC", "STT_LOOS")
                and s["st_shndx"] != "SHN_UNDEF" and s["st_value"]]
        names = [s.name for s in rows]
        binds = [s["st_info"]["bind"].removeprefix("STB_").lower() for s in rows]
        addrs = np.array([s["st_value"] for s in rows], dtype=np.uint64)
        sizes = np.array([s["st_size"] for s in rows], dtype=np.uint64)
    return pa.Table.from_arrays([pa.array([bid] * len(names), pa.string()), pa.array(names, pa.string()),
                                 pa.array(addrs, pa.uint64()), pa.array(sizes, pa.uint64()),
                                 pa.array(binds, pa.string())], schema=SYMBOL_SCHEMA)


def _lines(elf: ELFFile, bid: str, budget: LineBudget) -> tuple[pa.Table, str]:
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


def read_kallsyms(path: str = "/proc/kallsyms") -> pa.Table:
    """Kernel text symbols. All-zero addresses mean kptr_restrict hid them: then the
    table is empty and kernel frames stay unnamed (kernel+0x...)."""
    addrs, names, modules, types = [], [], [], []
    try:
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3 or parts[1] not in "tTwW":
                    continue
                addrs.append(int(parts[0], 16))
                types.append(parts[1])
                names.append(parts[2])
                modules.append(parts[3].strip("[]") if len(parts) > 3 else "")
    except OSError:
        return KALLSYMS_SCHEMA.empty_table()
    if not any(addrs):
        return KALLSYMS_SCHEMA.empty_table()
    return pa.Table.from_arrays([pa.array(addrs, pa.uint64()), pa.array(names, pa.string()),
                                 pa.array(modules, pa.string()), pa.array(types, pa.string())],
                                schema=KALLSYMS_SCHEMA)

"""Offline symbolization: name a frame from the archive alone.

Inputs are the snapshot tables the capture wrote under symbols/ (see
capture/snapshot/symbols.py): mappings, elf_segments, elf_symbols, elf_lines and
kallsyms. Nothing on the analyzing machine is read, so a copy of the archive
names frames identically anywhere, even after the binaries are gone.

A user frame (pid, addr, ts) goes:
    mapping of pid containing addr (the snapshot closest before ts, else the first after)
    -> file offset -> ELF virtual address (via the object's PT_LOAD segments)
    -> function (symbol containing it) and file:line (DWARF line table), by build id.
C++ names are demangled (analyze/demangle.py); the archive keeps them mangled.
A kernel frame goes through kallsyms. Return addresses (every frame but the
leaf) are looked up at addr - 1, so that a call that is the last instruction of
a function is attributed to that function and to the line of the call.

What cannot be named keeps a stable name, `module+0xoffset` (offset in the
object's address space, as in its symbol table), or `[anon]+0xaddr` when no
file mapping covers the address; never a bare "[unknown]".

Everything runs as a few DuckDB joins (range and ASOF joins), so the cost is per
distinct frame, not per sample.
"""

from __future__ import annotations

import posixpath

import pyarrow as pa

from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.stacks.demangle import demangle

# Beyond this distance from the nearest kallsyms entry an address is not inside
# that symbol (no kernel function is this large); it stays unnamed.
MAX_KERNEL_SYMBOL_SPAN = 1 << 20
MAX_UNSIZED_SYMBOL_SPAN = 1 << 16  # symbols of size 0 (assembly) cover at most this

FRAME_SCHEMA = pa.schema([("id", pa.int64()), ("pid", pa.uint32()), ("addr", pa.uint64()),
                          ("ts", pa.uint64()), ("leaf", pa.bool_()), ("kernel", pa.bool_())])

RESOLVED_COLUMNS = ("id", "function", "module", "offset", "file", "line", "resolved")


class Symbolizer:
    """Resolves frames of one capture; prepares its lookup tables once."""

    def __init__(self, cap: ArchiveDb):
        self.cap = cap
        self.con = cap.con
        self._prepared = False

    def _prepare(self) -> None:
        if self._prepared:
            return
        con, has = self.con, self.cap.has
        # One row per address: the same code often has several names (aliases such as
        # write/__write/__libc_write); keep a deterministic, user-facing one.
        if has("kallsyms"):
            con.execute("""CREATE OR REPLACE TEMP TABLE _ksyms AS
                SELECT addr, arg_min(name, (type NOT IN ('T', 'W'), starts_with(name, '_'), length(name), name))
                       AS name, arg_min(module, name) AS module
                FROM kallsyms GROUP BY addr ORDER BY addr""")
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE _ksyms (addr UBIGINT, name VARCHAR, module VARCHAR)")
        if has("elf_symbols"):
            con.execute("""CREATE OR REPLACE TEMP TABLE _usyms AS
                SELECT build_id, addr,
                       arg_min(name, (starts_with(name, '_'), CASE bind WHEN 'global' THEN 0 WHEN 'weak' THEN 1
                                      ELSE 2 END, length(name), name)) AS name,
                       max(size) AS size
                FROM elf_symbols GROUP BY build_id, addr ORDER BY build_id, addr""")
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE _usyms (build_id VARCHAR, addr UBIGINT, name VARCHAR, "
                        "size UBIGINT)")
        if has("elf_lines"):
            con.execute("""CREATE OR REPLACE TEMP TABLE _ulines AS
                SELECT build_id, addr, arg_max(file, (line > 0, line)) AS file, max(line) AS line
                FROM elf_lines GROUP BY build_id, addr ORDER BY build_id, addr""")
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE _ulines (build_id VARCHAR, addr UBIGINT, file VARCHAR, "
                        "line UINTEGER)")
        if has("elf_segments"):
            con.execute("CREATE OR REPLACE TEMP TABLE _segs AS SELECT DISTINCT build_id, \"offset\", vaddr, size "
                        "FROM elf_segments")
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE _segs (build_id VARCHAR, \"offset\" UBIGINT, vaddr UBIGINT, "
                        "size UBIGINT)")
        if has("mappings"):
            # Snapshots repeat mappings; keep each once, with when it was first seen.
            con.execute("""CREATE OR REPLACE TEMP TABLE _maps AS
                SELECT pid::UINTEGER AS pid, start::UBIGINT AS start, "end"::UBIGINT AS "end",
                       file_offset::UBIGINT AS file_offset, path, build_id, min(ts)::UBIGINT AS first_ts
                FROM mappings GROUP BY ALL""")
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE _maps (pid UINTEGER, start UBIGINT, \"end\" UBIGINT, "
                        "file_offset UBIGINT, path VARCHAR, build_id VARCHAR, first_ts UBIGINT)")
        self._prepared = True

    def resolve(self, frames: pa.Table) -> pa.Table:
        """frames: FRAME_SCHEMA columns. Returns RESOLVED_COLUMNS, one row per input id:
        function (a stable name even when unresolved), module, offset (into the function,
        or into the module when unresolved), file and line ("" / 0 when unknown), resolved."""
        self._prepare()
        con = self.con
        con.register("_frames_in", frames)
        try:
            kernel = con.sql("""
                SELECT f.id, k.name, coalesce(nullif(k.module, ''), 'kernel') AS module,
                       f.addr - k.addr AS off, f.addr
                FROM (SELECT id, addr, CASE WHEN leaf THEN addr ELSE addr - 1 END AS a
                      FROM _frames_in WHERE kernel) f
                ASOF LEFT JOIN _ksyms k ON f.a >= k.addr
                """).to_arrow_table()
            user = con.sql("""
                WITH f AS (
                    SELECT id, pid, addr, ts, leaf FROM _frames_in WHERE NOT kernel),
                m AS (
                    SELECT f.id, f.addr, f.leaf, m.path, m.build_id,
                           f.addr - m.start + m.file_offset AS foff
                    FROM f JOIN _maps m ON f.pid = m.pid AND f.addr >= m.start AND f.addr < m."end"
                    QUALIFY row_number() OVER (PARTITION BY f.id ORDER BY (m.first_ts <= f.ts) DESC,
                        CASE WHEN m.first_ts <= f.ts THEN f.ts - m.first_ts ELSE m.first_ts - f.ts END,
                        m.start) = 1),
                v AS (
                    SELECT m.*, coalesce(m.foff - s."offset" + s.vaddr, m.foff)::UBIGINT AS vaddr
                    FROM m LEFT JOIN _segs s ON s.build_id = m.build_id AND m.foff >= s."offset"
                                              AND m.foff < s."offset" + s.size
                    QUALIFY row_number() OVER (PARTITION BY m.id ORDER BY s."offset" NULLS LAST) = 1),
                q AS (
                    SELECT *, CASE WHEN leaf THEN vaddr ELSE vaddr - 1 END AS a FROM v),
                s AS (
                    SELECT q.*, u.name, u.addr AS sym_addr, u.size AS sym_size
                    FROM q ASOF LEFT JOIN _usyms u ON q.build_id = u.build_id AND q.a >= u.addr),
                l AS (
                    SELECT s.*, ln.file, ln.line
                    FROM s ASOF LEFT JOIN _ulines ln ON s.build_id = ln.build_id AND s.a >= ln.addr)
                SELECT f.id, l.path, l.vaddr, l.name, l.sym_addr, l.sym_size, l.file, l.line, f.addr, l.a
                FROM f LEFT JOIN l ON f.id = l.id
                """).to_arrow_table()
        finally:
            con.unregister("_frames_in")
        return pa.concat_tables([_kernel_rows(kernel), _user_rows(user)])


def _kernel_rows(t: pa.Table) -> pa.Table:
    ids, fn, mod, off, ok = [], [], [], [], []
    for id_, name, module, delta, addr in zip(*(t.column(i).to_pylist() for i in range(5))):
        ids.append(id_)
        if name is not None and delta < MAX_KERNEL_SYMBOL_SPAN:
            fn.append(name)
            mod.append(module)
            off.append(delta)
            ok.append(True)
        else:
            fn.append(f"kernel+0x{addr:x}")
            mod.append("kernel")
            off.append(addr)
            ok.append(False)
    n = len(ids)
    return _table(ids, fn, mod, off, [""] * n, [0] * n, ok)


def _user_rows(t: pa.Table) -> pa.Table:
    ids, fn, mod, off, files, lines, ok = [], [], [], [], [], [], []
    cols = [t.column(i).to_pylist() for i in range(10)]
    for id_, path, vaddr, name, sym_addr, sym_size, file, line, addr, a in zip(*cols):
        ids.append(id_)
        if path is None:
            fn.append(f"[anon]+0x{addr:x}")
            mod.append("[anon]")
            off.append(addr)
            files.append("")
            lines.append(0)
            ok.append(False)
            continue
        module = posixpath.basename(path)
        mod.append(module)
        # `a` is the looked-up address (vaddr - 1 for return addresses)
        inside = name is not None and a >= sym_addr and (
            a < sym_addr + sym_size if sym_size else a - sym_addr < MAX_UNSIZED_SYMBOL_SPAN)
        if inside:
            fn.append(demangle(name))
            off.append(vaddr - sym_addr)
            ok.append(True)
        else:
            fn.append(f"{module}+0x{vaddr:x}")
            off.append(vaddr)
            ok.append(False)
        files.append((file or "") if line else "")
        lines.append(int(line or 0))
    return _table(ids, fn, mod, off, files, lines, ok)


def _table(ids, fn, mod, off, files, lines, ok) -> pa.Table:
    return pa.Table.from_arrays([pa.array(ids, pa.int64()), pa.array(fn, pa.string()), pa.array(mod, pa.string()),
                                 pa.array(off, pa.uint64()), pa.array(files, pa.string()),
                                 pa.array(lines, pa.uint32()), pa.array(ok, pa.bool_())],
                                names=list(RESOLVED_COLUMNS))


def symbolize(cap: ArchiveDb, pid: int, addr: int, ts: int = 0, kernel: bool | None = None,
              leaf: bool = True) -> dict:
    """One frame, for scripts and tests: {function, module, offset, file, line, resolved}."""
    if kernel is None:
        kernel = addr >= 1 << 63
    frames = pa.Table.from_pylist([{"id": 0, "pid": pid, "addr": addr, "ts": ts, "leaf": leaf, "kernel": kernel}],
                                  schema=FRAME_SCHEMA)
    row = Symbolizer(cap).resolve(frames).to_pylist()[0]
    row.pop("id")
    return row

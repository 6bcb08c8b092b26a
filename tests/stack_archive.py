"""A synthetic stack-tracer capture, built from code (no root, no kernel): a tiny
program `app` (build id "aa..") with known symbols and lines, mapped by pid 100,
libc (build id "cc..") with aliases, and a few kernel symbols.

app's layout: file offset 0x1000 is loaded at vaddr 0x401000 and mapped at
0x555500001000; functions main [0x401100, +0x100), caller_a [0x401200, +0x40),
spin_a [0x401300, +0x80), and the C++ ns::Worker<int>::spin() [0x401400, +0x40),
stored mangled as in a symbol table. libc: write/__write/__libc_write alias at 0x2000.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from uetrace.analyze.archive import ExtractedArchive
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.capture.snapshot.processes import MAPPING_SCHEMA

APP, LIBC = "aa" * 20, "cc" * 20
APP_BASE = 0x555500001000 - 0x401000  # runtime address = vaddr + APP_BASE
LIBC_BASE = 0x7F0000000000
KBASE = 0xFFFFFFFF81000000
START_NS = 1_000_000_000_000


def app(vaddr: int) -> int:
    return vaddr + APP_BASE


def _write(root: Path, area: str, kind: str, rows: list[dict], schema: pa.Schema | None = None) -> None:
    d = root / area / kind
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), d / "000001.parquet")


def build(root: Path, samples: list[dict], stacks: dict[int, list[int]], max_depth: int = 127) -> ArchiveDb:
    """samples: stack_sample rows (pid, tid, comm, kstack_id, ustack_id, ts offset in ns, flags);
    stacks: stack id -> frames, leaf first."""
    _write(root, "events", "stack_sample", [
        {"cpu": 0, "ts": START_NS + s.get("t", 0), "pid": s["pid"], "tid": s.get("tid", s["pid"]),
         "kstack_id": s.get("kstack_id", -14), "ustack_id": s.get("ustack_id", -14), "flags": s.get("flags", 0),
         "comm": s.get("comm", "app")} for s in samples],
        pa.schema([("cpu", pa.uint32()), ("ts", pa.uint64()), ("pid", pa.uint32()), ("tid", pa.uint32()),
                   ("kstack_id", pa.int32()), ("ustack_id", pa.int32()), ("flags", pa.uint32()),
                   ("comm", pa.string())]))
    _write(root, "symbols", "stacks", [{"tracer": "stack", "stack_id": k, "frames": v} for k, v in stacks.items()],
           pa.schema([("tracer", pa.string()), ("stack_id", pa.int32()), ("frames", pa.list_(pa.uint64()))]))
    _write(root, "symbols", "mappings", [
        {"ts": START_NS, "pid": 100, "start": 0x555500001000, "end": 0x555500002000, "file_offset": 0x1000,
         "perms": "r-xp", "path": "/opt/app/app", "build_id": APP, "inode": 1},
        {"ts": START_NS + 5, "pid": 100, "start": 0x555500001000, "end": 0x555500002000, "file_offset": 0x1000,
         "perms": "r-xp", "path": "/opt/app/app", "build_id": APP, "inode": 1},  # a repeated snapshot
        {"ts": START_NS, "pid": 100, "start": LIBC_BASE + 0x1000, "end": LIBC_BASE + 0x9000,
         "file_offset": 0x1000, "perms": "r-xp", "path": "/lib/libc.so.6", "build_id": LIBC, "inode": 2},
        {"ts": START_NS, "pid": 100, "start": 0x600000000000, "end": 0x600000001000, "file_offset": 0,
         "perms": "r-xp", "path": "/opt/app/stripped.so", "build_id": "", "inode": 3},
    ], MAPPING_SCHEMA)
    _write(root, "symbols", "elf_segments", [
        {"build_id": APP, "offset": 0, "vaddr": 0x400000, "size": 0x1000},
        {"build_id": APP, "offset": 0x1000, "vaddr": 0x401000, "size": 0x1000},
        {"build_id": LIBC, "offset": 0, "vaddr": 0, "size": 0x10000},
    ], pa.schema([("build_id", pa.string()), ("offset", pa.uint64()), ("vaddr", pa.uint64()),
                  ("size", pa.uint64())]))
    sym = pa.schema([("build_id", pa.string()), ("name", pa.string()), ("addr", pa.uint64()),
                     ("size", pa.uint64()), ("bind", pa.string())])
    _write(root, "symbols", "elf_symbols", [
        {"build_id": APP, "name": "main", "addr": 0x401100, "size": 0x100, "bind": "global"},
        {"build_id": APP, "name": "caller_a", "addr": 0x401200, "size": 0x40, "bind": "global"},
        {"build_id": APP, "name": "spin_a", "addr": 0x401300, "size": 0x80, "bind": "global"},
        {"build_id": APP, "name": "_ZN2ns6WorkerIiE4spinEv", "addr": 0x401400, "size": 0x40, "bind": "weak"},
        {"build_id": LIBC, "name": "__libc_write", "addr": 0x2000, "size": 0x30, "bind": "global"},
        {"build_id": LIBC, "name": "write", "addr": 0x2000, "size": 0x30, "bind": "weak"},
        {"build_id": LIBC, "name": "__write", "addr": 0x2000, "size": 0x30, "bind": "global"},
        {"build_id": LIBC, "name": "__libc_start_call_main", "addr": 0x3000, "size": 0x80, "bind": "local"},
    ], sym)
    _write(root, "symbols", "elf_lines", [
        {"build_id": APP, "addr": 0x401300, "file": "/src/app.c", "line": 10},
        {"build_id": APP, "addr": 0x401310, "file": "/src/app.c", "line": 11},
        {"build_id": APP, "addr": 0x401380, "file": "", "line": 0},
    ], pa.schema([("build_id", pa.string()), ("addr", pa.uint64()), ("file", pa.string()), ("line", pa.uint32())]))
    _write(root, "symbols", "kallsyms", [
        {"addr": KBASE + 0x100, "name": "entry_SYSCALL_64", "module": "", "type": "T"},
        {"addr": KBASE + 0x200, "name": "ksys_write", "module": "", "type": "T"},
        {"addr": KBASE + 0x300, "name": "vfs_write", "module": "", "type": "T"},
        {"addr": KBASE + 0x300, "name": "__pfx_vfs_write", "module": "", "type": "t"},
        {"addr": KBASE + 0x400, "name": "xfs_write", "module": "xfs", "type": "t"},
    ], pa.schema([("addr", pa.uint64()), ("name", pa.string()), ("module", pa.string()), ("type", pa.string())]))
    manifest = {"tool": "uetrace", "format_version": 1, "complete": True,
                "clock": {"start": {"monotonic_ns": START_NS}},
                "tracers": {"stack": {"attached": True, "stats": {"stack_max_depth": max_depth},
                                      "lost_per_cpu": {"stack": [2, 1]}}}}
    return ArchiveDb(ExtractedArchive(root, manifest, []))


def pack(cap: ArchiveDb, out: Path) -> Path:
    """The synthetic capture as a real archive file, for the CLI."""
    import json

    from uetrace.capture.archive_writer import ArchiveWriter

    root = cap.archive.root
    w = ArchiveWriter(out)
    w.add_bytes("manifest.json", json.dumps(cap.manifest).encode())
    for f in sorted(root.rglob("*.parquet")):
        w.add_file(f.relative_to(root).as_posix(), f)
    w.close()
    return out

"""Names of Python code objects, read from a live process's memory.

The stack tracer records, per Python frame, a code object's address and a checksum
of it (py_frames in bpf/stack.bpf.c); this module reads such a code object from
/proc/<pid>/mem while the process lives: qualified name, file name, first line and
line table, one row of the `py_code` table under symbols/:

    pid, addr, checksum  the frame's key, as the samples carry it
    qualname, filename, firstlineno
    linetable          co_linetable bytes (3.11 - 3.13 format: Objects/locations.md in
                       CPython; 3.10: Objects/lnotab_notes.txt), turned into line numbers offline
    version            "3.11.7": how to read linetable (3.10 has its own format)

A row whose checksum differs from the samples' is a code object freed and another
allocated at its address since: analysis keeps only rows that match.
"""

from __future__ import annotations

import pyarrow as pa

from uetrace.capture.snapshot.python_runtime import PyRuntime, read_mem, read_u64

PY_CODE_SCHEMA = pa.schema([
    ("pid", pa.uint32()), ("addr", pa.uint64()), ("checksum", pa.uint32()), ("qualname", pa.string()),
    ("filename", pa.string()), ("firstlineno", pa.int32()), ("linetable", pa.binary()),
    ("version", pa.string()),
])

MAX_STRING = 4096      # longer names and paths are cut (a path is at most PATH_MAX)
MAX_LINETABLE = 1 << 16

# Where a str's length and state bits (interned:2, kind:3, compact:1, ascii:1) and a bytes
# object's size and data are: PyOffsets.unicode_length, unicode_state, bytes_size, bytes_data.


def code_check(firstlineno: int, qualname_ptr: int) -> int:
    """The checksum the BPF walk records for a code object (py_frames in bpf/stack.bpf.c)."""
    return ((firstlineno & 0xFFFFFFFF) ^ (qualname_ptr >> 4)) & 0xFFFFFFFF


def read_unicode(rt: PyRuntime, addr: int) -> str | None:
    """A compact str object's text (every name and file name in a code object is one)."""
    pid, o = rt.pid, rt.offsets
    head = read_mem(pid, addr + o.unicode_length, o.unicode_state + 4 - o.unicode_length)
    if head is None:
        return None
    length = int.from_bytes(head[:8], "little")
    state = int.from_bytes(head[-4:], "little")
    kind, compact, ascii_ = (state >> 2) & 7, (state >> 5) & 1, (state >> 6) & 1
    if not compact or kind not in (1, 2, 4) or length > MAX_STRING:
        return None
    data = read_mem(pid, addr + (o.unicode_ascii_data if ascii_ else o.unicode_compact_data), length * kind)
    if data is None:
        return None
    codec = {1: "latin-1", 2: "utf-16-le", 4: "utf-32-le"}[kind]
    return data.decode(codec, errors="replace")


def read_bytes_object(rt: PyRuntime, addr: int) -> bytes | None:
    o = rt.offsets
    size = read_u64(rt.pid, addr + o.bytes_size)
    if size is None or size > MAX_LINETABLE:
        return None
    return read_mem(rt.pid, addr + o.bytes_data, size) if size else b""


def read_code(rt: PyRuntime, addr: int) -> dict | None:
    """One py_code row for the code object at addr, or None when it cannot be read."""
    o, pid = rt.offsets, rt.pid
    if o is None:
        return None
    raw = read_mem(pid, addr, max(o.code_firstlineno + 4, o.code_qualname, o.code_filename, o.code_linetable) + 8)
    if raw is None:
        return None

    def ptr(off: int) -> int:
        return int.from_bytes(raw[off:off + 8], "little")

    firstlineno = int.from_bytes(raw[o.code_firstlineno:o.code_firstlineno + 4], "little", signed=True)
    qualname = read_unicode(rt, ptr(o.code_qualname))
    if qualname is None:
        return None
    return {"pid": pid, "addr": addr, "checksum": code_check(firstlineno, ptr(o.code_qualname)),
            "qualname": qualname, "filename": read_unicode(rt, ptr(o.code_filename)) or "",
            "firstlineno": firstlineno, "linetable": read_bytes_object(rt, ptr(o.code_linetable)) or b"",
            "version": rt.version}

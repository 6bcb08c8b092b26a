"""Finding a CPython interpreter in a process: which object holds `_PyRuntime`, its
build id, its version, and the struct offsets the stack tracer walks with.

Offsets are per minor version: CPython keeps these internal layouts fixed within a
minor release, and each entry of OFFSETS was read from the DWARF of a real build and
checked against running interpreters of the builds listed in CHECKED_BUILDS
(tests/test_python_stacks.py walks them through /proc/<pid>/mem and compares with the
functions each thread is known to be in). A version not in OFFSETS is reported, and its
processes are sampled natively as before. Entries: 3.10, 3.11 and 3.12. 3.13 describes
itself (`_Py_DebugOffsets` at the start of `_PyRuntime`, read by python_debug_offsets.py);
a later version, whose `_Py_DebugOffsets` has another layout, is not recorded.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from uetrace.capture.elf import build_id_of, symbol_array, symbol_names
from uetrace.capture.procfs import read_maps, root_path
from uetrace.capture.snapshot import python_debug_offsets
from uetrace.capture.snapshot.python_offsets import PyOffsets, bpf_frame_read

__all__ = ["CHECKED_BUILDS", "OFFSETS", "PyOffsets", "PyRuntime", "find_runtime", "offsets_for", "read_mem",
           "read_u64", "walk_stacks"]


# From the DWARF of pyenv's libpython builds (gdb: p &((T*)0)->field); 3.11 is identical in
# Debian's 3.11.2 (checked by walking its running interpreter).
OFFSETS: dict[tuple[int, int], PyOffsets] = {
    (3, 11): PyOffsets(
        runtime_interp_head=40, interp_threads_head=16, tstate_next=8, tstate_thread_id=152,
        tstate_cframe=56, cframe_current_frame=8, frame_code=32, frame_previous=48,
        frame_prev_instr=56, code_firstlineno=72, code_qualname=128,
        code_filename=112, code_name=120, code_linetable=136, code_adaptive=184,
        unicode_ascii_data=48, unicode_compact_data=72, frame_is_entry=68),
    # 3.12 dropped is_entry (shim frames instead) and PyASCIIObject.wstr.
    (3, 12): PyOffsets(
        runtime_interp_head=40, interp_threads_head=72, tstate_next=8, tstate_thread_id=136,
        tstate_cframe=56, cframe_current_frame=0, frame_code=0, frame_previous=8,
        frame_prev_instr=56, code_firstlineno=68, code_qualname=128,
        code_filename=112, code_name=120, code_linetable=136, code_adaptive=192,
        unicode_ascii_data=40, unicode_compact_data=56, entry_kind=1, frame_owner=70, owner_cstack=3),
    # 3.10: frames are PyFrameObjects hung from the thread state, no co_qualname (co_name
    # stands in), line table in the 3.10 format (analyze/stacks/python_frames.py).
    (3, 10): PyOffsets(
        runtime_interp_head=32, interp_threads_head=8, tstate_next=8, tstate_thread_id=176,
        tstate_cframe=24, cframe_current_frame=0, frame_code=32, frame_previous=24,
        frame_prev_instr=96, code_firstlineno=40, code_qualname=112,
        code_filename=104, code_name=112, code_linetable=120, code_adaptive=0,
        unicode_ascii_data=48, unicode_compact_data=72, entry_kind=2, frame_object=True),
}

# Builds the offsets were checked against (build id of the object holding _PyRuntime).
CHECKED_BUILDS = {
    "571d98e01096d5c1c32420d229a6731a0a50d2a0": "Debian /usr/bin/python3.11 3.11.2",
    "49daf84ed369fe589b73ea876f2591cd4c3588bb": "pyenv libpython3.11.so.1.0 3.11.7",
    "f9d5c82f5f2c22df68c1d49c944ef3dee5103dcc": "pyenv libpython3.12.so.1.0 3.12.1",
    "ece57af647dd10ee274f46d757d62a5eab42c418": "pyenv libpython3.10.so.1.0 3.10.13",
    "d11d13fb0f82d32f3da1221ffd551ab179afb423": "pyenv libpython3.13.so.1.0 3.13.0 (_Py_DebugOffsets)",
}

_NAME_VERSION = re.compile(r"(?:^|/)(?:lib)?python(\d)\.(\d+)")


@dataclass(frozen=True)
class PyRuntime:
    """Where a process's interpreter lives; offsets is None for an unknown version."""

    pid: int
    path: str           # object holding _PyRuntime, in the process's mount namespace
    build_id: str
    version: str        # "3.11.7", or "3.11" when Py_Version could not be read
    runtime_addr: int   # address of _PyRuntime in the process
    offsets: PyOffsets | None

    @property
    def minor(self) -> tuple[int, int]:
        major, minor = self.version.split(".")[:2]
        return int(major), int(minor)


# (device, inode, mtime) of a file -> (build id, symbols, p_vaddr - p_offset), or None: every
# Python process maps the same few interpreters, each read once (libpython's .dynsym: ~15 K symbols).
_objects: dict[tuple[int, int, int], tuple[str, dict[str, int], int] | None] = {}


def find_runtime(pid: int) -> PyRuntime | None:
    """The CPython interpreter of a live process, or None when it runs none (or is gone)."""
    for m in read_maps(pid):
        if not _NAME_VERSION.search(m["path"]):
            continue
        host = root_path(pid, m["path"])
        info = _object_info(host)
        if info is None:
            continue
        bid, syms, exec_vaddr_minus_off = info
        # The load bias: where the executable mapping landed minus where the ELF meant it to be.
        bias = m["start"] - m["file_offset"] - exec_vaddr_minus_off
        ver = _NAME_VERSION.search(m["path"])
        version = f"{ver.group(1)}.{ver.group(2)}"
        if "Py_Version" in syms:
            hexversion = read_u64(pid, bias + syms["Py_Version"])
            if hexversion and hexversion >> 24 == int(ver.group(1)):
                version = f"{hexversion >> 24}.{(hexversion >> 16) & 0xff}.{(hexversion >> 8) & 0xff}"
        runtime = bias + syms["_PyRuntime"]
        return PyRuntime(pid, m["path"], bid, version, runtime, offsets_for(pid, version, runtime))
    return None


def offsets_for(pid: int, version: str, runtime: int) -> PyOffsets | None:
    """The walk's offsets for an interpreter: its own `_Py_DebugOffsets` on 3.13 (whose
    layout of it is the one known: later ones have another), the table before; None when
    neither knows the version (or the process is gone)."""
    major, minor = (int(x) for x in version.split(".")[:2])
    if (major, minor) == (3, 13):
        raw = read_mem(pid, runtime, python_debug_offsets.SIZE)
        return python_debug_offsets.parse(raw) if raw is not None else None
    return OFFSETS.get((major, minor))


def _object_info(host: str) -> tuple[str, dict[str, int], int] | None:
    """(build id, {_PyRuntime, Py_Version: vaddr}, p_vaddr - p_offset of the executable
    segment) of an object that defines _PyRuntime, else None. Cached per file."""
    try:
        st = os.stat(host)
    except OSError:
        return None
    key = (st.st_dev, st.st_ino, st.st_mtime_ns)
    if key in _objects:
        return _objects[key]
    result = None
    try:
        with open(host, "rb") as fh:
            elf = ELFFile(fh)
            syms: dict[str, int] = {}
            for section in (".dynsym", ".symtab"):
                arr = symbol_array(elf, section)
                if arr is None:
                    continue
                table, strtab = arr
                defined = table[table["shndx"] != 0]
                for name, value in zip(symbol_names(strtab, defined["name"]), defined["value"].tolist()):
                    if name in ("_PyRuntime", "Py_Version"):
                        syms.setdefault(name, value)
                if "_PyRuntime" in syms:
                    break
            if "_PyRuntime" in syms:
                load = next(s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_flags"] & 1)
                result = (build_id_of(elf), syms, load["p_vaddr"] - load["p_offset"])
    except (OSError, ELFError, ValueError, StopIteration):
        result = None
    _objects[key] = result
    return result


def read_mem(pid: int, addr: int, size: int) -> bytes | None:
    """size bytes of process memory, or None when unmapped or the process is gone."""
    try:
        with open(f"/proc/{pid}/mem", "rb", buffering=0) as fh:
            fh.seek(addr)
            data = fh.read(size)
    except (OSError, ValueError, OverflowError):
        return None
    return data if len(data) == size else None


def read_u64(pid: int, addr: int) -> int | None:
    data = read_mem(pid, addr, 8)
    return None if data is None else int.from_bytes(data, "little")


def walk_stacks(rt: PyRuntime, max_threads: int = 64, max_frames: int = 64) -> dict[int, list[tuple[int, int, bool]]]:
    """What the BPF walk sees, read from user space: pthread id -> frames, innermost first,
    as (code address, instruction index, is entry frame). Used to check OFFSETS against a
    running interpreter; the process is not stopped, so a busy thread may read torn."""
    o = rt.offsets
    out: dict[int, list[tuple[int, int, bool]]] = {}
    if o is None:
        return out
    interp = read_u64(rt.pid, rt.runtime_addr + o.runtime_interp_head)
    tstate = read_u64(rt.pid, interp + o.interp_threads_head) if interp else None
    for _ in range(max_threads):
        if not tstate:
            break
        frames = []
        cframe = read_u64(rt.pid, tstate + o.tstate_cframe)
        direct = o.frame_object or o.tstate_frame
        frame = cframe if direct else read_u64(rt.pid, cframe + o.cframe_current_frame) if cframe else None
        for _ in range(max_frames):
            if not frame:
                break
            raw = read_mem(rt.pid, frame, bpf_frame_read(o))
            if raw is None:
                break
            code = int.from_bytes(raw[o.frame_code:o.frame_code + 8], "little")
            prev = int.from_bytes(raw[o.frame_prev_instr:o.frame_prev_instr + 8], "little")
            frame = int.from_bytes(raw[o.frame_previous:o.frame_previous + 8], "little")
            if o.entry_kind == 1:
                if raw[o.frame_owner] == o.owner_cstack:
                    if frames:
                        frames[-1] = (*frames[-1][:2], True)
                    continue
                entry = False
            else:
                entry = o.entry_kind == 2 or bool(raw[o.frame_is_entry])
            lasti = (int.from_bytes(raw[o.frame_prev_instr:o.frame_prev_instr + 4], "little", signed=True)
                     if o.frame_object else (prev - code - o.code_adaptive) // 2)
            frames.append((code, lasti, entry))
        out[read_u64(rt.pid, tstate + o.tstate_thread_id) or 0] = frames
        tstate = read_u64(rt.pid, tstate + o.tstate_next)
    return out

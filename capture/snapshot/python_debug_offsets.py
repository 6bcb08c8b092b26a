"""Offsets of a CPython 3.13 interpreter, read from the interpreter itself.

From 3.13 on, `_PyRuntime` starts with `_Py_DebugOffsets`: a cookie, the version, then
the sizes and field offsets of the runtime, interpreter, thread state, interpreter
frame, code object, str, bytes... structs, written there for out-of-process debuggers.
Its own layout is only stable within a minor version (3.14 reorders it), so only the
3.13 one is read here: a flat array of 8-byte words after the cookie, in the order of
CPython 3.13.0's Include/internal/pycore_runtime.h (checked word by word against the
running pyenv 3.13.0 build: tests/test_python_stacks.py).

Anything unexpected (another cookie, another minor version, the free-threaded build,
a size or offset out of range, or one the BPF walk cannot reach in its buffers) gives
None: the process is sampled natively and reported as "frames not recorded".
"""

from __future__ import annotations

import struct

from uetrace.capture.snapshot.python_offsets import (
    BPF_CODE_MAX,
    BPF_FRAME_MAX,
    PyOffsets,
    bpf_code_read,
    bpf_frame_read,
)

COOKIE = b"xdebugpy"
FRAME_OWNED_BY_CSTACK = 3   # Include/internal/pycore_frame.h (3.12 and 3.13)

# Word index (after the 8-byte cookie: index 1 is the first word) of each field read.
# Groups, each starting with its struct's size: runtime 3-5, interpreter 6-18, thread
# state 19-27, interpreter frame 28-33, code 34-43, PyObject 44-45, type 46-49,
# tuple 50-52, list 53-55, dict 56-58, float 59-60, long 61-63, bytes 64-66,
# str 67-70, gc 71-72.
_WORDS = 73
SIZE = _WORDS * 8
_FIELDS = {
    "version": 1, "free_threaded": 2,
    "runtime_size": 3, "runtime_interpreters_head": 5,
    "interp_size": 6, "interp_threads_head": 9,
    "tstate_size": 19, "tstate_next": 21, "tstate_current_frame": 23, "tstate_thread_id": 24,
    "frame_size": 28, "frame_previous": 29, "frame_executable": 30, "frame_instr_ptr": 31, "frame_owner": 33,
    "code_size": 34, "code_filename": 35, "code_name": 36, "code_qualname": 37, "code_linetable": 38,
    "code_firstlineno": 39, "code_adaptive": 43,
    "bytes_size": 64, "bytes_ob_size": 65, "bytes_ob_sval": 66,
    "unicode_size": 67, "unicode_state": 68, "unicode_length": 69, "unicode_ascii_size": 70,
}
# Largest struct sizes believed: far above 3.13's (runtime 283 K, interpreter 195 K), far
# below what a stray pointer or text would read as.
_MAX_SIZE = {"runtime_size": 1 << 22, "interp_size": 1 << 22, "tstate_size": 1 << 16, "frame_size": 1 << 12,
             "code_size": 1 << 12, "bytes_size": 1 << 8, "unicode_size": 1 << 8}
# PyCompactUnicodeObject = PyASCIIObject + utf8_length + utf8 (Include/cpython/unicodeobject.h)
_COMPACT_EXTRA = 16


def parse(raw: bytes) -> PyOffsets | None:
    """The walk's offsets from the first SIZE bytes of a 3.13 `_PyRuntime`, or None."""
    if len(raw) < SIZE or raw[:8] != COOKIE:
        return None
    words = struct.unpack_from(f"<{_WORDS - 1}Q", raw, 8)
    d = {name: words[i - 1] for name, i in _FIELDS.items()}
    if (d["version"] >> 24, (d["version"] >> 16) & 0xFF) != (3, 13) or d["free_threaded"] != 0:
        return None
    for name, top in _MAX_SIZE.items():
        if not 0 < d[name] <= top:
            return None
    # Every field lies inside its struct (8 bytes: pointers and the sizes they hold; the
    # first line number and the str state are 4-byte ints, the owner a char).
    inside = {
        "runtime_interpreters_head": ("runtime_size", 8), "interp_threads_head": ("interp_size", 8),
        "tstate_next": ("tstate_size", 8), "tstate_current_frame": ("tstate_size", 8),
        "tstate_thread_id": ("tstate_size", 8), "frame_previous": ("frame_size", 8),
        "frame_executable": ("frame_size", 8), "frame_instr_ptr": ("frame_size", 8), "frame_owner": ("frame_size", 1),
        "code_filename": ("code_size", 8), "code_name": ("code_size", 8), "code_qualname": ("code_size", 8),
        "code_linetable": ("code_size", 8), "code_firstlineno": ("code_size", 4), "code_adaptive": ("code_size", 0),
        "bytes_ob_size": ("bytes_size", 8), "bytes_ob_sval": ("bytes_size", 0),
        "unicode_state": ("unicode_size", 4), "unicode_length": ("unicode_size", 8),
        "unicode_ascii_size": ("unicode_size", 0),
    }
    for name, (size, width) in inside.items():
        if d[name] + width > d[size]:
            return None
    # The BPF walk reads fields at masked offsets of fixed buffers: pointers 8-aligned.
    if any(d[n] % 8 for n in ("tstate_next", "tstate_current_frame", "tstate_thread_id", "frame_previous",
                              "frame_executable", "frame_instr_ptr", "code_qualname")) or d["code_firstlineno"] % 4:
        return None
    o = PyOffsets(
        runtime_interp_head=d["runtime_interpreters_head"], interp_threads_head=d["interp_threads_head"],
        tstate_next=d["tstate_next"], tstate_thread_id=d["tstate_thread_id"],
        tstate_cframe=d["tstate_current_frame"], cframe_current_frame=0,
        frame_code=d["frame_executable"], frame_previous=d["frame_previous"], frame_prev_instr=d["frame_instr_ptr"],
        code_firstlineno=d["code_firstlineno"], code_qualname=d["code_qualname"], code_filename=d["code_filename"],
        code_name=d["code_name"], code_linetable=d["code_linetable"], code_adaptive=d["code_adaptive"],
        unicode_ascii_data=d["unicode_ascii_size"], unicode_compact_data=d["unicode_ascii_size"] + _COMPACT_EXTRA,
        unicode_length=d["unicode_length"], unicode_state=d["unicode_state"],
        bytes_size=d["bytes_ob_size"], bytes_data=d["bytes_ob_sval"],
        entry_kind=1, frame_owner=d["frame_owner"], owner_cstack=FRAME_OWNED_BY_CSTACK, tstate_frame=True)
    if bpf_frame_read(o) >= BPF_FRAME_MAX or bpf_code_read(o) >= BPF_CODE_MAX:
        return None
    return o

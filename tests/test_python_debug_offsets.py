"""CPython 3.13's `_Py_DebugOffsets` turned into the BPF walk's offsets, from bytes built
here (the layout of CPython 3.13.0's Include/internal/pycore_runtime.h, with the values
the pyenv 3.13.0 build holds): a good block gives the offsets the live interpreter is
walked with (tests/test_python_stacks.py), any damaged one gives no offsets, that is
"frames not recorded" and native samples."""

from __future__ import annotations

import ctypes
import os
import re
import struct
from pathlib import Path

import pytest

from uetrace.bpf import object_path
from uetrace.capture.btf import Btf
from uetrace.capture.snapshot import python_debug_offsets as dbg
from uetrace.capture.snapshot.python_offsets import BPF_CODE_MAX, BPF_FRAME_MAX, PyOffsets
from uetrace.capture.snapshot.python_runtime import offsets_for

# Words 1..72 after the cookie, as read from a running pyenv 3.13.0 (version 0x030d00f0).
WORDS_3130 = [
    0x030D00F0, 0,                                                        # version, free_threaded
    283320, 608, 632,                                                     # runtime
    194968, 7272, 7264, 7344, 7400, 7656, 7640, 7648, 16, 7752, 0, 7768, 7760,  # interpreter
    304, 0, 8, 16, 72, 152, 160, 232, 32,                                 # thread state
    80, 8, 0, 56, 72, 70,                                                 # interpreter frame
    208, 112, 120, 128, 136, 68, 52, 96, 104, 200,                        # code object
    16, 8, 416, 24, 88, 168, 32, 24, 16, 40, 24, 16, 48, 32, 40, 24, 16, 32, 16, 24,
    40, 16, 32,                                                           # bytes
    64, 32, 16, 40,                                                       # str
    240, 200,                                                             # gc
]


def block(**changes: int) -> bytearray:
    """A _Py_DebugOffsets block; changes: word index (w5=...) -> value."""
    words = list(WORDS_3130)
    for name, value in changes.items():
        words[int(name[1:]) - 1] = value
    return bytearray(dbg.COOKIE + struct.pack(f"<{len(words)}Q", *words))


def test_the_3130_block_gives_the_offsets_of_the_live_interpreter():
    o = dbg.parse(bytes(block()))
    assert o == PyOffsets(
        runtime_interp_head=632, interp_threads_head=7344, tstate_next=8, tstate_thread_id=152,
        tstate_cframe=72, cframe_current_frame=0, frame_code=0, frame_previous=8, frame_prev_instr=56,
        code_firstlineno=68, code_qualname=128, code_filename=112, code_name=120, code_linetable=136,
        code_adaptive=200, unicode_ascii_data=40, unicode_compact_data=56, entry_kind=1, frame_owner=70,
        owner_cstack=3, tstate_frame=True, unicode_length=16, unicode_state=32, bytes_size=16, bytes_data=32)


@pytest.mark.parametrize("raw", [
    pytest.param(b"xdebugpz" + bytes(block())[8:], id="cookie"),
    pytest.param(bytes(block())[:dbg.SIZE - 8], id="truncated"),
    pytest.param(bytes(dbg.SIZE), id="zeros"),
    pytest.param(bytes(block(w1=0x030E00A0)), id="3.14 layout"),
    pytest.param(bytes(block(w1=0x030C01F0)), id="3.12 version"),
    pytest.param(bytes(block(w2=1)), id="free-threaded"),
    pytest.param(bytes(block(w19=0)), id="thread state size 0"),
    pytest.param(bytes(block(w19=1 << 40)), id="thread state size huge"),
    pytest.param(bytes(block(w24=400)), id="thread_id outside the thread state"),
    pytest.param(bytes(block(w29=90)), id="previous outside the frame"),
    pytest.param(bytes(block(w28=400, w31=200)), id="instr_ptr beyond the walk's frame buffer"),
    pytest.param(bytes(block(w34=400, w37=300)), id="qualname beyond the walk's code buffer"),
    pytest.param(bytes(block(w29=12)), id="misaligned pointer"),
    pytest.param(bytes(block(w67=0)), id="str size 0"),
    pytest.param(bytes(block(w68=62)), id="str state outside the str"),
])
def test_a_damaged_block_gives_no_offsets(raw):
    assert dbg.parse(raw) is None


def test_offsets_for_reads_the_block_from_process_memory():
    good = ctypes.create_string_buffer(bytes(block()), dbg.SIZE)
    bad = ctypes.create_string_buffer(b"notdebug" + bytes(block())[8:], dbg.SIZE)
    pid = os.getpid()
    assert offsets_for(pid, "3.13.0", ctypes.addressof(good)) == dbg.parse(bytes(block()))
    assert offsets_for(pid, "3.13.0", ctypes.addressof(bad)) is None
    assert offsets_for(pid, "3.14.0", ctypes.addressof(good)) is None   # its own version says 3.13
    assert offsets_for(pid, "3.13.0", 8) is None                        # unmapped


def test_every_field_of_the_bpf_struct_is_a_python_offset():
    """struct ue_py_proc (bpf/stack.h) and PyOffsets share their names: the loader fills
    the map value by name, so a field missing on one side would be left 0."""
    layout = Btf.from_object(object_path("stack")).struct("ue_py_proc")
    names = {f.name for f in layout.fields} - {"runtime", "frame_read", "code_read", "_pad0"}
    assert names <= set(PyOffsets.__dataclass_fields__), names - set(PyOffsets.__dataclass_fields__)
    assert "tstate_frame" in names


def test_the_walk_buffer_sizes_are_the_headers():
    """What parse() lets through must fit the BPF walk's buffers (#defines: not in BTF)."""
    header = (Path(object_path("stack")).parent / "python.h").read_text()
    for name, value in (("UE_PY_FRAME_MAX", BPF_FRAME_MAX), ("UE_PY_CODE_MAX", BPF_CODE_MAX)):
        assert re.search(rf"#define {name} (\d+)", header).group(1) == str(value), name

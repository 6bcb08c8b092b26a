"""The struct offsets the BPF walk of Python frames reads with (struct ue_py_proc in
bpf/stack.h holds the same names), and what of a frame and a code object it reads at
once. Filled from a table per minor version (3.10 - 3.12: python_runtime.py) or from
the interpreter's own `_Py_DebugOffsets` (3.13: python_debug_offsets.py)."""

from __future__ import annotations

from dataclasses import dataclass

# UE_PY_FRAME_MAX and UE_PY_CODE_MAX in bpf/stack.h: the walk's buffers; what it reads of
# a frame or code object must stay below them (the walk masks its lengths with max - 1).
BPF_FRAME_MAX = 128
BPF_CODE_MAX = 256


@dataclass(frozen=True)
class PyOffsets:
    """Byte offsets of the fields the BPF walk reads (struct ue_py_proc in bpf/stack.h)."""

    runtime_interp_head: int    # _PyRuntimeState.interpreters.head
    interp_threads_head: int    # PyInterpreterState.threads.head
    tstate_next: int            # PyThreadState.next
    tstate_thread_id: int       # PyThreadState.thread_id (pthread_self())
    tstate_cframe: int          # PyThreadState.cframe (3.13: current_frame, see tstate_frame)
    cframe_current_frame: int   # _PyCFrame.current_frame
    frame_code: int             # _PyInterpreterFrame.f_code (3.13: f_executable)
    frame_previous: int         # _PyInterpreterFrame.previous
    frame_prev_instr: int       # _PyInterpreterFrame.prev_instr (3.13: instr_ptr; both point at
    #                             the instruction running, the CALL while a callee runs)
    code_firstlineno: int       # PyCodeObject.co_firstlineno (int)
    code_qualname: int          # PyCodeObject.co_qualname
    code_filename: int          # PyCodeObject.co_filename
    code_name: int              # PyCodeObject.co_name
    code_linetable: int         # PyCodeObject.co_linetable (bytes)
    code_adaptive: int          # PyCodeObject.co_code_adaptive (the instructions)
    unicode_ascii_data: int     # sizeof(PyASCIIObject): where a compact ASCII str's text starts
    unicode_compact_data: int   # sizeof(PyCompactUnicodeObject): other compact strs
    # How the frame that each _PyEval_EvalFrameDefault call starts with is told apart:
    entry_kind: int = 0         # 0 (3.11): _PyInterpreterFrame.is_entry (bool) at
    frame_is_entry: int = 0
    #                             1 (3.12, 3.13): the call pushes a shim frame whose owner is
    frame_owner: int = 0        #   _PyInterpreterFrame.owner (char) ==
    owner_cstack: int = 0       #   FRAME_OWNED_BY_CSTACK; the frame above the shim is the entry
    #                             2 (3.10): every frame is one eval call
    frame_object: bool = False  # 3.10: tstate_cframe is PyThreadState.frame (PyFrameObject *),
    #                             frame_previous f_back, frame_prev_instr f_lasti (int, code units)
    tstate_frame: bool = False  # 3.13: tstate_cframe is PyThreadState.current_frame, the
    #                             _PyInterpreterFrame itself (no _PyCFrame between)
    # Read from user space only (capture/snapshot/python_code.py); the same in 3.10 - 3.13.
    unicode_length: int = 16    # PyASCIIObject.length
    unicode_state: int = 32     # PyASCIIObject.state (interned:2, kind:3, compact:1, ascii:1)
    bytes_size: int = 16        # PyBytesObject.ob_size
    bytes_data: int = 32        # PyBytesObject.ob_sval


def bpf_frame_read(o: PyOffsets) -> int:
    """Bytes of a frame the walk reads at once: every frame field it looks at."""
    return max(o.frame_code + 8, o.frame_previous + 8, o.frame_prev_instr + 8, o.frame_is_entry + 1,
               o.frame_owner + 1)


def bpf_code_read(o: PyOffsets) -> int:
    """Bytes of a code object the walk reads at once (the checksum's two fields)."""
    return max(o.code_firstlineno + 4, o.code_qualname + 8)

/* SPDX-License-Identifier: GPL-2.0 */
/* Layouts of the Python frame walk (bpf/pywalk.bpf.h), shared by every tracer that records
 * Python frames: stack (in its samples), lock and alloc (through py_stackmap,
 * bpf/pystackmap.bpf.h). Read by the loader from each object's BTF. */
#ifndef UETRACE_PYTHON_H
#define UETRACE_PYTHON_H

/* Python frames kept per sample, and PyThreadStates looked at to find the sampled thread's. */
#define UE_PY_DEPTH 64
#define UE_PY_THREADS 4096
/* Most bytes of a frame and of a code object read at once (ue_py_proc.frame_read, code_read). */
#define UE_PY_FRAME_MAX 128
#define UE_PY_CODE_MAX 256

/* One Python frame of a sample. The checksum tells a code object from another allocated
 * at the same address after it was freed (capture/snapshot/python_code.py: code_check). */
struct ue_py_frame {
	__u64 code;          /* PyCodeObject address */
	__u32 check;         /* co_firstlineno ^ (co_qualname >> 4) */
	__u32 lasti;         /* instruction index (code units), | UE_PY_ENTRY for an entry frame */
};
_Static_assert(sizeof(struct ue_py_frame) == 16, "ue_py_frame layout");

/* Set in ue_py_frame.lasti on the first Python frame a _PyEval_EvalFrameDefault call ran
 * (is_entry in 3.11): the native eval frames and these pair up, innermost first. */
#define UE_PY_ENTRY 0x80000000u

/* Per CPython process (map py_procs, keyed by tgid, filled by the loader when it first
 * sees the process): where _PyRuntime is and the struct offsets of its version
 * (capture/snapshot/python_offsets.py: PyOffsets, same names). */
struct ue_py_proc {
	__u64 runtime;                  /* address of _PyRuntime */
	__u16 runtime_interp_head;
	__u16 interp_threads_head;
	__u16 tstate_next;
	__u16 tstate_thread_id;
	__u16 tstate_cframe;
	__u16 cframe_current_frame;
	__u16 frame_code;
	__u16 frame_previous;
	__u16 frame_prev_instr;
	__u16 frame_is_entry;           /* entry_kind 0 (3.11): a bool marks the entry frames */
	__u16 code_firstlineno;
	__u16 code_qualname;
	__u16 code_adaptive;
	__u16 frame_read;               /* bytes of a frame read at once (every frame_* field in them) */
	__u16 code_read;                /* bytes of a code object read at once */
	__u16 frame_owner;              /* entry_kind 1 (3.12): _PyInterpreterFrame.owner (char) */
	__u8 owner_cstack;              /* ... whose FRAME_OWNED_BY_CSTACK marks the shim frame each eval
					 * call pushes: skipped, and the frame above it is an entry */
	__u8 entry_kind;                /* 2 (3.10): every frame is its own eval call */
	__u8 frame_object;              /* 3.10: tstate_cframe is PyThreadState.frame (a PyFrameObject,
					 * no _PyCFrame between), frame_prev_instr is f_lasti (int) */
	__u8 tstate_frame;              /* 3.13: tstate_cframe is PyThreadState.current_frame, the
					 * _PyInterpreterFrame itself (frame_code is f_executable,
					 * frame_prev_instr instr_ptr) */
	__u8 _pad0[4];
};
_Static_assert(sizeof(struct ue_py_proc) == 48, "ue_py_proc layout");

/* A Python stack of the uprobe tracers (map py_stackmap, keyed by a hash of pid and frames;
 * records carry the hash in `pystack`, which the loader turns into a pystack_id). */
struct ue_py_stack {
	__u32 pid;           /* tgid: the code objects' addresses are the process's */
	__u32 n;             /* frames used */
	struct ue_py_frame frames[UE_PY_DEPTH];  /* innermost first */
};
_Static_assert(sizeof(struct ue_py_stack) == 8 + UE_PY_DEPTH * 16, "ue_py_stack layout");

struct ue_py_proc *unused_ue_py_proc __attribute__((unused));
struct ue_py_frame *unused_ue_py_frame __attribute__((unused));
struct ue_py_stack *unused_ue_py_stack __attribute__((unused));

#endif

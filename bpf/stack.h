/* SPDX-License-Identifier: GPL-2.0 */
/* Record layouts of the stack tracer (read by the Python decoder from BTF). */
#ifndef UETRACE_STACK_H
#define UETRACE_STACK_H

/* Bits of `flags`, so that a missing stack is never mistaken for an empty one. */
enum ue_stack_flag {
	UE_STACK_NO_KSTACK = 1,  /* kstack_id < 0 (expected when UE_STACK_USER_MODE) */
	UE_STACK_NO_USTACK = 2,  /* ustack_id < 0 (expected when UE_STACK_KTHREAD) */
	UE_STACK_USER_MODE = 4,  /* the sample interrupted user code */
	UE_STACK_KTHREAD = 8,    /* a kernel thread (or the idle task): no user stack */
	UE_STACK_PREEMPT = 16,   /* off-CPU: the task was preempted, not blocked */
	UE_STACK_PY = 32,        /* a CPython process with known offsets: pyframes were walked */
	UE_STACK_PY_NO_THREAD = 64, /* ... but this thread has no PyThreadState (yet, or any more) */
};

/* Frames kept per stack of a sample: the kernel's default kernel.perf_event_max_stack. */
#define UE_SAMPLE_DEPTH 127

/* One cpu-clock sample: who ran, where, at what time. Never aggregated. The
 * frames travel in the record (no stack map: a STACK_TRACE map loses a stack
 * on every hash collision, ~15 per 700 distinct stacks in 16 K buckets), and
 * the loader turns them into ids of the `stacks` table before writing. */
struct ue_stack_sample {
	__u32 kind;          /* UE_KIND_STACK_SAMPLE */
	__u32 cpu;
	__u64 ts;            /* CLOCK_MONOTONIC ns */
	__u32 pid;           /* tgid; 0 for the idle task */
	__u32 tid;
	__s32 kstack_id;     /* 0, or -errno when there is no kernel stack; the loader sets the id */
	__s32 ustack_id;     /* 0, or -errno when there is no user stack; the loader sets the id */
	__u32 flags;         /* enum ue_stack_flag bits */
	__u16 kframes;       /* kernel frames in frames[0..] */
	__u16 uframes;       /* user frames in frames[UE_SAMPLE_DEPTH..] */
	__u16 pyframes;      /* Python frames (struct ue_py_frame) at frames[2 * UE_SAMPLE_DEPTH..] */
	__u16 _pad0;
	char comm[16];       /* thread name at sample time */
	__u32 _pad1;
	__u64 frames[];      /* kernel stack (innermost first), then at UE_SAMPLE_DEPTH the user stack,
			      * then at 2 * UE_SAMPLE_DEPTH the Python frames (innermost first) */
};
_Static_assert(sizeof(struct ue_stack_sample) == 64, "ue_stack_sample layout");

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
 * (capture/snapshot/python_runtime.py: PyOffsets, same names). */
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

/* One off-CPU interval of a thread (--offcpu), with the stacks it blocked in. */
struct ue_offcpu {
	__u32 kind;          /* UE_KIND_OFFCPU */
	__u32 cpu;           /* CPU it was switched back in on */
	__u64 ts;            /* CLOCK_MONOTONIC ns when it was switched out */
	__u64 dur_ns;        /* how long it stayed off the CPU */
	__u32 pid;
	__u32 tid;
	__s32 kstack_id;     /* stacks at switch-out, or -errno */
	__s32 ustack_id;
	__u32 flags;         /* enum ue_stack_flag bits */
	__u32 _pad0;
	char comm[16];
};
_Static_assert(sizeof(struct ue_offcpu) == 64, "ue_offcpu layout");

/* Keep these enums in the object's BTF (clang drops types nothing uses): the capture
 * writes every enum of the object into schema/<kind>.json, where analysis looks values up. */
enum ue_stack_flag unused_ue_stack_flag __attribute__((unused));
struct ue_py_proc *unused_ue_py_proc __attribute__((unused));
struct ue_py_frame *unused_ue_py_frame __attribute__((unused));

#endif

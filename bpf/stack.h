/* SPDX-License-Identifier: GPL-2.0 */
/* Record layouts of the stack tracer (read by the Python decoder from BTF). */
#ifndef UETRACE_STACK_H
#define UETRACE_STACK_H

#include "python.h"

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

#endif

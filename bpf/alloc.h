/* SPDX-License-Identifier: GPL-2.0 */
/* Record layout of the allocation tracer (read by the Python decoder from BTF). */
#ifndef UETRACE_ALLOC_H
#define UETRACE_ALLOC_H

/* A realloc that moves a block gives a FREE of the old address (at the
 * realloc's entry time) and an ALLOC of the new one (at its return). */
enum ue_alloc_op { ALLOC_OP_ALLOC = 1, ALLOC_OP_FREE = 2 };

enum ue_alloc_fn {
	ALLOC_FN_MALLOC = 1, ALLOC_FN_CALLOC = 2, ALLOC_FN_REALLOC = 3,
	ALLOC_FN_POSIX_MEMALIGN = 4, ALLOC_FN_ALIGNED_ALLOC = 5, ALLOC_FN_FREE = 6,
};

struct ue_alloc {
	__u32 kind;          /* UE_KIND_ALLOC */
	__u32 cpu;
	__u64 ts;            /* CLOCK_MONOTONIC ns: return of the allocating call; entry of free/realloc for FREE */
	__u64 addr;          /* block address in the process */
	__u64 size;          /* ALLOC: bytes requested (calloc: n * size); FREE: 0 */
	__u32 pid;           /* tgid */
	__u32 tid;
	__s32 ustack_id;     /* ALLOC: user stack of the caller; FREE: -1 (not taken: free is hot) */
	__u16 op;            /* enum ue_alloc_op */
	__u16 fn;            /* enum ue_alloc_fn */
	__u64 pystack;       /* ALLOC: the calling thread's Python frames, key of py_stackmap
			      * (bpf/pystackmap.bpf.h), 0 when none; the loader writes pystack_id */
};

_Static_assert(sizeof(struct ue_alloc) == 56, "ue_alloc layout changed: update the schema history");

/* Keep these enums in the object's BTF (clang drops types nothing uses): the capture
 * writes every enum of the object into schema/<kind>.json, where analysis looks values up. */
enum ue_alloc_op unused_ue_alloc_op __attribute__((unused));
enum ue_alloc_fn unused_ue_alloc_fn __attribute__((unused));

#endif

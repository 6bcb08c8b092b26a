/* SPDX-License-Identifier: GPL-2.0 */
/* Python stacks of the uprobe tracers (lock, alloc): what stackmap.bpf.h is for their
 * native stacks. A record cannot carry 64 frames of 16 bytes (a lock record is 72 bytes,
 * and a lock's ACQUIRE at return reuses the stack its entry took), so the walk's frames go
 * into py_stackmap under a 64-bit hash of the pid and the frames, and the record keeps
 * the hash. The loader reads each new hash from the map as soon as a record shows it (and
 * reads the code objects it names while the process lives), then writes pystack_id. */
#ifndef UETRACE_PYSTACKMAP_BPF_H
#define UETRACE_PYSTACKMAP_BPF_H

#include "stackmap.bpf.h"
#include "pywalk.bpf.h"

/* Entries are 1 KB: not preallocated (uprobe programs may allocate), and bounded well
 * below what a capture could hold of distinct Python call sites of locks and allocations. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct ue_py_stack);
} py_stackmap SEC(".maps");

/* Where a stack is built before it is hashed and stored (1 KB: not on the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ue_py_stack);
} py_stack_scratch SEC(".maps");

/* FNV-1a over 64-bit words: per frame its code address, then its checksum and instruction. */
static __always_inline __u64 py_stack_hash(const struct ue_py_stack *st, __u32 tgid)
{
	__u64 h = 0xcbf29ce484222325ULL ^ tgid;
	__u32 n = st->n;

	for (__u32 i = 0; i < UE_PY_DEPTH; i++) {
		if (i >= n)
			break;
		h = (h ^ st->frames[i].code) * 0x100000001b3ULL;
		h = (h ^ (((__u64)st->frames[i].lasti << 32) | st->frames[i].check)) * 0x100000001b3ULL;
	}
	return h;
}

/* The calling thread's Python stack, stored in py_stackmap: its key, or 0 when the process
 * runs no known CPython, the thread has no thread state or no frame, or the map is full. */
static __always_inline __u64 ue_py_stack_id(__u32 tgid)
{
	const struct ue_py_proc *pp = bpf_map_lookup_elem(&py_procs, &tgid);
	if (!pp)
		return 0;
	__u32 zero = 0;
	struct ue_py_stack *st = bpf_map_lookup_elem(&py_stack_scratch, &zero);
	if (!st)
		return 0;
	__u64 ts = py_thread_state(pp, bpf_get_current_task_btf(), (__u32)bpf_get_current_pid_tgid());
	if (!ts)
		return 0;
	st->n = py_frames(pp, ts, st->frames);
	st->pid = tgid;
	if (!st->n)
		return 0;
	__u64 h = py_stack_hash(st, tgid);
	__u64 key = h ? h : 1;
	long err = bpf_map_update_elem(&py_stackmap, &key, st, BPF_NOEXIST);
	if (err && err != -UE_EEXIST) {
		count_drop(UE_DROP_MAP_FULL);
		return 0;
	}
	return key;
}

#endif

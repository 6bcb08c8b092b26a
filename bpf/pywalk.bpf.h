/* SPDX-License-Identifier: GPL-2.0 */
/* The Python frame walk, shared by the tracers that record Python frames (stack.bpf.c in
 * its samples; lock.bpf.c and alloc.bpf.c through pystackmap.bpf.h): find the current
 * thread's PyThreadState and walk its frame chain with the offsets the loader put in
 * py_procs for the process (layouts: python.h). Nothing here needs frame pointers. */
#ifndef UETRACE_PYWALK_BPF_H
#define UETRACE_PYWALK_BPF_H

#include "common.bpf.h"
#include "python.h"

/* CPython processes: tgid -> where their interpreter is (set by the loader). LRU: exited
 * processes are not removed one by one, and a capture may see thousands of short ones. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct ue_py_proc);
} py_procs SEC(".maps");

static __always_inline __u64 read_ptr(__u64 addr)
{
	__u64 v = 0;
	bpf_probe_read_user(&v, sizeof(v), (const void *)addr);
	return v;
}

/* Each thread's PyThreadState, once found: tid -> its address. Checked at every use (its
 * thread_id must still be the task's fs base), so a freed one or a reused tid is walked again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} py_tstates SEC(".maps");

struct py_thread_walk {
	const struct ue_py_proc *pp;
	__u64 ts;
	__u64 fsbase;
	__u64 found;
};

static long py_thread_step(__u32 i, struct py_thread_walk *w)
{
	if (!w->ts)
		return 1;
	if (read_ptr(w->ts + w->pp->tstate_thread_id) == w->fsbase) {
		w->found = w->ts;
		return 1;
	}
	w->ts = read_ptr(w->ts + w->pp->tstate_next);
	return 0;
}

/* The sampled thread's PyThreadState: the one whose thread_id (pthread_self()) is the
 * task's fs base, as on x86-64 with glibc and musl. The interpreter's thread list (newest
 * first) is walked once per thread, under bpf_loop so that a server's thousands of threads
 * are in reach; later samples read the cached address and check it (one read). */
static __always_inline __u64 py_thread_state(const struct ue_py_proc *pp, struct task_struct *t, __u32 tid)
{
	__u64 fsbase = t->thread.fsbase;
	__u64 *cached = bpf_map_lookup_elem(&py_tstates, &tid);

	if (cached && *cached && read_ptr(*cached + pp->tstate_thread_id) == fsbase)
		return *cached;
	__u64 interp = read_ptr(pp->runtime + pp->runtime_interp_head);
	struct py_thread_walk w = {
		.pp = pp, .fsbase = fsbase, .ts = interp ? read_ptr(interp + pp->interp_threads_head) : 0,
	};
	bpf_loop(UE_PY_THREADS, py_thread_step, &w, 0);
	if (w.found)
		bpf_map_update_elem(&py_tstates, &tid, &w.found, BPF_ANY);
	return w.found;
}

/* Where a frame and its code object are read, each in one helper call (six reads a frame
 * took 2.8 - 4.8 us per sample of a 9-frame stack; see docs/performance.md). */
struct py_scratch {
	__u8 frame[UE_PY_FRAME_MAX];
	__u8 code[UE_PY_CODE_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct py_scratch);
} py_scratch SEC(".maps");

/* A field at a run-time offset of a buffer: the masks keep the verifier's bounds (the
 * loader only sends offsets that fit, aligned as the fields are). */
#define FIELD_U64(buf, off, max) (*(__u64 *)((buf) + ((off) & ((max) - 8) & ~7)))
#define FIELD_U32(buf, off, max) (*(__u32 *)((buf) + ((off) & ((max) - 4) & ~3)))
#define FIELD_U8(buf, off, max) ((buf)[(off) & ((max) - 1)])

/* One step of the frame walk, run by bpf_loop: the verifier checks it once, whatever the
 * number of frames (an unrolled walk with the 3.12 shim skip went past its limits). */
struct py_walk {
	const struct ue_py_proc *pp;
	struct py_scratch *s;
	void *out;              /* struct ue_py_frame[]: typed here, its BTF would be a bare FWD */
	__u64 frame;
	__u32 n;
	__u32 frame_read;
	__u32 code_read;
};

static long py_frame_step(__u32 i, struct py_walk *w)
{
	const struct ue_py_proc *pp = w->pp;
	struct py_scratch *s = w->s;
	struct ue_py_frame *out = w->out;

	if (!w->frame || bpf_probe_read_user(s->frame, w->frame_read & (UE_PY_FRAME_MAX - 1), (const void *)w->frame))
		return 1;
	__u64 code = FIELD_U64(s->frame, pp->frame_code, UE_PY_FRAME_MAX);
	__u64 lasti = pp->frame_object ? FIELD_U32(s->frame, pp->frame_prev_instr, UE_PY_FRAME_MAX) :
			(FIELD_U64(s->frame, pp->frame_prev_instr, UE_PY_FRAME_MAX) - code - pp->code_adaptive) / 2;
	__u32 n = w->n;
	__u32 entry = 0;
	w->frame = FIELD_U64(s->frame, pp->frame_previous, UE_PY_FRAME_MAX);
	if (pp->entry_kind == 2) {
		entry = UE_PY_ENTRY;
	} else if (pp->entry_kind == 1) {
		if (FIELD_U8(s->frame, pp->frame_owner, UE_PY_FRAME_MAX) == pp->owner_cstack) {
			if (n > 0 && n <= UE_PY_DEPTH)
				out[n - 1].lasti |= UE_PY_ENTRY;
			return 0;
		}
	} else if (FIELD_U8(s->frame, pp->frame_is_entry, UE_PY_FRAME_MAX)) {
		entry = UE_PY_ENTRY;
	}
	if (n >= UE_PY_DEPTH)
		return 1;
	__u32 check = 0;
	if (!bpf_probe_read_user(s->code, w->code_read & (UE_PY_CODE_MAX - 1), (const void *)code))
		check = FIELD_U32(s->code, pp->code_firstlineno, UE_PY_CODE_MAX) ^
			(__u32)(FIELD_U64(s->code, pp->code_qualname, UE_PY_CODE_MAX) >> 4);
	out[n].code = code;
	out[n].check = check;
	out[n].lasti = (lasti & ~UE_PY_ENTRY) | entry;
	w->n = n + 1;
	return 0;
}

/* The thread's Python frames, innermost first, into out[0..UE_PY_DEPTH); returns how many.
 * Frames skipped (3.12 shims) count against the same bound. */
static __always_inline __u32 py_frames(const struct ue_py_proc *pp, __u64 ts, struct ue_py_frame *out)
{
	__u32 zero = 0;
	__u64 cframe = read_ptr(ts + pp->tstate_cframe);
	struct py_walk w = {
		.pp = pp, .out = out, .frame_read = pp->frame_read, .code_read = pp->code_read,
		.s = bpf_map_lookup_elem(&py_scratch, &zero),
		.frame = pp->frame_object || pp->tstate_frame ? cframe :
			 cframe ? read_ptr(cframe + pp->cframe_current_frame) : 0,
	};

	if (!w.s)
		return 0;
	bpf_loop(UE_PY_DEPTH + UE_PY_DEPTH / 4, py_frame_step, &w, 0);
	return w.n;
}

#endif

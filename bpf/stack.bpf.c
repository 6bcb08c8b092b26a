// SPDX-License-Identifier: GPL-2.0
/* Stack tracer: a cpu-clock perf event per CPU (opened by the loader) runs
 * ue_stack_sample at --freq Hz; each sample is one record carrying its kernel
 * and user stacks. With --offcpu, sched_switch records how long each thread
 * stayed off the CPU and the ids (stack map) of the stacks it left in. */
#include "common.bpf.h"
#include "stackmap.bpf.h"
#include "stack.h"

char LICENSE[] SEC("license") = "GPL";

/* Off-CPU intervals shorter than this are not recorded (set by the loader). */
const volatile __u64 min_offcpu_ns = 1000;

#define PF_KTHREAD 0x00200000 /* include/linux/sched.h */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22); /* resized by the loader */
} events SEC(".maps");

/* Threads currently switched out: when, and in which stacks. LRU so that
 * threads that exit while switched out cannot fill it up. */
struct offcpu_start {
	__u64 ts;
	__s32 kstack_id;
	__s32 ustack_id;
	__u32 flags;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);
	__type(value, struct offcpu_start);
} offcpu_start SEC(".maps");

/* CPython processes: tgid -> where their interpreter is (set by the loader). LRU: exited
 * processes are not removed one by one, and a capture may see thousands of short ones. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct ue_py_proc);
} py_procs SEC(".maps");

struct ue_stack_sample *unused_stack_sample __attribute__((unused));
struct ue_offcpu *unused_offcpu __attribute__((unused));
enum ue_stack_flag unused_stack_flag __attribute__((unused));

static __always_inline __u32 missing_flags(__s32 kstack_id, __s32 ustack_id)
{
	return (kstack_id < 0 ? UE_STACK_NO_KSTACK : 0) | (ustack_id < 0 ? UE_STACK_NO_USTACK : 0);
}

static __always_inline bool is_kthread(struct task_struct *t)
{
	return t->pid == 0 || (t->flags & PF_KTHREAD);
}

/* Whether the sample interrupted user code (CPL 3 in the saved cs). The context
 * only allows 8-byte loads of saved registers; cs shares its word with padding. */
static __always_inline bool user_mode(struct bpf_perf_event_data *ctx)
{
	__u64 cs = *(volatile __u64 *)((void *)&ctx->regs + __builtin_offsetof(struct pt_regs, cs));
	return (cs & 3) == 3;
}

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

#define NATIVE_SAMPLE_SIZE (sizeof(struct ue_stack_sample) + 2 * UE_SAMPLE_DEPTH * 8)

SEC("perf_event")
int ue_stack_sample(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;

	if (!wanted(tgid))
		return 0;
	/* Only CPython processes' records make room for Python frames: native ones keep their size. */
	const struct ue_py_proc *pp = bpf_map_lookup_elem(&py_procs, &tgid);
	struct ue_stack_sample *ev;
	if (pp)
		ev = bpf_ringbuf_reserve(&events, NATIVE_SAMPLE_SIZE + UE_PY_DEPTH * sizeof(struct ue_py_frame), 0);
	else
		ev = bpf_ringbuf_reserve(&events, NATIVE_SAMPLE_SIZE, 0);
	if (!ev) {
		count_drop(UE_DROP_RINGBUF);
		return 0;
	}
	struct task_struct *t = bpf_get_current_task_btf();
	ev->kind = UE_KIND_STACK_SAMPLE;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = bpf_ktime_get_ns();
	ev->pid = tgid;
	ev->tid = (__u32)id;
	long k = bpf_get_stack(ctx, ev->frames, UE_SAMPLE_DEPTH * 8, 0);
	long u = bpf_get_stack(ctx, ev->frames + UE_SAMPLE_DEPTH, UE_SAMPLE_DEPTH * 8, BPF_F_USER_STACK);
	/* An empty stack is no stack, as bpf_get_stackid says with -EFAULT. */
	ev->kstack_id = k > 0 ? 0 : k < 0 ? k : -UE_EFAULT;
	ev->ustack_id = u > 0 ? 0 : u < 0 ? u : -UE_EFAULT;
	ev->kframes = k > 0 ? (__u64)k / 8 : 0;
	ev->uframes = u > 0 ? (__u64)u / 8 : 0;
	ev->flags = missing_flags(ev->kstack_id, ev->ustack_id) |
		    (user_mode(ctx) ? UE_STACK_USER_MODE : 0) |
		    (is_kthread(t) ? UE_STACK_KTHREAD : 0);
	ev->pyframes = 0;
	ev->_pad0 = 0;
	ev->_pad1 = 0;
	if (pp) {
		__u64 ts = py_thread_state(pp, t, ev->tid);
		ev->flags |= UE_STACK_PY | (ts ? 0 : UE_STACK_PY_NO_THREAD);
		if (ts)
			ev->pyframes = py_frames(pp, ts, (struct ue_py_frame *)(ev->frames + 2 * UE_SAMPLE_DEPTH));
	}
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(ue_offcpu, bool preempt, struct task_struct *prev, struct task_struct *next)
{
	__u64 now = bpf_ktime_get_ns();

	/* prev is still `current` here, so the stack helpers walk its stacks. */
	if (prev->pid && wanted(prev->tgid)) {
		struct offcpu_start st = {.ts = now};
		ue_stack_ids(ctx, &st.kstack_id, &st.ustack_id);
		st.flags = missing_flags(st.kstack_id, st.ustack_id) |
			   (is_kthread(prev) ? UE_STACK_KTHREAD : 0) | (preempt ? UE_STACK_PREEMPT : 0);
		__u32 tid = prev->pid;
		if (bpf_map_update_elem(&offcpu_start, &tid, &st, BPF_ANY))
			count_drop(UE_DROP_MAP_FULL);
	}

	__u32 next_tid = next->pid;
	struct offcpu_start *st = bpf_map_lookup_elem(&offcpu_start, &next_tid);
	if (!st)
		return 0;
	__u64 dur = now - st->ts;
	if (dur >= min_offcpu_ns) {
		struct ue_offcpu *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
		if (ev) {
			ev->kind = UE_KIND_OFFCPU;
			ev->cpu = bpf_get_smp_processor_id();
			ev->ts = st->ts;
			ev->dur_ns = dur;
			ev->pid = next->tgid;
			ev->tid = next_tid;
			ev->kstack_id = st->kstack_id;
			ev->ustack_id = st->ustack_id;
			ev->flags = st->flags;
			ev->_pad0 = 0;
			bpf_probe_read_kernel_str(ev->comm, sizeof(ev->comm), next->comm);
			bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
		} else {
			count_drop(UE_DROP_RINGBUF);
		}
	}
	bpf_map_delete_elem(&offcpu_start, &next_tid);
	return 0;
}

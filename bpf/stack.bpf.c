// SPDX-License-Identifier: GPL-2.0
/* Stack tracer: a cpu-clock perf event per CPU (opened by the loader) runs
 * ue_stack_sample at --freq Hz; each sample is one record carrying its kernel
 * and user stacks. With --offcpu, sched_switch records how long each thread
 * stayed off the CPU and the ids (stack map) of the stacks it left in. */
#include "common.bpf.h"
#include "stackmap.bpf.h"
#include "stack.h"
#include "pywalk.bpf.h"

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

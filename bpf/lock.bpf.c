// SPDX-License-Identifier: GPL-2.0
/* Lock tracer: uprobes on the C library's pthread mutex, rwlock and condition
 * wait functions of the target processes. Entry keeps the call per thread;
 * return emits the outcome with the time waited. Every call is recorded (no
 * sampling): a lock-order graph with a missing edge would hide the deadlock it
 * is for. Attached per process by the loader, so the `wanted` filter only
 * guards the --all-processes mode. */
#include "common.bpf.h"
#include "stackmap.bpf.h"
#include "pystackmap.bpf.h"
#include "lock.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* resized by the loader */
} events SEC(".maps");

/* A call between its entry and its return, per thread (lock calls do not nest: a
 * condition wait re-takes its mutex through internal functions, not probed ones). */
struct lock_call {
	__u64 ts;
	__u64 mutex;
	__u64 caller;
	__s32 ustack_id;
	__u32 fn;
	__u64 pystack;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct lock_call);
} calls SEC(".maps");

struct ue_lock *unused_lock __attribute__((unused));

static __always_inline void emit(__u16 op, __u16 fn, __u64 ts, __u64 mutex, __u64 wait_ns, __u64 caller,
				 __s32 stack, __u64 pystack, __s32 ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ue_lock *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_drop(UE_DROP_RINGBUF);
		return;
	}
	ev->kind = UE_KIND_LOCK;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = ts;
	ev->mutex = mutex;
	ev->wait_ns = wait_ns;
	ev->caller = caller;
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->ustack_id = stack;
	ev->ret = ret;
	ev->op = op;
	ev->fn = fn;
	ev->_pad0 = 0;
	ev->pystack = pystack;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

/* At a function's first instruction the return address is on top of the stack. */
static __always_inline __u64 return_address(struct pt_regs *ctx)
{
	__u64 ra = 0;
	if (bpf_probe_read_user(&ra, sizeof(ra), (void *)PT_REGS_SP(ctx)))
		count_drop(UE_DROP_READ_FAULT);
	return ra;
}

static __always_inline bool is_try(__u32 fn)
{
	return fn == LOCK_FN_TRYLOCK || fn == LOCK_FN_TRYRDLOCK || fn == LOCK_FN_TRYWRLOCK;
}

static __always_inline bool is_cond(__u32 fn)
{
	return fn == LOCK_FN_COND_WAIT || fn == LOCK_FN_COND_TIMEDWAIT || fn == LOCK_FN_COND_CLOCKWAIT;
}

static __always_inline int enter(struct pt_regs *ctx, __u64 mutex, __u32 fn)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	if (!wanted(id >> 32))
		return 0;
	struct lock_call c = {.ts = bpf_ktime_get_ns(), .mutex = mutex, .fn = fn};
	c.caller = return_address(ctx);
	c.ustack_id = ue_stack_id(ctx, BPF_F_USER_STACK);
	c.pystack = ue_py_stack_id(id >> 32);
	if (bpf_map_update_elem(&calls, &tid, &c, BPF_ANY))
		count_drop(UE_DROP_MAP_FULL);
	/* Trylock never waits: its one record comes at return, with the result.
	 * A condition wait releases its mutex first: that is its entry record. */
	if (is_cond(fn))
		emit(LOCK_OP_UNLOCK, fn, c.ts, mutex, 0, c.caller, c.ustack_id, c.pystack, 0);
	else if (!is_try(fn))
		emit(LOCK_OP_REQUEST, fn, c.ts, mutex, 0, c.caller, c.ustack_id, c.pystack, 0);
	return 0;
}

static __always_inline int leave(int ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct lock_call *c = bpf_map_lookup_elem(&calls, &tid);
	if (!c)
		return 0; /* entry was before attach, or filtered */
	struct lock_call done = *c;
	bpf_map_delete_elem(&calls, &tid);
	__u64 now = bpf_ktime_get_ns();
	emit(is_try(done.fn) ? LOCK_OP_TRYLOCK : LOCK_OP_ACQUIRE, done.fn, now, done.mutex,
	     now - done.ts, done.caller, done.ustack_id, done.pystack, ret);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(lock_enter, void *mutex) { return enter(ctx, (__u64)mutex, LOCK_FN_LOCK); }

SEC("uprobe")
int BPF_KPROBE(timedlock_enter, void *mutex) { return enter(ctx, (__u64)mutex, LOCK_FN_TIMEDLOCK); }

SEC("uprobe")
int BPF_KPROBE(trylock_enter, void *mutex) { return enter(ctx, (__u64)mutex, LOCK_FN_TRYLOCK); }

/* pthread_cond_wait(cond, mutex), timedwait(cond, mutex, abstime), clockwait(cond, mutex, clock, abstime) */
SEC("uprobe")
int BPF_KPROBE(cond_wait_enter, void *cond, void *mutex)
{
	return enter(ctx, (__u64)mutex, LOCK_FN_COND_WAIT);
}

SEC("uprobe")
int BPF_KPROBE(cond_timedwait_enter, void *cond, void *mutex)
{
	return enter(ctx, (__u64)mutex, LOCK_FN_COND_TIMEDWAIT);
}

SEC("uprobe")
int BPF_KPROBE(cond_clockwait_enter, void *cond, void *mutex)
{
	return enter(ctx, (__u64)mutex, LOCK_FN_COND_CLOCKWAIT);
}

SEC("uprobe")
int BPF_KPROBE(rdlock_enter, void *rwlock) { return enter(ctx, (__u64)rwlock, LOCK_FN_RDLOCK); }

SEC("uprobe")
int BPF_KPROBE(wrlock_enter, void *rwlock) { return enter(ctx, (__u64)rwlock, LOCK_FN_WRLOCK); }

SEC("uprobe")
int BPF_KPROBE(timedrdlock_enter, void *rwlock) { return enter(ctx, (__u64)rwlock, LOCK_FN_TIMEDRDLOCK); }

SEC("uprobe")
int BPF_KPROBE(timedwrlock_enter, void *rwlock) { return enter(ctx, (__u64)rwlock, LOCK_FN_TIMEDWRLOCK); }

SEC("uprobe")
int BPF_KPROBE(tryrdlock_enter, void *rwlock) { return enter(ctx, (__u64)rwlock, LOCK_FN_TRYRDLOCK); }

SEC("uprobe")
int BPF_KPROBE(trywrlock_enter, void *rwlock) { return enter(ctx, (__u64)rwlock, LOCK_FN_TRYWRLOCK); }

SEC("uretprobe")
int BPF_KRETPROBE(lock_return, int ret) { return leave(ret); }

static __always_inline int unlock(struct pt_regs *ctx, __u64 lock, __u16 fn)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!wanted(id >> 32))
		return 0;
	emit(LOCK_OP_UNLOCK, fn, bpf_ktime_get_ns(), lock, 0, return_address(ctx),
	     ue_stack_id(ctx, BPF_F_USER_STACK), ue_py_stack_id(id >> 32), 0);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(unlock_enter, void *mutex) { return unlock(ctx, (__u64)mutex, LOCK_FN_UNLOCK); }

SEC("uprobe")
int BPF_KPROBE(rwunlock_enter, void *rwlock) { return unlock(ctx, (__u64)rwlock, LOCK_FN_RWUNLOCK); }

// SPDX-License-Identifier: GPL-2.0
/* Allocation tracer: uprobes on the C library allocator of the target
 * processes. Entry keeps the arguments per thread; return emits the block with
 * the caller's stack. With alloc_sample = N > 1 only addresses whose hash is
 * 0 mod N are kept, so a block's allocation and its free are kept or dropped
 * together (and the stack walk is skipped for dropped blocks). */
#include "common.bpf.h"
#include "stackmap.bpf.h"
#include "pystackmap.bpf.h"
#include "alloc.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 alloc_sample = 1; /* keep 1 in N blocks, by address hash */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* resized by the loader */
} events SEC(".maps");

/* An allocator call between entry and return. `depth` counts allocator calls
 * made from inside it (glibc's realloc(NULL, n) calls malloc through the probed
 * entry point): those are part of the outer call and are not reported twice. */
struct alloc_call {
	__u64 ts;
	__u64 size;
	__u64 ptr;   /* realloc: old block; posix_memalign: where the result is stored */
	__u32 fn;
	__u32 depth;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct alloc_call);
} calls SEC(".maps");

/* A call older than this is taken as abandoned (its thread died mid-call and the
 * tid was reused), never as the caller of a nested one. */
#define STALE_NS (10ULL * 1000 * 1000 * 1000)

struct ue_alloc *unused_alloc __attribute__((unused));

static __always_inline bool kept(__u64 addr)
{
	if (alloc_sample <= 1)
		return true;
	/* murmur3 finalizer: heap addresses are sequential and aligned, the hash must not be */
	addr ^= addr >> 33;
	addr *= 0xff51afd7ed558ccdULL;
	addr ^= addr >> 33;
	addr *= 0xc4ceb9fe1a85ec53ULL;
	addr ^= addr >> 33;
	return addr % alloc_sample == 0;
}

static __always_inline void emit(__u16 op, __u16 fn, __u64 ts, __u64 addr, __u64 size, __s32 stack,
				 __u64 pystack)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ue_alloc *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_drop(UE_DROP_RINGBUF);
		return;
	}
	ev->kind = UE_KIND_ALLOC;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = ts;
	ev->addr = addr;
	ev->size = size;
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->ustack_id = stack;
	ev->op = op;
	ev->fn = fn;
	ev->pystack = pystack;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

/* The call in flight on this thread, if it is a live one. */
static __always_inline struct alloc_call *current_call(__u32 tid, __u64 now)
{
	struct alloc_call *c = bpf_map_lookup_elem(&calls, &tid);
	if (c && now - c->ts > STALE_NS) {
		bpf_map_delete_elem(&calls, &tid);
		return NULL;
	}
	return c;
}

static __always_inline int enter(__u32 fn, __u64 size, __u64 ptr)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	if (!wanted(id >> 32))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	struct alloc_call *outer = current_call(tid, now);
	if (outer) {
		outer->depth++;
		return 0;
	}
	struct alloc_call c = {.ts = now, .size = size, .ptr = ptr, .fn = fn};
	if (bpf_map_update_elem(&calls, &tid, &c, BPF_ANY))
		count_drop(UE_DROP_MAP_FULL);
	return 0;
}

/* Pops this thread's call; false for a nested call or one entered before attach. */
static __always_inline bool leave(struct alloc_call *out)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct alloc_call *c = bpf_map_lookup_elem(&calls, &tid);
	if (!c)
		return false;
	if (c->depth) {
		c->depth--;
		return false;
	}
	*out = *c;
	bpf_map_delete_elem(&calls, &tid);
	return true;
}

static __always_inline void allocated(struct pt_regs *ctx, struct alloc_call *c, __u64 addr)
{
	if (!addr || !kept(addr))
		return;
	emit(ALLOC_OP_ALLOC, c->fn, bpf_ktime_get_ns(), addr, c->size, ue_stack_id(ctx, BPF_F_USER_STACK),
	     ue_py_stack_id(bpf_get_current_pid_tgid() >> 32));
}

SEC("uprobe")
int BPF_KPROBE(malloc_enter, size_t size) { return enter(ALLOC_FN_MALLOC, size, 0); }

SEC("uprobe")
int BPF_KPROBE(calloc_enter, size_t n, size_t size) { return enter(ALLOC_FN_CALLOC, (__u64)n * size, 0); }

SEC("uprobe")
int BPF_KPROBE(realloc_enter, void *old, size_t size) { return enter(ALLOC_FN_REALLOC, size, (__u64)old); }

SEC("uprobe")
int BPF_KPROBE(aligned_alloc_enter, size_t align, size_t size)
{
	return enter(ALLOC_FN_ALIGNED_ALLOC, size, 0);
}

SEC("uprobe")
int BPF_KPROBE(posix_memalign_enter, void **memptr, size_t align, size_t size)
{
	return enter(ALLOC_FN_POSIX_MEMALIGN, size, (__u64)memptr);
}

/* malloc, calloc and aligned_alloc return the block. */
SEC("uretprobe")
int BPF_KRETPROBE(alloc_return, void *ret)
{
	struct alloc_call c;
	if (leave(&c))
		allocated(ctx, &c, (__u64)ret);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(realloc_return, void *ret)
{
	struct alloc_call c;
	if (!leave(&c))
		return 0;
	/* The old block is gone when a new one is returned, and when realloc(p, 0)
	 * freed it (glibc returns NULL then); a failed realloc leaves it alone. */
	if (c.ptr && (ret || c.size == 0) && kept(c.ptr))
		emit(ALLOC_OP_FREE, ALLOC_FN_REALLOC, c.ts, c.ptr, 0, -1, 0);
	allocated(ctx, &c, (__u64)ret);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(posix_memalign_return, int ret)
{
	struct alloc_call c;
	__u64 addr = 0;
	if (!leave(&c) || ret != 0)
		return 0;
	if (bpf_probe_read_user(&addr, sizeof(addr), (void *)c.ptr)) {
		count_drop(UE_DROP_READ_FAULT);
		return 0;
	}
	allocated(ctx, &c, addr);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(free_enter, void *ptr)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	if (!ptr || !wanted(id >> 32))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	/* A free inside realloc(p, 0) is reported by realloc's return. */
	if (current_call(tid, now))
		return 0;
	if (kept((__u64)ptr))
		emit(ALLOC_OP_FREE, ALLOC_FN_FREE, now, (__u64)ptr, 0, -1, 0);
	return 0;
}

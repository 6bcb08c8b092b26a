/* SPDX-License-Identifier: GPL-2.0 */
/* The stack map every stack-recording tracer shares the shape of (stack, lock,
 * alloc), and the one helper that fills a record's kstack_id / ustack_id.
 *
 * Records keep stack ids, never aggregates: user space dumps the `stacks` map
 * once at the end of the capture (capture/tracers/stack_maps.py), so a sample can
 * later be joined to whatever else happened on its thread at its time.
 *
 * No BPF_F_REUSE_STACKID: when two different stacks hash to the same bucket,
 * the second gets -EEXIST and is counted as lost (UE_DROP_STACK), instead of
 * silently overwriting the first one that earlier records already point to. */
#ifndef UETRACE_STACKMAP_BPF_H
#define UETRACE_STACKMAP_BPF_H

#include "common.bpf.h"

/* The kernel's default kernel.perf_event_max_stack; deeper stacks are cut
 * here, which the user side detects (all slots used) and reports. */
#define UE_STACK_MAX_DEPTH 127

/* errno values (vmlinux.h has none) that bpf_get_stackid returns negated. */
#define UE_ENOMEM 12
#define UE_EFAULT 14
#define UE_EEXIST 17

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16384); /* resized by the loader (capture/tracers/stack_maps.py) */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, UE_STACK_MAX_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

/* One stack id, or -errno. Collisions (-EEXIST) and a full map (-ENOMEM) lose
 * the stack and are counted; -EFAULT only means there is no stack of that kind
 * (a sample in user mode has no kernel stack, a kernel thread no user stack). */
static __always_inline __s32 ue_stack_id(void *ctx, __u64 flags)
{
	long id = bpf_get_stackid(ctx, &stacks, flags);
	if (id == -UE_EEXIST || id == -UE_ENOMEM)
		count_drop(UE_DROP_STACK);
	return (__s32)id;
}

/* Both stacks of the current task, as stored in every record that has them. */
static __always_inline void ue_stack_ids(void *ctx, __s32 *kstack_id, __s32 *ustack_id)
{
	*kstack_id = ue_stack_id(ctx, 0);
	*ustack_id = ue_stack_id(ctx, BPF_F_USER_STACK);
}

#endif

/* SPDX-License-Identifier: GPL-2.0 */
/* Kernel-side helpers shared by every uetrace tracer: target filters set from
 * user space before load, and per-CPU loss counters that land in the manifest. */
#ifndef UETRACE_COMMON_BPF_H
#define UETRACE_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "common.h"

/* Read-only config, written into .rodata by the loader before load so that the
 * verifier can prune the disabled branches. */
const volatile __u32 self_tgid = 0;        /* the capture process itself: never traced */
const volatile __u8 filter_pids = 0;       /* 1: only tgids present in target_pids */
const volatile __u8 filter_comm = 0;       /* 1: only tasks whose comm is a key of target_comms */
/* Tracers with a busy ring give every record this many bytes (record plus the
 * largest payload, a multiple of 8), so that user space finds the records
 * without walking their headers one by one; 0: records take what they need. */
const volatile __u32 record_slot = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u8);
} target_pids SEC(".maps");

/* --comm values (repeatable), NUL-padded to 16 bytes as bpf_get_current_comm writes them. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, char[16]);
	__type(value, __u8);
} target_comms SEC(".maps");

/* Loss counters, indexed by enum ue_drop (common.h); one slot per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, UE_DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* Keep both enums in every object's BTF: the loader reads record kinds and loss
 * reasons from there instead of repeating the numbers in Python. */
enum ue_kind unused_ue_kind __attribute__((unused));
enum ue_drop unused_ue_drop __attribute__((unused));

static __always_inline void count_drop(__u32 reason)
{
	__u64 *c = bpf_map_lookup_elem(&drops, &reason);
	if (c)
		*c += 1; /* per-CPU slot: no atomic needed */
}

static __always_inline bool comm_matches(void)
{
	char comm[16] = {};
	bpf_get_current_comm(comm, sizeof(comm)); /* NUL-padded: usable as a hash key */
	return bpf_map_lookup_elem(&target_comms, comm) != NULL;
}

/* Whether the current task is one the user asked to trace. */
static __always_inline bool wanted(__u32 tgid)
{
	if (tgid == self_tgid)
		return false;
	if (filter_pids && !bpf_map_lookup_elem(&target_pids, &tgid))
		return false;
	if (filter_comm && !comm_matches())
		return false;
	return true;
}

#endif

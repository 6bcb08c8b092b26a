// SPDX-License-Identifier: GPL-2.0
/* One tiny program per attach type, loaded one at a time by `trace doctor` to
 * tell which kinds of attachment this kernel allows. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp/syscalls/sys_enter_getppid")
int ue_doc_tp(void *ctx) { return 0; }

SEC("tp_btf/sched_process_fork")
int BPF_PROG(ue_doc_tp_btf, struct task_struct *parent, struct task_struct *child) { return 0; }

SEC("raw_tp/sys_enter")
int ue_doc_raw_tp(void *ctx) { return 0; }

SEC("uprobe")
int BPF_KPROBE(ue_doc_uprobe) { return 0; } /* BPF_UPROBE needs libbpf >= 1.2 headers */

SEC("perf_event")
int ue_doc_perf(struct bpf_perf_event_data *ctx) { return 0; }

SEC("xdp")
int ue_doc_xdp(struct xdp_md *ctx) { return XDP_PASS; }

SEC("tc")
int ue_doc_tc(struct __sk_buff *skb) { return 0; /* TC_ACT_OK */ }

SEC("kprobe/do_nanosleep")
int BPF_KPROBE(ue_doc_kprobe) { return 0; }

SEC("fentry/do_nanosleep")
int BPF_PROG(ue_doc_fentry) { return 0; }

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} ue_doc_ring SEC(".maps");

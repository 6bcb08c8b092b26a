// SPDX-License-Identifier: GPL-2.0
/* Process tracer: exec, fork (processes and threads) and exit, so that pids in
 * other records stay unambiguous and new processes get a snapshot. */
#include "common.bpf.h"
#include "proc.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct ue_proc *unused_proc __attribute__((unused));

static __always_inline struct ue_proc *start(__u32 op, struct task_struct *t)
{
	struct ue_proc *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_drop(UE_DROP_RINGBUF);
		return NULL;
	}
	ev->kind = UE_KIND_PROC;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = bpf_ktime_get_ns();
	ev->op = op;
	ev->pid = t->tgid;
	ev->tid = t->pid;
	ev->ppid = 0;
	ev->exit_code = 0;
	ev->_pad0 = 0;
	bpf_probe_read_kernel_str(ev->comm, sizeof(ev->comm), t->comm);
	ev->filename[0] = 0;
	return ev;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(ue_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (p->tgid == self_tgid)
		return 0;
	struct ue_proc *ev = start(PROC_EXEC, p);
	if (!ev)
		return 0;
	ev->ppid = p->real_parent->tgid;
	bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), bprm->filename);
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(ue_fork, struct task_struct *parent, struct task_struct *child)
{
	if (parent->tgid == self_tgid)
		return 0;
	struct ue_proc *ev = start(child->tgid == parent->tgid ? PROC_THREAD : PROC_FORK, child);
	if (!ev)
		return 0;
	ev->ppid = parent->tgid;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(ue_exit, struct task_struct *p)
{
	if (p->tgid == self_tgid)
		return 0;
	struct ue_proc *ev = start(p->pid == p->tgid ? PROC_EXIT : PROC_THREAD_EXIT, p);
	if (!ev)
		return 0;
	ev->exit_code = p->exit_code;
	bpf_ringbuf_submit(ev, 0);
	return 0;
}

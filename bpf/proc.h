/* SPDX-License-Identifier: GPL-2.0 */
/* Record layout of the process tracer (read by the Python decoder from BTF). */
#ifndef UETRACE_PROC_H
#define UETRACE_PROC_H

enum ue_proc_op { PROC_EXEC = 1, PROC_FORK = 2, PROC_EXIT = 3, PROC_THREAD = 4, PROC_THREAD_EXIT = 5 };

struct ue_proc {
	__u32 kind;          /* UE_KIND_PROC */
	__u32 cpu;
	__u64 ts;            /* CLOCK_MONOTONIC ns */
	__u32 op;            /* enum ue_proc_op */
	__u32 pid;           /* tgid of the process (the child's, for fork) */
	__u32 tid;           /* thread id (the child's, for fork) */
	__u32 ppid;          /* parent tgid for fork and exec; 0 otherwise */
	__s32 exit_code;     /* exit: raw task exit_code (status << 8 | signal) */
	__u32 _pad0;
	char comm[16];
	char filename[256];  /* exec: path given to execve */
};

/* Keep these enums in the object's BTF (clang drops types nothing uses): the capture
 * writes every enum of the object into schema/<kind>.json, where analysis looks values up. */
enum ue_proc_op unused_ue_proc_op __attribute__((unused));

#endif

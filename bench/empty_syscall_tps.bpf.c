// SPDX-License-Identifier: GPL-2.0
/* Empty programs on the per-call syscall tracepoints a socket tracer would need for accept,
 * connect and close (bench/bench_syscall_hooks.py): what attaching any syscall tracepoint costs
 * every other system call (it puts every task on the syscall slow path). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp/syscalls/sys_exit_accept4")
int exit_accept4(void *ctx) { return 0; }

SEC("tp/syscalls/sys_exit_accept")
int exit_accept(void *ctx) { return 0; }

SEC("tp/syscalls/sys_exit_connect")
int exit_connect(void *ctx) { return 0; }

SEC("tp/syscalls/sys_enter_close")
int enter_close(void *ctx) { return 0; }

// SPDX-License-Identifier: GPL-2.0
/* Socket tracer for kernels without the socket tracepoints sock.bpf.c uses
 * (capture/socket_hooks.py chooses; `--sock-hooks syscalls` asks for it): two
 * BTF raw tracepoints on every system call, sys_enter and sys_exit, that act
 * only on the socket calls below. Entry keeps the time in task-local storage;
 * exit reads the arguments back from the saved user registers (a system call
 * leaves them in place) and emits one record with the bytes moved and a
 * payload prefix. Same records as sock.bpf.c; here a receive's ts_enter is its
 * entry, and UDP connect and close are recorded too. Sockets opened before the
 * capture are covered because the socket is found from the fd at every call.
 *
 * Why not tp/syscalls/sys_{enter,exit}_<name>: those run behind the perf
 * trace-event path (a perf record of every argument is built before the
 * program runs) and needed an in-flight hash insert + delete per call; on
 * nginx at ~100 K requests/s that was ~1 us of kernel time per traced call. */
#include "sockfd_walk.bpf.h"
#include "sock_record.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define EINPROGRESS 115

/* Entry time of the thread's current socket call; 0 once its exit consumed it,
 * so a call already in flight when the capture attached is not recorded. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} call_start SEC(".maps");

static __always_inline bool is_socket_call(long nr)
{
	switch (nr) {
	case NR_READ: case NR_WRITE: case NR_CLOSE: case NR_READV: case NR_WRITEV: case NR_SENDFILE:
	case NR_CONNECT: case NR_ACCEPT: case NR_SENDTO: case NR_RECVFROM: case NR_SENDMSG:
	case NR_RECVMSG: case NR_ACCEPT4:
		return true;
	}
	return false;
}

static __always_inline void emit_conn_fd(int fd, long ret, __u16 op, __u64 ts)
{
	__u64 sk_addr;
	struct sock *sk = fd_to_sock_btf(fd, &sk_addr);
	if (sk)
		emit_conn(sk, sk_addr, bpf_get_current_pid_tgid(), fd, ret, op, ts);
}

static __always_inline void emit_data(struct pt_regs *regs, long nr, long ret, __u64 ts_enter)
{
	struct data_call c;
	if (!read_data_call(regs, nr, ANY_DIR, &c))
		return;
	int fd = regs->di;
	__u64 sk_addr;
	struct sock *sk = fd_to_sock_btf(fd, &sk_addr);
	if (!sk)
		return;
	struct ue_sock_data *ev = bpf_ringbuf_reserve(&events, record_slot, 0);
	if (!ev) {
		count_drop(UE_DROP_RINGBUF);
		return;
	}
	write_data(ev, sk, sk_addr, &c, fd, ret, ts_enter, bpf_ktime_get_ns());
}

SEC("tp_btf/sys_enter")
int BPF_PROG(ue_sys_enter, struct pt_regs *regs, long nr)
{
	if (!is_socket_call(nr) || regs->cs != USER_CS_64)
		return 0;
	if (!wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (nr == NR_CLOSE) { /* before the fd is gone */
		emit_conn_fd(regs->di, 0, CONN_CLOSE, now);
		return 0;
	}
	__u64 *start = bpf_task_storage_get(&call_start, bpf_get_current_task_btf(), 0,
					    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (start)
		*start = now;
	else
		count_drop(UE_DROP_MAP_FULL);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(ue_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = regs->orig_ax;
	if (!is_socket_call(nr) || nr == NR_CLOSE || regs->cs != USER_CS_64)
		return 0;
	__u64 *start = bpf_task_storage_get(&call_start, bpf_get_current_task_btf(), 0, 0);
	if (!start || !*start)
		return 0; /* entered before the capture attached, or not a wanted task */
	__u64 ts_enter = *start;
	*start = 0;
	switch (nr) {
	case NR_ACCEPT:
	case NR_ACCEPT4:
		if (ret >= 0)
			emit_conn_fd(ret, ret, CONN_ACCEPT, bpf_ktime_get_ns());
		return 0;
	case NR_CONNECT:
		if (ret == 0 || ret == -EINPROGRESS)
			emit_conn_fd(regs->di, ret, CONN_CONNECT, bpf_ktime_get_ns());
		return 0;
	}
	if (ret > 0)
		emit_data(regs, nr, ret, ts_enter);
	return 0;
}

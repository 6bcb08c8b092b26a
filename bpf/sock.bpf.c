// SPDX-License-Identifier: GPL-2.0
/* Socket tracer: BTF tracepoints that fire only where socket data moves or a
 * TCP socket changes state, so that no program runs on the other system calls.
 *
 * Data: sock_send_length / sock_recv_length fire at the end of
 * sock_sendmsg_nosec / sock_recvmsg_nosec with the struct sock and the byte
 * count. The syscall that got there and its arguments come from the task's
 * saved user registers (orig_ax, rdi, rsi, rdx): the fd is arg 0 and the
 * payload is read from the user's buffer or iovec as the call returns.
 * Timestamps: ts_exit is the tracepoint's time. A TCP send's ts_enter is the
 * first tcp_sendmsg_locked fire of that call (before any byte is queued: on
 * loopback the receiver can be handed the data, and return from its read,
 * before the sender's call returns). Nothing marks the start of a receive or
 * of a non-TCP send without a hook on every system call: their ts_enter is
 * ts_exit (a blocking read's entry time says nothing about the data anyway).
 *
 * Connections (inet_sock_set_state, TCP only): CLOSE -> SYN_SENT inside
 * connect() and LISTEN -> SYN_RECV (the child socket accept() will hand out)
 * are kept in socket-local storage, and their CONN_CONNECT / CONN_ACCEPT record
 * is written at the socket's first data call or close, when its local port is
 * known and, for an accepted one, the process holding it. The first state
 * change a close() makes on the socket it releases is CONN_CLOSE. Per-call
 * syscall tracepoints (tp/syscalls/sys_exit_accept4 ...) would see the calls
 * themselves but put every task on the syscall slow path: ~42 ns more on every
 * system call of every process (getppid loop; docs/architecture.md "Capture
 * overhead"). */
#include "sockfd.bpf.h"
#include "sock_record.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define EINPROGRESS 115
#define O_NONBLOCK 04000

/* Time of the first tcp_sendmsg_locked fire of the thread's current send; 0
 * once sock_send_length consumed it. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} send_start SEC(".maps");

/* A connection opened during the capture whose CONN_ACCEPT / CONN_CONNECT
 * record is not written yet: it is written at the socket's first data call or
 * close, once its 5-tuple is complete (a connecting socket has no local port
 * yet when it enters SYN_SENT) and, for an accepted one, once a process holds
 * it. Connect fills in its call's time, thread, fd and return value here. */
struct conn_pending {
	__u64 ts;
	__u64 pid_tgid;
	__s32 fd;
	__s32 ret;
	__u16 op;          /* CONN_ACCEPT or CONN_CONNECT */
	__u16 _pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn_pending);
} conn_pending SEC(".maps");

static __always_inline bool is_send_call(long nr)
{
	return nr == NR_WRITE || nr == NR_WRITEV || nr == NR_SENDTO || nr == NR_SENDMSG || nr == NR_SENDFILE;
}

/* The socket's pending CONN_ACCEPT / CONN_CONNECT record, if any (an accept's
 * is this call's: accept() returned the fd it uses). */
static __always_inline void announce_conn(struct sock *sk, __u64 sk_addr, int fd, __u64 ts)
{
	struct conn_pending *p = bpf_sk_storage_get(&conn_pending, sk, 0, 0);
	if (!p || p->op == CONN_CLOSE)
		return;
	if (p->op == CONN_ACCEPT)
		emit_conn(sk, sk_addr, bpf_get_current_pid_tgid(), fd, fd, CONN_ACCEPT, ts);
	else
		emit_conn(sk, sk_addr, p->pid_tgid, p->fd, p->ret, CONN_CONNECT, p->ts);
	bpf_sk_storage_delete(&conn_pending, sk);
}

/* One data record for the syscall in `regs` that moved `ret` bytes through sk,
 * if it is a read/write-like call of direction `want_dir` (a sendfile whose
 * input is a socket reads it: that read is not the call's data). */
static __always_inline void emit_data(void *ctx, struct pt_regs *regs, struct sock *sk, long ret, __u8 want_dir,
				      __u64 ts_enter, __u64 ts_exit)
{
	struct data_call c;
	if (!read_data_call(regs, regs->orig_ax, want_dir, &c))
		return;
	__u64 sk_addr;
	if (!user_inet_sock(sk, ctx, &sk_addr))
		return;
	int fd = regs->di;
	announce_conn(sk, sk_addr, fd, ts_exit);
	struct ue_sock_data *ev = bpf_ringbuf_reserve(&events, record_slot, 0);
	if (!ev) {
		count_drop(UE_DROP_RINGBUF);
		return;
	}
	write_data(ev, sk, sk_addr, &c, fd, ret, ts_enter, ts_exit);
}

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(ue_tcp_sendmsg, const struct sock *sk, const struct msghdr *msg, const struct sk_buff *skb,
	     int size_goal)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	/* Only a user send that will reach sock_send_length, which clears the slot
	 * (not e.g. a kTLS close flushing its records). */
	if (regs->cs != USER_CS_64 || !is_send_call(regs->orig_ax))
		return 0;
	if (!wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	__u64 *start = bpf_task_storage_get(&send_start, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!start)
		count_drop(UE_DROP_MAP_FULL);
	else if (!*start) /* the loop fires once per segment: keep the first */
		*start = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(ue_sock_send, struct sock *sk, int ret, int flags)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 ts_enter = 0;
	/* Consumed whatever the outcome: a failed send must not lend its start to the next. */
	__u64 *start = bpf_task_storage_get(&send_start, task, 0, 0);
	if (start) {
		ts_enter = *start;
		*start = 0;
	}
	if (ret <= 0 || !wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	if (regs->cs != USER_CS_64)
		return 0; /* a kernel thread's socket (its saved registers are zero) */
	__u64 now = bpf_ktime_get_ns();
	emit_data(ctx, regs, sk, ret, DIR_EGRESS, ts_enter ? ts_enter : now, now);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(ue_sock_recv, struct sock *sk, int ret, int flags)
{
	if (ret <= 0 || !wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (regs->cs != USER_CS_64)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	emit_data(ctx, regs, sk, ret, DIR_INGRESS, now, now);
	return 0;
}

/* Before 6.13 the count was an atomic_long_t f_count. */
struct file___f_count {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

/* Whether the file's last reference is gone (it is in __fput). file_ref_t
 * counts from 0 for one reference; released and dead are negative. */
static __always_inline bool file_released(struct file *f)
{
	if (bpf_core_field_exists(f->f_ref))
		return (__s64)f->f_ref.refcnt.counter < 0;
	return BPF_CORE_READ((struct file___f_count *)f, f_count.counter) == 0;
}

/* The first state change a close() makes on a TCP socket: from a live state
 * to another, or the same-state step tcp_close takes after a shutdown()
 * (FIN_WAIT2 -> FIN_WAIT2, then -> CLOSE: only the first is taken). */
static __always_inline bool close_step(int oldstate, int newstate)
{
	switch (oldstate) {
	case TCP_ESTABLISHED: case TCP_CLOSE_WAIT: case TCP_SYN_SENT: case TCP_SYN_RECV: case TCP_LISTEN:
		return newstate != oldstate;
	case TCP_FIN_WAIT1: case TCP_FIN_WAIT2: case TCP_CLOSING:
		return newstate == oldstate;
	}
	return false;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(ue_sock_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct sock *s = (struct sock *)sk;
	if (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV) {
		/* a connection request's child socket: accept() will hand it out */
		struct conn_pending *p = bpf_sk_storage_get(&conn_pending, s, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (p)
			p->op = CONN_ACCEPT;
		else
			count_drop(UE_DROP_MAP_FULL);
		return 0;
	}
	__u16 op;
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT)
		op = CONN_CONNECT;
	else if (close_step(oldstate, newstate))
		op = CONN_CLOSE;
	else
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (regs->cs != USER_CS_64 || regs->orig_ax != (op == CONN_CONNECT ? NR_CONNECT : NR_CLOSE))
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	if (!wanted(id >> 32))
		return 0;
	__u64 sk_addr;
	if (!user_inet_sock(s, ctx, &sk_addr))
		return 0;
	int fd = regs->di;
	__u64 now = bpf_ktime_get_ns();
	if (op == CONN_CONNECT) {
		struct conn_pending *p = bpf_sk_storage_get(&conn_pending, s, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!p) {
			count_drop(UE_DROP_MAP_FULL);
			return 0;
		}
		p->ts = now;
		p->pid_tgid = id;
		p->fd = fd;
		/* connect() returns 0 once the handshake completes, -EINPROGRESS at once on a non-blocking socket */
		p->ret = s->sk_socket->file->f_flags & O_NONBLOCK ? -EINPROGRESS : 0;
		p->op = CONN_CONNECT;
		return 0;
	}
	/* Only the socket whose file close() releases: any other one is a
	 * softirq's, run on this task (the peer of a loopback connection getting
	 * our FIN). */
	if (!file_released(s->sk_socket->file))
		return 0;
	announce_conn(s, sk_addr, fd, now);
	/* Once per socket: on loopback the peer's answer to our FIN can move this
	 * socket on again inside the same close() (softirq on this task), and such a
	 * step can pass close_step() too (seen: one close in ~6 written twice). */
	struct conn_pending *p = bpf_sk_storage_get(&conn_pending, s, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (p) {
		if (p->op == CONN_CLOSE)
			return 0;
		p->op = CONN_CLOSE;
	}
	emit_conn(s, sk_addr, id, fd, 0, CONN_CLOSE, now);
	return 0;
}
